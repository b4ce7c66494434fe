"""A private Mosquitto on a free port, configured for bursts of QoS 1 traffic.

Stock Mosquitto keeps at most 1,000 queued QoS 1 messages per lagging
subscriber and silently drops the rest (measured: 1,500-2,500 of 50,000);
the backlog scenario queues 200,000, so the limit is raised well past it.
`max_inflight_messages 0` leaves the window to the subscriber's MQTT 5
receive maximum (the bridge's and the baseline's: 1,000). No persistence, so
every run starts empty.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.processes import Child, Children, wait_for_port
from tests.support.broker import burst_settings
from tests.support.ports import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MAX_QUEUED = 2_000_000


def config(port: int) -> str:
    return "\n".join([*burst_settings(port, MAX_QUEUED), "allow_anonymous true", ""])


async def start_mosquitto(children: Children) -> tuple[Child, int]:
    """Start a broker; answers the process and its port once it accepts connections."""
    port = free_port()
    path = Path(children.directory) / f"mosquitto-{port}.conf"
    path.write_text(config(port))
    child = await children.start("mosquitto", [MOSQUITTO, "-c", str(path)])
    await wait_for_port(port, child)
    return child, port
