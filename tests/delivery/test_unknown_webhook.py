"""A claimed delivery whose webhook this process does not know: a young one
waits for the registry's stream, an old one is failed as deleted; a failure
of ours uses no attempt. A real Dispatcher runs on a real SQLite outbox and
claims the rows itself; the tests read the outcomes back from the outbox."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import pytest

from edgesense.delivery.claim.dispatcher import Dispatcher
from edgesense.delivery.record.policy import (
    UNKNOWN_WEBHOOK_GRACE_SECONDS,
    UNKNOWN_WEBHOOK_RETRY_SECONDS,
    RetryPolicy,
)
from edgesense.delivery.send.attempt import AttemptResult, Sender
from edgesense.delivery.send.http_sender import HttpSender
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.store.rows import FAILED, PENDING, StoredEvent
from edgesense.delivery.webhooks.index import ACTIVE, Target, WebhookIndex
from edgesense.v1 import events_pb2
from tests.delivery.conftest import new_delivery
from tests.support.waiting import eventually


async def _unused(*_args: object) -> None:
    raise AssertionError("no delivery should be exhausted here")


def dispatcher_for(outbox: Outbox, index: WebhookIndex, sender: Sender) -> Dispatcher:
    return Dispatcher(
        outbox,
        index,
        sender,
        RetryPolicy(),
        owner="me",
        lease_seconds=30,
        concurrency=4,
        per_target=2,
        on_exhausted=_unused,
    )


async def running(dispatcher: Dispatcher, until: Callable[[], Awaitable[bool]]) -> None:
    """Run the dispatcher until `until` holds, then stop it (its outcomes are
    written by then)."""
    task = asyncio.create_task(dispatcher.run())
    try:
        await eventually(until, 10, "the outcomes")
    finally:
        dispatcher.stop()
        await task


async def status_of(outbox: Outbox, delivery_id: str) -> tuple[str, str | None]:
    found = await outbox.one("p", delivery_id)
    assert found is not None
    return found[0].status, found[0].status_reason


@pytest.mark.parametrize(
    ("age", "status", "reason"),
    [
        (1.0, PENDING, "webhook not known yet"),
        (UNKNOWN_WEBHOOK_GRACE_SECONDS + 5, FAILED, "webhook deleted"),
    ],
)
async def test_unknown_webhook(outbox: Outbox, age: float, status: str, reason: str) -> None:
    created = time.time() - age
    await outbox.accept(
        [StoredEvent("evt_1", "p", b"")],
        [new_delivery(1, "wh_elsewhere", due=created)],
        created,
    )
    index = WebhookIndex()
    index.replace([])  # loaded, and without wh_elsewhere
    dispatcher = dispatcher_for(outbox, index, HttpSender())

    async def recorded() -> bool:
        return await status_of(outbox, "dlv_1") == (status, reason)

    started = time.time()
    await running(dispatcher, recorded)
    found = await outbox.one("p", "dlv_1")
    assert found is not None
    row, attempts = found
    assert (row.status, row.status_reason) == (status, reason)
    assert attempts == []
    if status == PENDING:  # due again shortly, and not claimable before
        due = row.next_attempt_at
        assert started + UNKNOWN_WEBHOOK_RETRY_SECONDS <= due
        assert due <= time.time() + UNKNOWN_WEBHOOK_RETRY_SECONDS
        assert await outbox.claim("me", due - 0.001, 30, 10) == []
        assert [c.delivery_id for c in await outbox.claim("me", due, 30, 10)] == ["dlv_1"]


class _DeadSender:
    """A sender whose process died during every attempt (what SenderPool answers then)."""

    timeout_seconds = 3.0

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        return AttemptResult(
            started_at=datetime.now(UTC),
            duration_ms=0,
            error="the sender process exited during the attempt",
            internal_failure=True,
        )


async def test_a_failure_of_ours_uses_no_attempt_and_opens_no_breaker(outbox: Outbox) -> None:
    now = time.time()
    target = Target(
        "wh_1",
        "p",
        "https://hooks.example.test/x",
        frozenset(["device.data"]),
        frozenset(),
        ACTIVE,
        "s3cret",
    )
    deliveries = [new_delivery(n, "wh_1", due=now) for n in range(15)]
    event = events_pb2.Event(event_id="evt_0", project_id="p", device_id="d")
    event.readings.values.update({"t": 1})
    stored = [StoredEvent(d.event_id, "p", event.SerializeToString()) for d in deliveries]
    await outbox.accept(stored, deliveries, now)
    index = WebhookIndex()
    index.replace([target])
    dispatcher = dispatcher_for(outbox, index, _DeadSender())
    not_sent = "not sent: the sender process exited during the attempt; trying again"

    async def all_tried() -> bool:
        statuses = [await status_of(outbox, d.delivery_id) for d in deliveries]
        return statuses == [(PENDING, not_sent)] * len(deliveries)

    await running(dispatcher, all_tried)
    assert dispatcher.breaker.open_until("wh_1", time.time()) is None  # 15 > its threshold
    row, attempts = await outbox.one("p", "dlv_3") or (None, None)
    assert row is not None
    assert attempts == []
    assert (row.status, row.attempt_count) == (PENDING, 0)
    assert row.status_reason == not_sent
    assert time.time() < row.next_attempt_at < time.time() + 2
