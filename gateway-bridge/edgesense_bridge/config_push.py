"""`edgesense.v1.DeviceConfig`: configuration pushed to a device through its gateway.

`PushConfig` publishes the configuration object as JSON, QoS 1, to
`{prefix}/{projectId}/{gatewayId}/{deviceId}/config/set` (the project is the
API key's) and answers once the broker acknowledged it. The gateway's
confirmation on `…/{deviceId}/config` comes back as a `config.update` event
through the ordinary path. If the broker connection drops before its PUBACK
the call answers UNAVAILABLE, although the message may still go out: pushing
a configuration again is harmless.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import grpc
from google.protobuf import json_format

from edgesense.common.auth import Authenticator
from edgesense.common.errors import EdgesenseError, FailedPrecondition, InvalidArgument
from edgesense.common.grpc_status import status_code
from edgesense.v1 import devices_pb2, devices_pb2_grpc
from edgesense_bridge import metrics
from edgesense_bridge.topics import ID_RULE, TopicLayout, is_valid_id

SERVICE_NAME = devices_pb2.DESCRIPTOR.services_by_name["DeviceConfig"].full_name
JSON_CONTENT_TYPE = "application/json"


class Publisher(Protocol):
    async def publish(self, topic: str, payload: bytes, content_type: str) -> None: ...


def config_payload(config: Any) -> bytes:
    """The Struct as compact JSON (the object a gateway applies)."""
    return json.dumps(
        json_format.MessageToDict(config), separators=(",", ":"), ensure_ascii=False
    ).encode()


class DeviceConfigService(devices_pb2_grpc.DeviceConfigServicer):
    def __init__(
        self,
        auth: Authenticator,
        publisher: Publisher,
        layout: TopicLayout,
        max_payload_bytes: int,
    ) -> None:
        self._auth = auth
        self._publisher = publisher
        self._layout = layout
        self._max_payload_bytes = max_payload_bytes

    async def PushConfig(
        self,
        request: devices_pb2.PushConfigRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> devices_pb2.PushConfigResponse:
        try:
            topic = await self._push(request, context)
        except EdgesenseError as exc:
            metrics.CONFIG_PUSHES.labels(status_code(exc).name.lower()).inc()
            raise
        metrics.CONFIG_PUSHES.labels("published").inc()
        return devices_pb2.PushConfigResponse(topic=topic, status="published")

    async def _push(
        self,
        request: devices_pb2.PushConfigRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> str:
        project = self._auth.project(context.invocation_metadata())
        for field, value in (("gatewayId", request.gateway_id), ("deviceId", request.device_id)):
            if not is_valid_id(value):
                raise InvalidArgument(field, f"{value[:40]!r} is not an id ({ID_RULE})")
        if not request.HasField("config"):
            raise InvalidArgument("config", "is required (a JSON object)")
        if not is_valid_id(project):
            raise FailedPrecondition(f"project {project[:40]!r} cannot be a topic level")
        payload = config_payload(request.config)
        if len(payload) > self._max_payload_bytes:
            raise InvalidArgument("config", f"is larger than {self._max_payload_bytes} bytes")
        topic = self._layout.config_set(project, request.gateway_id, request.device_id)
        await self._publisher.publish(topic, payload, JSON_CONTENT_TYPE)
        return topic
