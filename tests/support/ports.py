"""Free loopback ports for tests and for bench/, and waiting until one listens.

One `free_port` for the whole process: it never hands out the same port twice,
because the OS may give a port just released again at once, and two services
told the same port collide (CI once gave a bridge the same port for gRPC and
metrics). bench/ imports it from here.
"""

from __future__ import annotations

import socket
import subprocess

from tests.support.waiting import wait_until

_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it for port 0), and
    one not handed out before by this process."""
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
