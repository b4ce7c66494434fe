"""`edgesense alerts list`: the alerts the project's threshold rules raised.

One alert is one breach of one rule by one device: `active` from the reading
that triggered it, `resolved` from the one that cleared it (or when its rule
was disabled or deleted). `list` shows them newest first, one page of
`--page-size` (50); when more are left it says so on stderr (stdout stays a
table), and `--all` follows nextPageToken to the end. `--state`, `--rule-id`
and `--device-id` are the API's own filters. With `--json` it prints
`{"alerts": [...], "nextPageToken": ...}`, the token being where a later page
would start ("" when there is none).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from edgesense.tools.output import column, emit, emit_json, say_empty, say_more, table
from edgesense.tools.webhooks_cmd import client


def reading(alert: Mapping[str, Any], value_key: str) -> str | None:
    """`temperature=82.4`: the rule's field and one of the alert's values."""
    value = alert.get(value_key)
    return None if value is None else f"{alert.get('field') or '?'}={value}"


def resolved_by(alert: Mapping[str, Any]) -> str | None:
    """What ended it: the reading that cleared it, or why (`rule deleted`)."""
    if alert.get("state") != "resolved":
        return None
    reason = alert.get("resolvedReason")
    if reason in (None, "cleared") and alert.get("resolvedValue") is not None:
        return reading(alert, "resolvedValue")
    return str(reason or "resolved")


ALERT_COLUMNS = (
    column("ALERT ID", "alertId"),
    column("STATE", "state"),
    column("SEVERITY", "severity"),
    column("DEVICE", "deviceId"),
    column("GATEWAY", "gatewayId"),
    column("VALUE", "value", lambda a: reading(a, "value")),
    column("TRIGGERED", "triggeredAt"),
    column("RESOLVED", "resolvedAt"),
    column("RESOLVED BY", "resolvedValue", resolved_by),
    column("RULE ID", "ruleId"),
    column("RULE NAME", "ruleName"),
)


def _filters(args: argparse.Namespace) -> dict[str, str]:
    """The query's filters, by their REST names."""
    return {
        "state": args.state or "",
        "ruleId": args.rule_id or "",
        "deviceId": args.device_id or "",
    }


def _which(args: argparse.Namespace) -> str:
    """`active alerts of rule R on device D`: what was asked, for `no …`."""
    words = [args.state or "", "alerts"]
    if args.rule_id:
        words.append(f"of rule {args.rule_id}")
    if args.device_id:
        words.append(f"on device {args.device_id}")
    return " ".join(word for word in words if word)


def list_alerts(args: argparse.Namespace) -> int:
    with client(args) as api:
        found, next_token = api.alerts(_filters(args), args.page_size, args.all)
    if args.json:
        emit_json({"alerts": found, "nextPageToken": next_token})
    elif found:
        emit(table(found, ALERT_COLUMNS))
        if next_token:
            say_more(f"showing the newest {len(found)}", "--all shows every page")
    else:
        say_empty(_which(args))
    return 0
