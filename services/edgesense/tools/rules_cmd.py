"""`edgesense rules create|list|get|update|delete`: the alert rule routes.

Each command returns the exit code (0); errors are raised as ToolErrors and
turned into `error: …` and an exit code by `errors.run_tool`. With `--json`
the API's answer is printed as is, otherwise as a table (`list`) or a
`key: value` block. The API checks every value: a bad rule is its 400,
whose message names the field.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from edgesense.tools.api_client import JsonObject
from edgesense.tools.errors import UsageError
from edgesense.tools.output import column, details, emit, emit_json, say_empty, table
from edgesense.tools.webhooks_cmd import client

# Option (argparse dest) -> the RuleSpec field's JSON name.
RULE_OPTIONS = (
    ("name", "name"),
    ("description", "description"),
    ("field", "field"),
    ("operator", "operator"),
    ("threshold", "threshold"),
    ("threshold_high", "thresholdHigh"),
    ("clear_threshold", "clearThreshold"),
    ("count", "count"),
    ("for_seconds", "forSeconds"),
    ("severity", "severity"),
    ("device_ids", "deviceIds"),
    ("gateway_ids", "gatewayIds"),
)


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def condition(rule: Mapping[str, Any]) -> str:
    """`temperature gt 80`, `rpm inside [10, 20]`, with the clear threshold
    when it is not the threshold: `temperature gt 80 (clears at 75)`."""
    field, operator = rule.get("field"), rule.get("operator")
    low = _number(rule.get("threshold", 0))
    if "thresholdHigh" in rule:
        return f"{field} {operator} [{low}, {_number(rule['thresholdHigh'])}]"
    text = f"{field} {operator} {low}"
    clear = rule.get("clearThreshold")
    if clear is not None and clear != rule.get("threshold", 0):
        text += f" (clears at {_number(clear)})"
    return text


def _scope(ids: object) -> object:
    return ids or "all"


RULE_COLUMNS = (
    column("RULE ID", "ruleId"),
    column("ENABLED", "enabled", lambda r: bool(r.get("enabled"))),
    column("SEVERITY", "severity"),
    column("CONDITION", "field", condition),
    column("COUNT", "count"),
    column("FOR", "forSeconds", lambda r: f"{r.get('forSeconds', 0)}s"),
    column("DEVICES", "deviceIds", lambda r: _scope(r.get("deviceIds"))),
    column("VERSION", "version"),
    column("NAME", "name"),
)


def rule_fields(rule: JsonObject) -> list[tuple[str, object]]:
    return [
        ("ruleId", rule.get("ruleId")),
        ("name", rule.get("name")),
        ("enabled", bool(rule.get("enabled"))),
        ("condition", condition(rule)),
        ("count", rule.get("count")),
        ("forSeconds", rule.get("forSeconds", 0)),
        ("severity", rule.get("severity")),
        ("deviceIds", rule.get("deviceIds") or "all devices"),
        ("gatewayIds", rule.get("gatewayIds") or "all"),
        ("description", rule.get("description")),
        ("version", rule.get("version")),
        ("createdAt", rule.get("createdAt")),
        ("updatedAt", rule.get("updatedAt")),
    ]


def _show(args: argparse.Namespace, body: JsonObject) -> int:
    if args.json:
        emit_json(body)
    else:
        emit(details(rule_fields(body)))
    return 0


def _given(args: argparse.Namespace) -> JsonObject:
    """The rule's fields given as options (JSON names); the others are left out."""
    fields: JsonObject = {}
    for option, name in RULE_OPTIONS:
        value = getattr(args, option)
        if value is not None:
            fields[name] = value
    return fields


def create(args: argparse.Namespace) -> int:
    rule = _given(args)
    if args.disabled:
        rule["enabled"] = False
    with client(args) as api:
        body = api.create_rule(rule)
    return _show(args, body)


def update(args: argparse.Namespace) -> int:
    """Only the options given are sent, so the API keeps every other field."""
    changes = _given(args)
    if args.enabled is not None:
        changes["enabled"] = args.enabled
    if not changes:
        raise UsageError(
            "nothing to update: give --name, --field, --operator, --threshold, "
            "--threshold-high, --clear-threshold, --count, --for-seconds, --severity, "
            "--device-ids, --gateway-ids, --description, --enabled or --disabled"
        )
    with client(args) as api:
        body = api.update_rule(args.rule_id, changes)
    return _show(args, body)


def list_rules(args: argparse.Namespace) -> int:
    with client(args) as api:
        found = api.list_rules()
    if args.json:
        emit_json({"rules": found})
    elif found:
        emit(table(found, RULE_COLUMNS))
    else:
        say_empty("rules")
    return 0


def get(args: argparse.Namespace) -> int:
    with client(args) as api:
        body = api.get_rule(args.rule_id)
    return _show(args, body)


def delete(args: argparse.Namespace) -> int:
    with client(args) as api:
        body = api.delete_rule(args.rule_id)
    if args.json:
        emit_json(body)
    else:
        emit(details([("ruleId", body.get("ruleId")), ("status", body.get("status"))]))
    return 0
