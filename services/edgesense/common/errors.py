"""The exception tree of EdgeSense: plain Python, no transport library.

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

Domain code raises these. Which gRPC status each one becomes is the gRPC
layer's business, not the domain's: `grpc_status.status_code` is the one
mapping, and `grpc_runtime.ErrorInterceptor` applies it (with
`google.rpc.BadRequest` details for InvalidArgument); the REST API turns gRPC
statuses into HTTP codes with grpc-gateway's table. So validation, the
network policy and every other rule that raises can be imported without gRPC
(`make check` holds this).
Third-party errors are translated where they enter our code
(`raise Unavailable(...) from exc`).
"""

from __future__ import annotations


class EdgesenseError(Exception):
    """Base of every error EdgeSense raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(EdgesenseError):
    """A request field is wrong; `field` names it, `problem` says how."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Unauthenticated(EdgesenseError):
    """No credentials, or credentials we do not know."""


class PermissionDenied(EdgesenseError):
    """Known credentials that may not do this (another project's webhook, an internal method)."""


class NotFound(EdgesenseError):
    """The named webhook or delivery does not exist (for this project)."""


class AlreadyExists(EdgesenseError):
    """Something with this id exists already."""


class FailedPrecondition(EdgesenseError):
    """The request is well formed but the state does not allow it now."""


class ResourceExhausted(EdgesenseError):
    """A limit is reached (the outbox is full, too many webhooks): slow down."""


class Unavailable(EdgesenseError):
    """A database or peer that is down or locked: try again later."""


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
