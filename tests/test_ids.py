"""Ids: prefix, length, alphabet, and no character favoured."""

from __future__ import annotations

import re
from collections import Counter

from edgesense.ids import ALPHABET, new_id


def test_shape() -> None:
    assert re.fullmatch(r"dlv_[a-z2-7]{20}", new_id("dlv"))
    assert re.fullmatch(r"w_[a-z2-7]{6}", new_id("w", 6))


def test_unique_and_evenly_spread() -> None:
    ids = [new_id("x") for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    counts = Counter("".join(i[2:] for i in ids))
    assert set(counts) == set(ALPHABET.decode())
    expected = 20_000 * 20 / 32
    # 400,000 draws: each count within 5% of the mean (about 8 standard deviations).
    assert all(abs(n - expected) < 0.05 * expected for n in counts.values()), counts
