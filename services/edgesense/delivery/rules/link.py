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

import grpc

from edgesense.common.auth import bearer_metadata
from edgesense.common.errors import Unavailable
from edgesense.common.grpc_tls import open_channel
from edgesense.common.log_throttle import ThrottledLog
from edgesense.common.thresholds import RULE_CHANGED, RULE_DELETED, RULE_DISABLED, Rule
from edgesense.common.tls import GrpcTls
from edgesense.delivery import metrics
from edgesense.delivery.rules.alerts import ActiveAlert, AlertTarget, pending_webhooks
from edgesense.delivery.rules.index import RuleIndex
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.webhooks.registry_link import CHANNEL_OPTIONS, follow
from edgesense.v1 import rules_pb2, rules_pb2_grpc

log = logging.getLogger(__name__)
_problems = ThrottledLog(log)
ENDINGS_SWEEP_SECONDS = 30.0
ENDINGS_BATCH = 1000  # alerts read, and ended, per transaction
# A rule absent from a snapshot was deleted, if one of its alerts triggered
# this long before the snapshot was read (another process's clock may be
# ahead of this one's by less than this).
SNAPSHOT_SKEW_SECONDS = 60.0
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
    """Resolves the active alerts whose rule was disabled, deleted, or changed
    so that it no longer judges their device (see module doc).

    It acts on evidence only, since another delivery process may know a
    newer state of a rule than this one (its stream is a moment ahead, or
    this one's is down): it ends an alert only if it triggered before this
    process learned what ends it. Evidence is a change its stream delivered
    (a delete; an upsert that disables the rule, or whose condition no
    longer takes the alert's device or field), or a snapshot: a rule absent
    from one had been deleted if it had an alert that triggered well before
    the snapshot was read (SNAPSHOT_SKEW_SECONDS, for the clocks of
    several processes). An alert raised after this process learned, by a
    process that did not know yet, is ended by that process once it does."""

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
        self._snapshot_at = 0.0
        # rule id -> (why its alerts end, when this process learned it)
        self._ended: dict[str, tuple[str, float]] = {}
        self._learned: dict[str, float] = {}  # rule id -> when its version here was learned
        self._scanned: dict[str, int] = {}  # rule id -> version its alerts were checked against
        self._forget: set[str] = set()  # rules whose states go at the next sweep

    def snapshot(self, rules: list[Rule], now: float) -> None:
        """A snapshot replaced the rules (`now`: when it was read, about)."""
        present = {rule.rule_id for rule in rules}
        for gone in set(self._learned) - present:  # deleted while the stream was down
            self._end(gone, RULE_DELETED, now)
        for rule in rules:
            self.changed(rule, now)
        self._snapshot_at = now
        self.loaded.set()
        self._due.set()

    def changed(self, rule: Rule, now: float) -> None:
        """The stream delivered `rule` (created or changed)."""
        if not rule.enabled:
            if self._ended.get(rule.rule_id, ("", 0.0))[0] != RULE_DISABLED:
                self._end(rule.rule_id, RULE_DISABLED, now)
            return
        self._ended.pop(rule.rule_id, None)
        if self._scanned.get(rule.rule_id) != rule.version:
            self._learned[rule.rule_id] = now
            self._due.set()

    def deleted(self, rule_id: str, now: float) -> None:
        self._end(rule_id, RULE_DELETED, now)

    def _end(self, rule_id: str, reason: str, now: float) -> None:
        self._ended[rule_id] = (reason, now)
        self._learned.pop(rule_id, None)
        self._scanned.pop(rule_id, None)
        self._forget.add(rule_id)
        self._due.set()

    async def run(self) -> None:
        await self.loaded.wait()  # before it, every rule would look unknown
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
        now = time.time()
        alerting = await self.outbox.alerting()
        suspects = sorted(
            rule_id
            for rule_id in alerting
            if rule_id in self._ended
            or (rule := self.rules.get(rule_id)) is None
            or self._scanned.get(rule_id) != rule.version
        )
        resolved, after = 0, 0
        while suspects:
            found = await self.outbox.active_alerts(suspects, after, ENDINGS_BATCH)
            reasons = {a.alert_id: why for a in found if (why := self._why(a)) is not None}
            forget, self._forget = sorted(self._forget), set()
            try:
                resolved += await self._resolve(reasons, forget, found, now)
            except BaseException:
                self._forget.update(forget)
                raise
            if len(found) < ENDINGS_BATCH:
                break
            after = found[-1].seq
        for rule_id in suspects:
            if (rule := self.rules.get(rule_id)) is not None:
                self._scanned[rule_id] = rule.version
        if self._forget:  # ended rules with no alert left: their states only
            forget, self._forget = sorted(self._forget), set()
            await self.outbox.end_alerts({}, forget, {}, now)
        return resolved

    def _why(self, alert: ActiveAlert) -> str | None:
        """Why `alert` ends, if this process has the evidence (see class doc)."""
        ended = self._ended.get(alert.rule_id)
        if ended is not None:
            reason, learned = ended
            return reason if alert.updated_at <= learned else None
        rule = self.rules.get(alert.rule_id)
        if rule is None:
            return (
                RULE_DELETED
                if alert.updated_at < self._snapshot_at - SNAPSHOT_SKEW_SECONDS
                else None
            )
        if rule.applies_to(alert.gateway_id, alert.device_id) and rule.field == alert.field:
            return None
        learned = self._learned.get(alert.rule_id, self._snapshot_at)
        return RULE_CHANGED if alert.updated_at <= learned else None

    async def _resolve(
        self, reasons: dict[str, str], forget: list[str], found: list[ActiveAlert], now: float
    ) -> int:
        if not reasons and not forget:
            return 0
        devices = {(a.project_id, a.device_id) for a in found if a.alert_id in reasons}
        targets = {device: self._targets(*device, now) for device in devices}
        plan = await self.outbox.end_alerts(reasons, forget, targets, now)
        if plan.resolved:
            metrics.ALERTS.labels("resolved").inc(plan.resolved)
            log.info("resolved %d alerts of disabled, deleted or changed rules", plan.resolved)
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
        try:
            return await self._apply(stream)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED and not self.endings.loaded.is_set():
                # A registry older than this delivery (upgrade the registry
                # first): readings are stored, unjudged, until it serves rules.
                log.warning("registry %s serves no alert rules yet", self.address)
                self.endings.loaded.set()
            raise

    async def _apply(self, stream: AsyncIterable[rules_pb2.RuleChange]) -> bool:
        """Apply the stream to the index; True once a snapshot was loaded."""
        snapshot: list[Rule] = []
        in_snapshot = True
        opened = time.time()  # the snapshot is read after this
        async for change in stream:
            if in_snapshot:
                if change.kind == Change.KIND_SNAPSHOT:
                    snapshot.append(rule_from(change.rule, change.project_id))
                elif change.kind == Change.KIND_SNAPSHOT_END:
                    self.rules.replace(snapshot)
                    log.info("rule index loaded: %d rules", len(snapshot))
                    self.endings.snapshot(snapshot, opened)
                    in_snapshot = False
                continue
            if change.kind == Change.KIND_UPSERT:
                rule = rule_from(change.rule, change.project_id)
                self.rules.upsert(rule)
                self.endings.changed(rule, time.time())
            elif change.kind == Change.KIND_DELETE:
                self.rules.remove(change.rule.rule_id)
                self.endings.deleted(change.rule.rule_id, time.time())
        return not in_snapshot
