"""What an EdgeSense error becomes on the wire: the one mapping from the
exception tree (`edgesense.common.errors`) to gRPC status codes.

The exceptions themselves know nothing of gRPC, so that the rules that raise
them (validation, the network policy, paging) load no transport library.
`grpc_runtime.ErrorInterceptor` answers with `status_code(error)` and
`status_trailers(error)`; anything else that reports an error by its status
(the bridge's config-push metric) asks `status_code` too.

An error class not named here takes the code of its nearest named ancestor
(the bridge's `MqttUnavailable` is UNAVAILABLE); one with none is INTERNAL.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from edgesense.common import errors

STATUS_CODES: Mapping[type[errors.EdgesenseError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}

DETAILS_KEY = "grpc-status-details-bin"


def status_code(error: errors.EdgesenseError) -> grpc.StatusCode:
    """The status `error` is answered with: its class's, or its nearest ancestor's."""
    for cls in type(error).__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def status_trailers(error: errors.EdgesenseError) -> tuple[tuple[str, bytes], ...]:
    """`google.rpc.Status` details for an error (a BadRequest naming the field)."""
    if not isinstance(error, errors.InvalidArgument):
        return ()
    violation = error_details_pb2.BadRequest.FieldViolation(
        field=error.field, description=error.problem
    )
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=error.message, details=[detail]
    )
    return ((DETAILS_KEY, status.SerializeToString()),)
