"""Publish's backpressure tally (`Acceptor.pending_deliveries`), refreshed from
the outbox's count by the maintenance loop: deliveries created while the
count is read stay in it. A real Acceptor stores into a real SQLite outbox."""

from __future__ import annotations

import asyncio
import contextlib

from edgesense.delivery.accept.acceptor import Acceptor
from edgesense.delivery.claim.dispatcher import Dispatcher
from edgesense.delivery.record.policy import RetryPolicy
from edgesense.delivery.send.http_sender import HttpSender
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.webhooks.index import ACTIVE, Target, WebhookIndex
from edgesense.v1 import events_pb2


async def _unused(*_args: object) -> None:
    raise AssertionError("no delivery should be exhausted here")


def event(number: int) -> events_pb2.Event:
    made = events_pb2.Event(event_id=f"evt_{number}", project_id="p", device_id="d")
    made.readings.values.update({"t": number})
    return made


async def test_deliveries_created_while_counting_stay_in_the_tally(outbox: Outbox) -> None:
    index = WebhookIndex()
    index.replace(
        [
            Target(
                "wh_1",
                "p",
                "https://hooks.example.test/x",
                frozenset(["device.data"]),
                frozenset(),
                ACTIVE,
                "s3cret",
            )
        ]
    )
    dispatcher = Dispatcher(
        outbox,
        index,
        HttpSender(),
        RetryPolicy(),
        owner="me",
        lease_seconds=30,
        concurrency=4,
        per_target=2,
        on_exhausted=_unused,
    )
    dispatcher.stop()  # it leases nothing: every delivery is stored for a claim
    acceptor = Acceptor(outbox, index, dispatcher, outbox_limit=100)
    running = asyncio.create_task(acceptor.run())
    try:
        await (await acceptor.submit([event(1)]))
        pending_counted = acceptor.begin_pending_count()
        pending = (await outbox.counts())["pending"]
        assert pending == 1
        # Accepted after the outbox was counted, before the count is taken.
        await (await acceptor.submit([event(2), event(3)]))
        pending_counted(pending)
        assert acceptor.pending_deliveries == 3
        assert (await outbox.counts())["pending"] == 3

        acceptor.begin_pending_count()((await outbox.counts())["pending"])
        assert acceptor.pending_deliveries == 3  # nothing created meanwhile: the count
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
