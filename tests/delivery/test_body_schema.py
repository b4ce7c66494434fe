"""The schemas of GET /api/event-types and the bodies delivery renders come
from the same protos and agree: every member a body has is in its type's
schema and the other way round, a field added to a kind message shows in
both, a body of the wrong shape is refused, and the descriptions are the
protos' comments."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.descriptor import Descriptor

from edgesense import protogen
from edgesense.common.event_body import message_of
from edgesense.common.event_types import (
    EVENT_TYPES,
    EventType,
    body_schema,
    file_comments,
    proto_comments,
)
from edgesense.common.events import EVENT_NAMES
from edgesense.delivery.send.payload import message_renderer, render
from edgesense.v1 import body_pb2, events_pb2

EVENTS_PROTO = protogen.PROTO_ROOT / "edgesense" / "v1" / "events.proto"
WEBHOOK_ID = "wh_abcdefgh234567"
TYPES = {t.name: t for t in EVENT_TYPES}


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def exact(schema: Any) -> Any:
    """`schema` with every object that names members made to have exactly
    those: all required, no others."""
    if isinstance(schema, list):
        return [exact(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: exact(value) for key, value in schema.items()}
    if "properties" in schema:
        closed["required"] = list(schema["properties"])
        closed["additionalProperties"] = False
    return closed


def full_event(kind: str) -> events_pb2.Event:
    """An event of `kind` with every field the body can have set (but the
    Structs whose members join the payload's own)."""
    event = events_pb2.Event(
        event_id="evt_abc",
        project_id="project-a",
        gateway_id="gw-1",
        device_id="press-7",
        timestamp=timestamp_pb2.Timestamp(seconds=1753353317, nanos=250_000_000),
        received_at=timestamp_pb2.Timestamp(seconds=1753353318),
        test=True,
    )
    getattr(event, kind).SetInParent()
    if kind == "readings":
        event.readings.values.update({"temperature": 75.3})
    elif kind == "alert":
        event.alert.details.update({"metric": "temperature"})
    elif kind == "configuration":
        event.configuration.values.update({"interval": 30})
    elif kind == "status":
        event.status.state = events_pb2.DeviceStatus.STATE_OFFLINE
    elif kind == "webhook_disabled":
        disabled = event.webhook_disabled
        disabled.webhook_id, disabled.url, disabled.reason = WEBHOOK_ID, "https://x.test", "500"
        disabled.last_attempt.started_at.seconds = 1753353300
        disabled.last_attempt.status_code = 500
        disabled.last_attempt.error = "timeout"
    elif kind == "webhook_enabled":
        event.webhook_enabled.webhook_id = WEBHOOK_ID
        event.webhook_enabled.url = "https://x.test"
    return event


def body(event: events_pb2.Event) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(render(event).body(WEBHOOK_ID))
    return decoded


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.name)
def test_a_full_body_has_exactly_the_members_of_its_schema(event_type: EventType) -> None:
    """Every member the renderer writes is in the schema, and every member
    the schema names is written when the event has it: neither can drift."""
    rendered = body(full_event(event_type.kind))
    assert rendered["event"] == event_type.name
    validator(exact(event_type.schema())).validate(rendered)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.name)
def test_a_body_with_only_what_is_always_there_is_valid(event_type: EventType) -> None:
    event = events_pb2.Event(event_id="evt_abc", gateway_id="gw-1", device_id="press-7")
    getattr(event, event_type.kind).SetInParent()
    if event_type.kind.startswith("webhook_"):
        getattr(event, event_type.kind).webhook_id = WEBHOOK_ID
    rendered = body(event)
    validator(event_type.schema()).validate(rendered)
    assert set(event_type.schema()["required"]) <= set(rendered)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.name)
def test_the_schema_names_the_fields_of_the_kind_message(event_type: EventType) -> None:
    """The payload's members are the kind message's fields by JSON name (a
    Struct whose members join the payload's names none)."""
    message = message_of(event_type.field)
    payload = event_type.schema()["properties"]["payload"]
    inline = {
        f.json_name
        for f in message.fields
        if f.GetOptions().Extensions[body_pb2.body_form] == body_pb2.BODY_FORM_INLINE
    }
    assert set(payload.get("properties", {})) == {f.json_name for f in message.fields} - inline
    assert payload["additionalProperties"] is True


@pytest.mark.parametrize(
    ("kind", "member", "wrong"),
    [
        ("readings", "timestamp", 1753353317),
        ("readings", "eventId", ""),
        ("status", "payload", {"status": True}),
        ("status", "payload", {"status": "asleep"}),
        ("webhook_disabled", "payload", {"webhookId": WEBHOOK_ID, "url": "u", "reason": 5}),
        (
            "webhook_disabled",
            "payload",
            {"webhookId": WEBHOOK_ID, "url": "u", "reason": "r", "lastAttempt": {"error": "x"}},
        ),
        ("webhook_enabled", "payload", {"webhookId": "wh_X", "url": "u"}),
        ("webhook_enabled", "test", "yes"),
        ("alert", "payload", ["not", "an", "object"]),
    ],
)
def test_a_body_of_the_wrong_shape_is_refused(kind: str, member: str, wrong: Any) -> None:
    event_type = next(t for t in EVENT_TYPES if t.kind == kind)
    rendered = body(full_event(kind))
    check = validator(event_type.schema())
    check.validate(rendered)
    with pytest.raises(jsonschema.ValidationError):
        check.validate({**rendered, member: wrong})


