"""What the delivery tests that store deliveries themselves share: an outbox
on a SQLite file (test_outbox.py runs its tests on both databases instead),
and the rows to put in it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgesense.delivery.store.outbox import Outbox, open_outbox
from edgesense.delivery.store.rows import PENDING, NewDelivery


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    outbox = await open_outbox(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    yield outbox
    await outbox.close()


def new_delivery(
    number: int,
    webhook_id: str,
    *,
    due: float,
    created: float | None = None,
    of_event: int | None = None,
    lease_owner: str | None = None,
    lease_expires_at: float | None = None,
) -> NewDelivery:
    """`dlv_{number}` of event `evt_{number}` (or `evt_{of_event}`) to
    `webhook_id` of project "p", pending and due at `due`, created at
    `created` (default: `due`)."""
    created = due if created is None else created
    return NewDelivery(
        f"dlv_{number}",
        f"evt_{number if of_event is None else of_event}",
        webhook_id,
        "p",
        "device.data",
        "d",
        PENDING,
        None,
        due,
        lease_owner,
        lease_expires_at,
        created,
        created,
    )
