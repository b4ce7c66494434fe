"""Delivery's rules: the registry's WatchRules stream into the RuleIndex, and
the alerts of rules that were disabled or deleted resolved.

The stream is followed like the webhook stream (webhooks/registry_link.py):
after a break, a whole new snapshot. `loaded` is set once the first
snapshot is in: Publish waits for it, so no reading is stored unjudged by a
rule that existed when this process started.

`AlertEndings` resolves, with a device.alert event each, the active alerts
of rules that are disabled or gone. It runs after every snapshot and every
change that disables or deletes a rule, and every ENDINGS_SWEEP_SECONDS
besides (an alert that another process, whose stream was late, raised after
this one's last sweep; one whose webhooks were not known yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, Callable

from edgesense.common.auth import bearer_metadata
from edgesense.common.errors import Unavailable
from edgesense.common.grpc_tls import open_channel
from edgesense.common.log_throttle import ThrottledLog
from edgesense.common.thresholds import RULE_DELETED, RULE_DISABLED, Rule
from edgesense.common.tls import GrpcTls
from edgesense.delivery import metrics
from edgesense.delivery.rules.alerts import AlertTarget, pending_webhooks
from edgesense.delivery.rules.index import RuleIndex
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.webhooks.registry_link import CHANNEL_OPTIONS, follow
from edgesense.v1 import rules_pb2, rules_pb2_grpc

log = logging.getLogger(__name__)
_problems = ThrottledLog(log)
ENDINGS_SWEEP_SECONDS = 30.0
Change = rules_pb2.RuleChange


def rule_from(message: rules_pb2.Rule, project_id: str) -> Rule:
    return Rule(
        rule_id=message.rule_id,
        project_id=project_id,
        name=message.name,
        field=message.field,
        operator=message.operator,
        threshold=message.threshold,
        threshold_high=message.threshold_high if message.HasField("threshold_high") else None,
        clear_threshold=message.clear_threshold if message.HasField("clear_threshold") else None,
        count=max(1, message.count),
        for_seconds=float(message.for_seconds),
        severity=message.severity,
        device_ids=frozenset(message.device_ids),
        gateway_ids=frozenset(message.gateway_ids),
        enabled=message.enabled,
        version=message.version,
    )


class AlertEndings:
    """Resolves the active alerts of rules disabled or deleted (see module doc)."""

    def __init__(
        self,
        outbox: Outbox,
        rules: RuleIndex,
        targets: Callable[[str, str, float], tuple[AlertTarget, ...]],
        stored_unleased: Callable[[set[tuple[str, str]]], None],
    ) -> None:
        self.outbox = outbox
        self.rules = rules
        self._targets = targets
        self._stored_unleased = stored_unleased
        self._due = asyncio.Event()
        self.loaded = asyncio.Event()  # the rules' first snapshot is in
        self._deleted: set[str] = set()  # rules deleted since the last sweep

    def poke(self, deleted: str | None = None) -> None:
        if deleted is not None:
            self._deleted.add(deleted)
        self._due.set()

    async def run(self) -> None:
        await self.loaded.wait()  # before: every rule would look deleted
        while True:
            self._due.clear()
            try:
                await self.sweep()
            except Unavailable as exc:
                _problems.warning("cannot resolve the alerts of ended rules: %s", exc.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), ENDINGS_SWEEP_SECONDS)

    async def sweep(self) -> int:
        """Resolve what is due now; how many alerts."""
        deleted, self._deleted = self._deleted, set()
        alerting = await self.outbox.alerting()
        reasons: dict[str, str] = {}
        for rule_id in set(alerting) | deleted:
            rule = self.rules.get(rule_id)
            if rule is None:
                reasons[rule_id] = RULE_DELETED
            elif not rule.enabled:
                reasons[rule_id] = RULE_DISABLED
        if not reasons:
            return 0
        now = time.time()
        targets = {
            device: self._targets(*device, now)
            for rule_id in reasons
            for device in alerting.get(rule_id, ())
        }
        try:
            plan = await self.outbox.end_alerts(reasons, targets, now)
        except BaseException:
            self._deleted |= deleted  # their states are forgotten next time
            raise
        if plan.resolved:
            metrics.ALERTS.labels("resolved").inc(plan.resolved)
            log.info("resolved %d alerts of disabled or deleted rules", plan.resolved)
        waiting = pending_webhooks(plan)
        if waiting:
            self._stored_unleased(waiting)
        return plan.resolved


class RulesLink:
    """Follows WatchRules into `rules`; tells `endings` what to resolve."""

    def __init__(
        self,
        address: str,
        token: str,
        rules: RuleIndex,
        endings: AlertEndings,
        *,
        tls: GrpcTls | None = None,
    ) -> None:
        self.address = address
        self._tls = tls or GrpcTls()
        self.rules = rules
        self.endings = endings
        self._metadata = bearer_metadata(token)

    async def run(self) -> None:
        channel = open_channel(self.address, self._tls, CHANNEL_OPTIONS)
        try:
            stub = rules_pb2_grpc.AlertRulesStub(channel)
            await follow(
                "rule",
                self.address,
                lambda: stub.WatchRules(rules_pb2.WatchRulesRequest(), metadata=self._metadata),
                self._consume,
            )
        finally:
            await channel.close()

    async def _consume(self, stream: AsyncIterable[rules_pb2.RuleChange]) -> bool:
        """Apply the stream to the index; True once a snapshot was loaded."""
        snapshot: list[Rule] = []
        in_snapshot = True
        async for change in stream:
            if in_snapshot:
                if change.kind == Change.KIND_SNAPSHOT:
                    snapshot.append(rule_from(change.rule, change.project_id))
                elif change.kind == Change.KIND_SNAPSHOT_END:
                    self.rules.replace(snapshot)
                    log.info("rule index loaded: %d rules", len(snapshot))
                    self.endings.loaded.set()
                    self.endings.poke()
                    in_snapshot = False
                continue
            if change.kind == Change.KIND_UPSERT:
                rule = rule_from(change.rule, change.project_id)
                self.rules.upsert(rule)
                if not rule.enabled:
                    self.endings.poke()
            elif change.kind == Change.KIND_DELETE:
                self.rules.remove(change.rule.rule_id)
                self.endings.poke(change.rule.rule_id)
        return not in_snapshot
