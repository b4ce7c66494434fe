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
from google.protobuf.descriptor import FieldDescriptor
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
UTF8_CHARSETS = frozenset(("utf-8", "utf8"))
# Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF8, "UTF-8"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)

# Message types whose JSON form is not an object.
_NON_OBJECT_JSON = (
    WRAPPERS | STRING_FORM_MESSAGES | {"google.protobuf.Value", "google.protobuf.ListValue"}
)


def build_request(match: RouteMatch, body: bytes, query: Iterable[tuple[str, str]]) -> Message:
    """The gRPC request for a matched route; raises TranscodeError (400) on bad input."""
    route = match.route
    message = message_factory.GetMessageClass(route.input)()
    if route.body:
        _fill_body(message, route, body)
    try:
        for name, value in match.path_values.items():
            assign(message, resolve(route.input, name), [value], label=name, override=True)
    except FieldValueError as exc:
        raise invalid_argument(f"path: {exc}") from None
    _fill_query(message, route, query)
    return message


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


def _fill_body(message: Message, route: Route, raw: bytes) -> None:
    if not raw.strip():
        return  # as in grpc-gateway, an empty body is an empty message
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
