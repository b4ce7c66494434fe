"""A small typed client of the REST API (contract section 3), over httpx.

Everything that touches httpx is here. Answers are the API's JSON objects
(`JsonObject`); failures are translated where they happen:

- an error answer (4xx/5xx) -> `ApiError` with the google.rpc.Status message;
- no answer at all (refused, DNS, timeout) -> `CannotConnect`;
- no API key anywhere -> `UsageError`, saying how to provide one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from edgesense.common.config import DEV_DIR
from edgesense.tools.errors import ApiError, CannotConnect, UsageError

JsonObject = dict[str, Any]
MAX_PAGE_SIZE = 500
MAX_WEBHOOK_PAGE = 100
MAX_RULE_PAGE = 100
MAX_DEVICE_PAGE = 500  # ListDevicesRequest.page_size
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class ApiTarget:
    """Where the REST API is and which key to show it."""

    url: str
    key: str

    @classmethod
    def resolve(
        cls, url: str | None, key: str | None, env: Mapping[str, str] | None = None
    ) -> ApiTarget:
        """Options first, then EDGESENSE_API_URL / EDGESENSE_API_KEY, then the dev defaults."""
        env = os.environ if env is None else env
        url = url or env.get("EDGESENSE_API_URL") or ""
        if not url:
            url = f"http://{env.get('EDGESENSE_HTTP_ADDR') or '127.0.0.1:8080'}"
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"the API URL must start with http:// or https://, not {url!r}")
        key = key or env.get("EDGESENSE_API_KEY") or _dev_key(DEV_DIR / "dev-api-key")
        if not key:
            raise UsageError(
                "no API key: pass --api-key, set EDGESENSE_API_KEY, or run `edgesense up --dev` "
                "in this directory (it writes var/dev-api-key)"
            )
        return cls(url.rstrip("/"), key)


def _dev_key(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _segment(value: str) -> str:
    """An id as one path segment: `a/../b` cannot reach another route."""
    return quote(value, safe="")


class ApiClient:
    """One method per REST route; each returns the answer's JSON object."""

    def __init__(self, target: ApiTarget, transport: httpx.BaseTransport | None = None) -> None:
        self.target = target
        self._http = httpx.Client(
            base_url=target.url,
            headers={"Authorization": f"Bearer {target.key}"},
            timeout=TIMEOUT_SECONDS,
            transport=transport,
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def register(
        self,
        url: str,
        events: Sequence[str],
        secret: str,
        description: str = "",
        device_ids: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        *,
        rate_limit_per_second: int = 0,
        ordered: bool = False,
    ) -> JsonObject:
        body: JsonObject = {"url": url, "events": list(events), "secret": secret}
        if rate_limit_per_second:
            body["rateLimitPerSecond"] = rate_limit_per_second
        if ordered:
            body["ordered"] = True
        if description:
            body["description"] = description
        if device_ids:
            body["deviceIds"] = list(device_ids)
        if headers:
            body["headers"] = dict(headers)
        return self._call("POST", "/api/webhooks/register", json=body)

    def update_webhook(self, webhook_id: str, changes: JsonObject) -> JsonObject:
        """PATCH the fields in `changes` (JSON names); the API keeps the others."""
        return self._call("PATCH", f"/api/webhooks/{_segment(webhook_id)}", json=changes)

    def rotate_secret(
        self, webhook_id: str, secret: str, overlap_seconds: int | None = None
    ) -> JsonObject:
        body: JsonObject = {"secret": secret}
        if overlap_seconds is not None:
            body["overlapSeconds"] = overlap_seconds
        path = f"/api/webhooks/{_segment(webhook_id)}/rotate-secret"
        return self._call("POST", path, json=body)

    def send_test(self, webhook_id: str, event: str) -> JsonObject:
        """A test send: the delivery of a sample event, as queued."""
        path = f"/api/webhooks/{_segment(webhook_id)}/test"
        return self._call("POST", path, json={"event": event})

    def recover(self, webhook_id: str, since: str, until: str | None = None) -> JsonObject:
        """Send again the webhook's deliveries that failed between `since` and
        `until` (RFC 3339; default now)."""
        body: JsonObject = {"since": since}
        if until is not None:
            body["until"] = until
        return self._call("POST", f"/api/webhooks/{_segment(webhook_id)}/recover", json=body)

    def stats(self, webhook_id: str, window: str) -> JsonObject:
        path = f"/api/webhooks/{_segment(webhook_id)}/stats"
        return self._call("GET", path, params={"window": window})

    def project_stats(self, window: str) -> JsonObject:
        return self._call("GET", "/api/stats", params={"window": window})

    def event_types(self) -> list[JsonObject]:
        return list(self._call("GET", "/api/event-types").get("eventTypes") or [])

    def list_webhooks(self) -> list[JsonObject]:
        """Every webhook of the project, page after page."""
        found, _ = self._pages("/api/webhooks", "webhooks", {}, 0, MAX_WEBHOOK_PAGE)
        return found

    def get_webhook(self, webhook_id: str) -> JsonObject:
        return self._call("GET", f"/api/webhooks/{_segment(webhook_id)}")

    def delete_webhook(self, webhook_id: str) -> JsonObject:
        return self._call("DELETE", f"/api/webhooks/{_segment(webhook_id)}")

    def enable_webhook(self, webhook_id: str) -> JsonObject:
        return self._call("POST", f"/api/webhooks/{_segment(webhook_id)}/enable")

    def create_rule(self, rule: JsonObject) -> JsonObject:
        """POST a RuleSpec (JSON names); the answer is the stored Rule."""
        return self._call("POST", "/api/rules", json=rule)

    def list_rules(self) -> list[JsonObject]:
        """Every rule of the project, page after page, oldest first."""
        found, _ = self._pages("/api/rules", "rules", {}, 0, MAX_RULE_PAGE)
        return found

    def get_rule(self, rule_id: str) -> JsonObject:
        return self._call("GET", f"/api/rules/{_segment(rule_id)}")

    def update_rule(self, rule_id: str, changes: JsonObject) -> JsonObject:
        """PATCH the fields in `changes` (JSON names); the API keeps the others."""
        return self._call("PATCH", f"/api/rules/{_segment(rule_id)}", json=changes)

    def delete_rule(self, rule_id: str) -> JsonObject:
        return self._call("DELETE", f"/api/rules/{_segment(rule_id)}")

    def deliveries(
        self, webhook_id: str, status: str | None = None, limit: int = 0
    ) -> tuple[list[JsonObject], str]:
        """Deliveries newest first, page after page, at most `limit` (0: all).

        Returns them with the token of the page after them ("" at the end).
        """
        path = f"/api/webhooks/{_segment(webhook_id)}/deliveries"
        params = {"status": status} if status else {}
        return self._pages(path, "deliveries", params, limit, MAX_PAGE_SIZE)

    def alerts(
        self,
        filters: Mapping[str, str],
        page_size: int,
        every_page: bool = False,
    ) -> tuple[list[JsonObject], str]:
        """Alert instances newest first: one page of `page_size`, or every page.

        `filters`: the query's state, ruleId and deviceId (empty ones are left
        out). Returns them with the token of the page after them ("" at the end).
        """
        params = {name: value for name, value in filters.items() if value}
        return self._pages(
            "/api/alerts", "alerts", params, 0 if every_page else page_size, page_size
        )

    def devices(self, filters: Mapping[str, str]) -> tuple[list[JsonObject], dict[str, int]]:
        """Every device of the project in device id order, page after page,
        `filters` (status, gatewayId; empty ones are left out) applied; and
        the project's counts by status (online, offline, unknown) from the
        last page."""
        params = {name: value for name, value in filters.items() if value}
        found: list[JsonObject] = []
        token = ""
        while True:
            query: dict[str, str | int] = {**params, "pageSize": MAX_DEVICE_PAGE}
            if token:
                query["pageToken"] = token
            page = self._call("GET", "/api/devices", params=query)
            found += page.get("devices") or []
            token = str(page.get("nextPageToken") or "")
            if not token:
                totals = {s: int(page.get(s) or 0) for s in ("online", "offline", "unknown")}
                return found, totals

    def get_device(self, device_id: str) -> JsonObject:
        return self._call("GET", f"/api/devices/{_segment(device_id)}")

    def _pages(
        self, path: str, key: str, params: dict[str, str], limit: int, max_page: int
    ) -> tuple[list[JsonObject], str]:
        """Follow nextPageToken until the end or `limit` items (0: all)."""
        found: list[JsonObject] = []
        token = ""
        while True:
            size = max_page if limit == 0 else min(limit - len(found), max_page)
            query: dict[str, str | int] = {**params, "pageSize": size}
            if token:
                query["pageToken"] = token
            page = self._call("GET", path, params=query)
            found += page.get(key) or []
            token = str(page.get("nextPageToken") or "")
            if not token or (limit and len(found) >= limit):
                return found, token

    def get_delivery(self, delivery_id: str) -> JsonObject:
        return self._call("GET", f"/api/deliveries/{_segment(delivery_id)}")

    def redeliver(self, delivery_id: str) -> JsonObject:
        return self._call("POST", f"/api/deliveries/{_segment(delivery_id)}/redeliver")

    def _call(self, method: str, path: str, **kwargs: Any) -> JsonObject:
        try:
            answer = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise CannotConnect(
                f"the API at {self.target.url} did not answer within {TIMEOUT_SECONDS:g} s"
            ) from exc
        except httpx.TransportError as exc:
            raise CannotConnect(
                f"cannot reach the API at {self.target.url}; is `edgesense up` running?"
            ) from exc
        if answer.is_error:
            raise ApiError(_error_message(answer), answer.status_code)
        try:
            body = answer.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(
                "the API answered something that is not a JSON object", answer.status_code
            )
        return body


def _error_message(answer: httpx.Response) -> str:
    """The google.rpc.Status message, or the best the answer offers."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return str(body["message"])
    text = answer.text.strip().splitlines()[0][:200] if answer.text.strip() else ""
    return text or answer.reason_phrase or "error"
