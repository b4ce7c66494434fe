"""The simulator's Sparkplug B encoding (pure), read back with pysparkplug:
datatypes, aliases, bdSeq and seq wrapping, rebirth commands."""

from __future__ import annotations

import pysparkplug as sp
import pytest
from pysparkplug import _protobuf as spb

from edgesense.tools.sim_sparkplug import BadCommand, EdgeNode, Value, rebirth_requested

STAMP = 1_767_225_600_000


def node(devices: tuple[str, ...] = ("a", "b")) -> EdgeNode:
    return EdgeNode("plant", "line-1", devices, ["level", "running", "mode"], lambda: STAMP)


def test_fields_are_declared_double_boolean_and_string_and_sent_by_alias() -> None:
    edge = node()
    births = edge.births(
        {
            "a": {"level": 3, "running": True, "mode": "auto"},
            "b": {"level": 0.5, "running": False, "mode": "manual"},
        }
    )
    assert [o.topic for o in births] == [
        "spBv1.0/plant/NBIRTH/line-1",
        "spBv1.0/plant/DBIRTH/line-1/a",
        "spBv1.0/plant/DBIRTH/line-1/b",
    ]
    dbirth = sp.DBirth.decode(births[1].payload)
    assert dbirth.timestamp == STAMP
    declared = {m.name: (m.datatype, m.value, m.alias) for m in dbirth.metrics}
    assert declared == {
        "level": (sp.DataType.DOUBLE, 3.0, 1),
        "running": (sp.DataType.BOOLEAN, True, 2),
        "mode": (sp.DataType.STRING, "auto", 3),
    }
    other = sp.DBirth.decode(births[2].payload)
    assert sorted(m.alias for m in other.metrics if m.alias is not None) == [4, 5, 6]

    data = edge.data("b", {"running": True, "level": 7})
    assert (data.topic, data.qos, data.counted) == ("spBv1.0/plant/DDATA/line-1/b", 1, True)
    named = sp.DData.decode(data.payload, birth=other)
    assert named.seq == 3
    assert {m.name: m.value for m in named.metrics} == {"running": True, "level": 7.0}
    with pytest.raises(ValueError, match="declared no field 'speed'"):
        edge.data("a", {"speed": 1.0})
    with pytest.raises(ValueError, match="lacks mode"):
        edge.births({"a": {"level": 1, "running": True}})


def test_seq_wraps_after_255_and_births_start_it_at_0() -> None:
    edge = node(("a",))
    current: dict[str, dict[str, Value]] = {"a": {"level": 1.0, "running": True, "mode": "auto"}}
    seqs = [spb.Payload.FromString(o.payload).seq for o in edge.births(current)]
    seqs += [spb.Payload.FromString(edge.data("a", {"level": 2.0}).payload).seq for _ in range(300)]
    assert seqs[:3] == [0, 1, 2]
    assert seqs[255:258] == [255, 0, 1]
    assert len(seqs) == 302
    assert spb.Payload.FromString(edge.births(current)[0].payload).seq == 0


def test_bd_seq_counts_connections_and_wraps_after_255() -> None:
    edge = node()

    def will_bd_seq(payload: bytes) -> int:
        return int(sp.NDeath.decode(payload).bd_seq_metric.value)  # type: ignore[arg-type]

    topic, payload = edge.will()
    assert (topic, will_bd_seq(payload)) == ("spBv1.0/plant/NDEATH/line-1", 0)
    assert will_bd_seq(edge.next_connection()[1]) == 1
    for _ in range(254):
        edge.next_connection()
    assert edge.bd_seq == 255
    assert will_bd_seq(edge.next_connection()[1]) == 0
    nbirth = sp.NBirth.decode(edge.births({})[0].payload)
    assert {m.name: m.value for m in nbirth.metrics} == {
        "bdSeq": 0,
        "Node Control/Rebirth": False,
    }


def test_deaths_are_a_ddeath_per_born_device_then_the_ndeath() -> None:
    edge = node()
    edge.births({"a": {"level": 1.0, "running": True, "mode": "x"}})
    *ddeaths, ndeath = edge.deaths()
    assert [(d.topic, d.qos, d.counted) for d in ddeaths] == [
        ("spBv1.0/plant/DDEATH/line-1/a", 0, False)
    ]
    assert spb.Payload.FromString(ddeaths[0].payload).seq == 2
    assert (ndeath.topic, ndeath.qos) == ("spBv1.0/plant/NDEATH/line-1", 1)
    assert not spb.Payload.FromString(ndeath.payload).HasField("seq")
    with pytest.raises(ValueError, match="no DBIRTH"):
        edge.data("a", {"level": 1.0})


def test_only_a_true_rebirth_metric_asks_for_births() -> None:
    def ncmd(name: str, value: bool) -> bytes:
        metric = sp.Metric(STAMP, name, sp.DataType.BOOLEAN, value=value)
        return sp.NCmd(STAMP, (metric,)).encode(include_dtypes=True)

    assert rebirth_requested(ncmd("Node Control/Rebirth", True))
    assert not rebirth_requested(ncmd("Node Control/Rebirth", False))
    assert not rebirth_requested(ncmd("Node Control/Reboot", True))
    with pytest.raises(BadCommand, match="not a Sparkplug B payload"):
        rebirth_requested(b"\xff\xff garbage")


def test_a_ddata_sent_again_keeps_its_reading_and_timestamp_and_takes_the_next_seq() -> None:
    clock = iter(range(STAMP, STAMP + 100))
    edge = EdgeNode("plant", "line-1", ("a",), ["level", "running", "mode"], lambda: next(clock))
    current: dict[str, dict[str, Value]] = {"a": {"level": 1.0, "running": True, "mode": "auto"}}
    edge.births(current)
    old = edge.data("a", {"level": 2.5, "mode": "manual"})  # seq 2, on the first connection
    edge.next_connection()
    births = edge.births(current)
    again = spb.Payload.FromString(edge.again(old.payload))
    before = spb.Payload.FromString(old.payload)
    assert (before.seq, again.seq) == (2, 2)  # after the new NBIRTH (0) and DBIRTH (1)
    assert again.timestamp == before.timestamp < spb.Payload.FromString(births[0].payload).timestamp
    named = sp.DData.decode(edge.again(old.payload), birth=sp.DBirth.decode(births[1].payload))
    assert named.seq == 3
    assert {m.name: m.value for m in named.metrics} == {"level": 2.5, "mode": "manual"}
    assert spb.Payload.FromString(edge.data("a", {"level": 3.0}).payload).seq == 4
