"""The exception tree of EdgeSense, and its one mapping to gRPC status codes.

    EdgesenseError
    ├── InvalidArgument      (names the offending field)
    ├── Unauthenticated
    ├── PermissionDenied
    ├── NotFound
    ├── AlreadyExists
    ├── FailedPrecondition
    ├── ResourceExhausted
    ├── Unavailable          (a database or peer that is down or locked)
    ├── ConfigurationError   (a process cannot start; never sent over gRPC)
    └── CannotListen         (a process cannot bind one of its addresses; exit 3)

Domain code raises these; `grpc_runtime.ErrorInterceptor` turns them into
gRPC statuses (with `google.rpc.BadRequest` details for InvalidArgument), and
the REST API turns gRPC statuses into HTTP codes with grpc-gateway's table.
Third-party errors are translated where they enter our code
(`raise Unavailable(...) from exc`).
"""

from __future__ import annotations

import grpc


class EdgesenseError(Exception):
    """Base of every error EdgeSense raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(EdgesenseError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Unauthenticated(EdgesenseError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(EdgesenseError):
    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(EdgesenseError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(EdgesenseError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(EdgesenseError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(EdgesenseError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(EdgesenseError):
    code = grpc.StatusCode.UNAVAILABLE


class ConfigurationError(EdgesenseError):
    """The process cannot start with this configuration; the message says why."""


class CannotListen(EdgesenseError):
    """An address a service must listen on is taken (or not ours to bind).

    The message names the address and the reason; `edgesense <service>` prints
    it as one line and exits with 3, as `edgesense receive` does.
    """

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")
        self.address = address
