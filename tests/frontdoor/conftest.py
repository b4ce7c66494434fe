"""The front door: `edgesense up --dev` and the services as a newcomer starts
them, as subprocesses in a private working directory (var/ of their own),
every address on a free port."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.ports import free_port
from tests.tools.conftest import cli_command

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


def run_edgesense(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`edgesense ARGS` to its end (at most a minute), its output captured as text."""
    return subprocess.run(
        cli_command(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
