"""Which HTTP headers travel to the backend as gRPC metadata, and how.

As grpc-gateway does: `Authorization` goes as `authorization`, every
`Grpc-Metadata-<key>` header as `<key>` (base64-decoded when the key ends in
`-bin`), the Host header as `x-forwarded-host` and the client address is
appended to `x-forwarded-for`. `X-Request-Id` goes as `x-request-id`. A
header that gRPC cannot carry (a non-ASCII value, a reserved or malformed
key) answers 400 naming it rather than failing inside the gRPC call.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from edgesense.api.status import invalid_argument

Metadata = tuple[tuple[str, str | bytes], ...]

GRPC_METADATA_PREFIX = "grpc-metadata-"
_DIRECT = {"authorization": "authorization", "x-request-id": "x-request-id"}
_KEY = re.compile(r"[0-9a-z_.\-]+\Z")
_VALUE = re.compile(r"[\x20-\x7e]*\Z")
_RESERVED_KEYS = frozenset(("content-type", "te", "user-agent", "host", "connection"))


def outgoing_metadata(
    headers: Iterable[tuple[str, str]], *, peer: str | None = None, host: str | None = None
) -> Metadata:
    """The gRPC metadata for a call made on behalf of a request with these headers."""
    metadata: list[tuple[str, str | bytes]] = []
    forwarded_for: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower == "x-forwarded-for":
            forwarded_for.append(value)
            continue
        if lower in _DIRECT:
            key = _DIRECT[lower]
        elif lower.startswith(GRPC_METADATA_PREFIX):
            key = lower[len(GRPC_METADATA_PREFIX) :]
        else:
            continue
        metadata.append((key, _value(name, key, value)))
    if peer:
        forwarded_for.append(peer)
    if forwarded_for:
        metadata.append(
            ("x-forwarded-for", _value("X-Forwarded-For", "x", ", ".join(forwarded_for)))
        )
    if host:
        metadata.append(("x-forwarded-host", _value("Host", "x", host)))
    return tuple(metadata)


def _value(header: str, key: str, value: str) -> str | bytes:
    if not _KEY.match(key) or key.startswith("grpc-") or key in _RESERVED_KEYS:
        raise invalid_argument(f"header {header!r} cannot be sent as gRPC metadata")
    if key.endswith("-bin"):
        try:
            return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise invalid_argument(f"header {header!r} must be base64") from None
    if not _VALUE.match(value):
        raise invalid_argument(f"header {header!r} must be printable ASCII")
    return value.strip()
