"""Usable cores: CPU affinity capped by the cgroup's CPU limit, and the
default number of sender processes that follows from them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgesense.common import config, cores
from edgesense.common.config import Settings, default_senders, postgres_on_this_machine
from edgesense.common.cores import cgroup_cpu_limit, cgroup_paths, parse_cpu_max, usable_cores

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "cores"),
    [("150000 100000\n", 1.5), ("max 100000\n", None), ("200000 50000", 4.0), ("", None)],
)
def test_cpu_max_is_read(text: str, cores: float | None) -> None:
    assert parse_cpu_max(text) == cores


def test_cgroup_paths_of_v2_and_of_v1_cpu_controller() -> None:
    hybrid = "4:memory:/m\n2:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n0::/system.slice/x\n"
    assert cgroup_paths(hybrid) == ("/system.slice/x", "/docker/abc")
    assert cgroup_paths("0::/\n") == ("/", None)


def _write(path: Path, text: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cpu.max").write_text(text)


def test_the_smallest_v2_limit_on_the_way_up_counts(tmp_path: Path) -> None:
    _write(tmp_path, "max 100000\n")
    _write(tmp_path / "kubepods", "400000 100000\n")
    _write(tmp_path / "kubepods" / "pod1", "150000 100000\n")
    _write(tmp_path / "kubepods" / "pod1" / "app", "max 100000\n")
    assert cgroup_cpu_limit(tmp_path, "0::/kubepods/pod1/app\n") == 1.5
    assert cgroup_cpu_limit(tmp_path, "0::/kubepods\n") == 4.0
    assert cgroup_cpu_limit(tmp_path, "0::/\n") is None


def _v1(directory: Path, quota: str, period: str = "100000\n") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cpu.cfs_quota_us").write_text(quota)
    (directory / "cpu.cfs_period_us").write_text(period)


def test_a_v1_limit_of_the_container_root_counts(tmp_path: Path) -> None:
    # Inside a container the host's path (/docker/abc) is not under the mount:
    # the mount's root is the container's own cgroup.
    _v1(tmp_path / "cpu,cpuacct", "50000\n")
    assert cgroup_cpu_limit(tmp_path, "2:cpu,cpuacct:/docker/abc\n") == 0.5
    (tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path, "2:cpu,cpuacct:/docker/abc\n") is None


def test_v1_limits_on_the_way_up_and_what_cannot_be_read(tmp_path: Path) -> None:
    v1 = tmp_path / "cpu"
    _v1(v1, "-1\n")
    _v1(v1 / "system.slice", "300000\n")
    _v1(v1 / "system.slice" / "edgesense.service", "abc\n")  # garbage: no limit
    assert cgroup_cpu_limit(tmp_path, "1:cpu:/system.slice/edgesense.service\n") == 3.0
    # A path outside the namespace names nothing under the mount: its root only.
    assert cgroup_cpu_limit(tmp_path, "1:cpu:/../system.slice\n") is None


def test_a_cgroup_file_system_that_refuses_sets_no_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused() -> float | None:
        raise PermissionError(13, "Permission denied", "/sys/fs/cgroup/cpu")

    monkeypatch.setattr(cores, "cgroup_cpu_limit", refused)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert usable_cores() == 3


@pytest.mark.parametrize(
    ("affinity", "limit", "usable"), [(8, None, 8), (8, 1.5, 2), (8, 0.5, 1), (2, 16.0, 2)]
)
def test_usable_cores_are_the_affinity_capped_by_the_limit(
    monkeypatch: pytest.MonkeyPatch, affinity: int, limit: float | None, usable: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)))
    monkeypatch.setattr(cores, "cgroup_cpu_limit", lambda: limit)
    assert usable_cores() == usable


POSTGRES_HERE = "postgresql+asyncpg://edgesense@127.0.0.1:5432/edgesense"
POSTGRES_SOCKET = "postgresql+asyncpg://edgesense@/edgesense?host=/var/run/postgresql"
POSTGRES_ELSEWHERE = "postgresql+asyncpg://edgesense@db.internal:5432/edgesense"
SQLITE = "sqlite+aiosqlite:///var/edgesense.db"


@pytest.mark.parametrize(
    ("url", "here"),
    [
        (POSTGRES_HERE, True),
        (POSTGRES_SOCKET, True),
        ("postgresql+asyncpg://u@localhost/db", True),
        ("postgresql+asyncpg://u@[::1]:5432/db", True),
        ("postgresql+asyncpg://u@127.0.0.2/db", True),
        ("postgresql+asyncpg://u@[::ffff:127.0.0.1]:5432/db", True),
        ("postgresql+asyncpg://u@/db", True),  # the driver's default: a local socket
        (POSTGRES_ELSEWHERE, False),
        ("postgresql+asyncpg://u@/db?host=db.internal", False),
        ("postgresql+asyncpg://u@/db?host=db1:5432&host=db2:5432", False),
        ("postgresql+asyncpg://u@/db?host=/var/run/postgresql&host=db2:5432", False),
        ("postgresql+asyncpg://u@db.internal/db?host=/var/run/postgresql", True),
        ("postgresql+asyncpg://u:s3cr\uff03t@db/x", False),  # does not parse: no error
        ("postgresql+asyncpg://u@[db/x", False),
        (SQLITE, False),
    ],
)
def test_a_postgres_server_on_this_machine_is_recognised(url: str, here: bool) -> None:
    assert postgres_on_this_machine(url) is here


@pytest.mark.parametrize(
    ("usable", "elsewhere", "beside_postgres"),
    [(1, 0, 0), (2, 1, 0), (3, 1, 0), (4, 2, 2), (6, 3, 3), (8, 4, 4), (64, 4, 4)],
)
def test_senders_only_where_cores_are_left_over(
    usable: int, elsewhere: int, beside_postgres: int
) -> None:
    assert default_senders(SQLITE, usable) == elsewhere
    assert default_senders(POSTGRES_ELSEWHERE, usable) == elsewhere
    assert default_senders(POSTGRES_HERE, usable) == beside_postgres


def test_the_settings_default_follows_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "usable_cores", lambda: 2)
    assert Settings.from_env({"EDGESENSE_DATABASE_URL": SQLITE}).delivery_senders == 1
    assert Settings.from_env({"EDGESENSE_DATABASE_URL": POSTGRES_HERE}).delivery_senders == 0
    assert Settings.from_env({"EDGESENSE_DATABASE_URL": POSTGRES_ELSEWHERE}).delivery_senders == 1
    assert Settings.from_env({}).delivery_senders == 1  # SQLite, the default database
    assert Settings(database_url=POSTGRES_HERE).delivery_senders == 0
    assert Settings().delivery_senders == 1
    # Set, it is what was set.
    env = {"EDGESENSE_DATABASE_URL": POSTGRES_HERE, "EDGESENSE_DELIVERY_SENDERS": "2"}
    assert Settings.from_env(env).delivery_senders == 2


JOIN_REFUSED = 97  # the shell's exit status when the cgroup refuses it


@contextlib.contextmanager
def cpu_limited_cgroup(cores: float) -> Iterator[Path]:
    """A real cgroup with a CPU limit of `cores` (v2 where the cpu controller
    may be given to a child cgroup, else v1), removed afterwards: yields its
    file that takes a process. Skips where cgroups cannot be made or limited."""
    name = f"edgesense-test-{uuid.uuid4().hex[:8]}"
    v2_root, v1_root = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/cpu")
    subtree = v2_root / "cgroup.subtree_control"
    v2 = subtree.exists() and "cpu" in subtree.read_text().split()
    directory = (v2_root if v2 else v1_root) / name
    try:
        directory.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup here ({exc.strerror})")
    try:
        period = 100_000
        try:
            if v2:
                (directory / "cpu.max").write_text(f"{int(cores * period)} {period}")
            else:
                (directory / "cpu.cfs_period_us").write_text(str(period))
                (directory / "cpu.cfs_quota_us").write_text(str(int(cores * period)))
        except OSError as exc:
            pytest.skip(f"cannot limit a cgroup's CPU here ({exc.strerror})")
        yield directory / ("cgroup.procs" if v2 else "tasks")
    finally:
        try:
            directory.rmdir()  # the child has exited: the cgroup is empty
        except OSError as exc:  # never hide the test's own outcome
            warnings.warn(f"cgroup {directory} left behind: {exc.strerror}", stacklevel=1)


def test_a_process_in_a_cpu_limited_cgroup_counts_its_limit() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 cores to tell a limit of 1 from the affinity")
    program = (
        "from edgesense.common.cores import usable_cores, cgroup_cpu_limit;"
        "print(cgroup_cpu_limit(), usable_cores())"
    )
    with cpu_limited_cgroup(0.5) as procs:
        # The shell joins the cgroup, then becomes Python (same pid).
        script = f'echo $$ > {procs} || exit {JOIN_REFUSED}; exec "$0" -c "$1"'
        answer = subprocess.run(
            ["sh", "-c", script, sys.executable, program],
            env=os.environ | {"PYTHONPATH": str(REPO / "services")},
            capture_output=True,
            text=True,
            timeout=60,
        )
    if answer.returncode == JOIN_REFUSED:
        pytest.skip(f"cannot move a process into a cgroup here: {answer.stderr.strip()}")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.split() == ["0.5", "1"]
