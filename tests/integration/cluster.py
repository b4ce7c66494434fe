"""Registry, delivery and the REST API as real servers on free ports, in-process,
plus helpers to publish events the way the bridge does."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx

from edgesense.api.server import RunningApi
from edgesense.common.auth import bearer_metadata
from edgesense.common.config import Settings
from edgesense.common.ids import new_id
from edgesense.delivery.server import RunningDelivery
from edgesense.registry.server import RunningRegistry
from edgesense.v1 import (
    delivery_pb2,
    delivery_pb2_grpc,
    events_pb2,
    registry_pb2,
    registry_pb2_grpc,
)
from tests.support.waiting import eventually

_batches = itertools.count(1)


def reading(
    project: str = "project-a",
    device: str = "edge-node-321",
    values: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> events_pb2.Event:
    event = events_pb2.Event(
        event_id=event_id or new_id("evt"),
        project_id=project,
        gateway_id="gw-1",
        device_id=device,
    )
    event.timestamp.FromDatetime(datetime(2025, 7, 24, 10, 35, 17, tzinfo=UTC))
    event.received_at.GetCurrentTime()
    event.readings.values.update(values or {"temperature": 75.3, "humidity": 42.5})
    return event


@dataclass
class Cluster:
    settings: Settings
    keys: dict[str, str]
    registry: RunningRegistry
    delivery: RunningDelivery
    api: RunningApi
    http: httpx.AsyncClient

    def auth(self, project: str = "project-a") -> dict[str, str]:
        key = next(k for k, p in self.keys.items() if p == project)
        return {"Authorization": f"Bearer {key}"}

    async def register(
        self,
        url: str,
        events: Sequence[str] = ("device.data",),
        secret: str = "your_shared_secret",
        project: str = "project-a",
        **extra: object,
    ) -> str:
        body = {"url": url, "events": list(events), "secret": secret, **extra}
        answer = await self.http.post(
            "/api/webhooks/register", json=body, headers=self.auth(project)
        )
        assert answer.status_code == 200, answer.text
        webhook_id = str(answer.json()["webhookId"])
        await self.known_to_delivery(webhook_id)
        return webhook_id

    async def known_to_delivery(self, webhook_id: str, status: str = "active") -> None:
        """Wait until delivery's index has the webhook (it follows the registry's stream)."""

        def known() -> bool:
            target = self.delivery.index.get(webhook_id)
            return target is not None and target.status == status

        await eventually(known, 10, f"delivery's index to have {webhook_id} {status}")

    async def publish(
        self, events: Sequence[events_pb2.Event], batch: int = 500
    ) -> list[delivery_pb2.PublishResponse]:
        """Publish over one Publish stream, as the bridge does; returns the confirmations."""
        requests = [
            delivery_pb2.PublishRequest(batch_id=next(_batches), events=list(events[i : i + batch]))
            for i in range(0, len(events), batch)
        ]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.delivery.port}") as channel:
            stub = delivery_pb2_grpc.DeliveryStub(channel)
            call = stub.Publish(
                iter(requests), metadata=bearer_metadata(self.settings.service_token())
            )
            return [answer async for answer in call]

    async def deliveries(
        self, webhook_id: str, project: str = "project-a", **query: str | int
    ) -> list[dict[str, Any]]:
        answer = await self.http.get(
            f"/api/webhooks/{webhook_id}/deliveries", params=query, headers=self.auth(project)
        )
        assert answer.status_code == 200, answer.text
        return list(answer.json()["deliveries"])

    async def wait_deliveries(
        self, webhook_id: str, status: str, count: int = 1, seconds: float = 20.0
    ) -> list[dict[str, Any]]:
        """Poll the REST API until `count` deliveries of the webhook have `status`."""
        found: list[dict[str, Any]] = []

        async def enough() -> bool:
            nonlocal found
            found = await self.deliveries(webhook_id, status=status, pageSize=500)
            return len(found) >= count

        await eventually(enough, seconds, f"{count} {status} deliveries", interval=0.05)
        return found

    async def webhook(self, webhook_id: str) -> dict[str, Any]:
        answer = await self.http.get(f"/api/webhooks/{webhook_id}", headers=self.auth())
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


def random_secret() -> str:
    return secrets.token_urlsafe(16)


async def register_large(
    stub: registry_pb2_grpc.WebhookRegistryAsyncStub, key: str, n: int
) -> None:
    """`n` webhooks of the largest size registration allows (about 150 KB each)."""
    for index in range(n):
        devices = [f"{index:03d}-{d:04d}-".ljust(128, "x") for d in range(1000)]
        await stub.RegisterWebhook(
            registry_pb2.RegisterWebhookRequest(
                url=f"https://example.com/{'p' * 2000}/{index}",
                events=["device.data", "device.alert", "device.status", "config.update"],
                secret="s3cret",
                description="d" * 1000,
                device_ids=devices,
            ),
            metadata=bearer_metadata(key),
        )
