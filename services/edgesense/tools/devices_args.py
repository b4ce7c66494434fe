"""The parser of `edgesense devices list|get` (handlers in devices_cmd.py, imported
only when the command runs: see `arguments.lazy`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from edgesense.tools.arguments import Handler, Subcommands, group, lazy

DEVICE_STATUSES = ("online", "offline", "unknown")
Leaf = Callable[[Subcommands, str, str, Handler], argparse.ArgumentParser]


def add_devices(sub: Subcommands, leaf: Leaf) -> None:
    """`edgesense devices list|get`; `leaf` adds an API command (with --api-url,
    --api-key and --json) to a group."""
    devices = group(sub, "devices", "the devices and gateways the project's events came from")
    listing = leaf(
        devices,
        "list",
        "every device and gateway seen, in device id order, with status and last readings",
        lazy("devices_cmd", "list_devices"),
    )
    listing.add_argument("--status", choices=DEVICE_STATUSES, help="only devices in this status")
    listing.add_argument(
        "--gateway", metavar="GATEWAY_ID", help="only devices last seen through this gateway"
    )
    leaf(
        devices,
        "get",
        "one device: its status, last readings and latest events",
        lazy("devices_cmd", "get"),
    ).add_argument("device_id", metavar="DEVICE_ID")
