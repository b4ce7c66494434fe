"""Bad input never stops the bridge: each malformed message is acknowledged,
counted by reason and logged once, and the next good message is delivered."""

from __future__ import annotations

import logging

import pytest

from edgesense.common.config import Settings
from edgesense_bridge.payloads import PROTOBUF_CONTENT_TYPE
from tests.bridge.conftest import bridge_options, running_bridge, sample
from tests.bridge.delivery_double import FakeDelivery
from tests.support.broker import Gateway, Mosquitto, message_properties
from tests.support.waiting import eventually

REJECTED = "edgesense_bridge_messages_rejected_total"


def corpus(prefix: str) -> list[tuple[str, str, bytes, str | None]]:
    """(reason, topic, payload, content type)."""
    good = f"{prefix}/proj-1/gw/dev"
    return [
        ("bad_topic", f"{prefix}/proj-1/gw/data", b"{}", None),
        ("bad_topic", f"{prefix}/proj-1/gw/dev/data/extra", b"{}", None),
        ("unknown_kind", f"{good}/humidity", b"{}", None),
        ("bad_id", f"{prefix}/proj-1/gw/-dev/data", b"{}", None),
        ("bad_utf8", f"{good}/data", b'{"t": "\xc3\x28"}', None),
        ("not_an_object", f"{good}/data", b"[1, 2, 3]", None),
        ("not_an_object", f"{good}/config", b'"text"', None),
        ("bad_json", f"{good}/alert", b'{"broken": ', None),
        ("bad_protobuf", f"{good}/data", b"\x0a\xff\xff\xff", PROTOBUF_CONTENT_TYPE),
        ("too_large", f"{good}/data", b'{"x": "' + b"a" * (256 * 1024) + b'"}', None),
        ("empty", f"{good}/data", b"", None),
        ("bad_status", f"{good}/status", b'{"status": "asleep"}', None),
        ("bad_envelope", f"{good}/data", b'{"timestamp": "noon", "payload": {}}', None),
        ("too_deep", f"{good}/data", b'{"a":' * 40 + b"1" + b"}" * 40, None),
    ]


async def test_malformed_messages_are_acked_counted_logged_once_and_skipped(
    mosquitto: Mosquitto,
    gateway: Gateway,
    delivery: FakeDelivery,
    settings: Settings,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="edgesense_bridge.intake")
    caplog.set_level(logging.INFO, logger="edgesense_bridge.mqtt_adapter")
    cases = corpus(prefix)
    reasons = {reason for reason, *_ in cases}
    before = {reason: sample(REJECTED, reason=reason) for reason in reasons}
    bad = [(topic, payload, message_properties(ctype)) for _, topic, payload, ctype in cases]
    good = (f"{prefix}/proj-1/gw/dev/data", b'{"good": 1}', None)
    options = bridge_options(mosquitto.url, prefix)

    async with running_bridge(settings, delivery, options) as bridge:
        await gateway.publish([*bad, bad[0], good])  # the first one twice
        await delivery.wait_for(lambda: len(delivery.stored) == 1, what="the good message")
        await eventually(lambda: len(bridge.forwarder.outbox) == 0, 5, "its confirmation")
    (event,) = delivery.stored.values()
    assert event.readings.values["good"] == 1

    expected = {reason: sum(1 for r, *_ in cases if r == reason) for reason in reasons}
    expected["bad_topic"] += 1
    counted = {reason: sample(REJECTED, reason=reason) - before[reason] for reason in reasons}
    assert counted == expected

    rejections = [r for r in caplog.records if r.getMessage().startswith("rejected MQTT")]
    assert len(rejections) == len(cases), "the repeated message is logged once"
    for (reason, topic, *_), record in zip(cases, rejections, strict=True):
        assert f"on {topic}: {reason} (" in record.getMessage()

    # Everything was acknowledged: the same session, resumed, brings nothing back.
    async with running_bridge(settings, delivery, options):
        await gateway.publish([(f"{prefix}/proj-1/gw/dev/data", b'{"good": 2}', None)])
        await delivery.wait_for(lambda: len(delivery.stored) == 2, what="the second good one")
    assert "(resumed session)" in caplog.text
    again = {reason: sample(REJECTED, reason=reason) - before[reason] for reason in reasons}
    assert again == expected
    assert len(delivery.received) == 2
