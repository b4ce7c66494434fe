"""Fixtures for the REST API tests.

`things_pool`: a small service built in a private descriptor pool, with
nested, enum, repeated, oneof and multi-segment cases our own protos lack.
`registry_backend`: a real grpc.aio server on 127.0.0.1:0 with a recording
WebhookRegistry servicer. `api`/`client`: the REST API on port 0 in front
of it (Delivery pointed at a closed port) and an httpx client over sockets.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    field_mask_pb2,
    struct_pb2,
    timestamp_pb2,
)
from google.protobuf.any_pb2 import Any as AnyMessage
from google.rpc import error_details_pb2, status_pb2

from edgesense.api import RunningApi, start_api
from edgesense.common.grpc_runtime import server_options
from edgesense.common.message_limits import max_receive
from edgesense.v1 import registry_pb2, registry_pb2_grpc

F = descriptor_pb2.FieldDescriptorProto
Context = grpc.aio.ServicerContext[Any, Any]
THINGS = "gwtest.Things"
REGISTRY = registry_pb2.DESCRIPTOR.services_by_name["WebhookRegistry"].full_name


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    kind: int,
    *,
    repeated: bool = False,
    type_name: str = "",
    oneof: int | None = None,
) -> None:
    added = message.field.add(name=name, number=number, type=kind)
    if type_name:
        added.type_name = type_name
    added.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
    if oneof is not None:
        added.oneof_index = oneof


def _method(
    service: descriptor_pb2.ServiceDescriptorProto,
    name: str,
    rule: http_pb2.HttpRule | None,
    *,
    server_streaming: bool = False,
    input_type: str = ".gwtest.Thing",
) -> None:
    method = service.method.add(
        name=name,
        input_type=input_type,
        output_type=".gwtest.Thing",
        server_streaming=server_streaming,
    )
    if rule is not None:
        method.options.Extensions[annotations_pb2.http].CopyFrom(rule)


def build_things_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="gwtest/things.proto",
        package="gwtest",
        syntax="proto3",
        dependency=[
            "google/api/annotations.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/field_mask.proto",
            "google/protobuf/struct.proto",
        ],
    )
    color = file.enum_type.add(name="Color")
    for number, name in enumerate(("COLOR_UNSPECIFIED", "RED", "GREEN")):
        color.value.add(name=name, number=number)
    inner = file.message_type.add(name="Inner")
    _field(inner, "name", 1, F.TYPE_STRING)
    _field(inner, "count", 2, F.TYPE_INT64)
    _field(inner, "tags", 3, F.TYPE_STRING, repeated=True)
    _field(inner, "at", 4, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp")
    _field(inner, "sub", 5, F.TYPE_MESSAGE, type_name=".gwtest.Sub")
    labels = inner.nested_type.add(name="LabelsEntry")
    labels.options.map_entry = True
    _field(labels, "key", 1, F.TYPE_STRING)
    _field(labels, "value", 2, F.TYPE_STRING)
    _field(inner, "labels", 6, F.TYPE_MESSAGE, repeated=True, type_name=".gwtest.Inner.LabelsEntry")
    _field(inner, "extra", 7, F.TYPE_MESSAGE, type_name=".google.protobuf.Struct")
    sub = file.message_type.add(name="Sub")
    _field(sub, "word", 1, F.TYPE_STRING)
    _field(sub, "max_count", 2, F.TYPE_INT32)
    # An AIP-134 update: the resource as the body, and a mask.
    patch = file.message_type.add(name="PatchThingRequest")
    _field(patch, "parent", 1, F.TYPE_STRING)
    _field(patch, "inner", 2, F.TYPE_MESSAGE, type_name=".gwtest.Inner")
    _field(patch, "update_mask", 3, F.TYPE_MESSAGE, type_name=".google.protobuf.FieldMask")
    thing = file.message_type.add(name="Thing")
    thing.oneof_decl.add(name="choice")
    _field(thing, "parent", 1, F.TYPE_STRING)
    _field(thing, "inner", 2, F.TYPE_MESSAGE, type_name=".gwtest.Inner")
    _field(thing, "flag", 3, F.TYPE_BOOL)
    _field(thing, "ratio", 4, F.TYPE_DOUBLE)
    _field(thing, "numbers", 5, F.TYPE_INT32, repeated=True)
    _field(thing, "color", 6, F.TYPE_ENUM, type_name=".gwtest.Color")
    _field(thing, "a", 7, F.TYPE_STRING, oneof=0)
    _field(thing, "b", 8, F.TYPE_STRING, oneof=0)
    _field(thing, "blob", 9, F.TYPE_BYTES)
    _field(thing, "small", 10, F.TYPE_UINT32)
    _field(thing, "path", 11, F.TYPE_STRING)
    service = file.service.add(name="Things")
    get = http_pb2.HttpRule(get="/v1/{parent=projects/*/things/*}")
    get.additional_bindings.add(get="/v1/things/{inner.name}")
    _method(service, "GetThing", get)
    _method(
        service, "UpdateThing", http_pb2.HttpRule(patch="/v1/{parent=projects/*}", body="inner")
    )
    _method(
        service,
        "PatchThing",
        http_pb2.HttpRule(patch="/v1/{parent=patches/*}", body="inner"),
        input_type=".gwtest.PatchThingRequest",
    )
    _method(service, "CreateThing", http_pb2.HttpRule(post="/v1/{parent=**}:create", body="*"))
    _method(service, "Files", http_pb2.HttpRule(get="/v1/files/{path=**}"))
    _method(service, "Special", http_pb2.HttpRule(get="/v1/things/special"))
    _method(service, "Watch", http_pb2.HttpRule(get="/v1/watch"), server_streaming=True)
    _method(service, "Plain", None)
    return file


@pytest.fixture(scope="session")
def things_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for dependency in (
        descriptor_pb2.DESCRIPTOR,
        http_pb2.DESCRIPTOR,
        annotations_pb2.DESCRIPTOR,
        timestamp_pb2.DESCRIPTOR,
        field_mask_pb2.DESCRIPTOR,
        struct_pb2.DESCRIPTOR,
    ):
        pool.AddSerializedFile(dependency.serialized_pb)
    pool.AddSerializedFile(build_things_file().SerializeToString())
    return pool


@dataclass
class RecordingRegistry(registry_pb2_grpc.WebhookRegistryServicer):
    """Answers a few RPCs, records what it received, fails on request."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    # When hold_list is set, ListWebhooks signals `entered` and waits for `release`.
    hold_list: bool = False
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    list_answer: registry_pb2.ListWebhooksResponse = field(
        default_factory=registry_pb2.ListWebhooksResponse
    )

    def _record(self, request: Any, context: Context) -> None:
        received = context.invocation_metadata() or ()
        self.metadata.append({key: str(value) for key, value in received})
        self.requests.append(request)

    async def RegisterWebhook(
        self, request: registry_pb2.RegisterWebhookRequest, context: Context
    ) -> registry_pb2.RegisterWebhookResponse:
        self._record(request, context)
        return registry_pb2.RegisterWebhookResponse(webhook_id="wh_new", status="registered")

    async def ListWebhooks(
        self, request: registry_pb2.ListWebhooksRequest, context: Context
    ) -> registry_pb2.ListWebhooksResponse:
        self._record(request, context)
        if self.hold_list:
            self.entered.set()
            await self.release.wait()
        return self.list_answer

    async def GetWebhook(
        self, request: registry_pb2.GetWebhookRequest, context: Context
    ) -> registry_pb2.Webhook:
        self._record(request, context)
        if request.webhook_id == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "webhook missing not found")
        if request.webhook_id == "invalid":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "url: must be https",
                trailing_metadata=(("grpc-status-details-bin", bad_request_status()),),
            )
        if request.webhook_id == "crash":
            raise RuntimeError("secret internals at 10.0.0.7")
        webhook = registry_pb2.Webhook(
            webhook_id=request.webhook_id, url="https://example.com/hook", status="active"
        )
        webhook.events.append("device.data")
        webhook.created_at.FromSeconds(1_753_353_317)
        return webhook

    async def DeleteWebhook(
        self, request: registry_pb2.DeleteWebhookRequest, context: Context
    ) -> registry_pb2.DeleteWebhookResponse:
        self._record(request, context)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid API key")

    async def EnableWebhook(
        self, request: registry_pb2.EnableWebhookRequest, context: Context
    ) -> registry_pb2.EnableWebhookResponse:
        self._record(request, context)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")

    async def WatchWebhooks(
        self, request: registry_pb2.WatchWebhooksRequest, context: Context
    ) -> AsyncIterator[registry_pb2.WebhookChange]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")
        yield registry_pb2.WebhookChange()

    async def ReportDeliveryFailure(
        self, request: registry_pb2.ReportDeliveryFailureRequest, context: Context
    ) -> registry_pb2.ReportDeliveryFailureResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")

    async def UpdateWebhook(
        self, request: registry_pb2.UpdateWebhookRequest, context: Context
    ) -> registry_pb2.Webhook:
        self._record(request, context)
        return registry_pb2.Webhook(webhook_id=request.webhook_id, url=request.webhook.url)

    async def RotateWebhookSecret(
        self, request: registry_pb2.RotateWebhookSecretRequest, context: Context
    ) -> registry_pb2.Webhook:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")

    async def ListEventTypes(
        self, request: registry_pb2.ListEventTypesRequest, context: Context
    ) -> registry_pb2.ListEventTypesResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")


