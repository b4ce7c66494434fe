"""Free loopback ports for tests and for bench/, and waiting until one listens.

One `free_port` for the whole process: it never hands out the same port twice,
because the OS may give a port just released again at once, and two services
told the same port collide (CI once gave a bridge the same port for gRPC and
metrics). bench/ imports it from here.

Under pytest-xdist (`make test`) each worker takes its ports from a range of
its own, below the kernel's ephemeral range (32768-60999 by default, where
the OS picks port 0 and outgoing connections' ports), going round it in
order: another worker's "free" port, just released by bind(0) and not yet
bound by the service it was meant for, can never be handed out here.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Mapping
from itertools import cycle

from tests.support.waiting import wait_until

_handed_out: set[int] = set()
# The workers' ranges share these ports: below the ephemeral range.
FIRST, END = 10_000, 32_768


def worker_ports(env: Mapping[str, str]) -> range | None:
    """This xdist worker's ports (gw0 of n workers: the first n-th of
    FIRST..END, and so on); None outside a worker."""
    worker, count = env.get("PYTEST_XDIST_WORKER", ""), env.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not worker.startswith("gw") or not worker[2:].isdigit() or not count.isdigit():
        return None
    width = (END - FIRST) // max(1, int(count))
    start = FIRST + int(worker[2:]) * width
    return range(start, start + width)


_range = worker_ports(os.environ)
_ports = cycle(_range) if _range is not None else None


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on right now, and one not handed out before by
    this process (in a worker: not since its range came round again)."""
    if _range is not None and _ports is not None:
        for _ in _range:
            port = next(_ports)
            if _bindable(port):
                return port
        raise RuntimeError(f"no free port in this worker's ports {_range}")
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on `host`:`port` now."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int, seconds: float = 10.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts connections on 127.0.0.1:`port`; fail at
    once if `process` (the one meant to listen there) exits meanwhile."""

    def ready() -> bool:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{process.args!r} exited with {process.returncode}")
        return listening(port)

    wait_until(ready, seconds, f"a listener on port {port}")
