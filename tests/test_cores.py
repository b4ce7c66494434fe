"""Usable cores: CPU affinity capped by the cgroup's CPU limit, and the
default number of sender processes that follows from them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgesense.common.config import Settings, default_senders
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


def test_a_v1_limit_of_the_container_root_counts(tmp_path: Path) -> None:
    # Inside a container the host's path (/docker/abc) is not under the mount:
    # the mount's root is the container's own cgroup.
    v1 = tmp_path / "cpu,cpuacct"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path, "2:cpu,cpuacct:/docker/abc\n") == 0.5
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path, "2:cpu,cpuacct:/docker/abc\n") is None


POSTGRES = "postgresql+asyncpg://edgesense@db/edgesense"
SQLITE = "sqlite+aiosqlite:///var/edgesense.db"


@pytest.mark.parametrize(
    ("cores", "on_sqlite", "on_postgres"),
    [(1, 0, 0), (2, 1, 0), (3, 1, 0), (4, 2, 2), (6, 3, 3), (8, 4, 4), (64, 4, 4)],
)
def test_senders_only_where_cores_are_left_over(
    cores: int, on_sqlite: int, on_postgres: int
) -> None:
    assert default_senders(SQLITE, cores) == on_sqlite
    assert default_senders(POSTGRES, cores) == on_postgres


def test_the_settings_default_follows_the_database() -> None:
    if usable_cores() not in (2, 3):
        pytest.skip("the two databases' defaults differ on 2 and 3 cores only")
    assert Settings.from_env({"EDGESENSE_DATABASE_URL": SQLITE}).delivery_senders == 1
    assert Settings.from_env({"EDGESENSE_DATABASE_URL": POSTGRES}).delivery_senders == 0
    assert Settings.from_env({}).delivery_senders == 1  # SQLite, the default database
    assert Settings().delivery_senders == 1


@contextlib.contextmanager
def cpu_limited_cgroup(cores: float) -> Iterator[Path]:
    """A real cgroup with a CPU limit of `cores` (v2 where the cpu controller
    is there, else v1), removed afterwards: its file that takes a process."""
    name = f"edgesense-test-{uuid.uuid4().hex[:8]}"
    v2_root, v1_root = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/cpu")
    controllers = v2_root / "cgroup.controllers"
    v2 = controllers.exists() and "cpu" in controllers.read_text().split()
    directory = (v2_root if v2 else v1_root) / name
    try:
        directory.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup here ({exc.strerror})")
    try:
        period = 100_000
        if v2:
            (directory / "cpu.max").write_text(f"{int(cores * period)} {period}")
            yield directory / "cgroup.procs"
        else:
            (directory / "cpu.cfs_period_us").write_text(str(period))
            (directory / "cpu.cfs_quota_us").write_text(str(int(cores * period)))
            yield directory / "tasks"
    finally:
        directory.rmdir()  # the child has exited: the cgroup is empty


def test_a_process_in_a_cpu_limited_cgroup_counts_its_limit() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 cores to tell a limit of 1 from the affinity")
    program = (
        "from edgesense.common.cores import usable_cores, cgroup_cpu_limit;"
        "print(cgroup_cpu_limit(), usable_cores())"
    )
    with cpu_limited_cgroup(0.5) as procs:
        # The shell joins the cgroup, then becomes Python (same pid).
        script = f'echo $$ > {procs} && exec "$0" -c "$1"'
        answer = subprocess.run(
            ["sh", "-c", script, sys.executable, program],
            env=os.environ | {"PYTHONPATH": str(REPO / "services")},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    assert answer.stdout.split() == ["0.5", "1"]
