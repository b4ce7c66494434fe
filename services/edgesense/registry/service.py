"""The WebhookRegistry gRPC servicer: authenticate, validate, store, answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from edgesense.common.auth import Authenticator
from edgesense.common.errors import NotFound
from edgesense.common.event_types import EVENT_TYPES
from edgesense.common.netpolicy import UrlPolicy
from edgesense.common.paging import PageTokens, fit_page, page_size
from edgesense.common.textcheck import printable
from edgesense.registry.change_log import Change, watch
from edgesense.registry.rotation import live
from edgesense.registry.store import DISABLED, StoredWebhook, WebhookStore
from edgesense.registry.validation import (
    check_overlap,
    check_secret,
    validate_registration,
    validate_update,
)
from edgesense.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_PAGE_SIZE = 100  # the default webhook limit: one page, unless raised
MAX_PAGE_SIZE = 100
# What a custom header's value reads as in every answer: the same for every
# value, so an answer tells neither the value nor its length.
MASKED_HEADER_VALUE = "***"


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def webhook_message(
    hook: StoredWebhook, headers: Mapping[str, str], now: datetime | None = None
) -> registry_pb2.Webhook:
    """The webhook as users see it: `headers` by name with masked values, and
    the end of the rotation only while it is ahead of `now`."""
    message = registry_pb2.Webhook(
        webhook_id=hook.webhook_id,
        url=hook.url,
        events=list(hook.events),
        status=hook.status,
        description=hook.description,
        device_ids=list(hook.device_ids),
        created_at=timestamp(hook.created_at),
        headers=dict.fromkeys(headers, MASKED_HEADER_VALUE),
        updated_at=timestamp(hook.updated_at),
        rate_limit_per_second=hook.rate_limit_per_second,
        ordered=hook.ordered,
    )
    if hook.disabled_at is not None:
        message.disabled_at.CopyFrom(timestamp(hook.disabled_at))
    if hook.disabled_reason is not None:
        message.disabled_reason = hook.disabled_reason
    ends = hook.secret_rotation_ends_at
    if ends is not None and ends > (now or datetime.now(UTC)):
        message.secret_rotation_ends_at.CopyFrom(timestamp(ends))
    return message


def event_types_message() -> registry_pb2.ListEventTypesResponse:
    answer = registry_pb2.ListEventTypesResponse()
    for kind in EVENT_TYPES:
        schema = struct_pb2.Struct()
        schema.update(kind.schema())
        answer.event_types.add(name=kind.name, description=kind.description, schema=schema)
    return answer


class RegistryService(registry_pb2_grpc.WebhookRegistryServicer):
    def __init__(
        self,
        store: WebhookStore,
        auth: Authenticator,
        policy: UrlPolicy,
        page_tokens: PageTokens,
        max_per_project: int | None = None,
    ) -> None:
        self.store = store
        self.auth = auth
        self.policy = policy
        self.page_tokens = page_tokens
        self.max_per_project = max_per_project
        self.stopping = False

    async def RegisterWebhook(
        self, request: registry_pb2.RegisterWebhookRequest, context: Context
    ) -> registry_pb2.RegisterWebhookResponse:
        project = self.auth.project(context.invocation_metadata())
        spec = validate_registration(
            self.policy,
            url=request.url,
            events=list(request.events),
            secret=request.secret,
            description=request.description,
            device_ids=list(request.device_ids),
            headers=request.headers,
            rate_limit_per_second=request.rate_limit_per_second,
            ordered=request.ordered,
        )
        hook = await self.store.create(project, spec, self.max_per_project)
        log.info(
            "registered %s for project %s (%s)", hook.webhook_id, project, ",".join(hook.events)
        )
        return registry_pb2.RegisterWebhookResponse(webhook_id=hook.webhook_id, status="registered")

    async def ListWebhooks(
        self, request: registry_pb2.ListWebhooksRequest, context: Context
    ) -> registry_pb2.ListWebhooksResponse:
        project = self.auth.project(context.invocation_metadata())
        size = page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        scope = (project, "webhooks")
        after = self.page_tokens.read(request.page_token, scope)
        hooks = await self.store.list_project(project, size + 1, after)
        page, more = fit_page(hooks, self._message, size)
        response = registry_pb2.ListWebhooksResponse(webhooks=page)
        if more:
            response.next_page_token = self.page_tokens.issue(scope, page[-1].webhook_id)
        return response

    async def GetWebhook(
        self, request: registry_pb2.GetWebhookRequest, context: Context
    ) -> registry_pb2.Webhook:
        project = self.auth.project(context.invocation_metadata())
        return self._message(await self.store.get(project, request.webhook_id))

    async def UpdateWebhook(
        self, request: registry_pb2.UpdateWebhookRequest, context: Context
    ) -> registry_pb2.Webhook:
        project = self.auth.project(context.invocation_metadata())
        update = request.webhook
        changes = validate_update(
            self.policy,
            list(request.update_mask.paths),
            url=update.url,
            events=list(update.events),
            description=update.description,
            device_ids=list(update.device_ids),
            headers=update.headers,
            rate_limit_per_second=update.rate_limit_per_second,
            ordered=update.ordered,
        )
        hook = await self.store.update(project, request.webhook_id, changes)
        log.info("updated %s of project %s: %r", hook.webhook_id, project, changes)
        return self._message(hook)

    async def RotateWebhookSecret(
        self, request: registry_pb2.RotateWebhookSecretRequest, context: Context
    ) -> registry_pb2.Webhook:
        project = self.auth.project(context.invocation_metadata())
        overlap = check_overlap(
            request.overlap_seconds if request.HasField("overlap_seconds") else None
        )
        secret = check_secret(request.secret)
        hook = await self.store.rotate_secret(project, request.webhook_id, secret, overlap)
        log.info(
            "rotated the secret of %s of project %s (the previous one signs for %d s)",
            hook.webhook_id,
            project,
            overlap,
        )
        return self._message(hook)

    async def ListEventTypes(
        self, request: registry_pb2.ListEventTypesRequest, context: Context
    ) -> registry_pb2.ListEventTypesResponse:
        self.auth.project(context.invocation_metadata())
        return event_types_message()

    async def DeleteWebhook(
        self, request: registry_pb2.DeleteWebhookRequest, context: Context
    ) -> registry_pb2.DeleteWebhookResponse:
        project = self.auth.project(context.invocation_metadata())
        await self.store.delete(project, request.webhook_id)
        log.info("deleted %s of project %s", request.webhook_id, project)
        return registry_pb2.DeleteWebhookResponse(webhook_id=request.webhook_id, status="deleted")

    async def EnableWebhook(
        self, request: registry_pb2.EnableWebhookRequest, context: Context
    ) -> registry_pb2.EnableWebhookResponse:
        project = self.auth.project(context.invocation_metadata())
        hook = await self.store.set_status(project, request.webhook_id, "active")
        log.info("enabled %s of project %s", hook.webhook_id, project)
        return registry_pb2.EnableWebhookResponse(webhook_id=hook.webhook_id, status=hook.status)

    async def ReportDeliveryFailure(
        self, request: registry_pb2.ReportDeliveryFailureRequest, context: Context
    ) -> registry_pb2.ReportDeliveryFailureResponse:
        self.auth.require_internal(context.invocation_metadata())
        reason = printable(request.reason) or (
            f"delivery {request.delivery_id} failed after all attempts"
        )
        try:
            hook = await self.store.set_status(
                None,
                request.webhook_id,
                DISABLED,
                reason[:1000],
                last_attempt=request.last_attempt if request.HasField("last_attempt") else None,
                # A failed operational event disables, but publishes none: no loops.
                publish=not request.operational_event,
            )
        except NotFound:
            return registry_pb2.ReportDeliveryFailureResponse(status="deleted")
        log.warning("disabled %s: %s", hook.webhook_id, hook.disabled_reason)
        return registry_pb2.ReportDeliveryFailureResponse(status=hook.status)

    async def WatchWebhooks(
        self, request: registry_pb2.WatchWebhooksRequest, context: Context
    ) -> AsyncIterator[registry_pb2.WebhookChange]:
        self.auth.require_internal(context.invocation_metadata())
        Kind = registry_pb2.WebhookChange
        async for message in watch(
            self.store,
            lambda hook: Kind(kind=Kind.KIND_SNAPSHOT, target=self._target(hook)),
            Kind(kind=Kind.KIND_SNAPSHOT_END),
            self._change,
            lambda: self.stopping,
        ):
            yield message

    def stop_watches(self) -> None:
        """End every WatchWebhooks stream (stopping: their clients reconnect to
        another replica, or to this one when it is back)."""
        self.stopping = True
        self.store.changed.notify()

    def _message(self, hook: StoredWebhook) -> registry_pb2.Webhook:
        return webhook_message(hook, self.store.headers_of(hook))

    def _target(self, hook: StoredWebhook) -> registry_pb2.WebhookTarget:
        headers = self.store.headers_of(hook)
        target = registry_pb2.WebhookTarget(
            webhook=webhook_message(hook, headers),
            project_id=hook.project_id,
            secret=self.store.secret_of(hook),
            headers=headers,
        )
        for previous in live(self.store.previous_secrets_of(hook), datetime.now(UTC)):
            target.previous_secrets.add(
                secret=previous.secret, expires_at=timestamp(previous.expires_at)
            )
        return target

    def _change(self, change: Change, hook: StoredWebhook | None) -> registry_pb2.WebhookChange:
        Kind = registry_pb2.WebhookChange
        if hook is None:  # deleted since (or the change is a delete)
            return Kind(
                kind=Kind.KIND_DELETE,
                target=registry_pb2.WebhookTarget(
                    webhook=registry_pb2.Webhook(webhook_id=change.key),
                    project_id=change.project_id,
                ),
            )
        return Kind(kind=Kind.KIND_UPSERT, target=self._target(hook))