def bad_request_status() -> bytes:
    """A google.rpc.Status with a BadRequest detail, as the registry sends for bad input."""
    bad_request = error_details_pb2.BadRequest()
    bad_request.field_violations.add(field="url", description="must be https")
    detail = AnyMessage()
    detail.Pack(bad_request)
    status = status_pb2.Status(
        code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="url: must be https"
    )
    status.details.append(detail)
    serialized: bytes = status.SerializeToString()
    return serialized


@pytest.fixture
def bad_request_details() -> bytes:
    return bad_request_status()


@dataclass
class Backend:
    servicer: RecordingRegistry
    address: str


@pytest.fixture
async def registry_backend() -> AsyncIterator[Backend]:
    # The registry's own receive limit, so a request over it is refused as it would be.
    server = grpc.aio.server(options=server_options(max_receive(REGISTRY)))
    servicer = RecordingRegistry()
    registry_pb2_grpc.add_WebhookRegistryServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Backend(servicer, f"127.0.0.1:{port}")
    finally:
        await server.stop(None)


def closed_port_address() -> str:
    """An address nothing listens on: a port the OS gave us, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture
async def api(registry_backend: Backend) -> AsyncIterator[RunningApi]:
    backends = {
        "edgesense.v1.WebhookRegistry": registry_backend.address,
        "edgesense.v1.Delivery": closed_port_address(),
    }
    running = await start_api(backends, call_timeout=5.0)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def client(api: RunningApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=10.0, trust_env=False) as http:
        yield http
