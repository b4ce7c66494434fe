"""`edgesense webhooks register|list|get|update|rotate-secret|delete|enable|test|
recover|stats`, `edgesense event-types` and `edgesense stats`: the webhook
routes and the project's stats.

Each command returns the exit code (0); errors are raised as ToolErrors and
turned into `error: …` and an exit code by `errors.run_tool`. With `--json`
the API's answer is printed as is, otherwise as a table (`list`) or a
`key: value` block.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from edgesense.tools.api_client import ApiClient, ApiTarget, JsonObject
from edgesense.tools.errors import UsageError
from edgesense.tools.output import column, details, emit, emit_json, say_empty, table

WEBHOOK_COLUMNS = (
    column("WEBHOOK ID", "webhookId"),
    column("STATUS", "status"),
    column("EVENTS", "events"),
    column("DEVICES", "deviceIds", lambda w: w.get("deviceIds") or "all"),
    column("CREATED", "createdAt"),
    column("URL", "url"),
    column("DESCRIPTION", "description"),
)


def client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(ApiTarget.resolve(args.api_url, args.api_key))


def webhook_fields(hook: JsonObject) -> list[tuple[str, object]]:
    fields: list[tuple[str, object]] = [
        ("webhookId", hook.get("webhookId")),
        ("url", hook.get("url")),
        ("status", hook.get("status")),
        ("events", hook.get("events")),
        ("deviceIds", hook.get("deviceIds") or "all devices"),
        ("description", hook.get("description")),
        ("headers", sorted(hook.get("headers") or {}) or "none"),
        ("rateLimitPerSecond", hook.get("rateLimitPerSecond") or "no limit"),
        ("ordered", bool(hook.get("ordered"))),
        ("createdAt", hook.get("createdAt")),
        ("updatedAt", hook.get("updatedAt")),
    ]
    if hook.get("secretRotationEndsAt"):
        fields.append(("secretRotationEndsAt", hook.get("secretRotationEndsAt")))
    if hook.get("status") == "disabled" or hook.get("disabledAt"):
        fields += [
            ("disabledAt", hook.get("disabledAt")),
            ("disabledReason", hook.get("disabledReason")),
        ]
    return fields


def _show(args: argparse.Namespace, body: JsonObject, fields: Callable[[JsonObject], Any]) -> int:
    if args.json:
        emit_json(body)
    else:
        emit(details(fields(body)))
    return 0


def _status_fields(body: JsonObject) -> list[tuple[str, object]]:
    return [("webhookId", body.get("webhookId")), ("status", body.get("status"))]


def read_secret(raw: str) -> str:
    """`-` reads the secret from stdin (one line), so it stays out of ps and history."""
    if raw != "-":
        return raw
    secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        raise UsageError("--secret -: stdin gave an empty secret")
    return secret


def register(args: argparse.Namespace) -> int:
    secret = read_secret(args.secret)
    with client(args) as api:
        body = api.register(
            args.url,
            args.events,
            secret,
            args.description,
            args.device_ids,
            dict(args.headers),
            rate_limit_per_second=args.rate_limit,
            ordered=args.ordered,
        )
    return _show(args, body, _status_fields)


def update(args: argparse.Namespace) -> int:
    """Only the options given are sent, so the API keeps every other field."""
    changes: JsonObject = {}
    for option, name in (
        ("url", "url"),
        ("events", "events"),
        ("description", "description"),
        ("device_ids", "deviceIds"),
        ("rate_limit", "rateLimitPerSecond"),
        ("ordered", "ordered"),
    ):
        value = getattr(args, option)
        if value is not None:
            changes[name] = value
    if args.clear_headers:
        changes["headers"] = {}
    elif args.headers:
        changes["headers"] = dict(args.headers)
    if not changes:
        raise UsageError(
            "nothing to update: give --url, --events, --description, --device-ids, "
            "--header, --clear-headers, --rate-limit or --[no-]ordered"
        )
    with client(args) as api:
        body = api.update_webhook(args.webhook_id, changes)
    return _show(args, body, webhook_fields)


def rotate_secret(args: argparse.Namespace) -> int:
    secret = read_secret(args.secret)
    with client(args) as api:
        body = api.rotate_secret(args.webhook_id, secret, args.overlap)
    return _show(args, body, webhook_fields)


def send_test(args: argparse.Namespace) -> int:
    with client(args) as api:
        body = api.send_test(args.webhook_id, args.event)
    return _show(
        args,
        body,
        lambda d: [
            ("deliveryId", d.get("deliveryId")),
            ("webhookId", d.get("webhookId")),
            ("event", d.get("event")),
            ("status", d.get("status")),
        ],
    )


def recover(args: argparse.Namespace) -> int:
    with client(args) as api:
        body = api.recover(args.webhook_id, args.since, args.until)
    fields: list[tuple[str, object]] = [
        ("webhookId", body.get("webhookId")),
        ("recovered", body.get("recovered", 0)),
    ]
    if body.get("more"):
        fields.append(("more", f"yes: run again with --since {body.get('nextSince')}"))
    return _show(args, body, lambda _: fields)


def stats(args: argparse.Namespace) -> int:
    with client(args) as api:
        body = api.stats(args.webhook_id, args.window)
    fields = [("webhookId", body.get("webhookId")), *window_fields(body)]
    return _show(args, body, lambda _: fields)


def project_stats(args: argparse.Namespace) -> int:
    """`edgesense stats`: the project's figures (GET /api/stats)."""
    with client(args) as api:
        body = api.project_stats(args.window)
    webhooks = body.get("webhooks") or {}
    fields = [
        *window_fields(body),
        ("webhooks.active", webhooks.get("active", 0)),
        ("webhooks.disabled", webhooks.get("disabled", 0)),
        ("held", body.get("held", 0)),
        ("alertsActive", body.get("alertsActive", 0)),
    ]
    return _show(args, body, lambda _: fields)


