"""The OpenAPI 3.0 document of the REST API, generated from the same routes.

Every route is one operation: its path (variables named by their
lowerCamelCase JSON names; a multi-segment variable such as
`{name=projects/*}` becomes `{name}` with a pattern), its path parameters, its
query parameters (for a route without `body: "*"`, every field that takes a
text value and is bound neither by the path nor by the body, nested by dots),
its request body and its answer. Errors are `google.rpc.Status`. Every
operation takes the API key as a bearer token. Descriptions are the leading
comments of the protos, when the descriptor set with source info is there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor

import edgesense
from edgesense.api.fields import is_message, message_type, resolve, takes_text
from edgesense.api.rules import Route
from edgesense.api.schemas import STATUS_SCHEMA_NAME, Schema, SchemaBuilder, ref
from edgesense.api.templates import PathTemplate, Segment

OPENAPI_METHODS = frozenset(("get", "put", "post", "delete", "patch", "head", "options", "trace"))
SECURITY_SCHEME = "bearerAuth"


def openapi_document(
    routes: Sequence[Route],
    *,
    comments: Mapping[str, str] | None = None,
    title: str = "EdgeSense webhooks API",
) -> dict[str, Any]:
    builder = SchemaBuilder(comments)
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, Schema] = {}
    for route in sorted(routes, key=lambda r: (r.template.source, r.http_method)):
        method = route.http_method.lower()
        if method not in OPENAPI_METHODS:
            continue  # custom HTTP methods have no place in an OpenAPI path item
        service = route.method.containing_service
        if service.name not in tags:
            tags[service.name] = _describe({"name": service.name}, builder, service.full_name)
        paths.setdefault(openapi_path(route), {})[method] = _operation(route, builder)
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": edgesense.__version__},
        "tags": list(tags.values()),
        "paths": paths,
        "components": {
            "schemas": dict(sorted(builder.components.items())),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An EdgeSense API key: `Authorization: Bearer <api key>`.",
                }
            },
        },
        "security": [{SECURITY_SCHEME: []}],
    }


def openapi_path(route: Route) -> str:
    """`/api/webhooks/{webhook_id}` -> `/api/webhooks/{webhookId}`."""
    template = route.template
    parts: list[str] = []
    index = 0
    for variable in template.variables:
        parts.extend(_segment_text(s) for s in template.segments[index : variable.start])
        parts.append("{" + _json_path(route, variable.name) + "}")
        index = variable.end
    parts.extend(_segment_text(s) for s in template.segments[index:])
    return "/" + "/".join(parts) + (f":{template.verb}" if template.verb else "")


def _segment_text(segment: Segment) -> str:
    return {"wildcard": "*", "deep": "**"}.get(segment.kind, segment.text)


def _json_path(route: Route, dotted: str) -> str:
    return ".".join(f.json_name for f in resolve(route.input, dotted))


def _operation(route: Route, builder: SchemaBuilder) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "tags": [route.method.containing_service.name],
    }
    parameters = [*_path_parameters(route, builder), *_query_parameters(route, builder)]
    if parameters:
        operation["parameters"] = parameters
    _describe(operation, builder, route.method.full_name, operation=True)
    if route.body:
        operation["requestBody"] = {
            "required": route.body == "*",
            "content": {"application/json": {"schema": _request_schema(route, builder)}},
        }
    answer = (
        builder.field(route.output.fields_by_name[route.response_body])
        if route.response_body
        else builder.message(route.output)
    )
    operation["responses"] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": answer}}},
        "default": {
            "description": "An error, as google.rpc.Status",
            "content": {"application/json": {"schema": ref(STATUS_SCHEMA_NAME)}},
        },
    }
    return operation


def _describe(
    item: dict[str, Any], builder: SchemaBuilder, name: str, *, operation: bool = False
) -> dict[str, Any]:
    comment = builder.comments.get(name)
    if comment:
        if operation:
            item["summary"] = comment.partition("\n\n")[0].replace("\n", " ")
        item["description"] = comment
    return item


def _request_schema(route: Route, builder: SchemaBuilder) -> Schema:
    if route.body != "*":
        return builder.field(route.input.fields_by_name[route.body])
    # Fields the path binds are not read from the body: leave them out of its schema.
    in_path = frozenset(p[0] for p in route.path_fields() if len(p) == 1)
    return builder.message(route.input, omit=in_path)


def _path_parameters(route: Route, builder: SchemaBuilder) -> Iterator[dict[str, Any]]:
    for variable in route.template.variables:
        leaf = resolve(route.input, variable.name)[-1]
        schema = builder.single(leaf)
        if variable.multi_segment:
            schema["pattern"] = _pattern(route.template, variable.start, variable.end)
        parameter = {"name": _json_path(route, variable.name), "in": "path", "required": True}
        yield _describe({**parameter, "schema": schema}, builder, leaf.full_name)


def _pattern(template: PathTemplate, start: int, end: int) -> str:
    regex = {"wildcard": "[^/]+", "deep": ".*"}
    parts = [regex.get(s.kind, re.escape(s.text)) for s in template.segments[start:end]]
    return "^" + "/".join(parts) + "$"


def _query_parameters(route: Route, builder: SchemaBuilder) -> Iterator[dict[str, Any]]:
    if route.body == "*":
        return
    bound = {*route.path_fields(), *([(route.body,)] if route.body else [])}
    stack: list[tuple[Descriptor, tuple[str, ...], str]] = [(route.input, (), "")]
    while stack:
        message, proto_path, json_prefix = stack.pop(0)
        for field in message.fields:
            path, name = (*proto_path, field.name), json_prefix + field.json_name
            if path in bound:
                continue
            if takes_text(field):
                schema = builder.field(field)
                parameter = {"name": name, "in": "query", "required": False}
                if "description" in schema:
                    parameter["description"] = schema.pop("description")
                parameter["schema"] = schema
                if field.is_repeated:
                    parameter.update(style="form", explode=True)
                yield parameter
            elif is_message(field) and not field.is_repeated and len(path) < 8:
                stack.append((message_type(field), path, name + "."))
