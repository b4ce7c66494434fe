"""How many cores this process may use: its CPU affinity, capped by its
cgroup's CPU limit.

A container sees every core of its node in `os.sched_getaffinity` (and
`os.cpu_count`); what it may use is the CPU limit of its cgroup (Kubernetes'
`resources.limits.cpu`, `docker run --cpus`, systemd's `CPUQuota=`): cgroup
v2's `cpu.max` ("150000 100000": 1.5 cores; "max 100000": no limit) or v1's
`cpu.cfs_quota_us` over `cpu.cfs_period_us` (-1: no limit). The limit of a
cgroup applies to everything below it, so the smallest found on the way from
the process's cgroup up to the mount's root counts. A fraction of a core
counts as a core (a limit of 1.5 leaves room for two busy processes, each
throttled part of the time). The mounts are looked for where systemd and
container runtimes put them (/sys/fs/cgroup); a container without a cgroup
namespace sees its host's path, which is not under its mount, and its own
cgroup at the mount's root, which is read last in any case.

loky's `cpu_count` reads the same files, but it comes with a process-pool
library that nothing here uses; this is the part we need.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def cores_of_quota(quota: int, period: int) -> float | None:
    """Cores a quota of `quota` µs per `period` µs allows; None without a limit."""
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2's `cpu.max`: "QUOTA PERIOD", QUOTA "max" for no limit."""
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        return cores_of_quota(int(fields[0]), int(fields[1]))
    except ValueError:
        return None


def cgroup_paths(proc_cgroup: str) -> tuple[str | None, str | None]:
    """The process's cgroup path in the v2 hierarchy ("0::/path") and in v1's
    cpu controller ("4:cpu,cpuacct:/path"), from /proc/self/cgroup's text."""
    v2 = v1 = None
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _upwards(base: Path, path: str) -> Iterator[Path]:
    """`base`/`path`, then each of its parents up to `base` itself. A path
    that leaves the mount ("/../x": the process sits outside the cgroup
    namespace it sees) names no directory under it: only `base` is read."""
    parts = path.split("/")
    inside = [] if ".." in parts else [p for p in parts if p and p != "."]
    for end in range(len(inside), -1, -1):
        yield base.joinpath(*inside[:end])


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _v2_limit(directory: Path) -> float | None:
    text = _read(directory / "cpu.max")
    return None if text is None else parse_cpu_max(text)


def _v1_limit(directory: Path) -> float | None:
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    try:
        return None if quota is None or period is None else cores_of_quota(int(quota), int(period))
    except ValueError:
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """The smallest CPU limit, in cores, set on this process's cgroup or
    above it (v2 or v1); None where none is set or nothing can be read."""
    if proc_cgroup is None:
        proc_cgroup = _read(PROC_CGROUP) or ""
    v2, v1 = cgroup_paths(proc_cgroup)
    limits = [] if v2 is None else [_v2_limit(d) for d in _upwards(root, v2)]
    # v1 mounts the cpu controller as cpu (often a link to cpu,cpuacct), or co-mounted.
    mounts = (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu")
    v1_root = next((b for b in mounts if os.path.isdir(b)), None)  # isdir never raises
    if v1_root is not None:
        limits += [_v1_limit(d) for d in _upwards(v1_root, v1 or "/")]
    return min((limit for limit in limits if limit is not None), default=None)


def usable_cores() -> int:
    """The cores this process may run on, capped by its cgroup's CPU limit; at
    least 1. Never raises: what cannot be read (no cgroup file system, one
    this user may not read) sets no limit, and every service reads this when
    it starts."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux, or a sandbox that refuses it
        cores = os.cpu_count() or 1
    try:
        limit = cgroup_cpu_limit()
    except Exception:  # a layout not foreseen here: the affinity alone
        limit = None
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)
