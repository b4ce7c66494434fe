"""The dispatcher when things go wrong, on a real SQLite outbox: a claim that
fails unexpectedly does not end the claim loop, and deliveries handed over
while it stops are handed back with the queued ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from edgesense.delivery.claim.dispatcher import Dispatcher
from edgesense.delivery.record.policy import UNKNOWN_WEBHOOK_GRACE_SECONDS, RetryPolicy
from edgesense.delivery.send.attempt import AttemptResult, Sender
from edgesense.delivery.send.http_sender import HttpSender
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.store.rows import FAILED, Claimed, StoredEvent
from edgesense.delivery.webhooks.index import ACTIVE, Target, WebhookIndex
from edgesense.v1 import events_pb2
from tests.delivery.conftest import new_delivery
from tests.support.waiting import eventually


async def _unused(*_args: object) -> None:
    raise AssertionError("no delivery should be exhausted here")


def dispatcher_for(
    outbox: Outbox, index: WebhookIndex, sender: Sender, concurrency: int = 4, per_target: int = 2
) -> Dispatcher:
    return Dispatcher(
        outbox,
        index,
        sender,
        RetryPolicy(),
        owner="me",
        lease_seconds=30,
        concurrency=concurrency,
        per_target=per_target,
        on_exhausted=_unused,
    )


class ClaimFailsOnce:
    """The real outbox, whose first claim fails as an unexpected error (a bug,
    or a driver error we did not map)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.failed = False

    def _fail_once(self) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("driver exploded")

    async def claim(self, *args: Any) -> list[Claimed]:
        self._fail_once()
        return await self.outbox.claim(*args)

    async def claim_for(self, *args: Any) -> list[Claimed]:
        self._fail_once()
        return await self.outbox.claim_for(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.outbox, name)


async def test_the_claim_loop_survives_an_unexpected_error(outbox: Outbox) -> None:
    """The first claim fails; the loop logs it and claims again: the delivery
    (of a webhook deleted long ago, so that nothing is sent) is failed."""
    created = time.time() - UNKNOWN_WEBHOOK_GRACE_SECONDS - 5
    await outbox.accept(
        [StoredEvent("evt_1", "p", b"")], [new_delivery(1, "wh_gone", due=created)], created
    )
    index = WebhookIndex()
    index.replace([])
    flaky = ClaimFailsOnce(outbox)
    dispatcher = dispatcher_for(flaky, index, HttpSender())
    running = asyncio.create_task(dispatcher.run())

    async def failed() -> bool:
        found = await outbox.one("p", "dlv_1")
        assert found is not None
        return bool(found[0].status == FAILED)

    try:
        await eventually(failed, 10, "dlv_1 claimed after the failed claim")
        assert flaky.failed
        assert not running.done()
    finally:
        dispatcher.stop()
        await running


class HeldSender:
    """A sender whose POSTs answer 200 once `release` is set."""

    timeout_seconds = 3.0

    def __init__(self) -> None:
        self.posting = asyncio.Event()
        self.release = asyncio.Event()

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        self.posting.set()
        await self.release.wait()
        return AttemptResult(started_at=datetime.now(UTC), duration_ms=1, status_code=200)


def target(webhook_id: str) -> Target:
    url = f"https://hooks.example.test/{webhook_id}"
    return Target(webhook_id, "p", url, frozenset(["device.data"]), frozenset(), ACTIVE, "s")


async def test_deliveries_handed_over_while_stopping_are_handed_back(outbox: Outbox) -> None:
    """dlv_1 is in flight when stop() comes; dlv_2 (queued behind it) and
    dlv_3 were stored leased to this process, as the acceptor stores them,
    and dlv_3 is handed over only after the dispatcher dropped its queue:
    both are handed back, so another process can claim them at once."""
    now = time.time()
    event = events_pb2.Event(event_id="evt_1", project_id="p", device_id="d")
    event.readings.values.update({"t": 1})
    payload = event.SerializeToString()
    await outbox.accept(
        [StoredEvent("evt_1", "p", payload)], [new_delivery(1, "wh_1", due=now)], now
    )
    index = WebhookIndex()
    index.replace([target("wh_1"), target("wh_2")])
    sender = HeldSender()
    dispatcher = dispatcher_for(outbox, index, sender, concurrency=2, per_target=1)
    running = asyncio.create_task(dispatcher.run())
    try:
        await asyncio.wait_for(sender.posting.wait(), 10)  # dlv_1 in flight
        # As the acceptor: room reserved, rows stored leased, handed over after the commit.
        assert dispatcher.reserve(project_id="p", webhook_id="wh_1", now=now)
        assert dispatcher.reserve(project_id="p", webhook_id="wh_2", now=now)
        leased = [
            new_delivery(n, webhook, due=now, lease_owner="me", lease_expires_at=now + 30)
            for n, webhook in ((2, "wh_1"), (3, "wh_2"))
        ]
        await outbox.accept([StoredEvent(d.event_id, "p", payload) for d in leased], leased, now)
        handed = [
            Claimed(0, d.delivery_id, d.webhook_id, d.event_id, 0, 0, payload, now, "p")
            for d in leased
        ]
        dispatcher.hand_over(handed[:1])  # queued: wh_1's one slot is taken
        assert [c.delivery_id for c in dispatcher.lanes.queued()] == ["dlv_2"]
        dispatcher.stop()
        await eventually(lambda: not dispatcher.lanes.queued(), 10, "the queue dropped")
        dispatcher.hand_over(handed[1:])  # a commit that ended during the stop
    finally:
        sender.release.set()
        dispatcher.stop()
        await running
    claimed = await outbox.claim("other", time.time(), 30, 10)
    assert sorted(c.delivery_id for c in claimed) == ["dlv_2", "dlv_3"]