def window_fields(body: JsonObject) -> list[tuple[str, object]]:
    """The window's figures, as WebhookStats and ProjectStats both have them."""
    counts = body.get("deliveries") or {}
    rate = body.get("successRate")
    return [
        ("window", f"{body.get('window')} from {body.get('since')} to {body.get('until')}"),
        *((f"deliveries.{k}", counts.get(k, 0)) for k in ("total", *STATUSES)),
        ("attempts", body.get("attempts", 0)),
        ("successRate", "-" if rate is None else f"{rate:.1%}"),
        *((f"p{p}DurationMs", body.get(f"p{p}DurationMs", "-")) for p in (50, 95, 99)),
        ("bucketSeconds", body.get("bucketSeconds")),
    ]


STATUSES = ("pending", "succeeded", "failed", "held")
EVENT_TYPE_COLUMNS = (column("EVENT", "name"), column("DESCRIPTION", "description"))


def event_types(args: argparse.Namespace) -> int:
    with client(args) as api:
        types = api.event_types()
    if args.json:
        emit_json({"eventTypes": types})
    else:
        emit(table(types, EVENT_TYPE_COLUMNS))
    return 0


def list_webhooks(args: argparse.Namespace) -> int:
    with client(args) as api:
        hooks = api.list_webhooks()
    if args.json:
        emit_json({"webhooks": hooks})
    elif hooks:
        emit(table(hooks, WEBHOOK_COLUMNS))
    else:
        say_empty("webhooks")
    return 0


def get(args: argparse.Namespace) -> int:
    with client(args) as api:
        body = api.get_webhook(args.webhook_id)
    return _show(args, body, webhook_fields)


def delete(args: argparse.Namespace) -> int:
    with client(args) as api:
        body = api.delete_webhook(args.webhook_id)
    return _show(args, body, _status_fields)


def enable(args: argparse.Namespace) -> int:
    with client(args) as api:
        body = api.enable_webhook(args.webhook_id)
    return _show(args, body, _status_fields)
