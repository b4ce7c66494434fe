"""The devices view's rules: what a device's events say about it (pure).

A device's row (`DeviceState`) is made in two steps, both here:

- `observe`: the events one delivery process stored for a device since its
  last flush become one `DeviceState` (the fold's work, done by the flusher,
  never on the accept path);
- `merge`: two states of the same device (a state a failed write kept and
  a fresh one, in the flusher) become one. The database merges a flush into
  the stored row by the same rules, in the upsert itself
  (delivery/store/devices.py `_merged_columns`, its SQL twin: change both
  together; a test holds them to the same answers). Each part keeps the
  newest of the two by its own clock, so flushes may be written in any order
  and by any number of processes and end the same:

  - the gateway and the last event: the event with the latest
    (timestamp, event id);
  - the status: the latest status event by (timestamp, offline before online
    at the same instant); `status_changed_at` is the first timestamp of the
    current run of that status as far as the two states tell (the earlier of
    the two when both say the same status: exact within one process,
    approximate when two processes saw interleaved changes in one second);
  - first and last seen: the earliest and latest time the bridge received
    an event (`received_at`, the platform's clock, not the gateway's);
  - the readings: those of the device.data event with the latest
    (timestamp, event id); over MAX_READINGS_BYTES as a protobuf Struct they
    are left out and flagged;
  - recent events: the union of both, newest first by (timestamp, event id),
    cut to RECENT_EVENTS; only ids, names and times are kept (GetDevice reads
    the payloads from the stored events).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from google.protobuf import timestamp_pb2

from edgesense.common.events import KIND_TO_EVENT
from edgesense.v1 import events_pb2

ONLINE = "online"
OFFLINE = "offline"
UNKNOWN = "unknown"
STATUSES = (ONLINE, OFFLINE, UNKNOWN)
GATEWAY = "gateway"
DEVICE = "device"
RECENT_EVENTS = 20
MAX_READINGS_BYTES = 8 * 1024
# An event's own fields beside its payload (ids of up to 128 characters,
# two timestamps) take well under this: an event larger than the readings
# limit plus it has readings over the limit, without serializing them.
ENVELOPE_BYTES = 1024
_STATE_NAMES = {
    events_pb2.DeviceStatus.STATE_ONLINE: ONLINE,
    events_pb2.DeviceStatus.STATE_OFFLINE: OFFLINE,
}


class Recent(NamedTuple):
    """One of a device's latest events: ordered by (at, event_id)."""

    at: float
    event_id: str
    event: str


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A device's row in the devices table. Times are UNIX seconds."""

    project_id: str
    device_id: str
    gateway_id: str
    last_event: str
    last_event_id: str
    last_event_at: float
    status: str  # ONLINE, OFFLINE or UNKNOWN (never reported)
    status_at: float | None  # the timestamp of the latest status event
    status_changed_at: float | None
    first_seen_at: float
    last_seen_at: float
    readings: bytes | None  # the serialized google.protobuf.Struct
    readings_omitted: bool
    readings_at: float | None
    readings_event_id: str | None
    recent: tuple[Recent, ...]  # newest first, at most RECENT_EVENTS

    @property
    def kind(self) -> str:
        """ "gateway" when the device is the gateway of its latest event."""
        return GATEWAY if self.device_id == self.gateway_id else DEVICE

    @property
    def key(self) -> tuple[str, str]:
        return self.project_id, self.device_id


def seconds(ts: timestamp_pb2.Timestamp) -> float:
    """A google.protobuf.Timestamp as UNIX seconds."""
    return ts.seconds + ts.nanos / 1e9


def status_of(event: events_pb2.Event) -> str | None:
    """ONLINE or OFFLINE for a device.status event; None for any other event."""
    if event.WhichOneof("kind") != "status":
        return None
    return _STATE_NAMES.get(event.status.state)


