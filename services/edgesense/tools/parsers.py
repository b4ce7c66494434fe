"""The tools' parsers: `add_tool_commands(sub)` adds `webhooks`, `stats`, `rules`,
`deliveries`, `alerts`, `devices`, `simulate` and `receive` to the `edgesense`
command.

This module holds the API commands (with the options they share: --api-url,
--api-key, --json); `local_commands.py` holds simulate and receive. Nothing
here imports httpx, aiohttp or paho: see `arguments.lazy`.
"""

from __future__ import annotations

import argparse

from edgesense.tools.arguments import (
    Handler,
    Subcommands,
    comma_list,
    command,
    finite,
    group,
    header,
    int_in,
    lazy,
)
from edgesense.tools.devices_args import add_devices
from edgesense.tools.local_commands import add_receive, add_simulate

DELIVERY_STATUSES = ("pending", "succeeded", "failed", "held")
ALERT_STATES = ("active", "resolved")
# GET /api/alerts answers at most 500 a page (ListAlertsRequest.page_size).
MAX_ALERTS_PAGE = 500


def _api_options() -> argparse.ArgumentParser:
    """The options every API command shares (a parent parser)."""
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument(
        "--api-url",
        metavar="URL",
        help="the REST API (default: EDGESENSE_API_URL, else "
        "http://EDGESENSE_HTTP_ADDR, else http://127.0.0.1:8080)",
    )
    api.add_argument(
        "--api-key",
        metavar="KEY",
        help="API key (default: EDGESENSE_API_KEY, else var/dev-api-key)",
    )
    api.add_argument("--json", action="store_true", help="print the API's JSON as is")
    return api


