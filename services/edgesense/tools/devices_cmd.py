"""`edgesense devices list|get`: the devices and gateways the project's events came from.

`list` shows every device in device id order (following nextPageToken to
the end, 500 a page), with the project's counts by status on stderr (stdout
stays a table); `--status` and `--gateway` are the API's own filters. `get`
shows one device and its latest events, newest first. With `--json` each
prints the API's JSON as is (`list`: `{"devices": [...], "online", "offline",
"unknown"}`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from edgesense.tools.output import column, details, emit, emit_json, say_empty, table
from edgesense.tools.webhooks_cmd import client


def readings(device: Mapping[str, Any]) -> object:
    """The latest readings as compact JSON, or why there are none."""
    if device.get("lastReadingsOmitted"):
        return "(over 8 KiB, left out)"
    return device.get("lastReadings")


DEVICE_COLUMNS = (
    column("DEVICE ID", "deviceId"),
    column("KIND", "kind"),
    column("STATUS", "status"),
    column("GATEWAY ID", "gatewayId"),
    column("LAST SEEN", "lastSeenAt"),
    column("LAST EVENT", "lastEvent"),
    column("LAST READINGS", "lastReadings", readings),
)

EVENT_COLUMNS = (
    column("TIMESTAMP", "timestamp"),
    column("EVENT", "event"),
    column("EVENT ID", "eventId"),
    column(
        "PAYLOAD",
        "payload",
        lambda e: "(over 2 KiB, left out)" if e.get("payloadOmitted") else e.get("payload"),
    ),
)


def list_devices(args: argparse.Namespace) -> int:
    filters = {"status": args.status or "", "gatewayId": args.gateway or ""}
    with client(args) as api:
        found, totals = api.devices(filters)
    if args.json:
        emit_json({"devices": found, **totals})
        return 0
    if found:
        emit(table(found, DEVICE_COLUMNS))
    else:
        say_empty("devices" + (f" through gateway {args.gateway}" if args.gateway else ""))
    counts = ", ".join(f"{totals.get(s, 0)} {s}" for s in ("online", "offline", "unknown"))
    print(f"project: {counts}", file=sys.stderr, flush=True)
    return 0


def get(args: argparse.Namespace) -> int:
    with client(args) as api:
        body = api.get_device(args.device_id)
    if args.json:
        emit_json(body)
        return 0
    device = body.get("device") or {}
    emit(
        details(
            [
                ("deviceId", device.get("deviceId")),
                ("kind", device.get("kind")),
                ("status", device.get("status")),
                ("statusChangedAt", device.get("statusChangedAt")),
                ("gatewayId", device.get("gatewayId")),
                ("firstSeenAt", device.get("firstSeenAt")),
                ("lastSeenAt", device.get("lastSeenAt")),
                ("lastEvent", device.get("lastEvent")),
                ("lastReadings", readings(device)),
                ("lastReadingsAt", device.get("lastReadingsAt")),
            ]
        )
    )
    recent = body.get("recentEvents") or []
    if recent:
        emit(["", *table(recent, EVENT_COLUMNS)])
    return 0
