"""The devices view's pure rules (delivery/devices/view.py): what a device's
events say about it, and how two states of one device merge, whatever the
order."""

from __future__ import annotations

import itertools
from typing import Any

from google.protobuf import struct_pb2

from edgesense.delivery.devices.view import (
    MAX_READINGS_BYTES,
    OFFLINE,
    ONLINE,
    RECENT_EVENTS,
    UNKNOWN,
    DeviceState,
    merge,
    observe,
)
from edgesense.v1 import events_pb2

ONLINE_STATE = events_pb2.DeviceStatus.STATE_ONLINE
OFFLINE_STATE = events_pb2.DeviceStatus.STATE_OFFLINE


def event(
    number: int,
    at: float,
    *,
    device: str = "d1",
    gateway: str = "gw-1",
    readings: dict[str, Any] | None = None,
    status: int | None = None,
    received: float | None = None,
) -> events_pb2.Event:
    made = events_pb2.Event(
        event_id=f"evt_{number:04d}", project_id="p", gateway_id=gateway, device_id=device
    )
    made.timestamp.FromMicroseconds(round(at * 1e6))
    made.received_at.FromMicroseconds(round((at if received is None else received) * 1e6))
    if status is not None:
        made.status.state = status  # type: ignore[assignment]
    else:
        made.readings.values.update(readings or {"t": number})
    return made


def state(*events: events_pb2.Event) -> DeviceState:
    return observe("p", events[0].device_id, [(e, e.ByteSize()) for e in events])


def readings_of(found: DeviceState) -> dict[str, object]:
    assert found.readings is not None
    struct = struct_pb2.Struct.FromString(found.readings)
    return dict(struct.items())


def test_a_device_without_status_events_is_unknown() -> None:
    found = state(event(1, 10.0), event(2, 11.0))
    assert found.status == UNKNOWN
    assert found.status_at is None
    assert found.status_changed_at is None
    assert found.kind == "device"
    assert found.last_event == "device.data"


def test_the_latest_by_timestamp_wins_whatever_the_arrival_order() -> None:
    events = [
        event(1, 10.0, readings={"t": 1}, gateway="gw-a"),
        event(2, 30.0, readings={"t": 3}, gateway="gw-c"),
        event(3, 20.0, readings={"t": 2}, gateway="gw-b"),
        event(4, 25.0, status=ONLINE_STATE, gateway="gw-b"),
        event(5, 15.0, status=OFFLINE_STATE, gateway="gw-b"),
    ]
    for order in itertools.permutations(events):
        found = state(*order)
        assert found.gateway_id == "gw-c"
        assert found.last_event_at == 30.0
        assert readings_of(found) == {"t": 3.0}
        assert found.readings_at == 30.0
        assert (found.status, found.status_at, found.status_changed_at) == (ONLINE, 25.0, 25.0)
        assert [r.event_id for r in found.recent] == [
            "evt_0002",
            "evt_0004",
            "evt_0003",
            "evt_0005",
            "evt_0001",
        ]


def test_status_changed_at_is_the_start_of_the_current_run() -> None:
    found = state(
        event(1, 10.0, status=OFFLINE_STATE),
        event(2, 20.0, status=ONLINE_STATE),
        event(3, 30.0, status=ONLINE_STATE),
    )
    assert (found.status, found.status_at, found.status_changed_at) == (ONLINE, 30.0, 20.0)


def test_a_run_that_began_at_time_zero_keeps_its_start() -> None:
    """Two states saying online: since the earlier start, even when it is 0.0
    (a falsy float, not a missing one)."""
    first = state(event(1, 0.0, status=ONLINE_STATE), event(2, 5.0, status=ONLINE_STATE))
    second = state(event(3, 0.5, status=ONLINE_STATE))
    for merged in (merge(first, second), merge(second, first)):
        assert (merged.status, merged.status_at, merged.status_changed_at) == (ONLINE, 5.0, 0.0)


