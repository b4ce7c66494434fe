"""Errors as `google.rpc.Status` JSON, and the one gRPC code -> HTTP status table.

Every answer that is not a success is a TranscodeError rendered as
`{"code": <gRPC code number>, "message": ..., "details": [...]}`. The HTTP
status follows from the gRPC code with grpc-gateway's table
(runtime/errors.go HTTPStatusFromCode); the routing answers 405 and 413 set
theirs explicitly, as grpc-gateway's routing error handler does.

A backend's error keeps its code and message; details attached as
`grpc-status-details-bin` trailing metadata (a serialized google.rpc.Status)
are rendered as JSON with "@type". For codes that mean "the server failed"
(UNKNOWN, INTERNAL, DATA_LOSS, UNAVAILABLE) the message is replaced by a
fixed text, because grpc puts exception texts and internal addresses there;
the original is logged.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.any_pb2 import Any as AnyMessage
from google.rpc import status_pb2

# Imported for its side effect: BadRequest, ErrorInfo, ... join the default
# pool, so details of those types render as JSON.
import google.rpc.error_details_pb2  # noqa: F401  # isort: skip

log = logging.getLogger(__name__)

HTTP_STATUS_BY_CODE: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

_SERVER_FAULTS = {
    grpc.StatusCode.UNKNOWN: "internal error in {service}",
    grpc.StatusCode.INTERNAL: "internal error in {service}",
    grpc.StatusCode.DATA_LOSS: "internal error in {service}",
    grpc.StatusCode.UNAVAILABLE: "{service} is unavailable, try again later",
}

DETAILS_METADATA_KEY = "grpc-status-details-bin"


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status grpc-gateway answers for a gRPC status code."""
    return HTTP_STATUS_BY_CODE.get(code, 500)


def code_number(code: grpc.StatusCode) -> int:
    number = code.value[0]
    assert isinstance(number, int)
    return number


class TranscodeError(Exception):
    """An answer that is not a success, with its google.rpc.Status body."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or []
        self.status = http_status(code) if status is None else status
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        status = {"code": code_number(self.code), "message": self.message, "details": self.details}
        return json.dumps(status, ensure_ascii=False).encode()


def invalid_argument(message: str, *, status: int | None = None) -> TranscodeError:
    return TranscodeError(grpc.StatusCode.INVALID_ARGUMENT, message, status=status)


BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


def bad_request(field: str, description: str, *, status: int | None = None) -> TranscodeError:
    """INVALID_ARGUMENT naming `field` with a google.rpc.BadRequest detail, as the registry's."""
    violation = {"field": field, "description": description}
    detail = {"@type": BAD_REQUEST_TYPE, "fieldViolations": [violation]}
    message = f"{field}: {description}" if field else description
    return TranscodeError(
        grpc.StatusCode.INVALID_ARGUMENT, message, details=[detail], status=status
    )


def from_rpc_error(error: grpc.aio.AioRpcError, service: str) -> TranscodeError:
    """Translate a failed backend call into the answer the HTTP client gets."""
    code = error.code()
    message = error.details() or ""
    rich = rich_status(error.trailing_metadata())
    details = [render_detail(any_detail) for any_detail in rich.details] if rich else []
    if code in _SERVER_FAULTS:
        log.warning("%s answered %s: %s", service, code.name, message)
        message = _SERVER_FAULTS[code].format(service=service)
    return TranscodeError(code, message, details=details)


def rich_status(metadata: Any) -> status_pb2.Status | None:
    """The google.rpc.Status a backend attached to its trailing metadata, if any."""
    for key, value in metadata or ():
        if key != DETAILS_METADATA_KEY or not isinstance(value, bytes):
            continue
        try:
            return status_pb2.Status.FromString(value)
        except Exception:  # a malformed trailer must not hide the error itself
            log.warning("ignoring malformed %s trailer", DETAILS_METADATA_KEY)
            return None
    return None


def render_detail(detail: AnyMessage) -> dict[str, Any]:
    """An Any as proto JSON (`{"@type": ..., fields}`), or its raw bytes if unknown."""
    try:
        return json_format.MessageToDict(detail, always_print_fields_with_no_presence=True)
    except (TypeError, KeyError, json_format.Error):
        return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}
