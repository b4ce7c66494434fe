"""The parser: every form of every kind, and every malformed case with its reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2

from edgesense.v1 import delivery_pb2, events_pb2
from edgesense_bridge import parsing
from edgesense_bridge.parsing import (
    Accepted,
    Ignored,
    ParseRules,
    RawMessage,
    Rejected,
    gateway_event_id,
    parse_message,
)
from edgesense_bridge.payloads import MAX_DEPTH, PROTOBUF_CONTENT_TYPE
from edgesense_bridge.topics import TopicAddress, TopicLayout

PREFIX = "edgesense"
RULES = ParseRules(TopicLayout(PREFIX), max_payload_bytes=1024)
RECEIVED_NS = 1_753_353_000_123_456_789
PROTOBUF = PROTOBUF_CONTENT_TYPE


def parse(
    topic: str,
    payload: bytes,
    content_type: str | None = None,
    **extra: object,
) -> Accepted | Rejected | Ignored:
    raw = RawMessage(topic.encode(), payload, RECEIVED_NS, content_type, **extra)  # type: ignore[arg-type]
    return parse_message(raw, RULES)


def accepted(topic: str, payload: bytes, content_type: str | None = None) -> events_pb2.Event:
    outcome = parse(topic, payload, content_type)
    assert isinstance(outcome, Accepted), outcome
    return outcome.event


def values(message: struct_pb2.Struct) -> object:
    return json_format.MessageToDict(message)


def struct(obj: dict[str, Any]) -> struct_pb2.Struct:
    value = struct_pb2.Struct()
    value.update(obj)
    return value


READINGS = {"temperature": 75.3, "ok": True, "tags": ["a", "b"], "nested": {"x": None}}


@pytest.mark.parametrize(
    ("kind", "field", "attribute"),
    [
        ("data", "readings", "values"),
        ("alert", "alert", "details"),
        ("config", "configuration", "values"),
    ],
)
def test_json_object_kinds(kind: str, field: str, attribute: str) -> None:
    event = accepted(f"{PREFIX}/proj/gw-1/edge-node:321/{kind}", json.dumps(READINGS).encode())
    assert event.WhichOneof("kind") == field
    assert values(getattr(getattr(event, field), attribute)) == READINGS
    assert (event.project_id, event.gateway_id, event.device_id) == (
        "proj",
        "gw-1",
        "edge-node:321",
    )
    assert event.event_id.startswith("evt_")
    assert len(event.event_id) == 24
    assert event.timestamp.ToNanoseconds() == RECEIVED_NS
    assert event.received_at.ToNanoseconds() == RECEIVED_NS


@pytest.mark.parametrize(
    ("kind", "field", "attribute"),
    [
        ("data", "readings", "values"),
        ("alert", "alert", "details"),
        ("config", "configuration", "values"),
        ("status", "status", "details"),
    ],
)
def test_envelope_gives_the_timestamp(kind: str, field: str, attribute: str) -> None:
    inner: dict[str, object] = {"status": "online", "battery": 3} if kind == "status" else READINGS
    body = {"timestamp": "2025-07-24T10:35:17.250+02:00", "payload": inner}
    event = accepted(f"{PREFIX}/proj/gw/dev/{kind}", json.dumps(body).encode())
    expected = datetime(2025, 7, 24, 8, 35, 17, 250000, tzinfo=UTC)
    assert event.timestamp.ToDatetime(tzinfo=UTC) == expected
    assert event.received_at.ToNanoseconds() == RECEIVED_NS
    details = values(getattr(getattr(event, field), attribute))
    assert details == ({"battery": 3} if kind == "status" else READINGS)


def test_envelope_timestamp_with_z() -> None:
    body = b'{"timestamp": "2025-07-24T10:35:17Z", "payload": {"a": 1}}'
    event = accepted(f"{PREFIX}/p/g/d/data", body)
    assert event.timestamp.ToJsonString() == "2025-07-24T10:35:17Z"


def test_an_object_with_more_keys_is_not_an_envelope() -> None:
    body = {"timestamp": "2025-07-24T10:35:17Z", "payload": {"a": 1}, "unit": "C"}
    event = accepted(f"{PREFIX}/p/g/d/data", json.dumps(body).encode())
    assert values(event.readings.values) == body
    assert event.timestamp.ToNanoseconds() == RECEIVED_NS


@pytest.mark.parametrize(
    ("payload", "state"),
    [
        (b"online", events_pb2.DeviceStatus.STATE_ONLINE),
        (b"offline", events_pb2.DeviceStatus.STATE_OFFLINE),
        (b" Offline\n", events_pb2.DeviceStatus.STATE_OFFLINE),
        (b'"online"', events_pb2.DeviceStatus.STATE_ONLINE),
        (b'{"status": "offline"}', events_pb2.DeviceStatus.STATE_OFFLINE),
    ],
)
def test_status_strings_and_objects(payload: bytes, state: int) -> None:
    event = accepted(f"{PREFIX}/p/g/d/status", payload)
    assert event.status.state == state
    assert not event.status.HasField("details")


def test_status_object_keeps_its_other_fields() -> None:
    event = accepted(f"{PREFIX}/p/g/d/status", b'{"status": "online", "rssi": -70, "fw": "1.2"}')
    assert event.status.state == events_pb2.DeviceStatus.STATE_ONLINE
    assert values(event.status.details) == {"rssi": -70, "fw": "1.2"}


def test_gateway_status_topic_names_the_gateway_as_device() -> None:
    event = accepted(f"{PREFIX}/proj/gw-7/status", b"offline")
    assert (event.gateway_id, event.device_id) == ("gw-7", "gw-7")
    assert event.status.state == events_pb2.DeviceStatus.STATE_OFFLINE


@pytest.mark.parametrize(
    ("kind", "message", "field"),
    [
        ("data", events_pb2.Readings(values=struct({"t": 1.5})), "readings"),
        ("alert", events_pb2.Alert(details=struct({"limit": 80})), "alert"),
        (
            "status",
            events_pb2.DeviceStatus(state=events_pb2.DeviceStatus.STATE_ONLINE),
            "status",
        ),
        ("config", events_pb2.Configuration(values=struct({"interval": 5})), "configuration"),
    ],
)
def test_protobuf_payloads(kind: str, message: object, field: str) -> None:
    payload = message.SerializeToString()  # type: ignore[attr-defined]
    event = accepted(f"{PREFIX}/p/g/d/{kind}", payload, PROTOBUF)
    assert getattr(event, field) == message
    assert event.timestamp.ToNanoseconds() == RECEIVED_NS


def test_protobuf_content_type_may_have_parameters() -> None:
    payload = events_pb2.Readings(values=struct({"t": 1})).SerializeToString()
    event = accepted(f"{PREFIX}/p/g/d/data", payload, "application/x-protobuf; proto=Readings")
    assert values(event.readings.values) == {"t": 1}


def test_event_id_from_the_gateway_property_is_stable_and_scoped() -> None:
    topic, body = f"{PREFIX}/proj/gw/dev/data", b'{"a": 1}'
    props = (("event-id", "reading-42"),)
    first = parse(topic, body, user_properties=props)
    again = parse(topic, body, user_properties=props)
    other_gateway = parse(f"{PREFIX}/proj/gw2/dev/data", body, user_properties=props)
    assert isinstance(first, Accepted)
    assert isinstance(again, Accepted)
    assert isinstance(other_gateway, Accepted)
    assert first.event.event_id == again.event.event_id
    assert first.event.event_id == gateway_event_id(
        TopicAddress("proj", "gw", "dev", "data"), "reading-42"
    )
    assert first.event.event_id != other_gateway.event.event_id
    assert first.event.event_id.startswith("evt_")
    bad = parse(topic, body, user_properties=(("event-id", "no spaces please"),))
    assert isinstance(bad, Accepted)
    assert bad.event.event_id != first.event.event_id


def test_random_event_ids_differ() -> None:
    ids = {accepted(f"{PREFIX}/p/g/d/data", b"{}").event_id for _ in range(50)}
    assert len(ids) == 50


def test_event_id_override() -> None:
    raw = RawMessage(f"{PREFIX}/p/g/d/data".encode(), b"{}", RECEIVED_NS)
    outcome = parse_message(raw, RULES, event_id="evt_given")
    assert isinstance(outcome, Accepted)
    assert outcome.event.event_id == "evt_given"


def test_deepest_allowed_payload_survives_a_round_trip_through_delivery() -> None:
    nested: dict[str, object] = {"leaf": [1, 2]}
    for _ in range(MAX_DEPTH - 2):
        nested = {"n": nested}
    event = accepted(f"{PREFIX}/p/g/d/data", json.dumps(nested).encode())
    request = delivery_pb2.PublishRequest(batch_id=1, events=[event])
    assert delivery_pb2.PublishRequest.FromString(request.SerializeToString()) == request


def nested_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    ("topic", "payload", "content_type", "reason"),
    [
        ("edgesense/p/g/data", b"{}", None, "bad_topic"),
        ("edgesense/p/g/d/data/more", b"{}", None, "bad_topic"),
        ("edgesense/p", b"{}", None, "bad_topic"),
        ("edgesense/p/g/d/", b"{}", None, "unknown_kind"),
        ("edgesense/p/g/d/temperature", b"{}", None, "unknown_kind"),
        ("edgesense/p/-g/d/data", b"{}", None, "bad_id"),
        ("edgesense/p/g/d d/data", b"{}", None, "bad_id"),
        ("edgesense/p//d/data", b"{}", None, "bad_id"),
        ("edgesense/" + "p" * 129 + "/g/d/data", b"{}", None, "bad_id"),
        ("edgesense/p/g/d/data", b"", None, "empty"),
        ("edgesense/p/g/d/data", b"x" * 1025, None, "too_large"),
        ("edgesense/p/g/d/data", b'{"a": "\xff"}', None, "bad_utf8"),
        ("edgesense/p/g/d/data", b'{"a":', None, "bad_json"),
        ("edgesense/p/g/d/data", b'{"a": NaN}', None, "bad_json"),
        ("edgesense/p/g/d/data", b'{"a": 1e999}', None, "bad_json"),
        ("edgesense/p/g/d/data", b'{"a": 1' + b"0" * 400 + b"}", None, "bad_json"),
        ("edgesense/p/g/d/data", b"[1, 2]", None, "not_an_object"),
        ("edgesense/p/g/d/alert", b'"text"', None, "not_an_object"),
        ("edgesense/p/g/d/config", b"42", None, "not_an_object"),
        ("edgesense/p/g/d/config", b"null", None, "not_an_object"),
        (
            "edgesense/p/g/d/data",
            b'{"timestamp": "yesterday", "payload": {}}',
            None,
            "bad_envelope",
        ),
        (
            "edgesense/p/g/d/data",
            b'{"timestamp": "2025-07-24T10:35:17", "payload": {}}',
            None,
            "bad_envelope",
        ),
        ("edgesense/p/g/d/data", b'{"timestamp": 1753353317, "payload": {}}', None, "bad_envelope"),
        (
            "edgesense/p/g/d/data",
            b'{"timestamp": "2025-07-24T10:35:17Z", "payload": [1]}',
            None,
            "not_an_object",
        ),
        ("edgesense/p/g/d/status", b"maybe", None, "bad_json"),
        ("edgesense/p/g/d/status", b'{"status": "sleeping"}', None, "bad_status"),
        ("edgesense/p/g/d/status", b'{"battery": 3}', None, "bad_status"),
        ("edgesense/p/g/d/status", b"[]", None, "not_an_object"),
        ("edgesense/p/g/d/data", nested_json(MAX_DEPTH + 1), None, "too_deep"),
        ("edgesense/p/g/d/data", b"[" * 100_000 + b"]" * 100_000, None, "too_large"),
        ("edgesense/p/g/d/data", b"\xff\xff\xff\xff", PROTOBUF, "bad_protobuf"),
        ("edgesense/p/g/d/status", b"", PROTOBUF, "empty"),
        ("edgesense/p/g/d/status", b"\x08\x07", PROTOBUF, "bad_status"),
    ],
)
def test_malformed(topic: str, payload: bytes, content_type: str | None, reason: str) -> None:
    outcome = parse(topic, payload, content_type)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.reason == reason, outcome.detail
    assert outcome.detail


def test_json_nesting_that_breaks_the_json_parser_is_too_deep() -> None:
    rules = ParseRules(TopicLayout(PREFIX), max_payload_bytes=1_000_000)
    raw = RawMessage(f"{PREFIX}/p/g/d/data".encode(), b"[" * 200_000, RECEIVED_NS)
    outcome = parse_message(raw, rules)
    assert isinstance(outcome, Rejected)
    assert outcome.reason in ("too_deep", "bad_json")


def test_deep_protobuf_is_too_deep() -> None:
    inner = struct_pb2.Struct()
    for _ in range(MAX_DEPTH + 1):
        outer = struct_pb2.Struct()
        outer.fields["n"].struct_value.CopyFrom(inner)
        inner = outer
    payload = events_pb2.Readings(values=inner).SerializeToString()
    outcome = parse(f"{PREFIX}/p/g/d/data", payload, PROTOBUF)
    assert isinstance(outcome, Rejected)
    assert outcome.reason == "too_deep"


def test_invalid_utf8_topic() -> None:
    raw = RawMessage(b"edgesense/p/\xff/d/data", b"{}", RECEIVED_NS)
    outcome = parse_message(raw, RULES)
    assert isinstance(outcome, Rejected)
    assert outcome.reason == "bad_topic"


def test_topics_outside_the_prefix_are_bad() -> None:
    outcome = parse("other/p/g/d/data", b"{}")
    assert isinstance(outcome, Rejected)
    assert outcome.reason == "bad_topic"


def test_own_config_pushes_and_retained_replays_are_ignored() -> None:
    assert parse(f"{PREFIX}/p/g/d/config/set", b'{"a": 1}') == Ignored("own_config_push")
    assert parse(f"{PREFIX}/p/g/status", b"offline", retain=True) == Ignored("retained")


def test_prefix_with_levels() -> None:
    rules = ParseRules(TopicLayout("acme/edgesense"))
    raw = RawMessage(b"acme/edgesense/p/g/d/data", b'{"a": 1}', RECEIVED_NS)
    outcome = parse_message(raw, rules)
    assert isinstance(outcome, Accepted)
    assert outcome.event.device_id == "d"
    assert TopicLayout("acme/edgesense").subscription("grp") == "$share/grp/acme/edgesense/#"


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [
        ("9999-12-31T23:59:59-01:00", "bad_timestamp"),  # 10000-01-01T00:59:59Z in UTC
        ("0001-01-01T00:00:00+01:00", "bad_timestamp"),  # 0000-12-31T23:00:00Z in UTC
        ("0000-01-01T00:00:00Z", "bad_timestamp"),
        ("2025-13-01T00:00:00Z", "bad_timestamp"),
        ("2025-07-24T10:35:17+24:00", "bad_timestamp"),
        ("2025-07-24T10:35:17+99:59", "bad_timestamp"),
        ("10000-01-01T00:00:00Z", "bad_envelope"),  # not RFC 3339: a year has 4 digits
    ],
)
def test_an_unrepresentable_envelope_timestamp_is_rejected(stamp: str, reason: str) -> None:
    body = json.dumps({"timestamp": stamp, "payload": {"a": 1}}).encode()
    outcome = parse(f"{PREFIX}/p/g/d/data", body, None)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.reason == reason, outcome.detail
    assert repr(stamp) in outcome.detail


@pytest.mark.parametrize(
    ("stamp", "utc"),
    [
        ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
        ("9999-12-31T23:59:59+01:00", "9999-12-31T22:59:59Z"),
        ("0001-01-01T00:00:00-23:59", "0001-01-01T23:59:00Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
    ],
)
def test_the_edges_of_the_timestamp_range_are_accepted(stamp: str, utc: str) -> None:
    body = json.dumps({"timestamp": stamp, "payload": {"a": 1}}).encode()
    event = accepted(f"{PREFIX}/p/g/d/data", body)
    assert event.timestamp.ToJsonString() == utc


def outcome_of(outcome: Accepted | Rejected | Ignored) -> object:
    """What an outcome says, its random event id and times aside."""
    if isinstance(outcome, Accepted):
        return (outcome.event.project_id, outcome.event.device_id, outcome.event.WhichOneof("kind"))
    return outcome


def test_a_remembered_topic_answers_as_a_new_one_and_the_memory_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each message is checked in the same order (a retained or too large
    message on a bad topic says so first) whether its topic was read before
    or not; and no more topics are kept than TOPICS_REMEMBERED."""
    monkeypatch.setattr(parsing, "TOPICS_REMEMBERED", 3)
    cases: list[tuple[bytes, bytes, bool]] = [
        (b"edgesense/p/g/d/data", b'{"a": 1}', False),
        (b"edgesense/p/g/d/data", b'{"a": 1}', True),
        (b"edgesense/p/g/d/data", b"x" * 2000, False),
        (b"edgesense/p/g/bad id/data", b'{"a": 1}', False),
        (b"edgesense/p/g/bad id/data", b'{"a": 1}', True),
        (b"edgesense/p/g/bad id/data", b"x" * 2000, False),
        (b"edgesense/p/g/d/config/set", b'{"a": 1}', False),
        (b"edgesense/p/\xff/d/data", b'{"a": 1}', False),
        (b"edgesense/p/g/d/nope", b'{"a": 1}', False),
        (b"edgesense/p/g/status", b"online", False),
    ]
    # Every answer from rules that have read no topic before.
    fresh = [
        outcome_of(parse_message(RawMessage(t, p, RECEIVED_NS, retain=r), new_rules()))
        for t, p, r in cases
    ]
    rules = new_rules()
    for _ in range(3):
        again = [
            outcome_of(parse_message(RawMessage(t, p, RECEIVED_NS, retain=r), rules))
            for t, p, r in cases
        ]
        assert again == fresh
        assert len(rules._topics) <= 3
    # A topic longer than any valid one is read each time, never kept.
    rules = new_rules()
    long_topic = b"edgesense/p/g/" + b"d" * parsing.REMEMBERED_TOPIC_BYTES + b"/data"
    for _ in range(2):
        outcome = parse_message(RawMessage(long_topic, b'{"a": 1}', RECEIVED_NS), rules)
        assert isinstance(outcome, Rejected)
        assert outcome.reason == "bad_id"
    assert rules._topics == {}
    assert [type(o).__name__ for o in fresh] == [
        "tuple", "Ignored", "Rejected", "Rejected", "Ignored", "Rejected",
        "Ignored", "Rejected", "Rejected", "tuple",
    ]  # fmt: skip
    assert [o.reason for o in fresh if isinstance(o, Rejected)] == [
        "too_large", "bad_id", "too_large", "bad_topic", "unknown_kind",
    ]  # fmt: skip


def new_rules() -> ParseRules:
    return ParseRules(TopicLayout(PREFIX), max_payload_bytes=1024)


def test_a_payload_with_a_byte_order_mark_is_bad_json_and_says_so() -> None:
    outcome = parse(f"{PREFIX}/p/g/d/data", '\ufeff{"a": 1}'.encode())
    assert isinstance(outcome, Rejected)
    assert (outcome.reason, outcome.detail) == (
        "bad_json",
        "payload is not JSON: it starts with a UTF-8 BOM",
    )
