"""Delivery's rules: the registry's WatchRules stream into the RuleIndex, and
the alerts of rules that were disabled, deleted or changed resolved.

The stream is followed like the webhook stream (webhooks/registry_link.py):
after a break, a whole new snapshot. `loaded` is set once the first
snapshot is in: Publish waits for it, so no reading is stored unjudged by a
rule that existed when this process started.

`AlertEndings` resolves, with a device.alert event each, the active alerts
of rules that are disabled, deleted, or changed so that they no longer
judge the alert's device or field. It runs after every snapshot and every
change, and every ENDINGS_SWEEP_SECONDS besides (an alert another process
raised under an older version of the rule; one whose webhooks were not
known yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable

import grpc

from edgesense.common.auth import bearer_metadata
from edgesense.common.errors import Unavailable
from edgesense.common.grpc_tls import open_channel
from edgesense.common.log_throttle import ThrottledLog
from edgesense.common.thresholds import (
    DELETED_VERSION,
    RULE_CHANGED,
    RULE_DELETED,
    RULE_DISABLED,
    Rule,
)
from edgesense.common.tls import GrpcTls
from edgesense.delivery import metrics
from edgesense.delivery.rules.alerts import ActiveAlert, AlertTarget, Ending, pending_webhooks
from edgesense.delivery.rules.index import RuleIndex
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.store.reads import MAX_RULES_READ
from edgesense.delivery.webhooks.registry_link import CHANNEL_OPTIONS, follow
from edgesense.v1 import rules_pb2, rules_pb2_grpc

log = logging.getLogger(__name__)
_problems = ThrottledLog(log)
ENDINGS_SWEEP_SECONDS = 30.0
ENDINGS_BATCH = 1000  # alerts read, and ended, per transaction
# A rule's alerts are checked at every sweep until one that began this long
# after its version was learned has ended (longer than a store takes).
SETTLE_SECONDS = 60.0
# The states of a deleted rule are deleted this long after (see _forget_deleted).
FORGET_AFTER_SECONDS = 3600.0
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
    """Resolves the active alerts whose rule was disabled, deleted, or
    changed so that it no longer judges their device or field (see module doc).

    It acts on evidence only, since another delivery process may know a
    newer state of a rule than this one (its stream is a moment ahead, or
    this one's is down), and never on clocks:

    - deleted: its stream delivered the delete, or a snapshot lacks a rule
      known to exist before the stream was opened (in this process's index,
      or with alerts or states then: its creation was committed before the
      snapshot was read; rule ids are never used again);
    - disabled or changed: the registry gives the rule a new version at
      each such change (and each condition change), and an alert records
      the version it triggered under; one raised under an older version
      than the one this process knows ends if the rule now is disabled or
      no longer takes its device (deviceIds, gatewayIds) or field. A
      lagging process that raises an alert under an older version ends it
      itself once it learns.

    An ended alert's (rule, device) state is reset at the version that ended
    it, and a state never goes back to an older version (thresholds.judge):
    a process that still knows an older one changes nothing there.

    A rule's alerts are checked again at every sweep until one that began
    SETTLE_SECONDS after this process learned its version has ended (an
    alert being stored under the old version by this process's own
    acceptor may commit after a sweep's read)."""

    def __init__(
        self,
        outbox: Outbox,
        rules: RuleIndex,
        targets: Callable[[str, str, float], tuple[AlertTarget, ...]],
        stored_unleased: Callable[[set[tuple[str, str]]], None],
        webhooks_ready: asyncio.Event,
    ) -> None:
        self.outbox = outbox
        self.rules = rules
        self._targets = targets
        self._stored_unleased = stored_unleased
        self._webhooks_ready = webhooks_ready  # no targets before the webhook index is in
        self._due = asyncio.Event()
        self.loaded = asyncio.Event()  # the rules' first snapshot is in
        self._deleted: dict[str, float] = {}  # rule id -> when learned (monotonic)
        self._learned: dict[str, tuple[int, float]] = {}  # rule -> (version, when learned)
        self._settled: dict[str, int] = {}  # rule -> the version its alerts were checked for

    def snapshot(self, rules: list[Rule], known_before: set[str]) -> None:
        """A snapshot replaced the rules. `known_before`: rules known to have
        existed before the stream that brought it was opened (this process's
        index then, and those with alerts or states then): one of them that
        the snapshot lacks was deleted (rule ids are never used again)."""
        present = {rule.rule_id for rule in rules}
        for gone in known_before - present:
            self.deleted(gone)
        for rule in rules:
            self.changed(rule)
        self.loaded.set()
        self._due.set()

    def changed(self, rule: Rule) -> None:
        """The stream delivered `rule` (created or changed)."""
        if self._learned.get(rule.rule_id, (None, 0.0))[0] != rule.version:
            self._learned[rule.rule_id] = (rule.version, time.monotonic())
            self._due.set()

    def deleted(self, rule_id: str) -> None:
        self._deleted.setdefault(rule_id, time.monotonic())
        self._learned.pop(rule_id, None)
        self._settled.pop(rule_id, None)
        self._due.set()

    async def run(self) -> None:
        await self.loaded.wait()
        await self._webhooks_ready.wait()
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
        began = time.monotonic()
        alerting = await self.outbox.alerting()
        suspects = sorted(
            rule_id
            for rule_id in alerting
            if rule_id in self._deleted
            or ((rule := self.rules.get(rule_id)) and self._settled.get(rule_id) != rule.version)
        )
        versions = {r: rule.version for r in suspects if (rule := self.rules.get(r))}
        resolved = 0
        for start in range(0, len(suspects), MAX_RULES_READ):
            chunk, after = suspects[start : start + MAX_RULES_READ], 0
            while True:
                found = await self.outbox.active_alerts(chunk, after, ENDINGS_BATCH)
                resolved += await self._resolve(found)
                if len(found) < ENDINGS_BATCH:
                    break
                after = found[-1].seq
        for rule_id, version in versions.items():
            learned_version, learned_at = self._learned.get(rule_id, (None, 0.0))
            if learned_version == version and began >= learned_at + SETTLE_SECONDS:
                self._settled[rule_id] = version
        await self._forget_deleted()
        return resolved

    def _why(self, alert: ActiveAlert) -> Ending | None:
        """Why `alert` ends, and the version that says so, if this process
        has the evidence (see class doc)."""
        if alert.rule_id in self._deleted:
            return Ending(RULE_DELETED, DELETED_VERSION)
        rule = self.rules.get(alert.rule_id)
        if rule is None or alert.rule_version >= rule.version:
            return None  # unknown here, or raised under what this process knows
        if not rule.enabled:
            return Ending(RULE_DISABLED, rule.version)
        if rule.field != alert.field or not rule.applies_to(alert.gateway_id, alert.device_id):
            return Ending(RULE_CHANGED, rule.version)
        return None

    async def _resolve(self, found: list[ActiveAlert]) -> int:
        now = time.time()
        reasons = {a.alert_id: why for a in found if (why := self._why(a)) is not None}
        if not reasons:
            return 0
        devices = {(a.project_id, a.device_id) for a in found if a.alert_id in reasons}
        targets = {device: self._targets(*device, now) for device in devices}
        plan = await self.outbox.end_alerts(reasons, targets, now)
        if plan.resolved:
            metrics.ALERTS.labels("resolved").inc(plan.resolved)
            log.info("resolved %d alerts of disabled, deleted or changed rules", plan.resolved)
        waiting = pending_webhooks(plan)
        if waiting:
            self._stored_unleased(waiting)
        return plan.resolved

    async def _forget_deleted(self) -> None:
        """The states of rules deleted FORGET_AFTER_SECONDS ago go (by then no
        process judges them any more: nothing waits for those rows)."""
        cut = time.monotonic() - FORGET_AFTER_SECONDS
        old = sorted(rule_id for rule_id, at in self._deleted.items() if at <= cut)
        if old:
            await self.outbox.forget_states(old)
            for rule_id in old:
                del self._deleted[rule_id]


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
        self._known_before: set[str] = set()

    async def run(self) -> None:
        channel = open_channel(self.address, self._tls, CHANNEL_OPTIONS)
        try:
            stub: rules_pb2_grpc.AlertRulesAsyncStub = rules_pb2_grpc.AlertRulesStub(channel)
            await follow("rule", self.address, lambda: self._changes(stub), self._consume)
        finally:
            await channel.close()

    async def _changes(
        self, stub: rules_pb2_grpc.AlertRulesAsyncStub
    ) -> AsyncIterator[rules_pb2.RuleChange]:
        """The stream's changes; first, before it is opened, the rules known
        to exist by then: this process's, and those with alerts or states
        (a snapshot without one of them says it was deleted, see AlertEndings)."""
        outbox = self.endings.outbox
        self._known_before = (
            {rule.rule_id for rule in self.rules.rules()}
            | await outbox.alerting()
            | await outbox.judged_rules()
        )
        async for change in stub.WatchRules(rules_pb2.WatchRulesRequest(), metadata=self._metadata):
            yield change

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
        async for change in stream:
            if in_snapshot:
                if change.kind == Change.KIND_SNAPSHOT:
                    snapshot.append(rule_from(change.rule, change.project_id))
                elif change.kind == Change.KIND_SNAPSHOT_END:
                    self.rules.replace(snapshot)
                    log.info("rule index loaded: %d rules", len(snapshot))
                    self.endings.snapshot(snapshot, self._known_before)
                    in_snapshot = False
                continue
            if change.kind == Change.KIND_UPSERT:
                rule = rule_from(change.rule, change.project_id)
                self.rules.upsert(rule)
                self.endings.changed(rule)
            elif change.kind == Change.KIND_DELETE:
                self.rules.remove(change.rule.rule_id)
                self.endings.deleted(change.rule.rule_id)
        return not in_snapshot
