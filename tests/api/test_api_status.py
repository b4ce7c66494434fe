"""The gRPC -> HTTP status table and google.rpc.Status rendering."""

from __future__ import annotations

import json

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from edgesense.api.status import HTTP_STATUS_BY_CODE, TranscodeError, from_rpc_error, http_status

GRPC_GATEWAY_TABLE = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}


def test_table_is_grpc_gateways() -> None:
    assert {code.name: status for code, status in HTTP_STATUS_BY_CODE.items()} == GRPC_GATEWAY_TABLE
    assert set(HTTP_STATUS_BY_CODE) == set(grpc.StatusCode)


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_http_status_follows_the_table(code: grpc.StatusCode) -> None:
    assert http_status(code) == GRPC_GATEWAY_TABLE[code.name]


def test_error_body_is_a_status() -> None:
    error = TranscodeError(grpc.StatusCode.NOT_FOUND, "webhook wh_1 not found")
    assert error.status == 404
    assert json.loads(error.body()) == {
        "code": 5,
        "message": "webhook wh_1 not found",
        "details": [],
    }


def _rpc_error(
    code: grpc.StatusCode, message: str, *trailing: tuple[str, str | bytes]
) -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(*trailing), details=message)


def test_backend_details_render_with_type(bad_request_details: bytes) -> None:
    rpc_error = _rpc_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "url: must be https",
        ("grpc-status-details-bin", bad_request_details),
    )
    error = from_rpc_error(rpc_error, "edgesense.v1.WebhookRegistry")
    assert (error.status, error.message) == (400, "url: must be https")
    assert error.details == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "url", "description": "must be https", "reason": ""}],
        }
    ]


def test_malformed_details_trailer_is_ignored() -> None:
    rpc_error = _rpc_error(
        grpc.StatusCode.NOT_FOUND, "gone", ("grpc-status-details-bin", b"\xff\xff\xff")
    )
    error = from_rpc_error(rpc_error, "svc")
    assert (error.status, error.message, error.details) == (404, "gone", [])


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.UNAVAILABLE, 503),
    ],
)
def test_server_fault_messages_are_not_passed_on(code: grpc.StatusCode, status: int) -> None:
    error = from_rpc_error(_rpc_error(code, "Exception at 10.0.0.7:5432"), "edgesense.v1.Delivery")
    assert error.status == status
    assert "10.0.0.7" not in error.message
    assert "edgesense.v1.Delivery" in error.message
