"""Keep delivery states in step with webhook states.

The registry's stream (webhooks/registry_link.py) tells this process about
every webhook; the reconciler turns what it says into delivery state changes
in the outbox:
- a snapshot (at start, and after a broken stream): deliveries held for a
  webhook that is active again are released, those of a disabled one held;
- a webhook deleted: its open deliveries fail ("webhook deleted");
- disabled (and any change that leaves it disabled): its pending
  deliveries are held; enabled again: released;
- a delivery that used up its attempts (reported by the outcome writer):
  its webhook is disabled here at once, its pending deliveries are held, and
  the registry is told (which disables it everywhere), with the last attempt
  and whether the delivery was of an operational event (the registry then
  publishes no webhook.disabled: no loops).
It lives in record/ with the outcome writer and the retry rule because all
three change a delivery's state after it was stored; webhooks/ only knows
the webhooks.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.store.rows import Outcome, is_operational_delivery
from edgesense.delivery.webhooks.index import DISABLED, Target, WebhookIndex
from edgesense.delivery.webhooks.registry_link import FailureReport

log = logging.getLogger(__name__)


class Reconciler:
    wake: Callable[[], None]
    report_failure: Callable[[FailureReport], None]
    limits_changed: Callable[[], None]

    def __init__(self, outbox: Outbox, index: WebhookIndex) -> None:
        self.outbox = outbox
        self.index = index

    def attach(
        self,
        wake: Callable[[], None],
        report_failure: Callable[[FailureReport], None],
        limits_changed: Callable[[], None] = lambda: None,
    ) -> None:
        """The dispatcher's wake() (deliveries were released: claim them) and
        limits_changed() (rate limits may differ: lanes follow), and the
        registry link's report_failure(); all are built after the reconciler,
        since they call back into it."""
        self.wake = wake
        self.report_failure = report_failure
        self.limits_changed = limits_changed

    async def on_snapshot(self, targets: list[Target]) -> None:
        now = time.time()
        released = await self.outbox.release_held([t.webhook_id for t in targets if t.active], now)
        held = await self.outbox.hold(
            [t.webhook_id for t in targets if not t.active], "webhook disabled", now
        )
        if released or held:
            log.info("after the webhook snapshot: %d deliveries released, %d held", released, held)
        self.limits_changed()
        self.wake()

    async def on_change(self, previous: Target | None, current: Target | None) -> None:
        now = time.time()
        if _rate_limit(previous) != _rate_limit(current):
            self.limits_changed()
        if current is None:
            if previous is not None:
                failed = await self.outbox.fail_all([previous.webhook_id], "webhook deleted", now)
                log.info(
                    "webhook %s deleted: %d open deliveries failed", previous.webhook_id, failed
                )
        elif not current.active:
            # Whatever this index said before: on_exhausted disables a webhook
            # here before its hold, and if that hold failed, the registry's
            # disable coming back is what holds them (hold is idempotent: it
            # only touches pending deliveries).
            held = await self.outbox.hold([current.webhook_id], "webhook disabled", now)
            if held or previous is None or previous.active:
                log.info("webhook %s disabled: %d deliveries held", current.webhook_id, held)
        elif current.active and previous is not None and not previous.active:
            released = await self.outbox.release_held([current.webhook_id], now)
            log.info("webhook %s enabled: sending %d held deliveries", current.webhook_id, released)
            self.wake()

    async def on_exhausted(self, target: Target, outcome: Outcome) -> None:
        reason = outcome.status_reason or "all attempts failed"
        log.warning(
            "delivery %s to %s failed: %s; disabling the webhook",
            outcome.delivery_id,
            target.webhook_id,
            reason,
        )
        self.index.upsert(dataclasses.replace(target, status=DISABLED, disabled_reason=reason))
        # The registry hears first: if the hold below fails (Unavailable), the
        # registry's disable, streamed back, holds the deliveries instead
        # (on_change holds a disabled webhook's deliveries even though this
        # index has it disabled already), as would a snapshot after a broken
        # stream.
        self.report_failure(
            FailureReport(
                target.webhook_id,
                outcome.delivery_id,
                reason,
                started_at=outcome.started_at,
                status_code=outcome.status_code,
                error=outcome.error,
                operational_event=is_operational_delivery(outcome.delivery_id),
            )
        )
        await self.outbox.hold([target.webhook_id], "webhook disabled", time.time())


def _rate_limit(target: Target | None) -> int:
    return target.rate_limit_per_second if target is not None else 0