def test_first_and_last_seen_are_the_bridge_receipt_times() -> None:
    found = state(event(1, 10.0, received=100.0), event(2, 500.0, received=90.0))
    assert (found.first_seen_at, found.last_seen_at) == (90.0, 100.0)


def test_a_gateway_is_the_device_of_its_own_status() -> None:
    found = state(event(1, 10.0, device="gw-1", gateway="gw-1", status=OFFLINE_STATE))
    assert found.kind == "gateway"
    assert found.status == OFFLINE


def test_recent_events_are_cut_to_the_newest_twenty() -> None:
    found = state(*(event(n, float(n)) for n in range(50)))
    assert len(found.recent) == RECENT_EVENTS
    assert [r.at for r in found.recent] == [float(n) for n in range(49, 29, -1)]


def test_readings_over_the_limit_are_left_out_with_a_flag() -> None:
    big = event(1, 10.0, readings={"blob": "x" * (MAX_READINGS_BYTES + 10)})
    found = state(big)
    assert found.readings is None
    assert found.readings_omitted
    assert found.readings_at == 10.0
    small = state(event(2, 11.0))
    assert not small.readings_omitted
    later = merge(found, small)
    assert readings_of(later) == {"t": 2.0}
    assert not later.readings_omitted


def test_merge_keeps_the_newest_of_each_part_in_any_order() -> None:
    a = state(
        event(1, 10.0, status=ONLINE_STATE, received=100.0),
        event(2, 40.0, readings={"t": 40}, gateway="gw-a", received=101.0),
    )
    b = state(
        event(3, 30.0, status=OFFLINE_STATE, gateway="gw-b", received=99.0),
        event(4, 20.0, readings={"t": 20}, gateway="gw-b", received=150.0),
    )
    c = state(event(5, 35.0, status=OFFLINE_STATE, gateway="gw-c", received=120.0))
    results = set()
    for x, y, z in itertools.permutations((a, b, c)):
        merged = merge(merge(x, y), z)
        results.add(merged)
        assert merged.gateway_id == "gw-a"
        assert merged.last_event_at == 40.0
        assert readings_of(merged) == {"t": 40.0}
        assert (merged.status, merged.status_at) == (OFFLINE, 35.0)
        assert merged.status_changed_at == 30.0  # the run began with b's offline
        assert (merged.first_seen_at, merged.last_seen_at) == (99.0, 150.0)
        assert [r.event_id for r in merged.recent] == [
            "evt_0002",
            "evt_0005",
            "evt_0003",
            "evt_0004",
            "evt_0001",
        ]
    assert len(results) == 1


def test_merge_of_a_status_change_takes_its_time() -> None:
    online = state(event(1, 10.0, status=ONLINE_STATE))
    offline = state(event(2, 20.0, status=OFFLINE_STATE))
    for merged in (merge(online, offline), merge(offline, online)):
        assert (merged.status, merged.status_changed_at) == (OFFLINE, 20.0)


def test_offline_wins_a_tie() -> None:
    online = state(event(1, 10.0, status=ONLINE_STATE))
    offline = state(event(2, 10.0, status=OFFLINE_STATE))
    assert merge(online, offline).status == OFFLINE
    assert merge(offline, online).status == OFFLINE
    assert state(
        event(1, 10.0, status=ONLINE_STATE), event(2, 10.0, status=OFFLINE_STATE)
    ).status == (OFFLINE)


def test_a_state_without_status_keeps_the_other_s() -> None:
    online = state(event(1, 10.0, status=ONLINE_STATE))
    data = state(event(2, 20.0))
    for merged in (merge(online, data), merge(data, online)):
        assert (merged.status, merged.status_at, merged.status_changed_at) == (ONLINE, 10.0, 10.0)
        assert merged.last_event == "device.data"


def test_the_same_event_merged_twice_is_listed_once() -> None:
    one = state(event(1, 10.0), event(2, 11.0))
    assert merge(one, one) == one