def test_operational_bodies_have_no_device_and_each_schema_its_own_event() -> None:
    for name in ("webhook.disabled", "webhook.enabled"):
        properties = TYPES[name].schema()["properties"]
        assert "deviceId" not in properties
        assert "gatewayId" not in properties
    reading = body(full_event("readings"))
    assert not validator(TYPES["device.alert"].schema()).is_valid(reading)


def comment_above(text: str, declaration: str) -> str:
    """The `//` lines right above `declaration` in a .proto's text, as one line."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith(declaration))
    above: list[str] = []
    for line in reversed(lines[:at]):
        if not line.strip().startswith("//"):
            break
        above.insert(0, line.strip().removeprefix("//").strip())
    return " ".join(above)


def descriptions(schema: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    for name, member in schema.get("properties", {}).items():
        yield f"{where}{name}", member.get("description")
        yield from descriptions(member, f"{where}{name}.")


def test_descriptions_are_the_comments_of_events_proto() -> None:
    text = EVENTS_PROTO.read_text()
    assert [t.name for t in EVENT_TYPES] == list(EVENT_NAMES)
    for event_type in EVENT_TYPES:
        message = message_of(event_type.field).name
        assert event_type.description == comment_above(text, f"message {message} ")
        schema = event_type.schema()
        assert schema["description"] == event_type.description
        missing = [name for name, said in descriptions(schema) if not said]
        assert not missing, f"{event_type.name}: members without a comment in events.proto"
    status = TYPES["device.status"].schema()["properties"]["payload"]["properties"]["status"]
    assert status["description"] == comment_above(text, "State state = 1")
    assert status["enum"] == ["unknown", "online", "offline"]
    assert proto_comments()["edgesense.v1.Event.test"].startswith("True for the sample event")


# events.proto with a field added to WebhookEnabled: the schema and the body
# have it without another change.
ADDED = """
  // How many deliveries were held while it was disabled.
  int64 held = 3;
  // What the webhook is for.
  repeated string labels = 4;
  // Limits by name.
  map<string, uint32> limits = 5;
  // A share.
  double ratio = 6;
  // A tag.
  bytes tag = 7;
"""


def compiled(tmp_path: Path, text: str) -> tuple[descriptor_pool.DescriptorPool, dict[str, str]]:
    """A pool with events.proto as `text` (and what it imports), and its comments."""
    # Another path than events.proto's: protoc reads the first include folder
    # that has a path, and protos/ (with the real one) comes first.
    folder = tmp_path / "protos" / "edgesense" / "changed"
    folder.mkdir(parents=True)
    (folder / "events.proto").write_text(text)
    out = tmp_path / "set.binpb"
    protogen.run_protoc(
        [
            f"-I{tmp_path / 'protos'}",
            f"--descriptor_set_out={out}",
            "--include_imports",
            "--include_source_info",
            "edgesense/changed/events.proto",
        ]
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        pool.Add(file)
    [events] = [f for f in files if f.name == "edgesense/changed/events.proto"]
    return pool, file_comments(events)


def test_a_field_added_to_a_kind_message_is_in_its_schema_and_body(tmp_path: Path) -> None:
    text = EVENTS_PROTO.read_text()
    anchor = "  string url = 2;\n}\n"
    assert text.endswith(anchor), "WebhookEnabled is no longer events.proto's last message"
    pool, comments = compiled(tmp_path, text.removesuffix("}\n") + ADDED + "}\n")
    event: Descriptor = pool.FindMessageTypeByName("edgesense.v1.Event")
    schema = body_schema("webhook.enabled", event.fields_by_name["webhook_enabled"], comments)
    payload = schema["properties"]["payload"]
    assert payload["properties"]["held"] == {
        "type": "string",
        "pattern": "^-?[0-9]+$",
        "description": "How many deliveries were held while it was disabled.",
    }
    assert payload["properties"]["labels"]["items"] == {"type": "string"}
    assert payload["properties"]["limits"]["additionalProperties"] == {
        "type": "integer",
        "minimum": 0,
    }
    assert payload["required"] == ["webhookId", "url", "held", "labels", "limits", "ratio", "tag"]

    enabled = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("edgesense.v1.WebhookEnabled")
    )(
        webhook_id=WEBHOOK_ID,
        url="https://x.test",
        held=12,
        labels=["plant-8"],
        limits={"b": 2, "a": 1},
        ratio=float("inf"),
        tag=b"\x00\xff",
    )
    rendered = message_renderer(enabled.DESCRIPTOR)(enabled)
    # As proto3 JSON has them: int64 a string, a map an object (keys sorted,
    # so a body renders to the same bytes every time), a non-finite double
    # its name, bytes base64.
    assert json.dumps(rendered) == json.dumps(
        {
            "webhookId": WEBHOOK_ID,
            "url": "https://x.test",
            "held": "12",
            "labels": ["plant-8"],
            "limits": {"a": 1, "b": 2},
            "ratio": "Infinity",
            "tag": "AP8=",
        }
    )
    check = validator(exact(payload))
    check.validate(rendered)
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'string'"):
        check.validate({**rendered, "held": 12})


def test_the_comments_are_read_as_prose() -> None:
    text = proto_comments()["edgesense.v1.DeviceStatus"]
    assert text == (
        "A device, or a gateway itself, went online or offline (MQTT kind `status`, "
        "or a gateway's Last Will)."
    )
    # Lines joined, paragraphs kept apart (Event's comment has two).
    paragraphs = [p for text in proto_comments().values() for p in text.split("\n\n")]
    assert len(paragraphs) > len(proto_comments())
    assert not [p for p in paragraphs if re.search(r"\n|\s{2}|//|^\s|\s$", p)]
