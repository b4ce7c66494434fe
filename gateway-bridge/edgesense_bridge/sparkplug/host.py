"""SparkplugHost: each edge node's session, one message -> its events.

INTERFACE STUB (the session's lead wrote it; the helper building the core
replaces the NotImplementedError and may add, never rename or remove).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edgesense.v1 import events_pb2


@dataclass(frozen=True)
class Rebirth:
    """Ask an edge node to publish its births again: publish `payload` (an NCMD
    with `Node Control/Rebirth` = true) to `topic`, QoS 0, not retained."""

    group_id: str
    edge_node_id: str
    topic: str
    payload: bytes
    reason: str  # why: "unknown_node", "unknown_alias", "seq_gap", ...


@dataclass(frozen=True)
class SparkplugOutcome:
    """What one Sparkplug message comes to.

    - `events`: to store, in this order (each with a deterministic event id,
      so that the same message seen twice, or by two bridges, is stored once);
      the message is acknowledged once all of them are confirmed. Empty: ack now.
    - `rejected`: (reason, detail) when the message is malformed or cannot be
      decoded without guessing (counted by reason, logged throttled, acked).
    - `ignored`: a reason when the message is no event and nothing is wrong
      (NCMD/DCMD, STATE, a stale NDEATH...), counted, acked.
    - `rebirth`: an NCMD to publish (already rate-limited per edge node).
    - `metrics_left_out`: metrics not typed into the payload (datasets,
      templates, ...) by reason -> count; counted, not fatal.
    """

    events: tuple[events_pb2.Event, ...] = ()
    rejected: tuple[str, str] | None = None
    ignored: str | None = None
    rebirth: Rebirth | None = None
    metrics_left_out: Mapping[str, int] = field(default_factory=dict)


class SparkplugHost:
    """The state of every edge node seen; feed it each Sparkplug message in
    arrival order."""

    def __init__(
        self,
        groups: Mapping[str, str] | None = None,  # group_id -> project id; default: the same
        *,
        rebirth_interval_seconds: float = 5.0,
        max_nodes: int = 10_000,
        max_event_bytes: int | None = None,
    ) -> None:
        raise NotImplementedError

    def handle(
        self, topic: str, payload: bytes, received_ns: int, now: float
    ) -> SparkplugOutcome:
        """`topic` is under spBv1.0/; `received_ns` the bridge's receipt time
        (time.time_ns()), `now` a monotonic clock for rate limits."""
        raise NotImplementedError
