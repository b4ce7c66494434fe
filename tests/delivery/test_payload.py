"""The webhook body: key order, number rendering, status merge, timestamps."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from edgesense.delivery.send.payload import (
    event_name,
    render,
    rfc3339,
    struct_to_dict,
    webhook_body,
)
from edgesense.v1 import events_pb2

ONLINE = events_pb2.DeviceStatus.STATE_ONLINE
OFFLINE = events_pb2.DeviceStatus.STATE_OFFLINE


def make_event(kind: str = "readings", values: dict[str, Any] | None = None) -> events_pb2.Event:
    event = events_pb2.Event(
        event_id="evt_abc",
        project_id="project-a",
        gateway_id="gw-1",
        device_id="edge-node-321",
        timestamp=timestamp_pb2.Timestamp(seconds=1753353317),
        received_at=timestamp_pb2.Timestamp(seconds=1753353318),
    )
    struct = {
        "readings": event.readings.values,
        "alert": event.alert.details,
        "configuration": event.configuration.values,
        "status": event.status.details,
    }[kind]
    getattr(event, kind).SetInParent()
    struct.update(values or {})
    if kind == "status":
        event.status.state = ONLINE
    return event


def test_contract_example_bytes() -> None:
    event = make_event(values={"temperature": 75.3})
    assert webhook_body(event, "wh_68f93jkdf") == (
        b'{"event":"device.data","timestamp":"2025-07-24T10:35:17Z",'
        b'"deviceId":"edge-node-321","payload":{"temperature":75.3},'
        b'"eventId":"evt_abc","gatewayId":"gw-1","webhookId":"wh_68f93jkdf"}'
    )


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("readings", "device.data"),
        ("alert", "device.alert"),
        ("status", "device.status"),
        ("configuration", "config.update"),
    ],
)
def test_event_names_and_key_order(kind: str, name: str) -> None:
    event = make_event(kind, {"a": 1})
    assert event_name(event) == name
    body = json.loads(webhook_body(event, "wh_1"))
    assert list(body) == [
        "event",
        "timestamp",
        "deviceId",
        "payload",
        "eventId",
        "gatewayId",
        "webhookId",
    ]
    assert body["event"] == name


def test_event_without_kind_is_rejected() -> None:
    event = events_pb2.Event(event_id="evt_nokind")
    with pytest.raises(ValueError, match="evt_nokind"):
        event_name(event)
    with pytest.raises(ValueError, match="no kind"):
        webhook_body(event, "wh_1")


def test_integral_numbers_are_json_integers() -> None:
    values = {
        "count": 5,
        "zero": 0,
        "negative": -3,
        "big": 2**53,
        "too_big": 2.0**53 * 4,
        "half": 0.5,
        "temperature": 75.3,
        "tiny": 1e-7,
    }
    raw = webhook_body(make_event(values=values), "wh_1")
    payload = raw.split(b'"payload":', 1)[1].split(b',"eventId"', 1)[0]
    assert payload == (
        b'{"big":9007199254740992,"count":5,"half":0.5,"negative":-3,"temperature":75.3,'
        b'"tiny":1e-07,"too_big":3.602879701896397e+16,"zero":0}'
    )


def test_nested_values() -> None:
    values = {
        "name": "pump-7",
        "on": True,
        "off": False,
        "nothing": None,
        "list": [1, 2.5, "x", None, [3.0], {"deep": {"n": 4.0}}],
        "object": {"b": 2, "a": [1.5, 10]},
        "unicode": "°C ✓",
    }
    raw = webhook_body(make_event("configuration", values), "wh_1")
    assert json.loads(raw)["payload"] == {
        "list": [1, 2.5, "x", None, [3], {"deep": {"n": 4}}],
        "name": "pump-7",
        "nothing": None,
        "object": {"a": [1.5, 10], "b": 2},
        "off": False,
        "on": True,
        "unicode": "°C ✓",
    }
    assert "°C ✓".encode() in raw  # UTF-8, not \u escapes
    assert b'"list":[1,2.5,"x",null,[3],{"deep":{"n":4}}]' in raw


def test_non_finite_numbers_become_null() -> None:
    struct = struct_pb2.Struct()
    struct.update({"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf")})
    assert struct_to_dict(struct) == {"inf": None, "nan": None, "ninf": None}


def test_same_event_renders_the_same_bytes_after_a_round_trip() -> None:
    event = make_event(values={f"k{i}": i for i in range(50)})
    again = events_pb2.Event.FromString(event.SerializeToString())
    assert webhook_body(again, "wh_1") == webhook_body(event, "wh_1")


def test_matches_message_to_dict_up_to_number_types() -> None:
    values = {"a": [1, {"b": 2.25}], "c": "d", "e": None, "f": True}
    struct = make_event(values=values).readings.values
    assert struct_to_dict(struct) == json_format.MessageToDict(struct)


@pytest.mark.parametrize(
    ("state", "details", "expected"),
    [
        (ONLINE, {}, {"status": "online"}),
        (
            OFFLINE,
            {"battery": 12, "reason": "lwt"},
            {"status": "offline", "battery": 12, "reason": "lwt"},
        ),
        (ONLINE, {"status": "offline", "rssi": -70}, {"status": "online", "rssi": -70}),
        (events_pb2.DeviceStatus.STATE_UNSPECIFIED, {}, {"status": "unknown"}),
    ],
)
def test_status_payload_merges_details_and_status_wins(
    state: int, details: dict[str, Any], expected: dict[str, Any]
) -> None:
    event = make_event("status", details)
    event.status.state = state  # type: ignore[assignment]
    body = json.loads(webhook_body(event, "wh_1"))
    assert body["payload"] == expected
    assert next(iter(body["payload"])) == "status"


@pytest.mark.parametrize(
    ("seconds", "nanos", "expected"),
    [
        (1753353317, 0, "2025-07-24T10:35:17Z"),
        (1753353317, 250_000_000, "2025-07-24T10:35:17.250Z"),
        (1753353317, 999_999_999, "2025-07-24T10:35:17.999Z"),
        (1753353317, 1_000_000, "2025-07-24T10:35:17.001Z"),
        (1753353317, 999, "2025-07-24T10:35:17Z"),  # below a millisecond
        (0, 0, "1970-01-01T00:00:00Z"),
        (-62135596800, 0, "0001-01-01T00:00:00Z"),
        (253402300799, 0, "9999-12-31T23:59:59Z"),
    ],
)
def test_rfc3339(seconds: int, nanos: int, expected: str) -> None:
    assert rfc3339(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)) == expected


def test_timestamp_falls_back_to_received_at() -> None:
    event = make_event()
    event.ClearField("timestamp")
    assert json.loads(webhook_body(event, "wh_1"))["timestamp"] == "2025-07-24T10:35:18Z"


@pytest.mark.parametrize("webhook_id", ["wh_1", 'wh_"quoted"\\', "wh_ünï"])
def test_one_rendering_serves_every_webhook(webhook_id: str) -> None:
    event = make_event(values={"temperature": 75.3, "label": "Ü"})
    rendered = render(event)
    assert rendered.name == "device.data"
    body = rendered.body(webhook_id)
    assert json.loads(body)["webhookId"] == webhook_id
    assert body == webhook_body(event, webhook_id)
    assert body.startswith(rendered.head)
    # The same bytes as rendering the whole body in one go.
    whole = {**json.loads(body)}
    assert body == json.dumps(whole, separators=(",", ":"), ensure_ascii=False).encode()


def test_operational_bodies_name_their_subject_and_no_device() -> None:
    event = events_pb2.Event(
        event_id="evt_op",
        project_id="project-a",
        timestamp=timestamp_pb2.Timestamp(seconds=1753353317, nanos=250_000_000),
    )
    disabled = event.webhook_disabled
    disabled.webhook_id, disabled.url, disabled.reason = "wh_a", "https://a.test/in", "gone"
    disabled.last_attempt.started_at.FromSeconds(1753353316)
    disabled.last_attempt.error = "connection refused"
    assert webhook_body(event, "wh_b") == (
        b'{"event":"webhook.disabled","timestamp":"2025-07-24T10:35:17.250Z",'
        b'"payload":{"webhookId":"wh_a","url":"https://a.test/in","reason":"gone",'
        b'"lastAttempt":{"startedAt":"2025-07-24T10:35:16Z","error":"connection refused"}},'
        b'"eventId":"evt_op","webhookId":"wh_b"}'
    )
    disabled.ClearField("last_attempt")
    assert "lastAttempt" not in json.loads(webhook_body(event, "wh_b"))["payload"]

    event.webhook_enabled.webhook_id, event.webhook_enabled.url = "wh_a", "https://a.test/in"
    assert json.loads(webhook_body(event, "wh_b")) == {
        "event": "webhook.enabled",
        "timestamp": "2025-07-24T10:35:17.250Z",
        "payload": {"webhookId": "wh_a", "url": "https://a.test/in"},
        "eventId": "evt_op",
        "webhookId": "wh_b",
    }
