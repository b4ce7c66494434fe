"""Prometheus metrics of the REST API: requests, latency, in flight, backend calls, connections.

Each app gets its own CollectorRegistry unless one is passed in, so several
REST APIs (tests, `edgesense up`) can live in one process. Label values are
bounded: the route label is the path template (never the raw path, which
would grow without limit), unknown HTTP methods count as OTHER, and backend
calls are labelled by gRPC method and status code name.
"""

from __future__ import annotations

from collections.abc import Sized
from enum import Enum

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

UNMATCHED_ROUTE = "unmatched"
CONTENT_TYPE = CONTENT_TYPE_LATEST
KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "edgesense_api_requests",
            "HTTP requests answered by the REST API",
            ("route", "method", "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgesense_api_request_duration_seconds",
            "Time to answer an HTTP request, gRPC call included",
            ("route", "method"),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "edgesense_api_requests_in_flight",
            "HTTP requests being transcoded right now",
            registry=self.registry,
        )
        self.backend_calls = Counter(
            "edgesense_api_backend_calls",
            "gRPC calls made to the backends, by method and status code",
            ("grpc_method", "grpc_code"),
            registry=self.registry,
        )

        self.connections = Gauge(
            "edgesense_api_connections",
            "HTTP connections open right now",
            registry=self.registry,
        )
        self.connections_closed = Counter(
            "edgesense_api_connections_closed",
            "Connections the REST API closed on its own: header_timeout, evicted (at the cap, "
            "to make room), over_capacity (refused at the cap, every connection busy)",
            ("reason",),
            registry=self.registry,
        )

    def track_connections(self, connections: Sized) -> None:
        self.connections.set_function(lambda: len(connections))

    def connection_closed(self, reason: Enum) -> None:
        self.connections_closed.labels(reason=reason.value).inc()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "OTHER"
        self.requests.labels(route=route, method=method, code=str(status)).inc()
        self.latency.labels(route=route, method=method).observe(seconds)

    def backend_call(self, grpc_method: str, code_name: str) -> None:
        self.backend_calls.labels(grpc_method=grpc_method, grpc_code=code_name).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
