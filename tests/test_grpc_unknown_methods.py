"""Calls to methods no service has, with and without an API key: answered
UNIMPLEMENTED and counted under one fixed label, so random paths cannot grow
the metrics (before, the auth gate refused them first and each path became a
label of its own: 50 random paths, 50 labels)."""

from __future__ import annotations

import secrets
from typing import Any

import grpc
from prometheus_client import REGISTRY

from edgesense.common.auth import Authenticator, bearer_metadata
from edgesense.common.grpc_runtime import GRPC_LATENCY, GRPC_REQUESTS, UNKNOWN_METHOD, GrpcServer
from edgesense.v1 import devices_pb2, devices_pb2_grpc

PATHS = 50
KEY = "key-" + secrets.token_hex(8)


class DeviceConfig(devices_pb2_grpc.DeviceConfigServicer):
    """A real service for the gate to guard; no call here gets past the gate."""

    async def PushConfig(
        self, request: devices_pb2.PushConfigRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> devices_pb2.PushConfigResponse:
        return devices_pb2.PushConfigResponse()


def method_labels() -> set[str]:
    """Every `method` label value of the request counter and the latency histogram."""
    return {
        sample.labels["method"]
        for metric in (*GRPC_REQUESTS.collect(), *GRPC_LATENCY.collect())
        for sample in metric.samples
        if "method" in sample.labels
    }


def unknown_count() -> float:
    labels = {"method": UNKNOWN_METHOD, "code": "UNIMPLEMENTED"}
    return REGISTRY.get_sample_value("edgesense_grpc_requests_total", labels) or 0.0


async def call_code(channel: grpc.aio.Channel, path: str, metadata: Any) -> grpc.StatusCode:
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)
    try:
        await call(b"", metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_unknown_methods_leave_no_new_labels_with_or_without_a_key() -> None:
    servicer = DeviceConfig()
    server = GrpcServer(
        [lambda s: devices_pb2_grpc.add_DeviceConfigServicer_to_server(servicer, s)],
        [devices_pb2.DESCRIPTOR.services_by_name["DeviceConfig"].full_name],
        gate=Authenticator({KEY: "project-a"}),
    )
    port = await server.start("127.0.0.1:0")
    known = "/edgesense.v1.DeviceConfig/PushConfig"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            # The gate still refuses a known method without a key (its label is ours).
            assert await call_code(channel, known, None) == grpc.StatusCode.UNAUTHENTICATED
            before, unknown_before = method_labels(), unknown_count()
            codes = []
            for metadata in (None, bearer_metadata(KEY)):
                for _ in range(PATHS):
                    path = f"/probe{secrets.token_hex(6)}.Service/M{secrets.token_hex(6)}"
                    codes.append(await call_code(channel, path, metadata))
    finally:
        await server.stop(0)
    assert known in before
    assert method_labels() - before <= {UNKNOWN_METHOD}
    assert set(codes) == {grpc.StatusCode.UNIMPLEMENTED}
    assert unknown_count() - unknown_before == 2 * PATHS
