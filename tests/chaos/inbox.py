"""The chaos test's receiver: what a careful webhook consumer would keep.

Every request is checked with the integration guide's `verify_signature`
(a bad one answers 401 and is counted) and its `webhook-id` compared with
`X-EdgeSense-Delivery` (the same id, kept on every retry). A request
answered 200 counts for the reading whose `seq` its payload carries; the
same webhook-id answered 200 again is a duplicate a receiver drops by that
id (at-least-once), and a second webhook-id for one reading would be a
duplicate it could not drop: two events made of one reading.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.receivers import guide_verify_signature


@dataclass
class Inbox:
    """A receiver behaviour (see tests.support.receivers.Receiver) that tallies readings."""

    secret: str
    run: str
    accepted: Counter[int] = field(default_factory=Counter)  # seq -> 200 answers
    webhook_ids: defaultdict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    bad_signatures: int = 0
    mismatched_ids: int = 0  # webhook-id != X-EdgeSense-Delivery
    foreign: int = 0  # requests for no reading of this run (probes)
    last_new_at: float = 0.0  # time.monotonic() when the latest reading first arrived

    async def __call__(self, request: web.Request, _n: int) -> web.StreamResponse:
        body = await request.text()
        if not guide_verify_signature(
            self.secret, body, request.headers.get("X-EdgeSense-Signature", "")
        ):
            self.bad_signatures += 1
            return web.Response(text="bad signature", status=401)
        webhook_id = request.headers.get("webhook-id", "")
        if webhook_id != request.headers.get("X-EdgeSense-Delivery"):
            self.mismatched_ids += 1
        payload = json.loads(body).get("payload") or {}
        if payload.get("run") != self.run or "seq" not in payload:
            self.foreign += 1
            return web.Response(text="ok")
        seq = int(payload["seq"])  # a JSON number that went through a protobuf Struct
        if seq not in self.accepted:
            self.last_new_at = time.monotonic()
        self.accepted[seq] += 1
        self.webhook_ids[seq].add(webhook_id)
        return web.Response(text="ok")

    def received(self) -> set[int]:
        return set(self.accepted)

    def duplicate_requests(self) -> int:
        """200 answers beyond the first for each reading."""
        return sum(n - 1 for n in self.accepted.values())

    def duplicated_readings(self) -> int:
        return sum(1 for n in self.accepted.values() if n > 1)

    def readings_with_two_ids(self) -> int:
        return sum(1 for ids in self.webhook_ids.values() if len(ids) > 1)
