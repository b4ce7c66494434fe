"""Webhooks in the database: the registry's only I/O.

Every write also appends to `webhook_changes` in the same transaction, so the
change stream never misses or reorders a change. A disable or enable also
writes its operational event (operational.py) to `operational_events` in
that transaction (a transactional outbox): once the status change is
committed, its event is too, and forwarder.py publishes it, however soon
after the commit the process dies. On PostgreSQL those appends
are serialised (a table lock on the tiny change log) so that sequence order is
commit order and a watcher that read up to seq N can never later see a
smaller seq commit.
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
from edgesense.registry.operational import disabled_event, enabled_event
from edgesense.registry.rotation import PreviousSecret, rotate
from edgesense.registry.secretbox import HEADERS, PREVIOUS_SECRETS, SecretBox
from edgesense.registry.tables import operational_events, webhook_changes, webhooks
from edgesense.registry.validation import WebhookChanges, WebhookSpec
from edgesense.storage.engine import reading, transaction, writer_lock
from edgesense.v1 import events_pb2

ACTIVE = "active"
DISABLED = "disabled"


def new_webhook_id() -> str:
    return new_id("wh")


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they are UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class StoredWebhook:
    webhook_id: str
    project_id: str
    url: str
    events: tuple[str, ...]
    description: str
    device_ids: tuple[str, ...]
    status: str
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
    secret_ciphertext: str
    updated_at: datetime
    headers_ciphertext: str | None = None
    previous_secrets_ciphertext: str | None = None
    secret_rotation_ends_at: datetime | None = None
    rate_limit_per_second: int = 0
    ordered: bool = False


@dataclass(frozen=True)
class Unpublished:
    """An operational event not yet confirmed by delivery."""

    seq: int
    event: bytes  # serialized edgesense.v1.Event


def _row(row: Any) -> StoredWebhook:
    created = utc(row.created_at)
    assert created is not None
    return StoredWebhook(
        webhook_id=row.webhook_id,
        project_id=row.project_id,
        url=row.url,
        events=tuple(json.loads(row.events)),
        description=row.description,
        device_ids=tuple(json.loads(row.device_ids)),
        status=row.status,
        created_at=created,
        disabled_at=utc(row.disabled_at),
        disabled_reason=row.disabled_reason,
        secret_ciphertext=row.secret_ciphertext,
        updated_at=utc(row.updated_at) or created,
        headers_ciphertext=row.headers_ciphertext,
        previous_secrets_ciphertext=row.previous_secrets_ciphertext,
        secret_rotation_ends_at=utc(row.secret_rotation_ends_at),
        rate_limit_per_second=row.rate_limit_per_second,
        ordered=bool(row.ordered),
    )


WEBHOOK_LOG = ChangeLog(webhooks, webhook_changes, "webhook_id", _row, "webhook", "created_at")


class WebhookStore:
    def __init__(
        self, engine: AsyncEngine, box: SecretBox, writes: asyncio.Lock | None = None
    ) -> None:
        self.engine = engine
        # On SQLite the registry's writes queue on this lock before SQLite's
        # (see writer_lock): `writes`, shared with the rule store, else its own.
        self._writes = writes if writes is not None else writer_lock(engine)
        self.box = box
        self.changed = ChangeSignal()
        # Wakes the forwarder of this process after a write of an operational event.
        self.operational_written = ChangeSignal()

    async def create(
        self, project_id: str, spec: WebhookSpec, max_per_project: int | None = None
    ) -> StoredWebhook:
        """Store a new webhook; ResourceExhausted if the project has `max_per_project`."""
        webhook_id = new_webhook_id()
        created_at = datetime.now(UTC)
        ciphertext = self.box.seal(webhook_id, spec.secret)
        headers = self._seal_headers(webhook_id, spec.headers)
        values: dict[str, Any] = {
            "webhook_id": webhook_id,
            "project_id": project_id,
            "url": spec.url,
            "events": json.dumps(list(spec.events)),
            "description": spec.description,
            "device_ids": json.dumps(list(spec.device_ids)),
            "secret_ciphertext": ciphertext,
            "status": ACTIVE,
            "created_at": created_at,
            "updated_at": created_at,
            "headers_ciphertext": headers,
            "rate_limit_per_second": spec.rate_limit_per_second,
            "ordered": spec.ordered,
        }
        async with transaction(self.engine, "registering a webhook", lock=self._writes) as conn:
            # Counted after the change-log lock (PostgreSQL) or inside BEGIN
            # IMMEDIATE (SQLite): two registrations cannot both pass the limit.
            await WEBHOOK_LOG.lock(conn)
            if max_per_project is not None:
                count = await self._count(conn, project_id)
                if count >= max_per_project:
                    raise ResourceExhausted(
                        f"project {project_id} already has {count} webhooks, the limit "
                        f"(EDGESENSE_MAX_WEBHOOKS_PER_PROJECT={max_per_project}); "
                        "delete one or ask the operator to raise it"
                    )
            await conn.execute(insert(webhooks).values(**values))
            await WEBHOOK_LOG.append(conn, webhook_id, project_id, UPSERT)
        self.changed.notify()
        return StoredWebhook(
            webhook_id=webhook_id,
            project_id=project_id,
            url=spec.url,
            events=spec.events,
            description=spec.description,
            device_ids=spec.device_ids,
            status=ACTIVE,
            created_at=created_at,
            disabled_at=None,
            disabled_reason=None,
            secret_ciphertext=ciphertext,
            updated_at=created_at,
            headers_ciphertext=headers,
            rate_limit_per_second=spec.rate_limit_per_second,
            ordered=spec.ordered,
        )

    async def list_project(
        self, project_id: str, limit: int, after_id: str | None = None
    ) -> list[StoredWebhook]:
        """Up to `limit` of a project's webhooks, by id (ids sort by creation
        time), after `after_id`: keyset pages that stay stable under inserts."""
        query = select(webhooks).where(webhooks.c.project_id == project_id)
        if after_id is not None:
            query = query.where(webhooks.c.webhook_id > after_id)
        async with reading(self.engine, "listing webhooks") as conn:
            rows = await conn.execute(query.order_by(webhooks.c.webhook_id).limit(limit))
            return [_row(r) for r in rows]

    async def _count(self, conn: AsyncConnection, project_id: str) -> int:
        query = select(func.count()).where(webhooks.c.project_id == project_id)
        return int((await conn.execute(query)).scalar() or 0)

    async def get(self, project_id: str | None, webhook_id: str) -> StoredWebhook:
        """The webhook; NotFound if it does not exist or belongs to another project."""
        async with reading(self.engine, "reading a webhook") as conn:
            found = await self._get(conn, project_id, webhook_id)
        if found is None:
            raise NotFound(f"webhook {webhook_id} not found")
        return found

    async def delete(self, project_id: str, webhook_id: str) -> None:
        async with transaction(self.engine, "deleting a webhook", lock=self._writes) as conn:
            result = await conn.execute(
                delete(webhooks).where(
                    webhooks.c.webhook_id == webhook_id, webhooks.c.project_id == project_id
                )
            )
            if result.rowcount == 0:
                raise NotFound(f"webhook {webhook_id} not found")
            await WEBHOOK_LOG.log(conn, webhook_id, project_id, DELETE)
        self.changed.notify()

    async def set_status(
        self,
        project_id: str | None,
        webhook_id: str,
        status: str,
        reason: str | None = None,
        *,
        last_attempt: events_pb2.WebhookAttempt | None = None,
        publish: bool = True,
    ) -> StoredWebhook:
        """Enable (reason None) or disable a webhook; a no-op if it already is.

        A change writes its operational event (webhook.enabled, or
        webhook.disabled with the reason and `last_attempt`) in the same
        transaction, unless `publish` is False.
        """
        async with transaction(
            self.engine, f"setting a webhook {status}", lock=self._writes
        ) as conn:
            current = await self._get(conn, project_id, webhook_id)
            if current is None:
                raise NotFound(f"webhook {webhook_id} not found")
            if current.status == status:
                return current
            now = datetime.now(UTC)
            values: dict[str, Any] = {"status": status, "updated_at": now}
            if status == DISABLED:
                values |= {"disabled_at": now, "disabled_reason": reason}
            else:
                values |= {"disabled_at": None, "disabled_reason": None}
            await conn.execute(
                update(webhooks).where(webhooks.c.webhook_id == webhook_id).values(**values)
            )
            await WEBHOOK_LOG.log(conn, webhook_id, current.project_id, UPSERT)
            if publish:
                project, url = current.project_id, current.url
                event = (
                    disabled_event(project, webhook_id, url, reason or "", now, last_attempt)
                    if status == DISABLED
                    else enabled_event(project, webhook_id, url, now)
                )
                await conn.execute(
                    insert(operational_events).values(
                        event_id=event.event_id,
                        project_id=project,
                        event=event.SerializeToString(),
                        created_at=now,
                    )
                )
            updated = await self._get(conn, None, webhook_id)
        self.changed.notify()
        if publish:
            self.operational_written.notify()
        assert updated is not None
        return updated

    async def unpublished(self, limit: int = 100) -> list[Unpublished]:
        """The oldest operational events not yet confirmed by delivery."""
        async with reading(self.engine, "reading operational events") as conn:
            rows = await conn.execute(
                select(operational_events.c.seq, operational_events.c.event)
                .order_by(operational_events.c.seq)
                .limit(limit)
            )
            return [Unpublished(r.seq, bytes(r.event)) for r in rows]

    async def published(self, seqs: list[int]) -> None:
        """Forget operational events delivery has confirmed (stored)."""
        async with transaction(
            self.engine, "forgetting published operational events", lock=self._writes
        ) as conn:
            await conn.execute(delete(operational_events).where(operational_events.c.seq.in_(seqs)))

    async def update(
        self, project_id: str, webhook_id: str, changes: WebhookChanges
    ) -> StoredWebhook:
        """Set the fields `changes` holds and keep the others; NotFound if the
        webhook does not exist or belongs to another project."""
        values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
        if changes.url is not None:
            values["url"] = changes.url
        if changes.events is not None:
            values["events"] = json.dumps(list(changes.events))
        if changes.description is not None:
            values["description"] = changes.description
        if changes.device_ids is not None:
            values["device_ids"] = json.dumps(list(changes.device_ids))
        if changes.headers is not None:
            values["headers_ciphertext"] = self._seal_headers(webhook_id, changes.headers)
        if changes.rate_limit_per_second is not None:
            values["rate_limit_per_second"] = changes.rate_limit_per_second
        if changes.ordered is not None:
            values["ordered"] = changes.ordered
        return await self._write(project_id, webhook_id, "updating a webhook", lambda _: values)

    async def rotate_secret(
        self, project_id: str, webhook_id: str, secret: str, overlap_seconds: int
    ) -> StoredWebhook:
        """Make `secret` current, the replaced one live for `overlap_seconds`
        (rotation.rotate's rules and errors); NotFound as `update`."""

        def rotated(current: StoredWebhook) -> dict[str, Any]:
            now = datetime.now(UTC)
            previous = rotate(
                self.secret_of(current),
                self.previous_secrets_of(current),
                secret,
                overlap_seconds,
                now,
            )
            return {
                "secret_ciphertext": self.box.seal(webhook_id, secret),
                "previous_secrets_ciphertext": self._seal_previous(webhook_id, previous),
                "secret_rotation_ends_at": max((p.expires_at for p in previous), default=None),
                "updated_at": now,
            }

        return await self._write(project_id, webhook_id, "rotating a webhook secret", rotated)

    async def _write(
        self,
        project_id: str,
        webhook_id: str,
        what: str,
        values_for: Callable[[StoredWebhook], dict[str, Any]],
    ) -> StoredWebhook:
        """Update one webhook of the project with `values_for(its current row)`
        and log the change, in one transaction."""
        async with transaction(self.engine, what, lock=self._writes) as conn:
            current = await self._get(conn, project_id, webhook_id)
            if current is None:
                raise NotFound(f"webhook {webhook_id} not found")
            values = values_for(current)
            await conn.execute(
                update(webhooks).where(webhooks.c.webhook_id == webhook_id).values(**values)
            )
            await WEBHOOK_LOG.log(conn, webhook_id, current.project_id, UPSERT)
            updated = await self._get(conn, None, webhook_id)
        self.changed.notify()
        assert updated is not None
        return updated

    async def snapshot(self) -> tuple[list[StoredWebhook], int]:
        """Every webhook, and the change seq the snapshot is consistent with."""
        return await WEBHOOK_LOG.snapshot(self.engine, self._writes)

    async def changes_after(
        self, seq: int, limit: int = 500
    ) -> tuple[list[Change], dict[str, StoredWebhook]]:
        """Changes with a larger seq, and the current rows of the webhooks they name."""
        return await WEBHOOK_LOG.changes_after(self.engine, seq, limit)

    def secret_of(self, hook: StoredWebhook) -> str:
        return self.box.open(hook.webhook_id, hook.secret_ciphertext)

    def headers_of(self, hook: StoredWebhook) -> dict[str, str]:
        """The custom headers with their real values."""
        if hook.headers_ciphertext is None:
            return {}
        plain = self.box.open(hook.webhook_id, hook.headers_ciphertext, HEADERS)
        return dict(json.loads(plain))

    def previous_secrets_of(self, hook: StoredWebhook) -> tuple[PreviousSecret, ...]:
        """The previous secrets of the latest rotation, oldest first, expired
        ones included (rotation.live filters them)."""
        if hook.previous_secrets_ciphertext is None:
            return ()
        plain = self.box.open(hook.webhook_id, hook.previous_secrets_ciphertext, PREVIOUS_SECRETS)
        return tuple(
            PreviousSecret(item["secret"], datetime.fromtimestamp(item["expiresAt"], UTC))
            for item in json.loads(plain)
        )

    def _seal_headers(self, webhook_id: str, headers: tuple[tuple[str, str], ...]) -> str | None:
        if not headers:
            return None
        return self.box.seal(webhook_id, json.dumps(dict(headers)), HEADERS)

    def _seal_previous(self, webhook_id: str, previous: tuple[PreviousSecret, ...]) -> str | None:
        if not previous:
            return None
        plain = [{"secret": p.secret, "expiresAt": p.expires_at.timestamp()} for p in previous]
        return self.box.seal(webhook_id, json.dumps(plain), PREVIOUS_SECRETS)

    async def _get(
        self, conn: AsyncConnection, project_id: str | None, webhook_id: str
    ) -> StoredWebhook | None:
        query = select(webhooks).where(webhooks.c.webhook_id == webhook_id)
        if project_id is not None:
            query = query.where(webhooks.c.project_id == project_id)
        row = (await conn.execute(query)).first()
        return _row(row) if row is not None else None
