"""Ctrl-C on `make run | tee log`: the terminal's SIGINT ends tee too, so `up`
loses its stdout just as it starts stopping. It must stop every child all the
same: registry, delivery (and delivery's sender processes), api, bridge
and the embedded broker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.procstats import child_pids
from tests.frontdoor.conftest import private_env
from tests.support.waiting import wait_until

UP_SECONDS = 90.0


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        children = child_pids(queue.pop())
        found += children
        queue += children
    return found


def test_up_stops_every_child_when_its_stdout_is_gone(tmp_path: Path) -> None:
    # Two senders, so that delivery's children are there to be found.
    env = private_env(EDGESENSE_DELIVERY_SENDERS="2")
    errors = (tmp_path / "up.stderr").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "edgesense.cli", "up", "--dev"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=errors,
    )
    assert up.stdout is not None
    try:
        deadline = time.monotonic() + UP_SECONDS
        seen: list[bytes] = []
        while b"EdgeSense is up" not in (line := up.stdout.readline()):
            assert line, b"".join(seen).decode()
            assert time.monotonic() < deadline, b"".join(seen).decode()
            seen.append(line)
        children = descendants(up.pid)
        names = {Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2] for pid in children}
        assert {b"registry", b"delivery", b"api", b"bridge"} <= names, names
        assert len(children) >= 5 + 2, "broker, four services and delivery's two senders"

        up.stdout.close()  # tee is gone: every later write of `up` gets EPIPE
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
        with contextlib.suppress(AssertionError):  # the assertion below names who is left
            wait_until(lambda: not any(alive(pid) for pid in children), 10, "the children")
        left = [pid for pid in children if alive(pid)]
    finally:
        if up.poll() is None:  # the test failed early: let `up` stop what it started
            up.send_signal(signal.SIGINT)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()
        errors.close()
    for pid in left:  # a failing test leaves nothing running
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert left == [], f"still running: {left}"
    stderr = (tmp_path / "up.stderr").read_text()
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
