"""A flood of bad input, or of messages that hit a bug, keeps the log short:
every message is still counted and acknowledged, the log gets a bounded
number of lines (each problem once, then the budget's summary)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pytest

from edgesense.common.config import Settings
from edgesense_bridge import intake as intake_module
from edgesense_bridge import parsing
from edgesense_bridge.intake import LOG_BUDGET
from edgesense_bridge.parsing import Outcome, RawMessage
from tests.bridge.conftest import PROJECT, bridge_options, running_bridge, sample
from tests.bridge.delivery_double import FakeDelivery
from tests.support.broker import Gateway, Mosquitto
from tests.support.waiting import eventually

FLOOD = 2000
DEVICES = 200  # distinct topics: a budget per topic alone would log 200 lines
REJECTED = "edgesense_bridge_messages_rejected_total"
RECEIVED = "edgesense_bridge_messages_received_total"
# Out of range once in UTC (10000-01-01T00:59:59Z): it used to take the
# internal-error path, a 17-line traceback per message.
UNREPRESENTABLE = "9999-12-31T23:59:59-01:00"


def flood(prefix: str) -> list[tuple[str, bytes, None]]:
    body = json.dumps({"timestamp": UNREPRESENTABLE, "payload": {"t": 1}}).encode()
    return [(f"{prefix}/{PROJECT}/gw/dev-{n % DEVICES}/data", body, None) for n in range(FLOOD)]


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the intake wrote to the log, line by line (tracebacks included)."""
    handler = logging.Formatter()
    records = [r for r in caplog.records if r.name == "edgesense_bridge.intake"]
    return [line for r in records for line in handler.format(r).splitlines()]


@dataclass
class FloodRig:
    """A real bridge's surroundings: broker, gateway, the recording delivery."""

    settings: Settings
    delivery: FakeDelivery
    gateway: Gateway
    prefix: str
    mosquitto: Mosquitto

    async def flood_and_check_acknowledged(self, reason: str) -> None:
        """Publish the flood to a bridge; all of it rejected with `reason`, and
        nothing comes back on the resumed session (every message was acknowledged)."""
        settings, delivery, gateway, prefix = (
            self.settings,
            self.delivery,
            self.gateway,
            self.prefix,
        )
        options = bridge_options(self.mosquitto.url, prefix)
        rejected, received = sample(REJECTED, reason=reason), sample(RECEIVED)
        async with running_bridge(settings, delivery, options) as bridge:
            await gateway.publish(flood(prefix), pause_every=500)
            await eventually(
                lambda: sample(REJECTED, reason=reason) - rejected == FLOOD, 30, "every rejection"
            )
            assert len(bridge.forwarder.outbox) == 0
        async with running_bridge(settings, delivery, options):
            await gateway.publish([(f"{prefix}/{PROJECT}/gw/dev-0/data", b'{"good": 1}', None)])
            await delivery.wait_for(lambda: len(delivery.stored) == 1, what="the good message")
        assert sample(RECEIVED) - received == FLOOD + 1, "a message came again: it was not acked"
        assert sample(REJECTED, reason=reason) - rejected == FLOOD


@pytest.fixture
def rig(
    mosquitto: Mosquitto, gateway: Gateway, delivery: FakeDelivery, settings: Settings, prefix: str
) -> FloodRig:
    return FloodRig(settings, delivery, gateway, prefix, mosquitto)


async def test_a_flood_of_unrepresentable_timestamps_is_rejected_with_a_short_log(
    rig: FloodRig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edgesense_bridge")
    internal = sample(REJECTED, reason="internal_error")
    await rig.flood_and_check_acknowledged("bad_timestamp")
    prefix = rig.prefix
    assert sample(REJECTED, reason="internal_error") == internal
    lines = log_lines(caplog)
    assert len(lines) <= LOG_BUDGET, "\n".join(lines)
    assert not any("Traceback" in line for line in lines)
    first = lines[0]
    assert f"rejected MQTT message on {prefix}/{PROJECT}/gw/dev-0/data: bad_timestamp (" in first
    assert repr(UNREPRESENTABLE) in first


async def test_a_flood_that_hits_a_bug_logs_one_traceback(
    rig: FloodRig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    flooded: set[bytes] = set()
    real = parsing.parse_message

    def parse(raw: RawMessage, *args: Any) -> Outcome:
        if b"good" not in raw.payload:  # the flood, not the check that follows it
            flooded.add(raw.topic)
            raise RuntimeError("a bug in parsing")
        return real(raw, *args)

    monkeypatch.setattr(intake_module, "parse_message", parse)
    caplog.set_level(logging.WARNING, logger="edgesense_bridge")
    await rig.flood_and_check_acknowledged("internal_error")
    assert len(flooded) == DEVICES
    lines = log_lines(caplog)
    assert sum("Traceback" in line for line in lines) == 1
    errors = [r for r in caplog.records if r.getMessage().startswith("bridge: parsing")]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert len(lines) < 40, "\n".join(lines)
