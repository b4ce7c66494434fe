"""Leading comments of proto elements, read from the descriptor set with source info.

`make protos` writes `edgesense/v1/descriptors.binpb` with
`--include_source_info`; the OpenAPI document uses these comments as
descriptions. Without the file the document simply has no descriptions.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

log = logging.getLogger(__name__)

# Field numbers in FileDescriptorProto / DescriptorProto / ... (descriptor.proto).
_FILE_MESSAGES, _FILE_ENUMS, _FILE_SERVICES = 4, 5, 6
_MESSAGE_FIELDS, _MESSAGE_NESTED, _MESSAGE_ENUMS = 2, 3, 4
_ENUM_VALUES, _SERVICE_METHODS = 2, 2

Path_ = tuple[int, ...]


def default_descriptor_set() -> bytes | None:
    try:
        return resources.files("edgesense.v1").joinpath("descriptors.binpb").read_bytes()
    except (OSError, ModuleNotFoundError):
        return None


def load_comments(source: bytes | Path | None = None) -> dict[str, str]:
    """Full proto name (`pkg.Message.field`, `pkg.Service.Method`) -> leading comment."""
    raw = source.read_bytes() if isinstance(source, Path) else source
    if raw is None:
        raw = default_descriptor_set()
    if raw is None:
        return {}
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(raw).file
    except DecodeError:
        log.warning("api: the descriptor set is unreadable; OpenAPI without descriptions")
        return {}
    comments: dict[str, str] = {}
    for file in files:
        by_path = {
            tuple(loc.path): loc.leading_comments
            for loc in file.source_code_info.location
            if loc.leading_comments.strip()
        }
        for name, path in _elements(file):
            if path in by_path:
                comments[name] = textwrap.dedent(by_path[path]).strip()
    return comments


def _elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, Path_]]:
    prefix = file.package + "." if file.package else ""
    for i, message in enumerate(file.message_type):
        yield from _message(message, prefix, (_FILE_MESSAGES, i))
    for i, enum in enumerate(file.enum_type):
        yield from _enum(enum, prefix, (_FILE_ENUMS, i))
    for i, service in enumerate(file.service):
        name = prefix + service.name
        yield name, (_FILE_SERVICES, i)
        for j, method in enumerate(service.method):
            yield f"{name}.{method.name}", (_FILE_SERVICES, i, _SERVICE_METHODS, j)


def _message(
    message: descriptor_pb2.DescriptorProto, prefix: str, path: Path_
) -> Iterator[tuple[str, Path_]]:
    name = prefix + message.name
    yield name, path
    for j, field in enumerate(message.field):
        yield f"{name}.{field.name}", (*path, _MESSAGE_FIELDS, j)
    for j, nested in enumerate(message.nested_type):
        yield from _message(nested, name + ".", (*path, _MESSAGE_NESTED, j))
    for j, enum in enumerate(message.enum_type):
        yield from _enum(enum, name + ".", (*path, _MESSAGE_ENUMS, j))


def _enum(
    enum: descriptor_pb2.EnumDescriptorProto, prefix: str, path: Path_
) -> Iterator[tuple[str, Path_]]:
    name = prefix + enum.name
    yield name, path
    for j, value in enumerate(enum.value):
        yield f"{name}.{value.name}", (*path, _ENUM_VALUES, j)
