"""`edgesense deliveries list|get|redeliver`: a webhook's attempt log, one
delivery with the body sent, and resending.

`list` follows nextPageToken until `--limit` deliveries (0: all) are shown;
when more are left it says so on stderr (stdout stays a table), with the
options that show them. With `--json` it prints `{"deliveries": [...],
"nextPageToken": ...}`, the token being where a later page would start (""
when there is none).
`get` prints the delivery, its attempts, the request headers that are not
secret and the exact body POSTed (as sent, on the last lines).
`redeliver` prints the delivery it queued again, with its attempts so far.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from edgesense.tools.api_client import JsonObject
from edgesense.tools.output import (
    column,
    details,
    emit,
    emit_json,
    say_empty,
    say_more,
    table,
)
from edgesense.tools.webhooks_cmd import client


def last_outcome(delivery: Mapping[str, Any]) -> str:
    """The last attempt in a few characters: `200`, `503`, `timeout…` or `-`."""
    attempts = delivery.get("attempts") or []
    if not attempts:
        return "-"
    last = attempts[-1]
    if last.get("statusCode"):
        return str(last["statusCode"])
    return str(last.get("error") or "-")[:40]


DELIVERY_COLUMNS = (
    column("DELIVERY ID", "deliveryId"),
    column("STATUS", "status"),
    column("EVENT", "event"),
    column("DEVICE", "deviceId"),
    column("ATTEMPTS", "attempts", lambda d: len(d.get("attempts") or [])),
    column("LAST", "attempts", last_outcome),
    column("CREATED", "createdAt"),
    column("EVENT ID", "eventId"),
)

ATTEMPT_COLUMNS = (
    column("#", "attempt"),
    column("STARTED", "startedAt"),
    column("MS", "durationMs"),
    column("STATUS", "statusCode"),
    column("ERROR", "error"),
)


def delivery_lines(delivery: JsonObject) -> list[str]:
    attempts = delivery.get("attempts") or []
    names = ("deliveryId", "webhookId", "status", "event", "deviceId", "eventId", "createdAt")
    lines = details([(name, delivery.get(name)) for name in names] + [("attempts", len(attempts))])
    if attempts:
        lines += ["  " + line for line in table(attempts, ATTEMPT_COLUMNS)]
    return lines


def list_deliveries(args: argparse.Namespace) -> int:
    with client(args) as api:
        found, next_token = api.deliveries(args.webhook_id, args.status, args.limit)
    if args.json:
        emit_json({"deliveries": found, "nextPageToken": next_token})
    elif found:
        emit(table(found, DELIVERY_COLUMNS))
        if next_token:
            say_more(f"showing the newest {len(found)}")
    else:
        say_empty("deliveries" + (f" with status {args.status}" if args.status else ""))
    return 0


def get_delivery(args: argparse.Namespace) -> int:
    with client(args) as api:
        body = api.get_delivery(args.delivery_id)
    if args.json:
        emit_json(body)
        return 0
    headers = body.get("headers") or {}
    lines = delivery_lines(body)
    lines += ["headers:", *(f"  {name}: {value}" for name, value in sorted(headers.items()))]
    lines += ["body:", str(body.get("body", ""))]
    emit(lines)
    return 0


def redeliver(args: argparse.Namespace) -> int:
    with client(args) as api:
        body = api.redeliver(args.delivery_id)
    if args.json:
        emit_json(body)
    else:
        emit(delivery_lines(body))
    return 0
