"""Finds the route for an HTTP method and raw path, or the 404/405 answer.

Routes are tried most specific template first (literal segments before
wildcards), so `/v1/things/special` wins over `/v1/things/{id}` whatever the
order of the RPCs in the proto. A path that matches only routes of other
methods answers 405 with an Allow header, as grpc-gateway's routing error
handler does (code UNIMPLEMENTED, "Method Not Allowed"); no match at all is
404 (code NOT_FOUND).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from edgesense.api.rules import Route
from edgesense.api.status import TranscodeError, invalid_argument
from edgesense.api.templates import MalformedPathError


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    path_values: dict[str, str]


class Router:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(sorted(routes, key=lambda r: r.template.specificity()))

    def match(self, http_method: str, raw_path: str) -> RouteMatch:
        """The matching route and its decoded path variables; raises TranscodeError."""
        allowed: list[str] = []
        for route in self.routes:
            try:
                values = route.template.match(raw_path)
            except MalformedPathError as exc:
                if route.http_method == http_method:
                    raise invalid_argument(str(exc)) from None
                values = {}
            if values is None:
                continue
            if route.http_method == http_method:
                return RouteMatch(route, values)
            if route.http_method not in allowed:
                allowed.append(route.http_method)
        if allowed:
            raise TranscodeError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"Method Not Allowed: {http_method} {raw_path} accepts {', '.join(allowed)}",
                status=405,
                headers={"Allow": ", ".join(allowed)},
            )
        raise TranscodeError(
            grpc.StatusCode.NOT_FOUND, f"Not Found: no route for {http_method} {raw_path}"
        )
