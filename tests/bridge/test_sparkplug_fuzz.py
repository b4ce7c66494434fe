"""SparkplugHost never raises, whatever arrives, and keeps its invariants.

Random bytes, and random payloads built with pysparkplug's compiled schema
(every field and value kind, names such as "bdSeq" and "Node Control/...",
colliding aliases, NaN, out-of-range numbers, datatypes past 34), fed in
random order to one host with small bounds so that eviction runs too.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pysparkplug import _protobuf as their_pb

from edgesense_bridge.sparkplug.host import (
    DEVICE_BYTES,
    ENTRY_BYTES,
    NODE_BYTES,
    SparkplugHost,
    SparkplugOutcome,
)

MAX_EVENT_BYTES = 4096
MAX_NODES = 3
MAX_MEMORY = 12_000
MAX_DEVICES = 2

names = st.one_of(
    st.sampled_from(["bdSeq", "Node Control/Rebirth", "Device Control/Reboot", "t", "p", ""]),
    st.text(st.characters(codec="utf-8"), max_size=12),
)
values = st.one_of(
    st.none(),
    st.tuples(st.just("int_value"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("long_value"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("float_value"), st.floats(width=32)),
    st.tuples(st.just("double_value"), st.floats()),
    st.tuples(st.just("boolean_value"), st.booleans()),
    st.tuples(st.just("string_value"), st.text(max_size=20)),
    st.tuples(st.just("bytes_value"), st.binary(max_size=40)),
    st.tuples(st.just("dataset_value"), st.just(None)),
    st.tuples(st.just("template_value"), st.just(None)),
)


@st.composite
def metrics(draw: st.DrawFn) -> Any:
    metric = their_pb.Payload.Metric()
    if (name := draw(st.none() | names)) is not None:
        metric.name = name
    if (alias := draw(st.none() | st.integers(0, 4) | st.integers(0, 2**64 - 1))) is not None:
        metric.alias = alias
    if (datatype := draw(st.none() | st.integers(0, 40))) is not None:
        metric.datatype = datatype
    if draw(st.booleans()):
        metric.is_null = draw(st.booleans())
    if draw(st.booleans()):
        metric.is_historical = draw(st.booleans())
    value = draw(values)
    if value is not None:
        field, content = value
        if field == "dataset_value":
            metric.dataset_value.num_of_columns = 1
            metric.dataset_value.columns.append("c")
        elif field == "template_value":
            metric.template_value.metrics.add(name="inner", int_value=1)
        else:
            setattr(metric, field, content)
    return metric


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    payload = their_pb.Payload()
    if (timestamp := draw(st.none() | st.integers(0, 2**64 - 1))) is not None:
        payload.timestamp = timestamp
    if (seq := draw(st.none() | st.integers(0, 260) | st.integers(0, 2**64 - 1))) is not None:
        payload.seq = seq
    payload.metrics.extend(draw(st.lists(metrics(), max_size=8)))
    data: bytes = payload.SerializeToString()
    return data


TYPES = ["NBIRTH", "NDATA", "NDEATH", "NCMD", "DBIRTH", "DDATA", "DDEATH", "DCMD"]


@st.composite
def topics(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(TYPES))
    edge = draw(st.sampled_from(["gw1", "gw2", "gw3", "gw4", "bad id"]))
    topic = f"spBv1.0/{draw(st.sampled_from(['g1', 'g2']))}/{kind}/{edge}"
    if kind.startswith("D"):
        topic += "/" + draw(st.sampled_from(["d1", "d2", "d3"]))
    if draw(st.integers(0, 19)) == 0:
        topic = draw(st.sampled_from(["spBv1.0/STATE/h", "spBv1.0/g1/NDATA", "spBv1.0/x/y/z/w/v"]))
    return topic


messages = st.tuples(topics(), st.one_of(payloads(), st.binary(max_size=60)))


def check(host: SparkplugHost, outcome: SparkplugOutcome) -> None:
    kinds = [outcome.rejected is not None, outcome.ignored is not None, bool(outcome.events)]
    assert sum(kinds) <= 1, outcome
    ids = [event.event_id for event in outcome.events]
    assert len(set(ids)) == len(ids)
    assert all(event.ByteSize() <= MAX_EVENT_BYTES for event in outcome.events)
    assert all(event.WhichOneof("kind") in ("readings", "status") for event in outcome.events)
    assert all(count > 0 for count in outcome.metrics_left_out.values())
    assert host.node_count <= MAX_NODES
    assert host.memory_bytes <= MAX_MEMORY
    # The running totals are what the sessions hold, weighed afresh.
    assert host.memory_bytes == sum(weigh(node) for node in host._nodes.values())
    assert all(len(node.devices) <= MAX_DEVICES for node in host._nodes.values())
    assert all(weigh(node) <= MAX_MEMORY // 8 for node in host._nodes.values())


def weigh(node: Any) -> int:
    def entries(catalogue: Any) -> int:
        names = [*catalogue.names.values(), *catalogue.datatypes]
        return sum(ENTRY_BYTES + len(name.encode("utf-8", "surrogatepass")) for name in names)

    group, edge = node.key
    devices = sum(
        DEVICE_BYTES + len(device) + entries(catalogue)
        for device, catalogue in node.devices.items()
    )
    return NODE_BYTES + len(group) + len(edge) + entries(node.metrics) + devices


@settings(max_examples=400, deadline=None)
@given(st.lists(messages, min_size=1, max_size=30), st.data())
def test_random_messages_never_raise(batch: list[tuple[str, bytes]], data: st.DataObject) -> None:
    host = SparkplugHost(
        max_event_bytes=MAX_EVENT_BYTES,
        max_nodes=MAX_NODES,
        max_memory_bytes=MAX_MEMORY,
        max_devices_per_node=MAX_DEVICES,
    )
    now = 0.0
    for topic, payload in batch:
        now += data.draw(st.floats(0, 3))
        check(host, host.handle(topic, payload, 1_764_583_200_000_000_000, now))


KNOWN_REASONS = {
    "sparkplug_bad_payload",
    "sparkplug_unknown_node",
    "sparkplug_unknown_device",
    "sparkplug_unknown_alias",
    "sparkplug_bad_birth",
    "sparkplug_bad_timestamp",
    "sparkplug_seq_gap",
    "too_large",
}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(TYPES))
def test_random_bytes_never_raise(payload: bytes, kind: str) -> None:
    host = SparkplugHost(
        max_event_bytes=MAX_EVENT_BYTES,
        max_nodes=MAX_NODES,
        max_memory_bytes=MAX_MEMORY,
        max_devices_per_node=MAX_DEVICES,
    )
    device = "/d1" if kind.startswith("D") else ""
    # The same bytes as a birth first, so that the second message may find a session.
    for topic in ("spBv1.0/g/NBIRTH/gw", f"spBv1.0/g/{kind}/gw{device}"):
        outcome = host.handle(topic, payload, 0, 0.0)
        check(host, outcome)
        assert outcome.rejected is None or outcome.rejected[0] in KNOWN_REASONS
