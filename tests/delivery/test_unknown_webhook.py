"""A claimed delivery whose webhook this process does not know: a young one
waits for the registry's stream, an old one is failed as deleted (real
SQLite outbox; nothing is sent)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgesense.delivery.dispatcher import UNKNOWN_WEBHOOK_GRACE_SECONDS, Dispatcher
from edgesense.delivery.http_sender import HttpSender
from edgesense.delivery.index import WebhookIndex
from edgesense.delivery.outbox import FAILED, PENDING, NewDelivery, Outbox, StoredEvent
from edgesense.delivery.policy import RetryPolicy
from edgesense.storage.engine import create_engine, dispose_engine
from edgesense.storage.migrate import migrate


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    await migrate(engine, "delivery")
    outbox = Outbox(engine)
    yield outbox
    await outbox.close()
    await dispose_engine(engine)


async def _unused(*_args: object) -> None:
    raise AssertionError("no delivery should be exhausted here")


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
        [
            NewDelivery(
                "dlv_1",
                "evt_1",
                "wh_elsewhere",
                "p",
                "device.data",
                "d",
                PENDING,
                None,
                created,
                None,
                None,
                created,
                created,
            )
        ],
        created,
    )
    index = WebhookIndex()
    index.replace([])  # loaded, and without wh_elsewhere
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
    [claimed] = await outbox.claim("me", time.time(), 30, 10)
    await dispatcher._attempt(claimed)
    await dispatcher._flush()
    found = await outbox.one("p", "dlv_1")
    assert found is not None
    row, attempts = found
    assert (row.status, row.status_reason) == (status, reason)
    assert attempts == []
    if status == PENDING:  # due again shortly, and not claimable before
        assert row.next_attempt_at > time.time()
        assert await outbox.claim("me", time.time(), 30, 10) == []
