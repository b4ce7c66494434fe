"""Pure logic of delivery: whether a claimed delivery is sent, the retry
policy, and the webhook index."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from edgesense.delivery.claim.breaker import PAUSED_REASON
from edgesense.delivery.record.policy import (
    UNKNOWN_WEBHOOK_GRACE_SECONDS,
    UNKNOWN_WEBHOOK_RETRY_SECONDS,
    RetryPolicy,
    after_attempt,
    before_attempt,
)
from edgesense.delivery.send.attempt import AttemptResult
from edgesense.delivery.store.rows import FAILED, HELD, PENDING, SUCCEEDED, Claimed
from edgesense.delivery.webhooks.index import Target, WebhookIndex

POLICY = RetryPolicy(max_retries=5, base_seconds=10, cap_seconds=100)
NOW = 1_000_000.0


def claimed(cycle: int = 0, total: int = 0, created: float = 0.0) -> Claimed:
    return Claimed(1, "dlv_1", "wh_1", "evt_1", total, cycle, b"", created)


def result(
    status: int | None = 500, error: str | None = None, retry_after: float | None = None
) -> AttemptResult:
    return AttemptResult(
        started_at=datetime.fromtimestamp(NOW, UTC),
        duration_ms=12,
        status_code=status,
        error=error,
        response_excerpt="nope",
        retry_after=retry_after,
    )


YOUNG = NOW - UNKNOWN_WEBHOOK_GRACE_SECONDS + 1
OLD = NOW - UNKNOWN_WEBHOOK_GRACE_SECONDS


@pytest.mark.parametrize(
    ("created", "active", "paused_until", "expected"),
    [
        # webhook not known here: young deliveries wait for the registry's stream
        (
            YOUNG,
            None,
            None,
            (PENDING, "webhook not known yet", NOW + UNKNOWN_WEBHOOK_RETRY_SECONDS),
        ),
        (OLD, None, None, (FAILED, "webhook deleted", NOW)),
        (OLD, None, NOW + 5, (FAILED, "webhook deleted", NOW)),
        (YOUNG, False, None, (HELD, "webhook disabled", NOW)),
        (YOUNG, False, NOW + 5, (HELD, "webhook disabled", NOW)),  # held outlasts a pause
        (YOUNG, True, NOW + 5, (PENDING, PAUSED_REASON, NOW + 5)),
        (OLD, True, None, None),
    ],
)
def test_before_an_attempt(
    created: float,
    active: bool | None,
    paused_until: float | None,
    expected: tuple[str, str, float] | None,
) -> None:
    """None: sent. Otherwise (status, reason, due) of the delivery, with no
    attempt made or counted."""
    outcome = before_attempt(claimed(cycle=2, total=4, created=created), active, paused_until, NOW)
    if expected is None:
        assert outcome is None
        return
    assert outcome is not None
    assert (outcome.status, outcome.status_reason, outcome.next_attempt_at) == expected
    assert (outcome.attempt, outcome.cycle_attempts, outcome.status_code) == (0, 2, None)


def test_success_ends_the_delivery() -> None:
    outcome = after_attempt(POLICY, claimed(), result(204), NOW, True)
    assert (outcome.status, outcome.attempt, outcome.cycle_attempts) == (SUCCEEDED, 1, 1)


def test_failures_back_off_exponentially_then_fail() -> None:
    rng = random.Random(7)
    delays = []
    for cycle in range(5):
        outcome = after_attempt(POLICY, claimed(cycle, cycle), result(500), NOW, True, rng)
        assert outcome.status == PENDING
        delays.append(outcome.next_attempt_at - NOW)
    assert [10 / 2 <= delays[0] <= 10, 20 / 2 <= delays[1] <= 20, 40 / 2 <= delays[2] <= 40] == [
        True
    ] * 3
    assert max(delays) <= 100
    last = after_attempt(POLICY, claimed(5, 5), result(500), NOW, True, rng)
    assert last.status == FAILED
    assert last.attempt == 6
    assert last.status_reason == "6 attempts failed; last: HTTP 500"


def test_errors_are_described() -> None:
    last = after_attempt(POLICY, claimed(5, 5), result(None, "timeout after 3.0 s"), NOW, True)
    assert last.status_reason == "6 attempts failed; last: timeout after 3.0 s"


def test_retry_after_is_honoured_within_the_cap() -> None:
    honoured = after_attempt(POLICY, claimed(), result(429, retry_after=60), NOW, True)
    assert 60 <= honoured.next_attempt_at - NOW <= 100
    capped = after_attempt(POLICY, claimed(), result(503, retry_after=10_000), NOW, True)
    assert capped.next_attempt_at - NOW <= 100


def test_a_retry_for_a_disabled_webhook_is_held() -> None:
    outcome = after_attempt(POLICY, claimed(), result(500), NOW, False)
    assert outcome.status == HELD


def test_cycles_restart_but_attempt_numbers_keep_counting() -> None:
    outcome = after_attempt(POLICY, claimed(cycle=0, total=6), result(200), NOW, True)
    assert (outcome.attempt, outcome.cycle_attempts) == (7, 1)


def target(
    webhook_id: str,
    project: str = "p",
    events: tuple[str, ...] = ("device.data",),
    devices: tuple[str, ...] = (),
    status: str = "active",
    secret: str = "s",
) -> Target:
    return Target(
        webhook_id, project, "https://x", frozenset(events), frozenset(devices), status, secret
    )


def test_index_matches_project_event_and_device() -> None:
    index = WebhookIndex()
    index.replace(
        [
            target("a"),
            target("b", devices=("d1",)),
            target("c", events=("device.alert",)),
            target("d", project="q"),
            target("e", status="disabled"),
        ]
    )
    assert index.ready.is_set()
    assert {t.webhook_id for t in index.match("p", "device.data", "d1")} == {"a", "b", "e"}
    assert {t.webhook_id for t in index.match("p", "device.data", "d2")} == {"a", "e"}
    assert {t.webhook_id for t in index.match("p", "device.alert", "d2")} == {"c"}
    assert index.match("z", "device.data", "d1") == []


def test_index_upsert_and_remove_return_the_previous_version() -> None:
    index = WebhookIndex()
    index.replace([target("a")])
    previous = index.upsert(target("a", status="disabled"))
    assert previous is not None
    assert previous.active
    assert not index.match("p", "device.data", "x")[0].active
    assert index.remove("a") is not None
    assert index.match("p", "device.data", "x") == []
    assert index.remove("a") is None


def test_targets_never_show_their_secret() -> None:
    shown = target("wh_a", secret="topsecret")
    assert shown.secret == "topsecret"  # it holds the secret, and signs with it
    for text in (repr(shown), str(shown), repr([shown]), f"{shown}"):
        assert "wh_a" in text  # it is the target being shown
        assert "topsecret" not in text
