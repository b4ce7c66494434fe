"""The `edgesense` command: one service each, or the whole local cluster.

    edgesense registry|delivery|api|bridge [--dev]
    edgesense up [--dev]

Exit codes: 0 on a clean stop, 2 for a configuration error (the message says
which variable), 3 when an address to listen on is taken (the message names
it), 1 for anything else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from edgesense.common import runtime
from edgesense.common.config import Settings
from edgesense.common.errors import CannotListen, ConfigurationError
from edgesense.common.logs import configure_logging

log = logging.getLogger("edgesense")

EXIT_CONFIGURATION = 2
EXIT_CANNOT_LISTEN = 3  # as `edgesense receive`

ServiceMain = Callable[[Settings], Coroutine[Any, Any, None]]


def _registry(settings: Settings) -> Coroutine[Any, Any, None]:
    from edgesense.registry.server import run_registry

    return run_registry(settings)


def _delivery(settings: Settings) -> Coroutine[Any, Any, None]:
    from edgesense.delivery.server import run_delivery

    return run_delivery(settings)


def _api(settings: Settings) -> Coroutine[Any, Any, None]:
    from edgesense.api.server import run_api

    return run_api(settings)


def _bridge(settings: Settings) -> Coroutine[Any, Any, None]:
    from edgesense_bridge.server import run_bridge

    return run_bridge(settings)


SERVICE_HELP = {
    "registry": "run the registry: webhooks, API keys (gRPC)",
    "delivery": "run delivery: outbox, signed POSTs (gRPC)",
    "api": "run the REST API (JSON, transcoded to gRPC)",
    "bridge": "run the bridge: gateways' MQTT -> events",
}

SERVICES: dict[str, ServiceMain] = {
    "registry": _registry,
    "delivery": _delivery,
    "api": _api,
    "bridge": _bridge,
}


def run_service(name: str, dev: bool, verbose: bool = False) -> int:
    configure_logging(name, verbose)
    try:
        settings = Settings.from_env(dev=dev or None)
        runtime.run(SERVICES[name](settings))
    except ConfigurationError as exc:
        log.error("%s cannot start: %s", name, exc.message)
        return EXIT_CONFIGURATION
    except CannotListen as exc:
        log.error("%s %s", name, exc.message)
        return EXIT_CANNOT_LISTEN
    except KeyboardInterrupt:
        return 0
    return 0


def run_up(dev: bool) -> int:
    from edgesense.up import run_up as up

    configure_logging("up")
    try:
        settings = Settings.from_env(dev=dev or None)
        settings.require_api_keys()
        settings.require_secret_key()
    except ConfigurationError as exc:
        log.error("cannot start the cluster: %s", exc.message)
        return EXIT_CONFIGURATION
    return runtime.run(up(settings, list(SERVICES), dev or settings.dev))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgesense", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the whole local cluster in the foreground")
    up.add_argument(
        "--dev", action="store_true", help="development mode (dev API key, http:// targets)"
    )
    for name in SERVICES:
        cmd = sub.add_parser(name, help=SERVICE_HELP[name])
        cmd.add_argument("--dev", action="store_true", help="development mode")
        cmd.add_argument("-v", "--verbose", action="store_true")
    from edgesense.tools import add_tool_commands

    add_tool_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is not None:
        return handler(args)
    if args.command == "up":
        return run_up(args.dev)
    if args.command in SERVICES:
        return run_service(args.command, args.dev, args.verbose)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