def observe(
    project_id: str, device_id: str, items: Sequence[tuple[events_pb2.Event, int]]
) -> DeviceState:
    """The state that `items` (newly stored events of one device, each with
    its serialized size, in any order; at least one) describe."""
    assert items, "observe needs at least one event"
    # Run for every stored event (by the flusher): one pass, plain tuples.
    stamped: list[tuple[float, str, str, int]] = []  # (at, event id, kind, position)
    first_seen = math.inf
    last_seen = -math.inf
    for position, (event, _) in enumerate(items):
        ts = event.timestamp
        at = ts.seconds + ts.nanos / 1e9
        received = event.received_at
        seen = received.seconds + received.nanos / 1e9 if received.seconds else at
        first_seen = min(first_seen, seen)
        last_seen = max(last_seen, seen)
        stamped.append((at, event.event_id, event.WhichOneof("kind") or "", position))
    stamped.sort(reverse=True)  # newest first
    at, event_id, kind, position = stamped[0]
    newest_event = items[position][0]
    recent: list[Recent] = []
    listed: set[str] = set()
    for at, event_id, kind, _ in stamped:  # newest first: the first 20 ids
        if event_id not in listed:
            listed.add(event_id)
            recent.append(Recent(at, event_id, KIND_TO_EVENT.get(kind, kind)))
            if len(recent) == RECENT_EVENTS:
                break
    statuses: list[tuple[float, bool, str]] = []
    readings_at: tuple[float, str, int] | None = None
    for at, event_id, kind, position in stamped:
        if kind == "readings" and readings_at is None:
            readings_at = (at, event_id, position)
        elif kind == "status":
            said = _STATE_NAMES.get(items[position][0].status.state)
            if said is not None:
                statuses.append((at, said == OFFLINE, said))
    status, status_at, changed_at = UNKNOWN, None, None
    for at, _, said in sorted(statuses):
        if said != status:
            status, changed_at = said, at
        status_at = at
    readings, omitted = None, False
    if readings_at is not None:
        event, size = items[readings_at[2]]
        if size > MAX_READINGS_BYTES + ENVELOPE_BYTES:
            omitted = True
        else:
            readings = event.readings.values.SerializeToString()
            if len(readings) > MAX_READINGS_BYTES:
                readings, omitted = None, True
    newest_at, newest_id, newest_kind, _ = stamped[0]
    return DeviceState(
        project_id=project_id,
        device_id=device_id,
        gateway_id=newest_event.gateway_id,
        last_event=KIND_TO_EVENT.get(newest_kind, newest_kind),
        last_event_id=newest_id,
        last_event_at=newest_at,
        status=status,
        status_at=status_at,
        status_changed_at=changed_at,
        first_seen_at=first_seen,
        last_seen_at=last_seen,
        readings=readings,
        readings_omitted=omitted,
        readings_at=None if readings_at is None else readings_at[0],
        readings_event_id=None if readings_at is None else readings_at[1],
        recent=tuple(recent),
    )


def newest_recent(events: Iterable[Recent]) -> tuple[Recent, ...]:
    """The RECENT_EVENTS newest of `events`, newest first, each event id once
    (all entries of one id are equal: an event id is stored once)."""
    unique = {recent.event_id: recent for recent in events}
    return tuple(heapq.nlargest(RECENT_EVENTS, unique.values()))


def merge(old: DeviceState, new: DeviceState) -> DeviceState:
    """One state of a device from two (see the module docstring): the same
    whichever is `old` and whichever `new`."""
    assert old.key == new.key, "merge states of one device"
    later = max((old, new), key=lambda s: (s.last_event_at, s.last_event_id))
    status, status_at, changed_at = _status(old, new)
    readings = _readings(old, new)
    return DeviceState(
        project_id=later.project_id,
        device_id=later.device_id,
        gateway_id=later.gateway_id,
        last_event=later.last_event,
        last_event_id=later.last_event_id,
        last_event_at=later.last_event_at,
        status=status,
        status_at=status_at,
        status_changed_at=changed_at,
        first_seen_at=min(old.first_seen_at, new.first_seen_at),
        last_seen_at=max(old.last_seen_at, new.last_seen_at),
        readings=readings.readings,
        readings_omitted=readings.readings_omitted,
        readings_at=readings.readings_at,
        readings_event_id=readings.readings_event_id,
        recent=newest_recent(old.recent + new.recent),
    )


def _status(old: DeviceState, new: DeviceState) -> tuple[str, float | None, float | None]:
    """The status part of merge: the latest status event's, and since when."""
    if old.status_at is None:
        return new.status, new.status_at, new.status_changed_at
    if new.status_at is None:
        return old.status, old.status_at, old.status_changed_at
    winner, loser = sorted(
        (old, new),
        key=lambda s: (s.status_at, s.status == OFFLINE, s.status_changed_at or 0.0),
        reverse=True,
    )
    changed_at = winner.status_changed_at
    if loser.status == winner.status and loser.status_changed_at is not None:
        changed_at = (
            loser.status_changed_at
            if changed_at is None
            else min(changed_at, loser.status_changed_at)
        )
    return winner.status, winner.status_at, changed_at


def _readings(old: DeviceState, new: DeviceState) -> DeviceState:
    """The state whose readings merge keeps: the later reading's."""
    if old.readings_at is None:
        return new
    if new.readings_at is None:
        return old
    return max((old, new), key=lambda s: (s.readings_at or 0.0, s.readings_event_id or ""))
