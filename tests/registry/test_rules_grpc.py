"""AlertRules as a real gRPC server (the registry's) on a free port, on SQLite
and PostgreSQL: the internal WatchRules stream (snapshot, then every change,
also those another replica writes), who may call what, the update mask over
gRPC, and the largest valid rule."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import field_mask_pb2

from edgesense.common.auth import bearer_metadata
from edgesense.common.config import Settings
from edgesense.common.message_limits import max_receive
from edgesense.registry.rule_validation import MAX_NAME_CHARS
from edgesense.registry.server import RULES_SERVICE_NAME, RunningRegistry, start_registry
from edgesense.registry.validation import MAX_DESCRIPTION_CHARS, MAX_DEVICE_IDS
from edgesense.v1 import rules_pb2, rules_pb2_grpc
from tests.conftest import key_of

Change = rules_pb2.RuleChange
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def registry(settings: Settings) -> AsyncIterator[RunningRegistry]:
    running = await start_registry(settings, "127.0.0.1:0", "127.0.0.1:1")
    yield running
    await running.stop(0)


@pytest.fixture
async def stub(registry: RunningRegistry) -> AsyncIterator[rules_pb2_grpc.AlertRulesAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
        yield rules_pb2_grpc.AlertRulesStub(channel)


@pytest.fixture
def user(api_keys: dict[str, str]) -> Metadata:
    return bearer_metadata(key_of(api_keys, "project-a"))


@pytest.fixture
def internal(settings: Settings) -> Metadata:
    return bearer_metadata(settings.service_token())


def boiler(threshold: float = 80.0, **more: object) -> rules_pb2.CreateRuleRequest:
    spec = rules_pb2.RuleSpec(
        name="Boiler too hot", field="temperature", operator="gt", threshold=threshold
    )
    for name, value in more.items():
        if isinstance(value, list):
            getattr(spec, name).extend(value)
        else:
            setattr(spec, name, value)
    return rules_pb2.CreateRuleRequest(rule=spec)


async def next_change(stream: AsyncIterator[Change]) -> Change:
    return await asyncio.wait_for(anext(stream), 10)


async def test_watch_gives_the_snapshot_then_every_change(
    stub: rules_pb2_grpc.AlertRulesAsyncStub, user: Metadata, internal: Metadata
) -> None:
    first = await stub.CreateRule(boiler(device_ids=["edge-node-321"]), metadata=user)
    call = stub.WatchRules(rules_pb2.WatchRulesRequest(), metadata=internal)
    stream = call.__aiter__()
    snap = await next_change(stream)
    assert snap.kind == Change.KIND_SNAPSHOT
    assert snap.project_id == "project-a"
    assert snap.rule == first
    assert list(snap.rule.device_ids) == ["edge-node-321"]
    assert (await next_change(stream)).kind == Change.KIND_SNAPSHOT_END

    second = await stub.CreateRule(boiler(50.0, severity="critical"), metadata=user)
    created = await next_change(stream)
    assert (created.kind, created.rule, created.project_id) == (
        Change.KIND_UPSERT,
        second,
        "project-a",
    )

    updated = await stub.UpdateRule(
        rules_pb2.UpdateRuleRequest(
            rule_id=second.rule_id,
            rule=rules_pb2.RuleSpec(threshold=55.0, enabled=False),
            update_mask=field_mask_pb2.FieldMask(paths=["threshold", "enabled"]),
        ),
        metadata=user,
    )
    assert (updated.threshold, updated.enabled, updated.version) == (55.0, False, 2)
    change = await next_change(stream)
    assert (change.kind, change.rule) == (Change.KIND_UPSERT, updated)

    await stub.DeleteRule(rules_pb2.DeleteRuleRequest(rule_id=first.rule_id), metadata=user)
    deleted = await next_change(stream)
    assert (deleted.kind, deleted.rule.rule_id, deleted.project_id) == (
        Change.KIND_DELETE,
        first.rule_id,
        "project-a",
    )
    call.cancel()


async def test_a_change_another_replica_writes_reaches_the_stream(
    stub: rules_pb2_grpc.AlertRulesAsyncStub,
    settings: Settings,
    user: Metadata,
    internal: Metadata,
) -> None:
    call = stub.WatchRules(rules_pb2.WatchRulesRequest(), metadata=internal)
    stream = call.__aiter__()
    assert (await next_change(stream)).kind == Change.KIND_SNAPSHOT_END
    # A second registry on the same database: this one learns of its write
    # only by polling the change log.
    other = await start_registry(settings, "127.0.0.1:0", "127.0.0.1:1")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as channel:
            made = await rules_pb2_grpc.AlertRulesStub(channel).CreateRule(boiler(), metadata=user)
        change = await next_change(stream)
        assert (change.kind, change.rule) == (Change.KIND_UPSERT, made)
    finally:
        await other.stop(0)
    call.cancel()


async def test_watch_takes_the_internal_token_only(
    stub: rules_pb2_grpc.AlertRulesAsyncStub, user: Metadata
) -> None:
    for metadata, code in [
        (user, grpc.StatusCode.PERMISSION_DENIED),
        ((), grpc.StatusCode.UNAUTHENTICATED),
    ]:
        stream = stub.WatchRules(rules_pb2.WatchRulesRequest(), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await anext(stream.__aiter__())
        assert caught.value.code() == code


async def test_user_methods_take_an_api_key(
    stub: rules_pb2_grpc.AlertRulesAsyncStub, internal: Metadata
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateRule(boiler(), metadata=internal)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListRules(rules_pb2.ListRulesRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_update_over_grpc_needs_its_mask(
    stub: rules_pb2_grpc.AlertRulesAsyncStub, user: Metadata
) -> None:
    rule = await stub.CreateRule(boiler(), metadata=user)
    for paths in ([], ["thresholdHigh"], ["rule_id"]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.UpdateRule(
                rules_pb2.UpdateRuleRequest(
                    rule_id=rule.rule_id,
                    rule=rules_pb2.RuleSpec(threshold=90.0),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                ),
                metadata=user,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith("updateMask:")
    every = await stub.UpdateRule(
        rules_pb2.UpdateRuleRequest(
            rule_id=rule.rule_id,
            rule=rules_pb2.RuleSpec(name="All", field="t", operator="lt", threshold=1.0),
            update_mask=field_mask_pb2.FieldMask(paths=["*"]),
        ),
        metadata=user,
    )
    assert (every.name, every.field, every.operator, every.threshold) == ("All", "t", "lt", 1.0)
    assert (every.severity, every.count, every.enabled, every.version) == ("warning", 1, True, 2)


def largest_rule() -> rules_pb2.CreateRuleRequest:
    """The largest CreateRule validation accepts."""
    wide = "\U0001f600"  # 4 bytes in UTF-8
    return boiler(
        name=wide * MAX_NAME_CHARS,
        description=wide * MAX_DESCRIPTION_CHARS,
        field=".".join(["x" * 64] * 3) + "." + "y" * 61,  # 256 characters
        operator="gte",
        clear_threshold=-1e300,
        count=10_000,
        for_seconds=604_800,
        severity="critical",
        device_ids=[f"{n}".rjust(128, "d") for n in range(MAX_DEVICE_IDS)],
        gateway_ids=[f"{n}".rjust(128, "g") for n in range(MAX_DEVICE_IDS)],
        enabled=False,
    )


async def test_the_largest_valid_rule_fits_the_registry_limit(
    stub: rules_pb2_grpc.AlertRulesAsyncStub, user: Metadata
) -> None:
    request = largest_rule()
    limit = max_receive(RULES_SERVICE_NAME)
    assert request.ByteSize() < limit * 0.75  # with room to grow
    made = await stub.CreateRule(request, metadata=user, timeout=10)
    assert (len(made.device_ids), len(made.gateway_ids)) == (1000, 1000)
    update = rules_pb2.UpdateRuleRequest(
        rule_id=made.rule_id,
        rule=request.rule,
        update_mask=field_mask_pb2.FieldMask(paths=["*"]),
    )
    assert update.ByteSize() < limit * 0.75
    assert (await stub.UpdateRule(update, metadata=user, timeout=10)).version == 1  # the same
    listed = await stub.ListRules(rules_pb2.ListRulesRequest(), metadata=user)
    assert [r.rule_id for r in listed.rules] == [made.rule_id]


async def test_stopping_ends_open_watch_streams_instead_of_waiting_out_the_grace(
    settings: Settings, internal: Metadata
) -> None:
    running = await start_registry(settings, "127.0.0.1:0", "127.0.0.1:1")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        call = rules_pb2_grpc.AlertRulesStub(channel).WatchRules(
            rules_pb2.WatchRulesRequest(), metadata=internal
        )
        stream = call.__aiter__()
        assert (await next_change(stream)).kind == Change.KIND_SNAPSHOT_END
        began = time.monotonic()
        await running.stop(grace=10)
        assert time.monotonic() - began < 3  # not the 10 s grace
        with pytest.raises(StopAsyncIteration):
            await next_change(stream)  # ended cleanly: the watcher reconnects
