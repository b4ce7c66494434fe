"""The Devices gRPC servicer: ListDevices and GetDevice, over the devices table."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import struct_pb2

from edgesense.common.auth import Authenticator
from edgesense.common.errors import InvalidArgument, NotFound
from edgesense.common.events import DEVICE_ID
from edgesense.common.paging import PageTokens, fit_page, page_size
from edgesense.delivery.devices.view import STATUSES, DeviceState
from edgesense.delivery.send.payload import event_payload
from edgesense.delivery.service import timestamp
from edgesense.delivery.store.devices import DeviceStore
from edgesense.v1 import devices_pb2, devices_pb2_grpc, events_pb2

Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_ID_CHARS = 128
# A recent event's payload is shown up to this size as a protobuf Struct.
MAX_EVENT_PAYLOAD_BYTES = 2 * 1024


def device_message(state: DeviceState) -> devices_pb2.Device:
    device = devices_pb2.Device(
        device_id=state.device_id,
        gateway_id=state.gateway_id,
        kind=state.kind,
        status=state.status,
        last_event=state.last_event,
        last_readings_omitted=state.readings_omitted,
    )
    device.last_seen_at.CopyFrom(timestamp(state.last_seen_at))
    device.first_seen_at.CopyFrom(timestamp(state.first_seen_at))
    device.last_event_at.CopyFrom(timestamp(state.last_event_at))
    if state.status_changed_at is not None:
        device.status_changed_at.CopyFrom(timestamp(state.status_changed_at))
    if state.readings is not None:
        device.last_readings.ParseFromString(state.readings)
    if state.readings_at is not None:
        device.last_readings_at.CopyFrom(timestamp(state.readings_at))
    return device


def recent_event(
    event_id: str, name: str, at: float, stored: bytes | None
) -> devices_pb2.DeviceEvent:
    """One of a device's recent events; its payload from the stored event
    when that is still stored and small enough."""
    recent = devices_pb2.DeviceEvent(event_id=event_id, event=name)
    recent.timestamp.CopyFrom(timestamp(at))
    if stored is None:
        recent.payload_omitted = True
        return recent
    payload = struct_pb2.Struct()
    payload.update(event_payload(events_pb2.Event.FromString(stored)))
    if payload.ByteSize() > MAX_EVENT_PAYLOAD_BYTES:
        recent.payload_omitted = True
    else:
        recent.payload.CopyFrom(payload)
    return recent


def _check_id(field: str, value: str) -> None:
    if value and (len(value) > MAX_ID_CHARS or not DEVICE_ID.fullmatch(value)):
        raise InvalidArgument(
            field, "must be 1 to 128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit"
        )


class DevicesService(devices_pb2_grpc.DevicesServicer):
    def __init__(self, store: DeviceStore, auth: Authenticator, page_tokens: PageTokens) -> None:
        self.store = store
        self.auth = auth
        self.page_tokens = page_tokens

    async def ListDevices(
        self, request: devices_pb2.ListDevicesRequest, context: Context
    ) -> devices_pb2.ListDevicesResponse:
        project = self.auth.project(context.invocation_metadata())
        if request.status and request.status not in STATUSES:
            raise InvalidArgument("status", f"must be one of {', '.join(STATUSES)}")
        _check_id("gatewayId", request.gateway_id)
        size = page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        scope = ("devices", project, request.status, request.gateway_id)
        after = self.page_tokens.read(request.page_token, scope)
        rows = await self.store.page(project, request.status, request.gateway_id, after, size + 1)
        page, more = fit_page(rows, device_message, size)
        totals = await self.store.totals(project)
        response = devices_pb2.ListDevicesResponse(
            devices=page,
            online=totals["online"],
            offline=totals["offline"],
            unknown=totals["unknown"],
        )
        if more:
            response.next_page_token = self.page_tokens.issue(scope, page[-1].device_id)
        return response

    async def GetDevice(
        self, request: devices_pb2.GetDeviceRequest, context: Context
    ) -> devices_pb2.DeviceDetail:
        project = self.auth.project(context.invocation_metadata())
        _check_id("deviceId", request.device_id)
        state = await self.store.one(project, request.device_id) if request.device_id else None
        if state is None:
            raise NotFound(f"device {request.device_id} not found")
        stored = await self.store.events(project, [r.event_id for r in state.recent])
        return devices_pb2.DeviceDetail(
            device=device_message(state),
            recent_events=[
                recent_event(r.event_id, r.event, r.at, stored.get(r.event_id))
                for r in state.recent
            ],
        )