def add_tool_commands(sub: Subcommands) -> None:
    """Add the people's commands to the `edgesense` subcommands."""
    api = _api_options()

    def leaf(group: Subcommands, name: str, text: str, handler: Handler) -> argparse.ArgumentParser:
        parser = command(group, name, text, [api])
        parser.set_defaults(handler=handler)
        return parser

    def _of_webhook(
        group: Subcommands, name: str, text: str, handler: Handler
    ) -> argparse.ArgumentParser:
        """A command about one webhook: its WEBHOOK_ID comes first."""
        parser = leaf(group, name, text, handler)
        parser.add_argument("webhook_id", metavar="WEBHOOK_ID")
        return parser

    webhooks = group(
        sub,
        "webhooks",
        "register, list, inspect, update, rotate, delete, re-enable, test, recover"
        " and measure webhooks",
    )
    register = leaf(webhooks, "register", "register a webhook", lazy("webhooks_cmd", "register"))
    register.add_argument(
        "--url", metavar="URL", required=True, help="where to POST events (https://)"
    )
    register.add_argument(
        "--events",
        metavar="EVENTS",
        required=True,
        type=comma_list,
        help="comma list: device.data,device.alert,device.status,config.update,"
        "webhook.disabled,webhook.enabled",
    )
    register.add_argument(
        "--secret",
        metavar="S",
        required=True,
        help="signing secret; `-` reads it from stdin (keeps it out of ps)",
    )
    register.add_argument("--description", metavar="D", default="")
    register.add_argument(
        "--device-ids",
        metavar="IDS",
        type=comma_list,
        default=[],
        help="comma list: only these devices (default: all)",
    )
    _header_option(register)
    _sending_options(register, updating=False)
    leaf(webhooks, "list", "list the project's webhooks", lazy("webhooks_cmd", "list_webhooks"))
    for name, function, text in (
        ("get", "get", "show one webhook"),
        ("delete", "delete", "delete a webhook"),
        ("enable", "enable", "re-enable a disabled webhook; its held deliveries are sent"),
    ):
        _of_webhook(webhooks, name, text, lazy("webhooks_cmd", function))

    change = _of_webhook(
        webhooks,
        "update",
        "change a webhook's fields; only the options given change",
        lazy("webhooks_cmd", "update"),
    )
    change.add_argument("--url", metavar="URL")
    change.add_argument("--events", metavar="EVENTS", type=comma_list)
    change.add_argument("--description", metavar="D")
    change.add_argument(
        "--device-ids", metavar="IDS", type=comma_list, help="comma list; '' for all devices"
    )
    _header_option(change, " (replaces every custom header)")
    change.add_argument("--clear-headers", action="store_true", help="remove every custom header")
    _sending_options(change, updating=True)
    rotate = _of_webhook(
        webhooks,
        "rotate-secret",
        "make a new signing secret current; the old one also signs during the overlap",
        lazy("webhooks_cmd", "rotate_secret"),
    )
    rotate.add_argument(
        "--secret",
        metavar="S",
        required=True,
        help="the new signing secret; `-` reads it from stdin (keeps it out of ps)",
    )
    rotate.add_argument(
        "--overlap",
        metavar="SECONDS",
        type=int_in(0, 604_800),
        help="how long the old secret keeps signing (default 86400; 0: switch now)",
    )
    test = _of_webhook(
        webhooks,
        "test",
        "send a sample event (marked as a test) through the normal pipeline",
        lazy("webhooks_cmd", "send_test"),
    )
    test.add_argument(
        "--event",
        metavar="EVENT",
        default="device.data",
        help="device.data (default), device.alert, device.status, config.update, "
        "webhook.disabled or webhook.enabled",
    )
    again = _of_webhook(
        webhooks,
        "recover",
        "send again every delivery that failed in a time window, oldest first",
        lazy("webhooks_cmd", "recover"),
    )
    again.add_argument(
        "--since", metavar="TIME", required=True, help="RFC 3339, e.g. 2025-07-24T10:00:00Z"
    )
    again.add_argument("--until", metavar="TIME", help="RFC 3339 (default: now)")
    measured = _of_webhook(
        webhooks,
        "stats",
        "counts, success rate and attempt durations of recent deliveries",
        lazy("webhooks_cmd", "stats"),
    )
    measured.add_argument("--window", choices=("1h", "24h", "7d"), default="24h")
    leaf(
        sub,
        "event-types",
        "the event types a webhook can subscribe to (--json: with their body's JSON Schema)",
        lazy("webhooks_cmd", "event_types"),
    )

    overview = leaf(
        sub,
        "stats",
        "the project's deliveries, attempts, webhooks, held deliveries and active alerts",
        lazy("webhooks_cmd", "project_stats"),
    )
    overview.add_argument("--window", choices=("1h", "24h", "7d"), default="24h")

    _add_rules(sub, api)

    deliveries = group(sub, "deliveries", "inspect and resend a webhook's deliveries")
    listing = _of_webhook(
        deliveries,
        "list",
        "a webhook's deliveries, newest first",
        lazy("deliveries_cmd", "list_deliveries"),
    )
    listing.add_argument("--status", choices=DELIVERY_STATUSES)
    listing.add_argument(
        "--limit",
        metavar="N",
        type=int_in(0),
        default=50,
        help="at most this many (default 50; 0 for all, page after page)",
    )
    leaf(
        deliveries,
        "get",
        "one delivery: its attempts, its request headers (not the secret ones) and the body sent",
        lazy("deliveries_cmd", "get_delivery"),
    ).add_argument("delivery_id", metavar="DELIVERY_ID")
    leaf(
        deliveries,
        "redeliver",
        "send a delivery again, whatever its status",
        lazy("deliveries_cmd", "redeliver"),
    ).add_argument("delivery_id", metavar="DELIVERY_ID")

    alerts = group(sub, "alerts", "the alerts the project's threshold rules raised")
    alerting = leaf(
        alerts,
        "list",
        "alerts newest first: one per breach of a rule by a device, active or resolved",
        lazy("alerts_cmd", "list_alerts"),
    )
    alerting.add_argument("--state", choices=ALERT_STATES, help="only active or only resolved")
    alerting.add_argument("--rule-id", metavar="R", help="only this rule's alerts")
    alerting.add_argument("--device-id", metavar="D", help="only this device's alerts")
    alerting.add_argument(
        "--page-size",
        metavar="N",
        type=int_in(1, MAX_ALERTS_PAGE),
        default=50,
        help=f"alerts a page (default 50, at most {MAX_ALERTS_PAGE}); without --all, "
        "the newest page only",
    )
    alerting.add_argument("--all", action="store_true", help="every page, not only the newest")

    add_devices(sub, leaf)
    add_simulate(sub)
    add_receive(sub)


