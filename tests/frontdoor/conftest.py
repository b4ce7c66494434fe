"""The front door: `edgesense up --dev` and the services as a newcomer starts
them, as subprocesses in a private working directory (var/ of their own),
every address on a free port."""

from __future__ import annotations

import os

from tests.bridge.broker import free_port

ADDRESS_VARIABLES = (
    "EDGESENSE_REGISTRY_ADDR",
    "EDGESENSE_DELIVERY_ADDR",
    "EDGESENSE_BRIDGE_ADDR",
    "EDGESENSE_HTTP_ADDR",
    "EDGESENSE_REGISTRY_METRICS_ADDR",
    "EDGESENSE_DELIVERY_METRICS_ADDR",
    "EDGESENSE_BRIDGE_METRICS_ADDR",
)


def private_env(**settings: str) -> dict[str, str]:
    """This process's environment without EDGESENSE_ settings, with every listen
    address on a free port, a broker URL where nothing listens, and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESENSE_")}
    env.update({name: f"127.0.0.1:{free_port()}" for name in ADDRESS_VARIABLES})
    env["EDGESENSE_MQTT_URL"] = f"mqtt://127.0.0.1:{free_port()}"
    env.update(settings)
    return env
