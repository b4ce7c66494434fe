"""An embedded MQTT broker (amqtt) for `edgesense up` when none answers.

Fine for trying EdgeSense on a laptop (MQTT 3.1.1, a few thousand messages a
second, no shared subscriptions); production uses Mosquitto or another real
broker (see deploy/mosquitto). Run as `python -m edgesense.embedded_broker HOST PORT`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from urllib.parse import urlsplit

from edgesense.grpc_runtime import wait_for_signal

log = logging.getLogger(__name__)


def broker_address(mqtt_url: str) -> tuple[str, int]:
    parts = urlsplit(mqtt_url)
    default = 8883 if parts.scheme == "mqtts" else 1883
    return parts.hostname or "127.0.0.1", parts.port or default


def broker_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if an MQTT broker accepts a connection at host:port.

    Sends a real MQTT 3.1.1 CONNECT and waits for CONNACK, so a port held by
    something else does not count as a broker.
    """
    connect = bytes.fromhex("101000044d5154540402003c0004") + b"ping"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(connect)
            answer = sock.recv(4)
    except OSError:
        return False
    return len(answer) >= 2 and answer[0] == 0x20


async def serve(host: str, port: int) -> None:
    from amqtt.broker import Broker

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    log.info("embedded MQTT broker (amqtt) listening on %s:%d", host, port)
    try:
        await wait_for_signal()
    finally:
        await broker.shutdown()


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s broker %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    host, port = argv[1], int(argv[2])
    asyncio.run(serve(host, port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
