"""HTTP request -> gRPC request message, gRPC response message -> JSON body.

The request message is filled from the JSON body (as the rule's `body` says:
"*" for the whole message, a field name for that field only, nothing for no
body, in which case an incoming body is ignored), then from the path
variables, which win over the body, then from query parameters.

Query parameters set the fields that neither the path nor the body binds,
by proto name or lowerCamelCase JSON name, nested by dots (`sub.field`),
repeated by repeating the key. Unlike grpc-gateway, which ignores unknown
query parameters, this gateway is strict: a parameter that names no field,
names a field the path or body already binds, or is sent to a `body: "*"`
route answers 400 naming the parameter, so that a typo such as `?pagesize=`
is reported instead of silently ignored.

Bodies are parsed with protobuf's JSON mapping, unknown fields rejected with
a message that names them. Answers use the JSON mapping with lowerCamelCase
names and print fields without presence even when unset (grpc-gateway v2's
default); unset `optional` and message fields stay absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from edgesense.gateway.fields import (
    STRING_FORM_MESSAGES,
    WRAPPERS,
    FieldValueError,
    assign,
    is_map,
    is_message,
    message_type,
    resolve,
)
from edgesense.gateway.router import RouteMatch
from edgesense.gateway.rules import Route
from edgesense.gateway.status import invalid_argument

MAX_BODY_BYTES = 1024 * 1024

# Message types whose JSON form is not an object.
_NON_OBJECT_JSON = (
    WRAPPERS | STRING_FORM_MESSAGES | {"google.protobuf.Value", "google.protobuf.ListValue"}
)


def build_request(match: RouteMatch, body: bytes, query: Iterable[tuple[str, str]]) -> Message:
    """The gRPC request for a matched route; raises GatewayError (400) on bad input."""
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


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
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
        json_format.ParseDict(document, message, ignore_unknown_fields=False)
    except (json_format.Error, ValueError, TypeError, RecursionError) as exc:
        raise invalid_argument(f"request body: {_one_line(exc)}") from None


def _wants_object(field: FieldDescriptor) -> bool:
    return is_message(field) and message_type(field).full_name not in _NON_OBJECT_JSON


def _require(value: Any, kind: type, what: str) -> None:
    if not isinstance(value, kind):
        raise invalid_argument(f"request body must be {what}, not {_json_kind(value)}")


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names = {dict: "an object", list: "an array", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


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
