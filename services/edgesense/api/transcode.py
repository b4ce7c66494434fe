"""HTTP request -> gRPC request message, gRPC response message -> JSON body.

The request message is filled from the JSON body (as the rule's `body` says:
"*" for the whole message, a field name for that field only, nothing for no
body, in which case an incoming body is ignored), then from the path
variables, which win over the body, then from query parameters.

Query parameters set the fields that neither the path nor the body binds,
by proto name or lowerCamelCase JSON name, nested by dots (`sub.field`),
repeated by repeating the key. Unlike grpc-gateway, which ignores unknown
query parameters, this transcoder is strict: a parameter that names no field,
names a field the path or body already binds, or is sent to a `body: "*"`
route answers 400 naming the parameter, so that a typo such as `?pagesize=`
is reported instead of silently ignored.

A request with a FieldMask field named `update_mask` whose route's body is
one message field of it (AIP-134's `PATCH …/{id}` with `body: "webhook"`)
gets its mask from the body when neither the body nor a query parameter
(`?updateMask=url,events`) set one, as grpc-gateway does: the proto names of
the fields present in the body's JSON object, relative to the body's
message, nested objects as dotted paths. As grpc-gateway does too, repeated
and map fields are one path each and not entered; unlike it, well-known
types (Struct included, which grpc-gateway enters key by key) are one path
each. A body member sent as `null` counts as present: its field is cleared.

Bodies are UTF-8 JSON (RFC 8259): a byte order mark, bytes that are not
UTF-8 (a UTF-16 body) or a Content-Type charset other than utf-8 (415) are
refused, saying so, instead of being guessed at as `json.loads` would. The
decoded document is checked against the request message first (`jsonshape`),
so an unknown field or a wrongly typed value answers 400 with a
`google.rpc.BadRequest` naming the field as sent, then parsed with
protobuf's JSON mapping. Answers use the JSON mapping with lowerCamelCase
names and print fields without presence even when unset (grpc-gateway v2's
default); unset `optional` and message fields stay absent.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from edgesense.api.fields import (
    STRING_FORM_MESSAGES,
    WRAPPERS,
    FieldValueError,
    assign,
    is_map,
    is_message,
    message_type,
    resolve,
)
from edgesense.api.jsonshape import BodyFieldError, check_object, json_kind
from edgesense.api.router import RouteMatch
from edgesense.api.rules import Route
from edgesense.api.status import bad_request, invalid_argument

MAX_BODY_BYTES = 1024 * 1024
UPDATE_MASK = "update_mask"
FIELD_MASK = "google.protobuf.FieldMask"
UTF8_CHARSETS = frozenset(("utf-8", "utf8"))
# Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF8, "UTF-8"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)

# Message types a body's update mask names whole, never entering them.
WELL_KNOWN_PREFIX = "google.protobuf."
# Message types whose JSON form is not an object.
_NON_OBJECT_JSON = (
    WRAPPERS | STRING_FORM_MESSAGES | {"google.protobuf.Value", "google.protobuf.ListValue"}
)


def build_request(match: RouteMatch, body: bytes, query: Iterable[tuple[str, str]]) -> Message:
    """The gRPC request for a matched route; raises TranscodeError (400) on bad input."""
    route = match.route
    message = message_factory.GetMessageClass(route.input)()
    sent = _fill_body(message, route, body) if route.body else None
    try:
        for name, value in match.path_values.items():
            assign(message, resolve(route.input, name), [value], label=name, override=True)
    except FieldValueError as exc:
        raise invalid_argument(f"path: {exc}") from None
    _fill_query(message, route, query)
    _infer_update_mask(message, route, sent)
    return message


def update_mask_field(route: Route) -> FieldDescriptor | None:
    """The request's `update_mask` when the route's body is one message field
    of the request: the mask `build_request` fills from the body."""
    if route.body in ("", "*"):
        return None
    mask = route.input.fields_by_name.get(UPDATE_MASK)
    if mask is None or mask.is_repeated or not is_message(mask):
        return None
    if message_type(mask).full_name != FIELD_MASK:
        return None
    body = route.input.fields_by_name[route.body]
    if body.is_repeated or not _wants_object(body) or _well_known(message_type(body)):
        return None
    return mask


def mask_paths(document: dict[str, Any], descriptor: Descriptor, prefix: str = "") -> list[str]:
    """The update mask of a JSON object (already checked against `descriptor`):
    sorted proto-name paths of its members, entering nested message objects."""
    by_name = {f.json_name: f for f in descriptor.fields} | {f.name: f for f in descriptor.fields}
    paths: list[str] = []
    for key, value in document.items():
        field = by_name[key]
        path = prefix + field.name
        nested = (
            is_message(field)
            and not field.is_repeated
            and not _well_known(message_type(field))
            and isinstance(value, dict)
            and value
        )
        if nested:
            paths += mask_paths(value, message_type(field), path + ".")
        else:
            paths.append(path)
    return sorted(paths)


def _well_known(descriptor: Descriptor) -> bool:
    return str(descriptor.full_name).startswith(WELL_KNOWN_PREFIX)


def _infer_update_mask(message: Message, route: Route, sent: Any) -> None:
    field = update_mask_field(route)
    if field is None or not isinstance(sent, dict):
        return
    mask = getattr(message, field.name)
    if mask.paths:
        return  # the query (`?updateMask=`) said which fields
    body = route.input.fields_by_name[route.body]
    mask.paths.extend(mask_paths(sent, message_type(body)))


def render_response(route: Route, message: Message) -> bytes:
    if not route.response_body:
        text = json_format.MessageToJson(
            message, always_print_fields_with_no_presence=True, indent=None
        )
        return text.encode()
    answer = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    field = route.output.fields_by_name[route.response_body]
    return json.dumps(answer.get(field.json_name)).encode()


def check_charset(charset: str | None) -> None:
    """A Content-Type charset other than UTF-8 is 415: JSON on the wire is UTF-8."""
    if charset is not None and charset.lower() not in UTF8_CHARSETS:
        raise invalid_argument(
            f"Content-Type charset {charset!r} is not supported: send UTF-8 JSON (RFC 8259)",
            status=415,
        )


def decode_body(raw: bytes) -> str:
    """The body as text: UTF-8 without a byte order mark, else 400 saying what it is."""
    for mark, encoding in _BYTE_ORDER_MARKS:
        if raw.startswith(mark):
            raise invalid_argument(
                f"request body starts with a {encoding} byte order mark: "
                "send UTF-8 JSON without one (RFC 8259)"
            )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid_argument(
            f"request body is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}): "
            "JSON must be UTF-8 (RFC 8259)"
        ) from None
    if "\x00" in text:  # JSON never holds a raw NUL; UTF-16 without a mark does
        raise invalid_argument(
            f"request body has a NUL byte at offset {text.index(chr(0))}: "
            "is it UTF-16? JSON must be UTF-8 (RFC 8259)"
        )
    return text


def parse_json(raw: bytes) -> Any:
    text = decode_body(raw)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise invalid_argument(f"request body is not valid JSON: {exc}") from None


def _fill_body(message: Message, route: Route, raw: bytes) -> Any:
    """Fill `message` from the body; returns the JSON value sent (None for no body)."""
    if not raw.strip():
        return None  # as in grpc-gateway, an empty body is an empty message
    value = parse_json(raw)
    if route.body == "*":
        _require(value, dict, "a JSON object")
        document = value
    else:
        field = route.input.fields_by_name[route.body]
        if field.is_repeated and not is_map(field):
            _require(value, list, "a JSON array")
        elif _wants_object(field):
            _require(value, dict, "a JSON object")
        document = {field.json_name: value}
    try:
        check_object(document, route.input)
    except BodyFieldError as exc:
        raise bad_request(exc.field, exc.problem) from None
    except RecursionError:
        raise invalid_argument("request body is nested too deeply") from None
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=False)
    except (json_format.Error, ValueError, TypeError, RecursionError) as exc:
        raise invalid_argument(f"request body: {_one_line(exc)}") from None
    return value


def _wants_object(field: FieldDescriptor) -> bool:
    return is_message(field) and message_type(field).full_name not in _NON_OBJECT_JSON


def _require(value: Any, kind: type, what: str) -> None:
    if not isinstance(value, kind):
        raise invalid_argument(f"request body must be {what}, not {json_kind(value)}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _fill_query(message: Message, route: Route, query: Iterable[tuple[str, str]]) -> None:
    bound = route.path_fields()
    grouped: dict[tuple[str, ...], tuple[str, tuple[FieldDescriptor, ...], list[str]]] = {}
    for name, value in query:
        if route.body == "*":
            raise invalid_argument(
                f"query parameter {name!r}: this route takes its fields from the JSON body"
            )
        try:
            fields = resolve(route.input, name)
        except FieldValueError:
            raise invalid_argument(
                f"unknown query parameter {name!r}: {route.input.full_name} has no such field"
            ) from None
        path = tuple(f.name for f in fields)
        if any(path[: len(b)] == b for b in bound):
            raise invalid_argument(f"query parameter {name!r}: the URL path already sets it")
        if route.body and path[0] == route.body:
            raise invalid_argument(f"query parameter {name!r}: the request body sets it")
        grouped.setdefault(path, (name, fields, []))[2].append(value)
    for label, fields, values in grouped.values():
        try:
            assign(message, fields, values, label=label)
        except FieldValueError as exc:
            raise invalid_argument(f"query parameter {exc}") from None
