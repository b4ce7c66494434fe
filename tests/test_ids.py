"""Ids: prefix, length, alphabet, time order, and no random character favoured."""

from __future__ import annotations

import re
import time
from collections import Counter

from edgesense.common.ids import ALPHABET, TIME_CHARS, new_id, time_prefix


def test_shape() -> None:
    assert re.fullmatch(r"dlv_[a-z2-7]{20}", new_id("dlv"))
    assert re.fullmatch(r"w_[a-z2-7]{6}", new_id("w", 6))


def test_ids_sort_in_the_order_they_were_made() -> None:
    made = []
    for _ in range(5):
        made.append(new_id("evt"))
        time.sleep(0.002)
    assert sorted(made) == made
    assert time_prefix(0) == "2" * TIME_CHARS
    assert time_prefix(2**45 - 1) == "z" * TIME_CHARS
    assert sorted(time_prefix(m) for m in (31, 32, 1023, 1024, 10**12)) == [
        time_prefix(m) for m in (31, 32, 1023, 1024, 10**12)
    ]
    now = time.time_ns() // 1_000_000
    assert time_prefix(now - 1) < new_id("x")[2 : 2 + TIME_CHARS] <= time_prefix(now + 1000)


def test_unique_and_random_part_evenly_spread() -> None:
    ids = [new_id("x") for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    counts = Counter("".join(i[2 + TIME_CHARS :] for i in ids))
    assert set(counts) == set(ALPHABET.decode())
    expected = 20_000 * (20 - TIME_CHARS) / 32
    # 220,000 draws: each count within 6% of the mean (about 7 standard deviations).
    assert all(abs(n - expected) < 0.06 * expected for n in counts.values()), counts
    short = Counter("".join(new_id("w", 6)[2:] for _ in range(20_000)))
    assert set(short) == set(ALPHABET.decode())
