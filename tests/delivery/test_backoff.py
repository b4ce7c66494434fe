"""Backoff schedule, Retry-After parsing, and which of the two wins."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from edgesense.common.backoff import backoff_delay, next_delay, parse_retry_after

NOW = datetime(2025, 7, 24, 10, 35, 17, tzinfo=UTC)


@pytest.mark.parametrize("retry", range(1, 12))
def test_backoff_is_exponential_within_half_to_full(retry: int) -> None:
    rng = random.Random(retry)
    nominal = min(3600.0, 30.0 * 2 ** (retry - 1))
    delays = [backoff_delay(retry, 30.0, 3600.0, rng) for _ in range(500)]
    assert all(nominal / 2 <= d <= nominal for d in delays)
    # Jitter really spreads the delays over the window.
    assert min(delays) < nominal * 0.55
    assert max(delays) > nominal * 0.95


def test_backoff_grows_then_stays_at_the_cap() -> None:
    lows = [backoff_delay(n, 1.0, 100.0, _Fixed(0.0)) for n in range(1, 12)]
    highs = [backoff_delay(n, 1.0, 100.0, _Fixed(1.0)) for n in range(1, 12)]
    assert highs == [1, 2, 4, 8, 16, 32, 64, 100, 100, 100, 100]
    assert lows == [h / 2 for h in highs]


def test_backoff_survives_huge_retry_numbers() -> None:
    assert 50.0 <= backoff_delay(100_000, 30.0, 100.0) <= 100.0


def test_backoff_rejects_retry_zero() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        backoff_delay(0, 1.0, 10.0)


def test_default_rng_is_random() -> None:
    assert len({backoff_delay(5, 30.0, 3600.0) for _ in range(20)}) > 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        ("Thu, 24 Jul 2025 10:36:17 GMT", 60.0),
        ("Thu, 24 Jul 2025 10:00:00 GMT", 0.0),  # already past
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        ("Thu, 99 Foo 2025 99:99:99 GMT", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (429, 50.0, 50.0),  # longer than the backoff: honoured
        (503, 50.0, 50.0),
        (429, 1.0, 20.0),  # shorter than the backoff: the backoff stands
        (429, 5000.0, 100.0),  # beyond the cap: capped
        (500, 50.0, 20.0),  # not 429/503: ignored
        (None, 50.0, 20.0),
        (429, None, 20.0),
    ],
)
def test_next_delay(status: int | None, retry_after: float | None, expected: float) -> None:
    # retry 2 with base 10: nominal 20, and _Fixed(1.0) takes the top of the window.
    assert next_delay(2, status, retry_after, 10.0, 100.0, _Fixed(1.0)) == expected


class _Fixed(random.Random):
    """uniform(a, b) at a fixed fraction of the way from a to b."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction
