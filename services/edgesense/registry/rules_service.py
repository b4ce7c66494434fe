"""The AlertRules gRPC servicer: authenticate, validate, store, answer.

Authentication is the webhook registry's: an API key sees only its
project's rules (another project's rule is NOT_FOUND), and WatchRules, the
stream delivery evaluates rules from, takes the internal token only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from edgesense.common.auth import Authenticator
from edgesense.common.paging import PageTokens, fit_page, page_size
from edgesense.common.thresholds import RANGE_OPERATORS
from edgesense.registry.change_log import DELETE, Change, watch
from edgesense.registry.rule_validation import RuleInput, validate_rule, validate_update
from edgesense.registry.rules_store import RuleStore, StoredRule
from edgesense.registry.service import timestamp
from edgesense.v1 import rules_pb2, rules_pb2_grpc

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 100


def rule_input(spec: rules_pb2.RuleSpec) -> RuleInput:
    """A RuleSpec as validation takes it: None for `optional` fields left out."""
    return RuleInput(
        name=spec.name,
        description=spec.description,
        field=spec.field,
        operator=spec.operator,
        threshold=spec.threshold if spec.HasField("threshold") else None,
        threshold_high=spec.threshold_high if spec.HasField("threshold_high") else None,
        clear_threshold=spec.clear_threshold if spec.HasField("clear_threshold") else None,
        count=spec.count if spec.HasField("count") else None,
        for_seconds=spec.for_seconds,
        severity=spec.severity,
        device_ids=list(spec.device_ids),
        gateway_ids=list(spec.gateway_ids),
        enabled=spec.enabled if spec.HasField("enabled") else None,
    )


def rule_message(rule: StoredRule) -> rules_pb2.Rule:
    """The rule as users (and delivery) see it: `clear_threshold` spelt out
    for the bound operators (the threshold unless set), absent for ranges."""
    spec = rule.spec
    message = rules_pb2.Rule(
        rule_id=rule.rule_id,
        name=spec.name,
        description=spec.description,
        field=spec.field,
        operator=spec.operator,
        threshold=spec.threshold,
        count=spec.count,
        for_seconds=spec.for_seconds,
        severity=spec.severity,
        device_ids=list(spec.device_ids),
        gateway_ids=list(spec.gateway_ids),
        enabled=spec.enabled,
        created_at=timestamp(rule.created_at),
        updated_at=timestamp(rule.updated_at),
        version=rule.version,
    )
    if spec.operator in RANGE_OPERATORS:
        if spec.threshold_high is not None:
            message.threshold_high = spec.threshold_high
    else:
        clear = spec.clear_threshold
        message.clear_threshold = spec.threshold if clear is None else clear
    return message


class AlertRulesServicer(rules_pb2_grpc.AlertRulesServicer):
    def __init__(
        self,
        store: RuleStore,
        auth: Authenticator,
        page_tokens: PageTokens,
        max_per_project: int | None = None,
    ) -> None:
        self.store = store
        self.auth = auth
        self.page_tokens = page_tokens
        self.max_per_project = max_per_project
        self.stopping = False

    async def CreateRule(
        self, request: rules_pb2.CreateRuleRequest, context: Context
    ) -> rules_pb2.Rule:
        project = self.auth.project(context.invocation_metadata())
        spec = validate_rule(rule_input(request.rule))
        rule = await self.store.create(project, spec, self.max_per_project)
        log.info("created %s for project %s (%r)", rule.rule_id, project, spec.name)
        return rule_message(rule)

    async def ListRules(
        self, request: rules_pb2.ListRulesRequest, context: Context
    ) -> rules_pb2.ListRulesResponse:
        project = self.auth.project(context.invocation_metadata())
        size = page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        scope = (project, "rules")
        after = self.page_tokens.read(request.page_token, scope)
        found = await self.store.list_project(project, size + 1, after)
        page, more = fit_page(found, rule_message, size)
        response = rules_pb2.ListRulesResponse(rules=page)
        if more:
            response.next_page_token = self.page_tokens.issue(scope, page[-1].rule_id)
        return response

    async def GetRule(self, request: rules_pb2.GetRuleRequest, context: Context) -> rules_pb2.Rule:
        project = self.auth.project(context.invocation_metadata())
        return rule_message(await self.store.get(project, request.rule_id))

    async def UpdateRule(
        self, request: rules_pb2.UpdateRuleRequest, context: Context
    ) -> rules_pb2.Rule:
        project = self.auth.project(context.invocation_metadata())
        paths = list(request.update_mask.paths)
        given = rule_input(request.rule)
        rule = await self.store.update(
            project, request.rule_id, lambda current: validate_update(current, paths, given)
        )
        log.info(
            "updated %s of project %s (%s; version %d)",
            rule.rule_id,
            project,
            ",".join(paths),
            rule.version,
        )
        return rule_message(rule)

    async def DeleteRule(
        self, request: rules_pb2.DeleteRuleRequest, context: Context
    ) -> rules_pb2.DeleteRuleResponse:
        project = self.auth.project(context.invocation_metadata())
        await self.store.delete(project, request.rule_id)
        log.info("deleted %s of project %s", request.rule_id, project)
        return rules_pb2.DeleteRuleResponse(rule_id=request.rule_id, status="deleted")

    async def WatchRules(
        self, request: rules_pb2.WatchRulesRequest, context: Context
    ) -> AsyncIterator[rules_pb2.RuleChange]:
        self.auth.require_internal(context.invocation_metadata())
        Kind = rules_pb2.RuleChange
        async for message in watch(
            self.store,
            lambda rule: Kind(
                kind=Kind.KIND_SNAPSHOT, rule=rule_message(rule), project_id=rule.project_id
            ),
            Kind(kind=Kind.KIND_SNAPSHOT_END),
            self._change,
            lambda: self.stopping,
        ):
            yield message

    def stop_watches(self) -> None:
        """End every WatchRules stream (stopping: their clients reconnect to
        another replica, or to this one when it is back)."""
        self.stopping = True
        self.store.changed.notify()

    def _change(self, change: Change, rule: StoredRule | None) -> rules_pb2.RuleChange:
        """The rule as it is now: a change whose rule is gone since is a
        delete (a later change in the log says so too), as for webhooks."""
        Kind = rules_pb2.RuleChange
        if rule is None or change.kind == DELETE:
            return Kind(
                kind=Kind.KIND_DELETE,
                rule=rules_pb2.Rule(rule_id=change.key),
                project_id=change.project_id,
            )
        return Kind(kind=Kind.KIND_UPSERT, rule=rule_message(rule), project_id=rule.project_id)