def _add_rules(sub: Subcommands, api: argparse.ArgumentParser) -> None:
    """`edgesense rules create|list|get|update|delete`: the alert rule routes."""
    rules = group(sub, "rules", "create, list, inspect, update and delete alert rules")

    def leaf(name: str, text: str, function: str, of_rule: bool) -> argparse.ArgumentParser:
        parser = command(rules, name, text, [api])
        parser.set_defaults(handler=lazy("rules_cmd", function))
        if of_rule:
            parser.add_argument("rule_id", metavar="RULE_ID")
        return parser

    create = leaf("create", "create an alert rule", "create", of_rule=False)
    _rule_options(create, creating=True)
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    leaf("list", "list the project's rules, oldest first", "list_rules", of_rule=False)
    leaf("get", "show one rule", "get", of_rule=True)
    leaf("delete", "delete a rule; its active alerts resolve", "delete", of_rule=True)
    change = leaf(
        "update",
        "change a rule's fields; only the options given change (a new condition "
        "makes a new version)",
        "update",
        of_rule=True,
    )
    _rule_options(change, creating=False)
    enabled = change.add_mutually_exclusive_group()
    enabled.add_argument("--enabled", dest="enabled", action="store_const", const=True)
    enabled.add_argument(
        "--disabled",
        dest="enabled",
        action="store_const",
        const=False,
        help="a disabled rule evaluates nothing; its active alerts resolve",
    )


def _rule_options(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    """A rule's fields; on update none is required and absent means unchanged.
    The API checks the values (its message names the field)."""
    parser.add_argument("--name", metavar="NAME", required=creating)
    parser.add_argument(
        "--field",
        metavar="PATH",
        help="a dotted path into a reading's payload, e.g. temperature or motor.rpm",
        required=creating,
    )
    parser.add_argument(
        "--operator", metavar="OP", help="gt, gte, lt, lte, outside or inside", required=creating
    )
    parser.add_argument("--threshold", metavar="X", type=finite, required=creating)
    parser.add_argument(
        "--threshold-high",
        metavar="X",
        type=finite,
        help="the top of the range [threshold, X]: outside and inside only",
    )
    parser.add_argument(
        "--clear-threshold",
        metavar="X",
        type=finite,
        help="gt/gte/lt/lte: an alert resolves at or beyond X on the safe side "
        "(default: the threshold)",
    )
    parser.add_argument(
        "--count", metavar="N", type=int, help="consecutive breaching readings (default 1)"
    )
    parser.add_argument(
        "--for-seconds",
        metavar="S",
        type=int,
        help="the breach must also have lasted S seconds (default 0)",
    )
    parser.add_argument(
        "--severity", metavar="LEVEL", help="info, warning (the default) or critical"
    )
    all_of = "'' for all" if not creating else "default: all"
    parser.add_argument(
        "--device-ids", metavar="IDS", type=comma_list, help=f"comma list; {all_of}"
    )
    parser.add_argument(
        "--gateway-ids", metavar="IDS", type=comma_list, help=f"comma list; {all_of}"
    )
    parser.add_argument("--description", metavar="D")


def _sending_options(parser: argparse.ArgumentParser, *, updating: bool) -> None:
    """--rate-limit and --ordered; on update, absent means unchanged."""
    parser.add_argument(
        "--rate-limit",
        metavar="N",
        type=int_in(0, 10_000),
        default=None if updating else 0,
        help="at most N requests per second to this webhook (0: no limit)",
    )
    parser.add_argument(
        "--ordered",
        action=argparse.BooleanOptionalAction if updating else "store_true",
        default=None if updating else False,
        help="send each device's deliveries strictly in event order, one at a time",
    )


def _header_option(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument(
        "--header",
        metavar="'NAME: VALUE'",
        dest="headers",
        action="append",
        type=header,
        default=[],
        help=f"a custom header sent with every request; repeat for more{more}",
    )
