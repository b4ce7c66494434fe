"""A bug that every call runs into: each call answers INTERNAL, and the log
gets one traceback, not one per call."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest

from edgesense.common.grpc_runtime import GrpcServer
from edgesense.v1 import devices_pb2, devices_pb2_grpc

CALLS = 300


class Bug(Exception):
    """Raised by the servicer below only, so the throttle's key is this test's own."""


class BrokenDeviceConfig(devices_pb2_grpc.DeviceConfigServicer):
    async def PushConfig(
        self, request: devices_pb2.PushConfigRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> devices_pb2.PushConfigResponse:
        raise Bug(f"bug hit by {request.device_id}")


async def test_internal_errors_answer_internal_and_log_one_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="edgesense.common.grpc_runtime")
    server = GrpcServer(
        [lambda s: devices_pb2_grpc.add_DeviceConfigServicer_to_server(BrokenDeviceConfig(), s)],
        [devices_pb2.DESCRIPTOR.services_by_name["DeviceConfig"].full_name],
    )
    port = await server.start("127.0.0.1:0")
    codes = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = devices_pb2_grpc.DeviceConfigStub(channel)
            for n in range(CALLS):
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await stub.PushConfig(
                        devices_pb2.PushConfigRequest(gateway_id="gw", device_id=f"d{n}")
                    )
                codes.append((failed.value.code(), failed.value.details()))
    finally:
        await server.stop(0)
    assert codes == [(grpc.StatusCode.INTERNAL, "internal error")] * CALLS
    records = [r for r in caplog.records if r.name == "edgesense.common.grpc_runtime"]
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert record.getMessage() == "unexpected error in /edgesense.v1.DeviceConfig/PushConfig"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Bug)
