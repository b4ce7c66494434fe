"""An embedded MQTT broker (amqtt) for `edgesense up` when none answers.

Fine for trying EdgeSense on a laptop (a few thousand messages a second, no
shared subscriptions); production uses Mosquitto or another real broker (see
deploy/mosquitto). amqtt (0.12.1, the newest) speaks MQTT 3.1.1 only: `up`
runs the bridge with EDGESENSE_MQTT_PROTOCOL=3.1.1 against it, and says so.
Run as `python -m edgesense.embedded_broker HOST PORT`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from edgesense.common.errors import CannotListen
from edgesense.common.grpc_runtime import wait_for_signal
from edgesense.common.listen import ensure_free, join_address

log = logging.getLogger(__name__)


def _client_failed(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # amqtt lets a client's broken or unsupported CONNECT (an MQTT 5 client, a
    # port scanner) escape as an asyncio error with a traceback: one line each.
    problem = context.get("exception") or context.get("message")
    log.warning("a client connection failed: %s", problem)


async def serve(host: str, port: int) -> None:
    from amqtt.broker import Broker

    # Held by something that is not an MQTT broker (`up` found none answering).
    ensure_free(join_address(host, port))
    asyncio.get_running_loop().set_exception_handler(_client_failed)
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    log.info("embedded MQTT broker (amqtt, MQTT 3.1.1) listening on %s:%d", host, port)
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
    try:
        asyncio.run(serve(host, port))
    except CannotListen as exc:
        log.error("embedded broker %s; point EDGESENSE_MQTT_URL elsewhere", exc.message)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
