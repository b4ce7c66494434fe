"""Alert rules in the database, as webhooks are in store.py.

Every write also appends to `rule_changes` in the same transaction, so the
change stream (WatchRules) never misses or reorders a change. On PostgreSQL
every write first locks that log (a table lock, as webhook_changes is), so
sequence order is commit order, a watcher that read up to seq N never later
sees a smaller seq commit, and two updates of one rule (in two replicas)
cannot both start from the same version. On SQLite `BEGIN IMMEDIATE` and
the process's writer lock, shared with the webhook store, do that.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from edgesense.common.errors import NotFound, ResourceExhausted
from edgesense.common.ids import new_id
from edgesense.registry.change_log import DELETE, UPSERT, Change, ChangeLog, ChangeSignal
from edgesense.registry.rule_validation import RuleSpec
from edgesense.registry.store import utc
from edgesense.registry.tables import rule_changes, rules
from edgesense.storage.engine import reading, transaction

# Rules one project may have. Delivery holds every rule in memory (from the
# stream) and judges a reading against those that can match it: the bound
# keeps both the memory and one WatchRules snapshot small.
MAX_RULES_PER_PROJECT = 1000


def new_rule_id() -> str:
    return new_id("rule")


@dataclass(frozen=True)
class StoredRule:
    rule_id: str
    project_id: str
    spec: RuleSpec
    version: int
    created_at: datetime
    updated_at: datetime


def _values(spec: RuleSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "description": spec.description,
        "field": spec.field,
        "operator": spec.operator,
        "threshold": spec.threshold,
        "threshold_high": spec.threshold_high,
        "clear_threshold": spec.clear_threshold,
        "count": spec.count,
        "for_seconds": spec.for_seconds,
        "severity": spec.severity,
        "device_ids": json.dumps(list(spec.device_ids)),
        "gateway_ids": json.dumps(list(spec.gateway_ids)),
        "enabled": spec.enabled,
    }


def _row(row: Any) -> StoredRule:
    # By name through the mapping: a Row is a tuple, and `row.count` is tuple.count.
    m = row._mapping
    created = utc(m["created_at"])
    assert created is not None
    spec = RuleSpec(
        name=m["name"],
        description=m["description"],
        field=m["field"],
        operator=m["operator"],
        threshold=m["threshold"],
        threshold_high=m["threshold_high"],
        clear_threshold=m["clear_threshold"],
        count=m["count"],
        for_seconds=m["for_seconds"],
        severity=m["severity"],
        device_ids=tuple(json.loads(m["device_ids"])),
        gateway_ids=tuple(json.loads(m["gateway_ids"])),
        enabled=bool(m["enabled"]),
    )
    return StoredRule(
        rule_id=m["rule_id"],
        project_id=m["project_id"],
        spec=spec,
        version=int(m["version"]),
        created_at=created,
        updated_at=utc(m["updated_at"]) or created,
    )


RULE_LOG = ChangeLog(rules, rule_changes, "rule_id", _row, "rule", "rule_id")


class RuleStore:
    def __init__(self, engine: AsyncEngine, writes: asyncio.Lock | None) -> None:
        """`writes`: the engine's writer lock of this process (storage.engine's
        writer_lock), the one the webhook store queues on too."""
        self.engine = engine
        self._writes = writes
        # Wakes this process's WatchRules streams at once after a write.
        self.changed = ChangeSignal()

    async def create(
        self, project_id: str, spec: RuleSpec, max_per_project: int | None = None
    ) -> StoredRule:
        """Store a new rule (version 1); ResourceExhausted if the project has `max_per_project`."""
        rule_id = new_rule_id()
        now = datetime.now(UTC)
        async with transaction(self.engine, "creating a rule", lock=self._writes) as conn:
            # Counted under the change-log lock: two creations cannot both pass the limit.
            await RULE_LOG.lock(conn)
            if max_per_project is not None:
                count = await self._count(conn, project_id)
                if count >= max_per_project:
                    raise ResourceExhausted(
                        f"project {project_id} already has {count} rules, the limit "
                        f"({max_per_project} per project); delete one first"
                    )
            await conn.execute(
                insert(rules).values(
                    rule_id=rule_id,
                    project_id=project_id,
                    version=1,
                    created_at=now,
                    updated_at=now,
                    **_values(spec),
                )
            )
            await RULE_LOG.append(conn, rule_id, project_id, UPSERT)
        self.changed.notify()
        return StoredRule(rule_id, project_id, spec, 1, now, now)

    async def list_project(
        self, project_id: str, limit: int, after_id: str | None = None
    ) -> list[StoredRule]:
        """Up to `limit` of a project's rules by id (ids sort by creation
        time), after `after_id`: keyset pages that stay stable under inserts."""
        query = select(rules).where(rules.c.project_id == project_id)
        if after_id is not None:
            query = query.where(rules.c.rule_id > after_id)
        async with reading(self.engine, "listing rules") as conn:
            rows = await conn.execute(query.order_by(rules.c.rule_id).limit(limit))
            return [_row(r) for r in rows]

    async def get(self, project_id: str, rule_id: str) -> StoredRule:
        """The rule; NotFound if it does not exist or belongs to another project."""
        async with reading(self.engine, "reading a rule") as conn:
            found = await self._get(conn, project_id, rule_id)
        if found is None:
            raise NotFound(f"rule {rule_id} not found")
        return found

    async def update(
        self, project_id: str, rule_id: str, merge: Callable[[RuleSpec], RuleSpec]
    ) -> StoredRule:
        """Replace the rule's spec by `merge(its current spec)` (which validates,
        raising InvalidArgument to change nothing), one version more if the
        condition changed; NotFound as `get`."""
        async with transaction(self.engine, "updating a rule", lock=self._writes) as conn:
            await RULE_LOG.lock(conn)  # before reading: no two updates from one version
            current = await self._get(conn, project_id, rule_id)
            if current is None:
                raise NotFound(f"rule {rule_id} not found")
            spec = merge(current.spec)
            version = current.version
            if spec.condition() != current.spec.condition():
                version += 1
            now = datetime.now(UTC)
            await conn.execute(
                update(rules)
                .where(rules.c.rule_id == rule_id)
                .values(version=version, updated_at=now, **_values(spec))
            )
            await RULE_LOG.append(conn, rule_id, project_id, UPSERT)
        self.changed.notify()
        return StoredRule(rule_id, project_id, spec, version, current.created_at, now)

    async def delete(self, project_id: str, rule_id: str) -> None:
        async with transaction(self.engine, "deleting a rule", lock=self._writes) as conn:
            await RULE_LOG.lock(conn)
            result = await conn.execute(
                delete(rules).where(rules.c.rule_id == rule_id, rules.c.project_id == project_id)
            )
            if result.rowcount == 0:
                raise NotFound(f"rule {rule_id} not found")
            await RULE_LOG.append(conn, rule_id, project_id, DELETE)
        self.changed.notify()

    async def snapshot(self) -> tuple[list[StoredRule], int]:
        """Every rule, and the change seq the snapshot is consistent with."""
        return await RULE_LOG.snapshot(self.engine, self._writes)

    async def changes_after(
        self, seq: int, limit: int = 500
    ) -> tuple[list[Change], dict[str, StoredRule]]:
        """Changes with a larger seq, and the current rows of the rules they name."""
        return await RULE_LOG.changes_after(self.engine, seq, limit)

    async def _count(self, conn: AsyncConnection, project_id: str) -> int:
        query = select(func.count()).where(rules.c.project_id == project_id)
        return int((await conn.execute(query)).scalar() or 0)

    async def _get(self, conn: AsyncConnection, project_id: str, rule_id: str) -> StoredRule | None:
        query = select(rules).where(rules.c.rule_id == rule_id, rules.c.project_id == project_id)
        row = (await conn.execute(query)).first()
        return _row(row) if row is not None else None
