"""What the delivery tests that store deliveries themselves share: an outbox
on a SQLite file (test_outbox.py runs its tests on both databases instead),
and the rows to put in it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgesense.common.thresholds import Rule
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


def make_rule(**changes: Any) -> Rule:
    """An enabled `temperature gt 80` rule of project "p" (rule_hot, version
    1, every device and gateway), with `changes`."""
    rule = Rule(
        rule_id="rule_hot",
        project_id="p",
        name="Boiler too hot",
        field="temperature",
        operator="gt",
        threshold=80.0,
        threshold_high=None,
        clear_threshold=None,
        count=1,
        for_seconds=0.0,
        severity="critical",
        device_ids=frozenset(),
        gateway_ids=frozenset(),
        enabled=True,
        version=1,
    )
    return dataclasses.replace(rule, **changes)
