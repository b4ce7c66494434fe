"""SparkplugHost: sessions, aliases, seq, bdSeq, rebirths, ids and bounds.

Every payload is made by pysparkplug, an independent Sparkplug encoder (never
by our own schema run backwards); what pysparkplug cannot make (a payload
without a timestamp, a metric with no name) comes from pysparkplug's own
compiled schema.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import json_format
from pysparkplug import (
    DataType,
    DBirth,
    DData,
    DDeath,
    Metric,
    MetricValue,
    NBirth,
    NCmd,
    NData,
    NDeath,
    State,
)
from pysparkplug import _protobuf as their_pb

from edgesense.v1 import events_pb2
from edgesense_bridge.sparkplug.control import rebirth_payload, state_payload
from edgesense_bridge.sparkplug.host import (
    BD_SEQ_MEMORY,
    DEVICE_BYTES,
    ENTRY_BYTES,
    NODE_BYTES,
    SparkplugHost,
    SparkplugOutcome,
    event_id,
)

GROUP = "plant"
EDGE = "gw1"
RECEIVED_NS = 1_764_583_200_000_000_000  # 2025-12-01T10:00:00Z
BIRTH_MS = 1_764_583_100_000
DATA_MS = 1_764_583_150_250


def topic(kind: str, edge: str = EDGE, device: str | None = None, group: str = GROUP) -> str:
    return f"spBv1.0/{group}/{kind}/{edge}" + (f"/{device}" if device else "")


def metric(
    name: str | None, datatype: DataType, value: MetricValue, alias: int | None = None
) -> Metric:
    return Metric(timestamp=None, name=name, datatype=datatype, value=value, alias=alias)


# The datatypes NODE_METRICS declare, by alias: pysparkplug needs one to encode
# a value, and leaves it out of DATA payloads (the birth's applies).
ALIAS_TYPES = {
    1: DataType.FLOAT,
    2: DataType.INT8,
    3: DataType.INT16,
    4: DataType.INT32,
    5: DataType.INT64,
    6: DataType.UINT64,
    7: DataType.BOOLEAN,
    8: DataType.STRING,
    9: DataType.DATETIME,
    10: DataType.DOUBLE,
    11: DataType.INT16_ARRAY,
    12: DataType.UINT8,
}


def by_alias(alias: int, value: MetricValue | None, datatype: DataType | None = None) -> Metric:
    """A DATA metric sent by alias alone (no name); its datatype is only used
    to encode the value, unless the payload is encoded with datatypes."""
    datatype = datatype or ALIAS_TYPES.get(alias, DataType.INT32)
    return Metric(timestamp=None, name=None, datatype=datatype, value=value, alias=alias)


NODE_METRICS = (
    metric("bdSeq", DataType.INT64, 7),
    metric("Node Control/Rebirth", DataType.BOOLEAN, False),
    metric("Node Control/Next Server", DataType.BOOLEAN, False),
    metric("temperature", DataType.FLOAT, 21.5, alias=1),
    metric("offset", DataType.INT8, -3, alias=2),
    metric("pressure", DataType.INT16, -1200, alias=3),
    metric("delta", DataType.INT32, -70000, alias=4),
    metric("counter", DataType.INT64, -(2**40), alias=5),
    metric("big", DataType.UINT64, 2**60 + 1, alias=6),
    metric("ok", DataType.BOOLEAN, True, alias=7),
    metric("label", DataType.STRING, "line 1", alias=8),
    metric("serviced", DataType.DATETIME, datetime(2026, 1, 2, 3, 4, 5, 678000, UTC), alias=9),
    metric("ratio", DataType.DOUBLE, 0.25, alias=10),
    metric("samples", DataType.INT16_ARRAY, (-1, 2, -3), alias=11),
    metric("byte", DataType.UINT8, 200, alias=12),
)


def nbirth(
    metrics: tuple[Metric, ...] = NODE_METRICS, seq: int = 0, timestamp: int = BIRTH_MS
) -> bytes:
    return NBirth(timestamp=timestamp, seq=seq, metrics=metrics).encode()


def ndata(seq: int, *metrics: Metric, timestamp: int = DATA_MS, dtypes: bool = False) -> bytes:
    return NData(timestamp=timestamp, seq=seq, metrics=metrics).encode(include_dtypes=dtypes)


def ndeath(bd_seq: int) -> bytes:
    return NDeath(
        timestamp=BIRTH_MS, bd_seq_metric=metric("bdSeq", DataType.INT64, bd_seq)
    ).encode()


DEVICE_METRICS = (
    metric("Device Control/Rebirth", DataType.BOOLEAN, False),
    metric("rpm", DataType.UINT32, 1500, alias=1),
    metric("state", DataType.STRING, "run", alias=2),
)


def dbirth(seq: int, metrics: tuple[Metric, ...] = DEVICE_METRICS) -> bytes:
    return DBirth(timestamp=BIRTH_MS, seq=seq, metrics=metrics).encode()


def ddata(seq: int, *metrics: Metric) -> bytes:
    return DData(timestamp=DATA_MS, seq=seq, metrics=metrics).encode()


def as_dict(event: events_pb2.Event) -> dict[str, Any]:
    return json_format.MessageToDict(event, preserving_proto_field_name=True)


def readings(outcome: SparkplugOutcome, index: int = 0) -> dict[str, Any]:
    event = outcome.events[index]
    assert event.WhichOneof("kind") == "readings", event
    return json_format.MessageToDict(event.readings.values)


def statuses(outcome: SparkplugOutcome) -> list[tuple[str, str, str]]:
    """(gateway, device, state) of each status event."""
    found = []
    for event in outcome.events:
        assert event.WhichOneof("kind") == "status", event
        state = events_pb2.DeviceStatus.State.Name(event.status.state)
        found.append((event.gateway_id, event.device_id, state))
    return found


def reason(outcome: SparkplugOutcome) -> str | None:
    """Why the outcome was rejected, if it was."""
    return outcome.rejected[0] if outcome.rejected else None


def ok(outcome: SparkplugOutcome) -> SparkplugOutcome:
    assert outcome.rejected is None, outcome.rejected
    assert outcome.ignored is None, outcome.ignored
    assert not outcome.seq_gap
    assert outcome.rebirth is None
    return outcome


@pytest.fixture
def host() -> SparkplugHost:
    return SparkplugHost()


def born(host: SparkplugHost, edge: str = EDGE, now: float = 0.0) -> SparkplugOutcome:
    return ok(host.handle(topic("NBIRTH", edge), nbirth(), RECEIVED_NS, now))


# Births and data.


def test_nbirth_puts_the_node_online_with_its_readings(host: SparkplugHost) -> None:
    outcome = born(host)
    assert len(outcome.events) == 2
    status = as_dict(outcome.events[0])
    assert status["project_id"] == GROUP
    assert status["gateway_id"] == EDGE
    assert status["device_id"] == EDGE
    assert status["timestamp"] == "2025-12-01T09:58:20Z"
    assert status["received_at"] == "2025-12-01T10:00:00Z"
    assert status["status"] == {
        "state": "STATE_ONLINE",
        "details": {"source": "sparkplug", "bdSeq": 7.0},
    }
    values = readings(outcome, 1)
    # The protocol's own metrics are no readings.
    assert "bdSeq" not in values
    assert not [name for name in values if name.startswith("Node Control/")]
    assert values["temperature"] == 21.5
    assert values["offset"] == -3
    assert values["big"] == str(2**60 + 1)
    assert outcome.metrics_left_out == {}


def test_aliased_data_becomes_named_typed_readings(host: SparkplugHost) -> None:
    born(host)
    outcome = ok(
        host.handle(
            topic("NDATA"),
            ndata(
                1,
                by_alias(1, 22.75),
                by_alias(2, -128),
                by_alias(3, -32768),
                by_alias(4, -(2**31)),
                by_alias(5, -(2**53) - 1),
                by_alias(6, 2**64 - 1),
                by_alias(7, False),
                by_alias(8, "line 2"),
                by_alias(9, datetime(2026, 12, 1, 10, 0, 0, 123000, UTC)),
                by_alias(10, None),  # null
                by_alias(11, (5, -6)),
                by_alias(12, 255),
            ),
            RECEIVED_NS,
            1.0,
        )
    )
    (event,) = outcome.events
    assert (event.project_id, event.gateway_id, event.device_id) == (GROUP, EDGE, EDGE)
    assert readings(outcome) == {
        "temperature": 22.75,
        "offset": -128,
        "pressure": -32768,
        "delta": -(2**31),
        "counter": str(-(2**53) - 1),
        "big": "18446744073709551615",
        "ok": False,
        "label": "line 2",
        "serviced": "2026-12-01T10:00:00.123Z",
        "ratio": None,
        "samples": [5, -6],
        "byte": 255,
    }
    # The event's time is the payload's; received_at the bridge's.
    assert as_dict(event)["timestamp"] == "2025-12-01T09:59:10.250Z"
    assert as_dict(event)["received_at"] == "2025-12-01T10:00:00Z"


def test_a_metric_with_a_name_needs_no_alias(host: SparkplugHost) -> None:
    born(host)
    named = (metric("temperature", DataType.FLOAT, 19.0), metric("new", DataType.INT32, -4))
    payload = ndata(1, *named, dtypes=True)
    outcome = ok(host.handle(topic("NDATA"), payload, RECEIVED_NS, 1.0))
    assert readings(outcome) == {"temperature": 19.0, "new": -4}


def test_data_datatype_overrides_the_births(host: SparkplugHost) -> None:
    born(host)
    # "offset" was born Int8; this DATA says UInt8 and sends 200.
    payload = ndata(1, by_alias(2, 200, DataType.UINT8), dtypes=True)
    outcome = ok(host.handle(topic("NDATA"), payload, RECEIVED_NS, 1))
    assert readings(outcome) == {"offset": 200}


def test_device_birth_and_data(host: SparkplugHost) -> None:
    born(host)
    birth = ok(host.handle(topic("DBIRTH", device="pump-1"), dbirth(1), RECEIVED_NS, 1))
    assert statuses(SparkplugOutcome(events=birth.events[:1])) == [(EDGE, "pump-1", "STATE_ONLINE")]
    assert as_dict(birth.events[0])["status"]["details"] == {"source": "sparkplug"}
    assert readings(birth, 1) == {"rpm": 1500, "state": "run"}
    data = ok(
        host.handle(
            topic("DDATA", device="pump-1"),
            ddata(2, by_alias(1, 1600, DataType.UINT32), by_alias(2, "stop", DataType.STRING)),
            RECEIVED_NS,
            2,
        )
    )
    (event,) = data.events
    assert (event.gateway_id, event.device_id) == (EDGE, "pump-1")
    assert readings(data) == {"rpm": 1600, "state": "stop"}


def test_device_aliases_are_the_devices_not_the_nodes(host: SparkplugHost) -> None:
    born(host)
    ok(host.handle(topic("DBIRTH", device="pump-1"), dbirth(1), RECEIVED_NS, 1))
    # Alias 1 is "temperature" on the node, "rpm" on the device.
    node = ok(host.handle(topic("NDATA"), ndata(2, by_alias(1, 20.0)), RECEIVED_NS, 2))
    rpm = ddata(3, by_alias(1, 7, DataType.UINT32))
    device = ok(host.handle(topic("DDATA", device="pump-1"), rpm, RECEIVED_NS, 2))
    assert readings(node) == {"temperature": 20.0}
    assert readings(device) == {"rpm": 7}


def test_groups_map_to_projects() -> None:
    host = SparkplugHost({"Plant 1": "plant-one"})
    outcome = ok(host.handle(topic("NBIRTH", group="Plant 1"), nbirth(), RECEIVED_NS, 0))
    assert {event.project_id for event in outcome.events} == {"plant-one"}
    other = ok(host.handle(topic("NBIRTH", group="other"), nbirth(), RECEIVED_NS, 0))
    assert {event.project_id for event in other.events} == {"other"}


# Never guess: unknown nodes, devices and aliases.


def assert_rebirth(outcome: SparkplugOutcome, reason: str, edge: str = EDGE) -> None:
    assert outcome.rebirth is not None
    assert outcome.rebirth.reason == reason
    assert (outcome.rebirth.group_id, outcome.rebirth.edge_node_id) == (GROUP, edge)
    assert outcome.rebirth.topic == f"spBv1.0/{GROUP}/NCMD/{edge}"
    command = NCmd.decode(outcome.rebirth.payload)
    assert [(m.name, m.datatype, m.value) for m in command.metrics] == [
        ("Node Control/Rebirth", DataType.BOOLEAN, True)
    ]
    assert command.timestamp == RECEIVED_NS // 1_000_000


def test_data_before_birth_is_rejected_and_asks_for_a_rebirth(host: SparkplugHost) -> None:
    outcome = host.handle(topic("NDATA"), ndata(4, by_alias(1, 20.0)), RECEIVED_NS, 0)
    assert outcome.events == ()
    assert outcome.rejected is not None
    assert outcome.rejected[0] == "sparkplug_unknown_node"
    assert EDGE in outcome.rejected[1]
    assert_rebirth(outcome, "unknown_node")
    # The rebirth's NBIRTH comes, and the data after it gets the right names.
    born(host, now=0.5)
    after = ok(host.handle(topic("NDATA"), ndata(1, by_alias(1, 20.0)), RECEIVED_NS, 0.6))
    assert readings(after) == {"temperature": 20.0}


def test_dbirth_and_ddata_before_nbirth_are_rejected(host: SparkplugHost) -> None:
    for kind, payload in [("DBIRTH", dbirth(1)), ("DDATA", ddata(1, by_alias(1, 1)))]:
        fresh = SparkplugHost()
        outcome = fresh.handle(topic(kind, device="pump-1"), payload, RECEIVED_NS, 0)
        assert reason(outcome) == "sparkplug_unknown_node"
        assert outcome.events == ()
        assert_rebirth(outcome, "unknown_node")


def test_one_unknown_alias_rejects_the_whole_message(host: SparkplugHost) -> None:
    born(host)
    outcome = host.handle(
        topic("NDATA"), ndata(1, by_alias(1, 20.0), by_alias(99, 5)), RECEIVED_NS, 1
    )
    assert outcome.events == ()
    assert outcome.rejected is not None
    assert outcome.rejected[0] == "sparkplug_unknown_alias"
    assert "99" in outcome.rejected[1]
    assert_rebirth(outcome, "unknown_alias")


def test_data_of_a_device_without_dbirth_is_rejected(host: SparkplugHost) -> None:
    born(host)
    outcome = host.handle(topic("DDATA", device="pump-9"), ddata(1, by_alias(1, 3)), RECEIVED_NS, 1)
    assert outcome.events == ()
    assert outcome.rejected is not None
    assert outcome.rejected[0] == "sparkplug_unknown_device"
    assert "pump-9" in outcome.rejected[1]
    assert_rebirth(outcome, "unknown_device")


def test_a_new_nbirth_replaces_aliases_and_forgets_devices(host: SparkplugHost) -> None:
    born(host)
    ok(host.handle(topic("DBIRTH", device="pump-1"), dbirth(1), RECEIVED_NS, 1))
    # The node restarts with its aliases reassigned.
    swapped = (
        metric("bdSeq", DataType.INT64, 8),
        metric("temperature", DataType.FLOAT, 1.5, alias=2),
        metric("offset", DataType.INT8, 1, alias=1),
    )
    ok(host.handle(topic("NBIRTH"), nbirth(swapped), RECEIVED_NS, 2))
    data = ndata(1, by_alias(1, -9, DataType.INT8), by_alias(2, 30.5, DataType.FLOAT))
    outcome = ok(host.handle(topic("NDATA"), data, RECEIVED_NS, 3))
    assert readings(outcome) == {"offset": -9, "temperature": 30.5}
    # Alias 3 ("pressure") was the old birth's only.
    stale = host.handle(topic("NDATA"), ndata(2, by_alias(3, 1)), RECEIVED_NS, 3)
    assert reason(stale) == "sparkplug_unknown_alias"
    device = host.handle(topic("DDATA", device="pump-1"), ddata(3, by_alias(1, 1)), RECEIVED_NS, 20)
    assert reason(device) == "sparkplug_unknown_device"


def test_a_birth_giving_one_alias_two_names_is_rejected(host: SparkplugHost) -> None:
    born(host)
    bad = (metric("a", DataType.INT32, 1, alias=1), metric("b", DataType.INT32, 2, alias=1))
    outcome = host.handle(topic("NBIRTH"), nbirth(bad), RECEIVED_NS, 1)
    assert outcome.rejected is not None
    assert outcome.rejected[0] == "sparkplug_bad_birth"
    assert outcome.events == ()
    # The old session is void too: its aliases are not guessed from.
    after = host.handle(topic("NDATA"), ndata(1, by_alias(1, 1.0)), RECEIVED_NS, 2)
    assert reason(after) == "sparkplug_unknown_node"


def test_an_unreadable_nbirth_voids_the_old_session(host: SparkplugHost) -> None:
    ok(
        host.handle(
            topic("NBIRTH"), nbirth((metric("Temp", DataType.FLOAT, 1.0, alias=1),)), RECEIVED_NS, 0
        )
    )
    pressure = nbirth((metric("Pressure", DataType.FLOAT, 2.0, alias=1),))
    truncated = host.handle(topic("NBIRTH"), pressure[:-3], RECEIVED_NS, 1)
    assert reason(truncated) == "sparkplug_bad_payload"
    assert truncated.rebirth is None
    # Alias 1 is not "Temp" any more, and not known to be "Pressure" either.
    after = host.handle(topic("NDATA"), ndata(1, by_alias(1, 3.0)), RECEIVED_NS, 2)
    assert reason(after) == "sparkplug_unknown_node"
    assert_rebirth(after, "unknown_node")


def test_a_too_large_or_badly_timed_nbirth_voids_the_old_session() -> None:
    far = 253_402_300_800_000  # 10000-01-01
    for payload, why in [
        (nbirth((*NODE_METRICS, metric("text", DataType.STRING, "x" * 1000))), "too_large"),
        (nbirth(timestamp=far), "sparkplug_bad_timestamp"),
    ]:
        host = SparkplugHost(max_payload_bytes=len(nbirth()) + 100)
        born(host)
        outcome = host.handle(topic("NBIRTH"), payload, RECEIVED_NS, 1)
        assert reason(outcome) == why
        assert outcome.rebirth is None
        assert host.node_count == 0
        after = host.handle(topic("NDATA"), ndata(1, by_alias(1, 3.0)), RECEIVED_NS, 2)
        assert reason(after) == "sparkplug_unknown_node"


def test_an_unreadable_dbirth_voids_the_devices_aliases(host: SparkplugHost) -> None:
    born(host)
    ok(host.handle(topic("DBIRTH", device="pump-1"), dbirth(1), RECEIVED_NS, 1))
    truncated = host.handle(topic("DBIRTH", device="pump-1"), dbirth(2)[:-3], RECEIVED_NS, 1)
    assert reason(truncated) == "sparkplug_bad_payload"
    # The device's old aliases are void; the node lives on (its seq unread, a gap).
    after = host.handle(topic("DDATA", device="pump-1"), ddata(2, by_alias(1, 1)), RECEIVED_NS, 2)
    assert reason(after) == "sparkplug_unknown_device"
    ok(host.handle(topic("NDATA"), ndata(3, by_alias(1, 1.0)), RECEIVED_NS, 2))


def test_a_badly_timed_dbirth_declares_nothing(host: SparkplugHost) -> None:
    born(host)
    far = DBirth(timestamp=253_402_300_800_000, seq=1, metrics=DEVICE_METRICS).encode()
    outcome = host.handle(topic("DBIRTH", device="pump-1"), far, RECEIVED_NS, 1)
    assert reason(outcome) == "sparkplug_bad_timestamp"
    after = host.handle(topic("DDATA", device="pump-1"), ddata(2, by_alias(1, 1)), RECEIVED_NS, 2)
    assert reason(after) == "sparkplug_unknown_device"


def test_a_payload_over_max_payload_bytes_is_rejected_undecoded() -> None:
    host = SparkplugHost(max_payload_bytes=200)
    assert len(nbirth()) > 200
    outcome = host.handle(topic("NBIRTH"), nbirth(), RECEIVED_NS, 0)
    assert outcome.rejected == ("too_large", f"payload of {len(nbirth())} bytes exceeds 200")
    assert host.node_count == 0
    # The default bound, 256 KiB: at it, garbage is decoded (and is garbage); past it, not.
    default = SparkplugHost()
    at_bound = default.handle(topic("NDATA"), b"\xff" * 256 * 1024, RECEIVED_NS, 0)
    assert reason(at_bound) == "sparkplug_bad_payload"
    past = default.handle(topic("NDATA"), b"\xff" * (256 * 1024 + 1), RECEIVED_NS, 0)
    assert reason(past) == "too_large"


# Rebirth rate limits.


def test_one_rebirth_per_node_per_interval() -> None:
    host = SparkplugHost(rebirth_interval_seconds=5.0)
    unknown = ndata(1, by_alias(1, 1.0))
    first = host.handle(topic("NDATA"), unknown, RECEIVED_NS, 100.0)
    assert first.rebirth is not None
    for now in (100.0, 101.0, 104.9):
        again = host.handle(topic("NDATA"), unknown, RECEIVED_NS, now)
        assert reason(again) == "sparkplug_unknown_node"
        assert again.rebirth is None
    # Another node is not held back by this one.
    other = host.handle(topic("NDATA", edge="gw2"), unknown, RECEIVED_NS, 101.0)
    assert_rebirth(other, "unknown_node", edge="gw2")
    later = host.handle(topic("NDATA"), unknown, RECEIVED_NS, 105.0)
    assert later.rebirth is not None


def test_an_nbirth_lets_the_node_ask_again_at_once() -> None:
    host = SparkplugHost(rebirth_interval_seconds=5.0)
    unknown = host.handle(topic("NDATA"), ndata(1, by_alias(1, 1.0)), RECEIVED_NS, 100.0)
    assert_rebirth(unknown, "unknown_node")
    born(host, now=100.5)
    # A gap within the interval after the answering NBIRTH still asks.
    gap = host.handle(topic("NDATA"), ndata(9, by_alias(1, 1.0)), RECEIVED_NS, 101.0)
    assert_rebirth(gap, "seq_gap")


def test_at_most_100_rebirths_a_second_overall() -> None:
    host = SparkplugHost(rebirth_interval_seconds=60.0)
    unknown = ndata(1, by_alias(1, 1.0))

    def flood(now: float, first: int, count: int) -> int:
        sent = 0
        for n in range(first, first + count):
            outcome = host.handle(topic("NDATA", edge=f"node-{n}"), unknown, RECEIVED_NS, now)
            assert outcome.rejected is not None
            sent += outcome.rebirth is not None
        return sent

    assert flood(10.0, 0, 250) == 100
    # Half a second refills half the budget.
    assert flood(10.5, 250, 250) == 50
    assert flood(12.0, 500, 250) == 100


def test_rebirth_limiter_memory_is_bounded() -> None:
    host = SparkplugHost(rebirth_interval_seconds=1.0)
    unknown = ndata(1, by_alias(1, 1.0))
    for n in range(3000):
        host.handle(topic("NDATA", edge=f"node-{n}"), unknown, RECEIVED_NS, n * 0.01)
    # Entries older than the interval are forgotten: at most ~100/s x 1 s remain.
    assert len(host._last_rebirth) <= 101


# Sequence numbers.


def assert_seq_gap(outcome: SparkplugOutcome, seen: str, expected: int) -> None:
    assert outcome.seq_gap
    assert reason(outcome) == "sparkplug_seq_gap"
    assert outcome.rejected is not None
    assert f"{seen} where {expected} was next" in outcome.rejected[1]
    assert "waiting for the rebirth" in outcome.rejected[1]
    assert outcome.events == ()
    assert_rebirth(outcome, "seq_gap")


def test_a_seq_gap_is_never_decoded_and_ends_the_session(host: SparkplugHost) -> None:
    born(host)
    ok(host.handle(topic("DBIRTH", device="pump-1"), dbirth(1), RECEIVED_NS, 1))
    ok(host.handle(topic("NDATA"), ndata(2, by_alias(1, 1.0)), RECEIVED_NS, 1))
    # Seq 3 and 4 were lost: perhaps an NBIRTH that gave alias 1 to another name.
    assert_seq_gap(
        host.handle(topic("NDATA"), ndata(5, by_alias(1, 2.0)), RECEIVED_NS, 2), "seq 5", 3
    )
    # The session and its devices are gone until the NBIRTH: nothing is guessed.
    after = host.handle(topic("NDATA"), ndata(6, by_alias(1, 3.0)), RECEIVED_NS, 3)
    assert reason(after) == "sparkplug_unknown_node"
    assert not after.seq_gap
    device = host.handle(topic("DDATA", device="pump-1"), ddata(7, by_alias(1, 1)), RECEIVED_NS, 3)
    assert reason(device) == "sparkplug_unknown_node"
    born(host, now=10.0)
    ok(host.handle(topic("NDATA"), ndata(1, by_alias(1, 4.0)), RECEIVED_NS, 10))


def test_a_seq_gap_in_ddata_or_dbirth_ends_the_nodes_session() -> None:
    for kind, payload in [("DDATA", ddata(3, by_alias(1, 1))), ("DBIRTH", dbirth(3))]:
        fresh = SparkplugHost()
        born(fresh)
        ok(fresh.handle(topic("DBIRTH", device="pump-1"), dbirth(1), RECEIVED_NS, 1))
        outcome = fresh.handle(topic(kind, device="pump-1"), payload, RECEIVED_NS, 2)
        assert_seq_gap(outcome, "seq 3", 2)
        assert fresh.node_count == 0
        after = fresh.handle(topic("NDATA"), ndata(4, by_alias(1, 1.0)), RECEIVED_NS, 3)
        assert reason(after) == "sparkplug_unknown_node"


def test_a_resent_message_is_a_gap(host: SparkplugHost) -> None:
    born(host)
    ok(host.handle(topic("NDATA"), ndata(1, by_alias(1, 1.0)), RECEIVED_NS, 1))
    again = host.handle(topic("NDATA"), ndata(1, by_alias(1, 1.0)), RECEIVED_NS, 1)
    assert_seq_gap(again, "seq 1", 2)


def test_a_ddeath_with_a_gap_takes_the_device_offline_and_ends_the_session(
    host: SparkplugHost,
) -> None:
    born(host)
    ok(host.handle(topic("DBIRTH", device="pump-1"), dbirth(1), RECEIVED_NS, 1))
    death = DDeath(DATA_MS, 9).encode()
    outcome = host.handle(topic("DDEATH", device="pump-1"), death, RECEIVED_NS, 2)
    assert outcome.seq_gap
    assert outcome.rejected is None
    assert statuses(outcome) == [(EDGE, "pump-1", "STATE_OFFLINE")]
    assert_rebirth(outcome, "seq_gap")
    after = host.handle(topic("NDATA"), ndata(10, by_alias(1, 1.0)), RECEIVED_NS, 3)
    assert reason(after) == "sparkplug_unknown_node"


def test_seq_wraps_at_256_and_counts_every_message_of_the_session(host: SparkplugHost) -> None:
    ok(host.handle(topic("NBIRTH"), nbirth(seq=250), RECEIVED_NS, 0))
    ok(host.handle(topic("DBIRTH", device="d"), dbirth(251), RECEIVED_NS, 0))
    for seq in (252, 253, 254, 255, 0, 1):
        ok(host.handle(topic("NDATA"), ndata(seq, by_alias(1, 1.0)), RECEIVED_NS, 0))
    ok(
        host.handle(
            topic("DDATA", device="d"), ddata(2, by_alias(1, 1, DataType.UINT32)), RECEIVED_NS, 0
        )
    )
    ok(host.handle(topic("DDEATH", device="d"), DDeath(DATA_MS, 3).encode(), RECEIVED_NS, 0))
    late = host.handle(topic("NDATA"), ndata(5, by_alias(1, 1.0)), RECEIVED_NS, 0)
    assert_seq_gap(late, "seq 5", 4)


def test_a_missing_seq_is_a_gap(host: SparkplugHost) -> None:
    born(host)
    payload = their_pb.Payload(timestamp=DATA_MS)
    payload.metrics.append(by_alias(1, 4.0).to_pb(include_dtype=False))
    outcome = host.handle(topic("NDATA"), payload.SerializeToString(), RECEIVED_NS, 1)
    assert_seq_gap(outcome, "no seq", 1)


# Deaths.


def test_ndeath_of_the_current_session_takes_node_and_devices_offline(host: SparkplugHost) -> None:
    born(host)
    ok(host.handle(topic("DBIRTH", device="pump-2"), dbirth(1), RECEIVED_NS, 1))
    ok(host.handle(topic("DBIRTH", device="pump-1"), dbirth(2), RECEIVED_NS, 1))
    death_ns = RECEIVED_NS + 5_000_000_000
    outcome = ok(host.handle(topic("NDEATH"), ndeath(7), death_ns, 2))
    assert statuses(outcome) == [
        (EDGE, EDGE, "STATE_OFFLINE"),
        (EDGE, "pump-1", "STATE_OFFLINE"),
        (EDGE, "pump-2", "STATE_OFFLINE"),
    ]
    assert as_dict(outcome.events[0])["status"]["details"] == {"source": "sparkplug", "bdSeq": 7.0}
    # A Will's timestamp is when the node connected: the events are timed at receipt.
    assert {as_dict(event)["timestamp"] for event in outcome.events} == {"2025-12-01T10:00:05Z"}
    # The session is gone.
    after = host.handle(topic("NDATA"), ndata(3, by_alias(1, 1.0)), RECEIVED_NS, 3)
    assert reason(after) == "sparkplug_unknown_node"


def test_two_hosts_knowing_different_devices_give_shared_events_the_same_ids() -> None:
    """Two bridges take all Sparkplug traffic and delivery keeps one copy of
    each event by its id: one that missed a DBIRTH must still give the node's
    own offline event, and the devices both know, the same ids."""
    everything, missed_one = SparkplugHost(), SparkplugHost()
    for host in (everything, missed_one):
        born(host)
        ok(host.handle(topic("DBIRTH", device="pump-2"), dbirth(1), RECEIVED_NS, 1))
    ok(everything.handle(topic("DBIRTH", device="pump-1"), dbirth(2), RECEIVED_NS, 1))
    full = ok(everything.handle(topic("NDEATH"), ndeath(7), RECEIVED_NS, 2))
    partial = ok(missed_one.handle(topic("NDEATH"), ndeath(7), RECEIVED_NS, 2))
    ids = {event.device_id: event.event_id for event in full.events}
    assert sorted(ids) == [EDGE, "pump-1", "pump-2"]
    assert {event.device_id: event.event_id for event in partial.events} == {
        EDGE: ids[EDGE],
        "pump-2": ids["pump-2"],
    }
    assert len(set(ids.values())) == 3


def test_a_stale_ndeath_is_ignored(host: SparkplugHost) -> None:
    born(host)
    outcome = host.handle(topic("NDEATH"), ndeath(6), RECEIVED_NS, 1)
    assert outcome.ignored == "stale_ndeath"
    assert outcome.events == ()
    ok(host.handle(topic("NDATA"), ndata(1, by_alias(1, 1.0)), RECEIVED_NS, 2))


def born_with(host: SparkplugHost, bd_seq: int, edge: str = EDGE) -> None:
    birth = (metric("bdSeq", DataType.INT64, bd_seq), *NODE_METRICS[1:])
    ok(host.handle(topic("NBIRTH", edge), nbirth(birth), RECEIVED_NS, 0))


def test_a_stale_ndeath_is_ignored_after_the_session_is_gone(host: SparkplugHost) -> None:
    born_with(host, 7)
    # A gap drops the session; the node is still connected (bdSeq 7).
    gap = host.handle(topic("NDATA"), ndata(5, by_alias(1, 1.0)), RECEIVED_NS, 1)
    assert reason(gap) == "sparkplug_seq_gap"
    assert host.node_count == 0
    late = host.handle(topic("NDEATH"), ndeath(6), RECEIVED_NS, 2)
    assert late.ignored == "stale_ndeath"
    assert late.events == ()
    real = ok(host.handle(topic("NDEATH"), ndeath(7), RECEIVED_NS, 3))
    assert statuses(real) == [(EDGE, EDGE, "STATE_OFFLINE")]


@pytest.mark.parametrize(
    ("last", "death", "stale"),
    [
        (1, 255, True),  # two connections behind, across the wrap
        (1, 130, True),  # 127 behind: the farthest still taken as older
        (1, 129, False),  # 128 behind is as far ahead: believed
        (255, 0, False),  # one ahead, across the wrap: a connection we missed
        (7, 8, False),
        (7, 7, False),
    ],
)
def test_ndeath_bd_seq_order_wraps_at_256(last: int, death: int, stale: bool) -> None:
    with_session, without = SparkplugHost(), SparkplugHost()
    born_with(with_session, last)
    born_with(without, last)
    ok(without.handle(topic("NDEATH"), ndeath(last), RECEIVED_NS, 1))
    assert without.node_count == 0
    for host in (with_session, without):
        outcome = host.handle(topic("NDEATH"), ndeath(death), RECEIVED_NS, 2)
        if stale:
            assert outcome.ignored == "stale_ndeath"
        else:
            assert statuses(ok(outcome)) == [(EDGE, EDGE, "STATE_OFFLINE")]


def test_remembered_bd_seqs_are_bounded() -> None:
    host = SparkplugHost(max_nodes=10)
    birth = nbirth((metric("bdSeq", DataType.INT64, 7),))
    for n in range(BD_SEQ_MEMORY + 5):
        ok(host.handle(topic("NBIRTH", edge=f"n{n}"), birth, RECEIVED_NS, 0))
    assert len(host._bd_seqs) == BD_SEQ_MEMORY
    # The first nodes are forgotten: their NDEATH of any bdSeq is believed.
    forgotten = ok(host.handle(topic("NDEATH", edge="n0"), ndeath(6), RECEIVED_NS, 1))
    assert statuses(forgotten) == [("n0", "n0", "STATE_OFFLINE")]
    remembered = host.handle(topic("NDEATH", edge="n5"), ndeath(6), RECEIVED_NS, 1)
    assert remembered.ignored == "stale_ndeath"


def test_an_ndeath_without_a_session_still_takes_the_node_offline(host: SparkplugHost) -> None:
    outcome = ok(host.handle(topic("NDEATH"), ndeath(3), RECEIVED_NS, 0))
    assert statuses(outcome) == [(EDGE, EDGE, "STATE_OFFLINE")]


def test_ndeath_pairs_with_a_birth_that_had_no_bdseq(host: SparkplugHost) -> None:
    birth = (metric("temperature", DataType.FLOAT, 1.0, alias=1),)
    outcome = ok(host.handle(topic("NBIRTH"), nbirth(birth), RECEIVED_NS, 0))
    assert as_dict(outcome.events[0])["status"]["details"] == {"source": "sparkplug"}
    death = ok(host.handle(topic("NDEATH"), ndeath(41), RECEIVED_NS, 1))
    assert statuses(death) == [(EDGE, EDGE, "STATE_OFFLINE")]


def test_ddeath_takes_the_device_offline_and_ends_its_session(host: SparkplugHost) -> None:
    born(host)
    ok(host.handle(topic("DBIRTH", device="pump-1"), dbirth(1), RECEIVED_NS, 1))
    outcome = ok(
        host.handle(topic("DDEATH", device="pump-1"), DDeath(DATA_MS, 2).encode(), RECEIVED_NS, 1)
    )
    assert statuses(outcome) == [(EDGE, "pump-1", "STATE_OFFLINE")]
    assert as_dict(outcome.events[0])["timestamp"] == "2025-12-01T09:59:10.250Z"
    after = host.handle(topic("DDATA", device="pump-1"), ddata(3, by_alias(1, 1)), RECEIVED_NS, 2)
    assert reason(after) == "sparkplug_unknown_device"
    # The node itself lives on.
    ok(host.handle(topic("NDATA"), ndata(4, by_alias(1, 1.0)), RECEIVED_NS, 2))


def test_ddeath_of_an_unknown_device_still_takes_it_offline(host: SparkplugHost) -> None:
    outcome = ok(
        host.handle(topic("DDEATH", device="pump-7"), DDeath(DATA_MS, 9).encode(), RECEIVED_NS, 0)
    )
    assert statuses(outcome) == [(EDGE, "pump-7", "STATE_OFFLINE")]


# Malformed input, topics, what is ignored.


@pytest.mark.parametrize("payload", [b"\xff\xff\xff", b"\x0a\x05abc", b"\x12\x80"])
def test_malformed_bytes_are_rejected(host: SparkplugHost, payload: bytes) -> None:
    outcome = host.handle(topic("NBIRTH"), payload, RECEIVED_NS, 0)
    assert outcome.rejected is not None
    assert outcome.rejected[0] == "sparkplug_bad_payload"
    assert outcome.events == ()


@pytest.mark.parametrize(
    ("bad_topic", "reason", "names"),
    [
        ("spBv1.0/plant/NDATA", "sparkplug_bad_topic", "levels"),
        ("spBv1.0/plant/NDATA/gw1/dev", "sparkplug_bad_topic", "levels"),
        ("spBv1.0/plant/DDATA/gw1", "sparkplug_bad_topic", "levels"),
        ("spBv1.0/plant/DDATA/gw1/a/b", "sparkplug_bad_topic", "levels"),
        ("spBv1.0/plant/NFOO/gw1", "sparkplug_bad_topic", "NFOO"),
        ("spBv1.0//NDATA/gw1", "sparkplug_bad_topic", "group"),
        ("spBv1.0/STATE", "sparkplug_bad_topic", "STATE"),
        ("spBv1.0/STATE/a/b", "sparkplug_bad_topic", "STATE"),
        ("spBv2.0/plant/NDATA/gw1", "sparkplug_bad_topic", "spBv1.0/"),
        ("spBv1.0/plant/NDATA/-gw", "bad_id", "edge_node_id"),
        ("spBv1.0/plant/DDATA/gw1/d*v", "bad_id", "device_id"),
        ("spBv1.0/Plant 1/NDATA/gw1", "bad_id", "group_id"),
    ],
)
def test_bad_topics_and_ids_are_rejected(
    host: SparkplugHost, bad_topic: str, reason: str, names: str
) -> None:
    outcome = host.handle(bad_topic, ndata(0), RECEIVED_NS, 0)
    assert outcome.rejected is not None
    assert outcome.rejected[0] == reason
    assert names in outcome.rejected[1]
    assert outcome.rebirth is None


def test_a_group_mapped_to_a_bad_project_id_is_named() -> None:
    host = SparkplugHost({"plant": "bad project"})
    outcome = host.handle(topic("NBIRTH"), nbirth(), RECEIVED_NS, 0)
    assert outcome.rejected is not None
    assert outcome.rejected[0] == "bad_id"
    assert "project_id" in outcome.rejected[1]


def test_commands_and_states_are_ignored(host: SparkplugHost) -> None:
    command = NCmd(
        timestamp=DATA_MS, metrics=(metric("Node Control/Rebirth", DataType.BOOLEAN, True),)
    )
    assert host.handle(topic("NCMD"), command.encode(), RECEIVED_NS, 0).ignored == "command"
    assert (
        host.handle(topic("DCMD", device="d"), command.encode(), RECEIVED_NS, 0).ignored
        == "command"
    )
    state = State(timestamp=DATA_MS, online=True).encode()
    assert host.handle("spBv1.0/STATE/scada-1", state, RECEIVED_NS, 0).ignored == "state"


# Event ids.


def test_event_ids_are_deterministic() -> None:
    first = SparkplugHost().handle(topic("NBIRTH"), nbirth(), RECEIVED_NS, 0)
    # Another bridge (or a resend) at another time: the same ids.
    second = SparkplugHost().handle(topic("NBIRTH"), nbirth(), RECEIVED_NS + 10**9, 9)
    ids = [event.event_id for event in first.events]
    assert ids == [event.event_id for event in second.events]
    assert len(set(ids)) == len(ids) == 2
    assert all(i.startswith("evt_") and len(i) == 28 for i in ids)
    assert ids[0] == event_id(GROUP, topic("NBIRTH"), nbirth(), "status", EDGE)
    # A different payload (one reading changed), topic or project: other ids.
    changed = (*NODE_METRICS[:-1], metric("byte", DataType.UINT8, 201, alias=12))
    other = SparkplugHost().handle(topic("NBIRTH"), nbirth(changed), RECEIVED_NS, 0)
    assert not set(ids) & {event.event_id for event in other.events}
    elsewhere = SparkplugHost().handle(topic("NBIRTH", edge="gw2"), nbirth(), RECEIVED_NS, 0)
    assert not set(ids) & {event.event_id for event in elsewhere.events}
    mapped = SparkplugHost({GROUP: "p2"}).handle(topic("NBIRTH"), nbirth(), RECEIVED_NS, 0)
    assert not set(ids) & {event.event_id for event in mapped.events}


def test_data_ids_take_the_session_from_its_nbirth() -> None:
    """A node without timestamps repeats a DATA's bytes in its next session
    (or once seq wraps): delivery, which keeps ids forever, must not take
    the repeat for a duplicate."""
    first, second, peer = SparkplugHost(), SparkplugHost(), SparkplugHost()
    data = their_pb.Payload(seq=2)
    data.metrics.append(by_alias(1, 4.0).to_pb(include_dtype=False))
    repeated = data.SerializeToString()
    ids: list[list[str]] = []
    for host, bd_seq in [(first, 7), (peer, 7), (second, 8)]:
        birth = (metric("bdSeq", DataType.INT64, bd_seq), *NODE_METRICS[1:])
        ok(host.handle(topic("NBIRTH"), nbirth(birth), RECEIVED_NS, 0))
        device = ok(host.handle(topic("DBIRTH", device="pump-1"), dbirth(1), RECEIVED_NS, 0))
        outcome = ok(host.handle(topic("NDATA"), repeated, RECEIVED_NS, 0))
        death = DDeath(DATA_MS, 3).encode()
        gone = ok(host.handle(topic("DDEATH", device="pump-1"), death, RECEIVED_NS, 0))
        events = (*device.events, *outcome.events, *gone.events)
        ids.append([event.event_id for event in events])
    one_session, same_session_elsewhere, next_session = ids
    # Another bridge that saw the same NBIRTH gives the same ids; the next session others.
    assert one_session == same_session_elsewhere
    assert len(set(one_session)) == 4
    assert not set(one_session) & set(next_session)


# Memory bounds.


def test_node_sessions_are_bounded_least_recently_used_first() -> None:
    host = SparkplugHost(max_nodes=3)
    for edge in ("a", "b", "c"):
        born(host, edge)
    # "a" is used again, so "b" is the least recent when "d" is born.
    ok(host.handle(topic("NDATA", edge="a"), ndata(1, by_alias(1, 1.0)), RECEIVED_NS, 1))
    born(host, "d")
    assert host.node_count == 3
    evicted = host.handle(topic("NDATA", edge="b"), ndata(1, by_alias(1, 1.0)), RECEIVED_NS, 2)
    assert reason(evicted) == "sparkplug_unknown_node"
    assert_rebirth(evicted, "unknown_node", edge="b")
    for edge in ("a", "c", "d"):
        seq = 2 if edge == "a" else 1
        ok(host.handle(topic("NDATA", edge=edge), ndata(seq, by_alias(1, 1.0)), RECEIVED_NS, 2))


def birth_bytes(metrics: tuple[Metric, ...], edge: str = EDGE) -> int:
    """What a node session of this NBIRTH weighs, by the documented estimate."""
    aliased = [m.name for m in metrics if m.alias is not None and m.name]
    named = {m.name for m in metrics if m.name}
    entries = [*aliased, *named]
    return NODE_BYTES + len(GROUP) + len(edge) + sum(ENTRY_BYTES + len(n) for n in entries)


def device_bytes(device: str, metrics: tuple[Metric, ...] = DEVICE_METRICS) -> int:
    return DEVICE_BYTES + len(device) + birth_bytes(metrics, "") - NODE_BYTES - len(GROUP)


def test_memory_is_weighed_in_bytes(host: SparkplugHost) -> None:
    born(host)
    assert host.memory_bytes == birth_bytes(NODE_METRICS)
    ok(host.handle(topic("DBIRTH", device="pump-1"), dbirth(1), RECEIVED_NS, 1))
    assert host.memory_bytes == birth_bytes(NODE_METRICS) + device_bytes("pump-1")
    ok(host.handle(topic("DDEATH", device="pump-1"), DDeath(DATA_MS, 2).encode(), RECEIVED_NS, 1))
    assert host.memory_bytes == birth_bytes(NODE_METRICS)


def test_many_aliases_of_one_name_and_long_names_weigh_what_they_hold(
    host: SparkplugHost,
) -> None:
    one_name = tuple(metric("t", DataType.INT32, 1, alias=n) for n in range(4_999))
    ok(host.handle(topic("NBIRTH"), nbirth(one_name), RECEIVED_NS, 0))
    assert host.memory_bytes == birth_bytes(one_name) > 4_999 * ENTRY_BYTES
    long_name = (metric("n" * 200_000, DataType.INT32, 1, alias=1),)
    ok(host.handle(topic("NBIRTH", edge="gw2"), nbirth(long_name), RECEIVED_NS, 0))
    weight = birth_bytes(long_name, "gw2")
    assert weight > 400_000
    assert host.memory_bytes == birth_bytes(one_name) + weight
    # Past a node's share (an eighth of the bound) it is refused, the old session void.
    small = SparkplugHost(max_memory_bytes=8 * 400_000)
    outcome = small.handle(topic("NBIRTH"), nbirth(long_name), RECEIVED_NS, 0)
    assert outcome.rejected == (
        "too_large",
        f"the edge node's births take {birth_bytes(long_name)} bytes, over 400000 "
        "(an eighth of max_memory_bytes 3200000)",
    )
    assert (small.node_count, small.memory_bytes) == (0, 0)


def test_sessions_are_bounded_in_bytes_least_recently_used_first() -> None:
    each = birth_bytes(NODE_METRICS, "n0")
    host = SparkplugHost(max_memory_bytes=8 * each + each // 2)
    edges = [f"n{n}" for n in range(9)]
    for edge in edges[:8]:
        born(host, edge)
    assert host.memory_bytes == 8 * each
    ok(host.handle(topic("NDATA", edge="n0"), ndata(1, by_alias(1, 1.0)), RECEIVED_NS, 1))
    born(host, "n8")
    assert (host.node_count, host.memory_bytes) == (8, 8 * each)
    # n1 was the least recently used.
    gone = host.handle(topic("NDATA", edge="n1"), ndata(1, by_alias(1, 1.0)), RECEIVED_NS, 2)
    assert reason(gone) == "sparkplug_unknown_node"
    ok(host.handle(topic("NDATA", edge="n0"), ndata(2, by_alias(1, 1.0)), RECEIVED_NS, 2))


def test_one_node_cannot_take_more_than_an_eighth() -> None:
    node, device = birth_bytes(NODE_METRICS), device_bytes("d00")
    host = SparkplugHost(max_memory_bytes=8 * (node + 3 * device))
    born(host, edge="other")
    born(host)
    for n in range(3):
        ok(host.handle(topic("DBIRTH", device=f"d{n:02}"), dbirth(n + 1), RECEIVED_NS, 1))
    over = host.handle(topic("DBIRTH", device="d03"), dbirth(4), RECEIVED_NS, 1)
    assert reason(over) == "too_large"
    # The node's session is dropped; the other node's is untouched.
    assert host.node_count == 1
    assert host.memory_bytes == birth_bytes(NODE_METRICS, "other")
    after = host.handle(topic("NDATA"), ndata(5, by_alias(1, 1.0)), RECEIVED_NS, 2)
    assert reason(after) == "sparkplug_unknown_node"
    ok(host.handle(topic("NDATA", edge="other"), ndata(1, by_alias(1, 1.0)), RECEIVED_NS, 2))


def test_devices_per_node_are_bounded() -> None:
    host = SparkplugHost(max_devices_per_node=2)
    born(host)
    ok(host.handle(topic("DBIRTH", device="d1"), dbirth(1), RECEIVED_NS, 1))
    ok(host.handle(topic("DBIRTH", device="d2"), dbirth(2), RECEIVED_NS, 1))
    third = host.handle(topic("DBIRTH", device="d3"), dbirth(3), RECEIVED_NS, 1)
    assert third.rejected == ("too_large", "edge node 'gw1' has 2 devices, max_devices_per_node 2")
    # The node and its devices live on; a device born again is no new one.
    ok(host.handle(topic("DBIRTH", device="d1"), dbirth(4), RECEIVED_NS, 1))
    rpm = ddata(5, by_alias(1, 7, DataType.UINT32))
    assert readings(ok(host.handle(topic("DDATA", device="d2"), rpm, RECEIVED_NS, 1))) == {"rpm": 7}
    death = ok(host.handle(topic("NDEATH"), ndeath(7), RECEIVED_NS, 2))
    assert statuses(death) == [(EDGE, n, "STATE_OFFLINE") for n in (EDGE, "d1", "d2")]


# What is left out, and counted.


def test_left_out_metrics_are_counted(host: SparkplugHost) -> None:
    birth = (
        metric("temperature", DataType.FLOAT, 1.0, alias=1),
        metric("blob", DataType.BYTES, b"\x00\x01", alias=2),
        metric("doc", DataType.FILE, b"%PDF", alias=3),
    )
    outcome = ok(host.handle(topic("NBIRTH"), nbirth(birth), RECEIVED_NS, 0))
    assert readings(outcome, 1) == {"temperature": 1.0}
    assert outcome.metrics_left_out == {"bytes": 1, "file": 1}
    historical = Metric(
        timestamp=DATA_MS - 60_000,
        name=None,
        datatype=DataType.FLOAT,
        value=0.5,
        alias=1,
        is_historical=True,
    )
    dataset = their_pb.Payload.Metric(name="table", datatype=16)
    dataset.dataset_value.num_of_columns = 0
    payload = their_pb.Payload.FromString(
        ndata(
            1, by_alias(1, 2.0), historical, by_alias(1, 3.0), by_alias(2, b"\x02", DataType.BYTES)
        )
    )
    payload.metrics.append(dataset)
    outcome = ok(host.handle(topic("NDATA"), payload.SerializeToString(), RECEIVED_NS, 1))
    # The later value of a name in one message wins; the earlier is counted.
    assert readings(outcome) == {"temperature": 3.0}
    assert outcome.metrics_left_out == {
        "historical": 1,
        "duplicate": 1,
        "bytes": 1,
        "dataset": 1,
    }


def test_a_data_message_left_with_no_metric_makes_no_event(host: SparkplugHost) -> None:
    born(host)
    empty = host.handle(topic("NDATA"), ndata(1), RECEIVED_NS, 1)
    assert empty.ignored == "no_metrics"
    assert empty.events == ()
    bytes_only = host.handle(
        topic("NDATA"),
        ndata(2, metric("blob", DataType.BYTES, b"\x00"), dtypes=True),
        RECEIVED_NS,
        1,
    )
    assert bytes_only.ignored == "no_metrics"
    assert bytes_only.metrics_left_out == {"bytes": 1}


def test_an_event_too_large_is_rejected() -> None:
    host = SparkplugHost(max_event_bytes=600)
    born(host)
    huge = ndata(1, metric("text", DataType.STRING, "x" * 700), dtypes=True)
    outcome = host.handle(topic("NDATA"), huge, RECEIVED_NS, 1)
    assert outcome.rejected is not None
    assert outcome.rejected[0] == "too_large"
    assert "600" in outcome.rejected[1]
    assert outcome.events == ()
    ok(host.handle(topic("NDATA"), ndata(2, by_alias(1, 1.0)), RECEIVED_NS, 1))


def test_timestamps(host: SparkplugHost) -> None:
    born(host)
    payload = their_pb.Payload(seq=1)
    payload.metrics.append(by_alias(1, 4.0).to_pb(include_dtype=False))
    outcome = ok(host.handle(topic("NDATA"), payload.SerializeToString(), RECEIVED_NS, 1))
    assert as_dict(outcome.events[0])["timestamp"] == "2025-12-01T10:00:00Z"
    far = ndata(2, by_alias(1, 4.0), timestamp=253_402_300_800_000)
    outcome = host.handle(topic("NDATA"), far, RECEIVED_NS, 1)
    assert reason(outcome) == "sparkplug_bad_timestamp"


# Our control payloads, read back by pysparkplug.


def test_rebirth_payload_decodes_independently() -> None:
    command = NCmd.decode(rebirth_payload(1_764_583_200_123))
    assert command.timestamp == 1_764_583_200_123
    (rebirth,) = command.metrics
    assert (rebirth.name, rebirth.datatype, rebirth.value) == (
        "Node Control/Rebirth",
        DataType.BOOLEAN,
        True,
    )


def test_state_payload_is_sparkplug_3_json() -> None:
    assert state_payload(True, 1_764_583_200_123) == b'{"online":true,"timestamp":1764583200123}'
    state = State.decode(state_payload(False, 5))
    assert (state.online, state.timestamp) == (False, 5)
