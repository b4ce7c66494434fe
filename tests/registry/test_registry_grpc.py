"""The registry as a real gRPC server on a free port, on SQLite and PostgreSQL:
the internal change stream, the disable report, secrets at rest, migrations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import text

from edgesense.common.auth import bearer_metadata
from edgesense.common.config import Settings
from edgesense.registry.server import RunningRegistry, start_registry
from edgesense.storage.engine import create_engine
from edgesense.v1 import events_pb2, registry_pb2, registry_pb2_grpc
from tests.conftest import key_of

Change = registry_pb2.WebhookChange


@pytest.fixture
async def registry(settings: Settings) -> AsyncIterator[RunningRegistry]:
    # No delivery: operational events stay unpublished, for the tests to read.
    running = await start_registry(settings, "127.0.0.1:0", "127.0.0.1:1")
    yield running
    await running.stop(0)


@pytest.fixture
async def stub(
    registry: RunningRegistry,
) -> AsyncIterator[registry_pb2_grpc.WebhookRegistryAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
        yield registry_pb2_grpc.WebhookRegistryStub(channel)


def register_request(
    url: str = "https://example.com/hook", secret: str = "s3cret-value"
) -> registry_pb2.RegisterWebhookRequest:
    return registry_pb2.RegisterWebhookRequest(url=url, events=["device.data"], secret=secret)


async def next_change(stream: AsyncIterator[Change]) -> Change:
    return await asyncio.wait_for(anext(stream), 10)


async def test_watch_gives_snapshot_then_changes_with_secrets(
    stub: registry_pb2_grpc.WebhookRegistryAsyncStub, settings: Settings, api_keys: dict[str, str]
) -> None:
    user = bearer_metadata(key_of(api_keys, "project-a"))
    internal = bearer_metadata(settings.service_token())
    first = await stub.RegisterWebhook(register_request(secret="first-secret"), metadata=user)

    call = stub.WatchWebhooks(registry_pb2.WatchWebhooksRequest(), metadata=internal)
    stream = call.__aiter__()
    snap = await next_change(stream)
    assert snap.kind == Change.KIND_SNAPSHOT
    assert snap.target.webhook.webhook_id == first.webhook_id
    assert snap.target.secret == "first-secret"
    assert snap.target.project_id == "project-a"
    assert (await next_change(stream)).kind == Change.KIND_SNAPSHOT_END

    second = await stub.RegisterWebhook(register_request(secret="second-secret"), metadata=user)
    upsert = await next_change(stream)
    assert (upsert.kind, upsert.target.webhook.webhook_id) == (
        Change.KIND_UPSERT,
        second.webhook_id,
    )
    assert upsert.target.secret == "second-secret"

    report = await stub.ReportDeliveryFailure(
        registry_pb2.ReportDeliveryFailureRequest(
            webhook_id=second.webhook_id, delivery_id="dlv_1", reason="6 attempts failed: HTTP 500"
        ),
        metadata=internal,
    )
    assert report.status == "disabled"
    disabled = await next_change(stream)
    assert disabled.target.webhook.status == "disabled"
    assert disabled.target.webhook.disabled_reason == "6 attempts failed: HTTP 500"

    await stub.EnableWebhook(
        registry_pb2.EnableWebhookRequest(webhook_id=second.webhook_id), metadata=user
    )
    assert (await next_change(stream)).target.webhook.status == "active"

    await stub.DeleteWebhook(
        registry_pb2.DeleteWebhookRequest(webhook_id=first.webhook_id), metadata=user
    )
    deleted = await next_change(stream)
    assert (deleted.kind, deleted.target.webhook.webhook_id) == (
        Change.KIND_DELETE,
        first.webhook_id,
    )
    call.cancel()


async def test_internal_methods_refuse_api_keys(
    stub: registry_pb2_grpc.WebhookRegistryAsyncStub, api_keys: dict[str, str]
) -> None:
    user = bearer_metadata(key_of(api_keys, "project-a"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReportDeliveryFailure(
            registry_pb2.ReportDeliveryFailureRequest(webhook_id="wh_x"), metadata=user
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    stream = stub.WatchWebhooks(registry_pb2.WatchWebhooksRequest(), metadata=user)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await anext(stream.__aiter__())
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_failure_report_for_a_deleted_webhook(
    stub: registry_pb2_grpc.WebhookRegistryAsyncStub, settings: Settings
) -> None:
    answer = await stub.ReportDeliveryFailure(
        registry_pb2.ReportDeliveryFailureRequest(webhook_id="wh_gone", reason="x"),
        metadata=bearer_metadata(settings.service_token()),
    )
    assert answer.status == "deleted"


async def test_secrets_are_encrypted_at_rest(
    stub: registry_pb2_grpc.WebhookRegistryAsyncStub, settings: Settings, api_keys: dict[str, str]
) -> None:
    user = bearer_metadata(key_of(api_keys, "project-a"))
    request = register_request(secret="plain-text-secret-4711")
    request.headers["Authorization"] = "Bearer header-value-4711"
    created = await stub.RegisterWebhook(request, metadata=user)
    # The rotated-out secret is stored too, as a previous secret.
    await stub.RotateWebhookSecret(
        registry_pb2.RotateWebhookSecretRequest(
            webhook_id=created.webhook_id, secret="rotated-secret-0815"
        ),
        metadata=user,
    )
    secret = "4711"  # in the first secret and the header value
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM webhooks"))).all()
    finally:
        await engine.dispose()
    assert rows
    assert all(secret not in repr(tuple(row)) for row in rows)
    assert all("0815" not in repr(tuple(row)) for row in rows)
    if settings.database_url.startswith("sqlite"):
        path = settings.database_url.split("///", 1)[1]
        for suffix in ("", "-wal"):
            try:
                raw = Path(path + suffix).read_bytes()
            except FileNotFoundError:
                continue
            assert secret.encode() not in raw


async def test_restart_keeps_webhooks_and_migrations_are_idempotent(
    settings: Settings, api_keys: dict[str, str]
) -> None:
    user = bearer_metadata(key_of(api_keys, "project-a"))
    first = await start_registry(settings, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            created = await registry_pb2_grpc.WebhookRegistryStub(channel).RegisterWebhook(
                register_request(), metadata=user
            )
    finally:
        await first.stop(0)
    second = await start_registry(settings, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            got = await registry_pb2_grpc.WebhookRegistryStub(channel).GetWebhook(
                registry_pb2.GetWebhookRequest(webhook_id=created.webhook_id), metadata=user
            )
    finally:
        await second.stop(0)
    assert got.url == "https://example.com/hook"


async def test_stopping_ends_open_watch_streams_instead_of_waiting_out_the_grace(
    settings: Settings,
) -> None:
    running = await start_registry(settings, "127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = registry_pb2_grpc.WebhookRegistryStub(channel)
        call = stub.WatchWebhooks(
            registry_pb2.WatchWebhooksRequest(), metadata=bearer_metadata(settings.service_token())
        )
        stream = call.__aiter__()
        assert (await next_change(stream)).kind == Change.KIND_SNAPSHOT_END
        began = time.monotonic()
        await running.stop(grace=10)
        assert time.monotonic() - began < 3  # not the 10 s grace
        with pytest.raises(StopAsyncIteration):
            await next_change(stream)  # ended cleanly: the watcher reconnects
        assert await call.code() == grpc.StatusCode.OK


async def test_update_over_grpc_needs_a_mask_of_known_fields(
    stub: registry_pb2_grpc.WebhookRegistryAsyncStub, api_keys: dict[str, str]
) -> None:
    user = bearer_metadata(key_of(api_keys, "project-a"))
    created = await stub.RegisterWebhook(register_request(), metadata=user)
    update = registry_pb2.WebhookUpdate(url="https://example.com/new")
    for paths in ([], ["secret"], ["url", "status"]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.UpdateWebhook(
                registry_pb2.UpdateWebhookRequest(
                    webhook_id=created.webhook_id,
                    webhook=update,
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                ),
                metadata=user,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith("updateMask:")
    updated = await stub.UpdateWebhook(
        registry_pb2.UpdateWebhookRequest(
            webhook_id=created.webhook_id,
            webhook=update,
            update_mask=field_mask_pb2.FieldMask(paths=["url"]),
        ),
        metadata=user,
    )
    assert (updated.url, list(updated.events)) == ("https://example.com/new", ["device.data"])


async def test_rotation_keeps_at_most_ten_previous_secrets_and_streams_them(
    stub: registry_pb2_grpc.WebhookRegistryAsyncStub, settings: Settings, api_keys: dict[str, str]
) -> None:
    user = bearer_metadata(key_of(api_keys, "project-a"))
    created = await stub.RegisterWebhook(register_request(secret="secret-0"), metadata=user)

    def rotation(
        secret: str, overlap: int | None = 3600
    ) -> registry_pb2.RotateWebhookSecretRequest:
        request = registry_pb2.RotateWebhookSecretRequest(
            webhook_id=created.webhook_id, secret=secret
        )
        if overlap is not None:
            request.overlap_seconds = overlap
        return request

    for n in range(1, 11):
        answer = await stub.RotateWebhookSecret(rotation(f"secret-{n}"), metadata=user)
        assert answer.HasField("secret_rotation_ends_at")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RotateWebhookSecret(rotation("secret-11"), metadata=user)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "at most 10" in (caught.value.details() or "")
    assert "oldest ends at" in (caught.value.details() or "")

    internal = bearer_metadata(settings.service_token())
    call = stub.WatchWebhooks(registry_pb2.WatchWebhooksRequest(), metadata=internal)
    stream = call.__aiter__()
    target = (await next_change(stream)).target
    assert target.secret == "secret-10"
    assert [p.secret for p in target.previous_secrets] == [f"secret-{n}" for n in range(10)]
    assert (await next_change(stream)).kind == Change.KIND_SNAPSHOT_END

    # Switching now ends every previous secret; the change is streamed.
    answer = await stub.RotateWebhookSecret(rotation("secret-11", overlap=0), metadata=user)
    assert not answer.HasField("secret_rotation_ends_at")
    upsert = await next_change(stream)
    assert (upsert.target.secret, list(upsert.target.previous_secrets)) == ("secret-11", [])
    call.cancel()


async def unpublished(registry: RunningRegistry) -> list[events_pb2.Event]:
    rows = await registry.service.store.unpublished()
    return [events_pb2.Event.FromString(r.event) for r in rows]


async def test_a_disable_and_an_enable_store_their_operational_events(
    registry: RunningRegistry,
    stub: registry_pb2_grpc.WebhookRegistryAsyncStub,
    settings: Settings,
    api_keys: dict[str, str],
) -> None:
    user = bearer_metadata(key_of(api_keys, "project-a"))
    internal = bearer_metadata(settings.service_token())
    a = (await stub.RegisterWebhook(register_request(), metadata=user)).webhook_id
    last = events_pb2.WebhookAttempt(status_code=503)
    last.started_at.FromSeconds(1_753_353_317)
    report = registry_pb2.ReportDeliveryFailureRequest(
        webhook_id=a, delivery_id="dlv_1", reason="2 attempts failed; last: HTTP 503"
    )
    report.last_attempt.CopyFrom(last)
    await stub.ReportDeliveryFailure(report, metadata=internal)
    await stub.ReportDeliveryFailure(report, metadata=internal)  # disabled already: no event
    hook = await stub.GetWebhook(registry_pb2.GetWebhookRequest(webhook_id=a), metadata=user)
    [disabled] = await unpublished(registry)
    assert (disabled.project_id, disabled.WhichOneof("kind")) == ("project-a", "webhook_disabled")
    assert disabled.webhook_disabled == events_pb2.WebhookDisabled(
        webhook_id=a, url=hook.url, reason=hook.disabled_reason, last_attempt=last
    )
    assert disabled.timestamp == hook.disabled_at

    await stub.EnableWebhook(registry_pb2.EnableWebhookRequest(webhook_id=a), metadata=user)
    await stub.EnableWebhook(registry_pb2.EnableWebhookRequest(webhook_id=a), metadata=user)
    events = await unpublished(registry)
    assert len(events) == 2
    enabled = events[1]
    assert enabled.webhook_enabled == events_pb2.WebhookEnabled(webhook_id=a, url=hook.url)
    assert enabled.event_id != disabled.event_id

    # A failed operational event disables, and stores no event.
    b = (await stub.RegisterWebhook(register_request(), metadata=user)).webhook_id
    report = registry_pb2.ReportDeliveryFailureRequest(
        webhook_id=b, delivery_id="dlv_op_1", reason="failed", operational_event=True
    )
    assert (await stub.ReportDeliveryFailure(report, metadata=internal)).status == "disabled"
    assert await unpublished(registry) == events


async def test_no_status_change_is_committed_without_its_event(
    registry: RunningRegistry,
    stub: registry_pb2_grpc.WebhookRegistryAsyncStub,
    settings: Settings,
    api_keys: dict[str, str],
) -> None:
    """The event is written in the status change's transaction: when writing
    it fails, the webhook stays as it was."""
    user = bearer_metadata(key_of(api_keys, "project-a"))
    a = (await stub.RegisterWebhook(register_request(), metadata=user)).webhook_id
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE operational_events"))
    finally:
        await engine.dispose()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReportDeliveryFailure(
            registry_pb2.ReportDeliveryFailureRequest(webhook_id=a, reason="x"),
            metadata=bearer_metadata(settings.service_token()),
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    hook = await stub.GetWebhook(registry_pb2.GetWebhookRequest(webhook_id=a), metadata=user)
    assert hook.status == "active"
