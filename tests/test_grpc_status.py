"""The one mapping from the exception tree to gRPC status codes."""

from __future__ import annotations

import inspect

import grpc

from edgesense.common import errors
from edgesense.common.grpc_status import STATUS_CODES, status_code, status_trailers
from edgesense_bridge.errors import DeliveryStreamError, MqttUnavailable

# Errors that never reach a gRPC client: a process that cannot start.
NOT_SENT = {errors.EdgesenseError, errors.ConfigurationError, errors.CannotListen}


def test_every_error_a_call_can_end_in_has_a_status() -> None:
    """A new error class must be given its status here, or it would answer INTERNAL."""
    tree = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.EdgesenseError)
    }
    assert set(STATUS_CODES) == tree - NOT_SENT


def test_a_subclass_takes_its_nearest_ancestors_status() -> None:
    assert status_code(MqttUnavailable("broker down")) == grpc.StatusCode.UNAVAILABLE
    assert status_code(errors.InvalidArgument("url", "must be https")) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert status_code(DeliveryStreamError(grpc.StatusCode.UNAVAILABLE, "gone")) == (
        grpc.StatusCode.INTERNAL
    )
    assert status_code(errors.ConfigurationError("no key")) == grpc.StatusCode.INTERNAL


def test_only_invalid_argument_carries_details() -> None:
    ((key, value),) = status_trailers(errors.InvalidArgument("url", "must be https"))
    assert key == "grpc-status-details-bin"
    assert b"must be https" in value
    assert status_trailers(errors.NotFound("webhook wh_1 not found")) == ()
