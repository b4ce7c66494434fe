"""The ports each pytest-xdist worker hands out (tests/support/ports.py):
workers never share one, and none is in the kernel's ephemeral range, where
bind(0) and outgoing connections take theirs."""

from __future__ import annotations

import pytest

from tests.support.ports import END, FIRST, worker_ports

EPHEMERAL_FIRST = 32_768  # Linux's default ip_local_port_range starts here


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 16])
def test_each_worker_has_ports_of_its_own_below_the_ephemeral_range(count: int) -> None:
    ranges = [
        worker_ports({"PYTEST_XDIST_WORKER": f"gw{n}", "PYTEST_XDIST_WORKER_COUNT": str(count)})
        for n in range(count)
    ]
    taken: set[int] = set()
    for found in ranges:
        assert found is not None
        assert len(found) >= 1_000, found
        assert found.start >= FIRST, found
        assert found.stop <= min(END, EPHEMERAL_FIRST), found
        assert not taken & set(found), found
        taken |= set(found)


def test_outside_a_worker_the_os_picks() -> None:
    assert worker_ports({}) is None
    assert worker_ports({"PYTEST_XDIST_WORKER": "master"}) is None
