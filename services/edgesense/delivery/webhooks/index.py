"""The webhooks delivery knows about, kept in memory from the registry's stream.

Matching an event is a dictionary lookup by (project, event name) and a set
test on the device, with no registry call per event. The index is replaced
whole on every snapshot (after a broken stream), and updated in place by
changes; `ready` is set once the first snapshot is in, and Publish waits for
it, so no event is matched against an empty index at start.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from edgesense.common.signing import Signer, with_custom_headers

ACTIVE = "active"
DISABLED = "disabled"


@dataclass(frozen=True)
class Target:
    """What delivery needs of a webhook: where, what, its signing secrets and
    its custom headers."""

    webhook_id: str
    project_id: str
    url: str
    events: frozenset[str]
    device_ids: frozenset[str]
    status: str
    secret: str
    disabled_reason: str | None = None
    # Secrets rotated out, oldest first, with the unix time each stops signing.
    previous_secrets: tuple[tuple[str, float], ...] = ()
    # Custom headers with their real values, sent with every request.
    headers: tuple[tuple[str, str], ...] = ()
    # At most this many requests per second (0: no limit; claim/ratelimit.py).
    rate_limit_per_second: int = 0
    # One device's deliveries in event order, one at a time (store/rows.py ORDERED_HEAD).
    ordered: bool = False
    signer: Signer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "signer", Signer(self.secret, self.previous_secrets))

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def request_headers(
        self, delivery_id: str, event_name: str, body: bytes, now: float
    ) -> dict[str, str]:
        """Every header of an attempt sent at `now`: the custom ones, then ours."""
        signed = self.signer.headers(delivery_id, event_name, body, int(now), now)
        return with_custom_headers(self.headers, signed) if self.headers else signed

    def wants(self, event_name: str, device_id: str) -> bool:
        return event_name in self.events and (not self.device_ids or device_id in self.device_ids)

    def __repr__(self) -> str:  # never the secret
        return f"Target({self.webhook_id}, {self.url!r}, {self.status})"


class WebhookIndex:
    def __init__(self) -> None:
        self._targets: dict[str, Target] = {}
        self._by_route: dict[tuple[str, str], list[Target]] = {}
        self._by_project: dict[str, list[str]] = {}
        # Webhook -> its rateLimitPerSecond, for the rate-limited ones only;
        # updated in place, so the dispatcher's lanes read it live.
        self.rate_limits: dict[str, int] = {}
        self.ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._targets)

    def get(self, webhook_id: str) -> Target | None:
        return self._targets.get(webhook_id)

    def webhook_ids(self, project_id: str) -> list[str]:
        """The ids of a project's webhooks."""
        return self._by_project.get(project_id, [])

    def match(self, project_id: str, event_name: str, device_id: str) -> list[Target]:
        """Every webhook (active or disabled) that wants this event."""
        candidates = self._by_route.get((project_id, event_name), ())
        return [t for t in candidates if not t.device_ids or device_id in t.device_ids]

    def subscribers(self, project_id: str, event_name: str, subject: str) -> list[Target]:
        """Every webhook of the project (active or disabled) subscribed to
        operational event `event_name` about webhook `subject`, but `subject`
        itself: device filters do not apply (the event is about no device)."""
        candidates = self._by_route.get((project_id, event_name), ())
        return [t for t in candidates if t.webhook_id != subject]

    def replace(self, targets: Iterable[Target]) -> None:
        self._targets = {t.webhook_id: t for t in targets}
        self._rebuild()
        self.ready.set()

    def upsert(self, target: Target) -> Target | None:
        """Insert or replace; returns the previous version."""
        previous = self._targets.get(target.webhook_id)
        self._targets[target.webhook_id] = target
        self._rebuild()
        return previous

    def remove(self, webhook_id: str) -> Target | None:
        previous = self._targets.pop(webhook_id, None)
        if previous is not None:
            self._rebuild()
        return previous

    def _rebuild(self) -> None:
        # Webhook changes are rare next to events: rebuilding keeps match() a
        # single lookup.
        routes: dict[tuple[str, str], list[Target]] = defaultdict(list)
        projects: dict[str, list[str]] = defaultdict(list)
        for target in self._targets.values():
            projects[target.project_id].append(target.webhook_id)
            for name in target.events:
                routes[(target.project_id, name)].append(target)
        self._by_route = dict(routes)
        self._by_project = dict(projects)
        self.rate_limits.clear()
        self.rate_limits.update(
            (t.webhook_id, t.rate_limit_per_second)
            for t in self._targets.values()
            if t.rate_limit_per_second
        )
