"""Routes read from the `google.api.http` annotations of the service descriptors.

Nothing here names an RPC: each method of the given services that carries an
HttpRule (plus its additional_bindings) becomes one Route per binding.
Methods without a rule, and streaming methods, are not exposed. A rule that
cannot work (bad template, a variable or body naming a missing or unsuitable
field) stops the API at start with a ConfigurationError that names it.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, MethodDescriptor

import edgesense.v1
from edgesense.api.fields import FieldValueError, resolve, takes_text
from edgesense.api.templates import PathTemplate, TemplateSyntaxError, parse_template
from edgesense.common.errors import ConfigurationError

log = logging.getLogger(__name__)


def load_api_modules() -> None:
    """Import every generated `*_pb2` module of edgesense.v1: importing them is
    what puts their descriptors (and http annotations) in the default pool, so
    a new .proto file needs no change here."""
    for module in pkgutil.iter_modules(edgesense.v1.__path__):
        if module.name.endswith("_pb2"):
            importlib.import_module(f"edgesense.v1.{module.name}")


load_api_modules()

_PATTERN_METHODS = {
    "get": "GET",
    "put": "PUT",
    "post": "POST",
    "delete": "DELETE",
    "patch": "PATCH",
}


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one unary RPC."""

    http_method: str
    template: PathTemplate
    body: str  # "" (no body), "*" (the whole message) or a top-level field name
    response_body: str  # "" (the whole response) or a top-level field name
    method: MethodDescriptor
    binding: int  # 0 for the rule itself, 1.. for its additional_bindings

    @property
    def service(self) -> str:
        return str(self.method.containing_service.full_name)

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.method.name}"

    @property
    def input(self) -> Descriptor:
        return self.method.input_type

    @property
    def output(self) -> Descriptor:
        return self.method.output_type

    @property
    def operation_id(self) -> str:
        suffix = str(self.binding + 1) if self.binding else ""
        return f"{self.method.containing_service.name}_{self.method.name}{suffix}"

    def path_fields(self) -> list[tuple[str, ...]]:
        """Field paths bound by the template, as proto names."""
        return [tuple(f.name for f in resolve(self.input, v.name)) for v in self.template.variables]


def load_routes(
    services: Iterable[str], pool: descriptor_pool.DescriptorPool | None = None
) -> list[Route]:
    """Every HTTP binding of the named services, most specific template first."""
    pool = pool or descriptor_pool.Default()
    routes: list[Route] = []
    seen: dict[tuple[str, str], str] = {}
    for name in services:
        try:
            service = pool.FindServiceByName(name)
        except KeyError:
            raise ConfigurationError(f"api: no service {name!r} in the descriptors") from None
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            if method.client_streaming or method.server_streaming:
                log.warning("api: %s is streaming and is not transcoded", method.full_name)
                continue
            rule = options.Extensions[annotations_pb2.http]
            for binding, each in enumerate([rule, *rule.additional_bindings]):
                route = _route(method, each, binding)
                key = (route.http_method, route.template.source)
                if key in seen:
                    raise ConfigurationError(
                        f"api: {method.full_name} and {seen[key]} both bind {' '.join(key)}"
                    )
                seen[key] = method.full_name
                routes.append(route)
    routes.sort(key=lambda r: r.template.specificity())
    return routes


def _route(method: MethodDescriptor, rule: http_pb2.HttpRule, binding: int) -> Route:
    where = f"api: {method.full_name} http rule"
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise ConfigurationError(f"{where} has no get/put/post/delete/patch/custom path")
    if pattern == "custom":
        http_method, path = rule.custom.kind.upper(), rule.custom.path
    else:
        http_method, path = _PATTERN_METHODS[pattern], getattr(rule, pattern)
    try:
        template = parse_template(path)
    except TemplateSyntaxError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    for variable in template.variables:
        try:
            fields = resolve(method.input_type, variable.name)
        except FieldValueError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        if fields[-1].is_repeated or not takes_text(fields[-1]):
            raise ConfigurationError(f"{where}: {variable.name} must be a singular scalar")
    for kind, field_name in (("body", rule.body), ("response_body", rule.response_body)):
        message = method.input_type if kind == "body" else method.output_type
        if field_name not in ("", "*") and field_name not in message.fields_by_name:
            raise ConfigurationError(f"{where}: {kind} names no field of {message.full_name}")
    if rule.response_body == "*":
        raise ConfigurationError(f"{where}: response_body cannot be '*'")
    return Route(http_method, template, rule.body, rule.response_body, method, binding)
