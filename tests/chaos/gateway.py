"""The chaos test's gateway: QoS 1 readings at a steady rate, counted by PUBACK.

A paho client on its own network thread, as a device gateway would run it:
MQTT 5 with a session of its own (clean start off, a session expiry), so
that after the broker restarts it resumes the session and paho sends again,
with DUP, every publish not yet acknowledged. Reading `n` carries `seq: n`
in its payload and the user property `event-id` `chaos:<run>:<n>`, so the
bridge gives every copy of it one event id (README, "Event ids") and the
receiver can tell which reading each webhook request carries.

A PUBACK is counted as the broker's promise only when its reason code is
Success. Mosquitto answers "No matching subscribers" (0x10, a success code
in MQTT 5) when no session subscribes to the topic, and drops the message:
that is what it answers after a restart until the first bridge subscribes
again, because Mosquitto 2.0 does not restore shared subscriptions from its
persistence file (measured here with 2.0.11). A gateway that wants nothing
lost publishes such a reading again, under the same event id, a moment
later; this one does, and counts them.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

NO_MATCHING_SUBSCRIBERS = 0x10
REPUBLISH_AFTER_SECONDS = 0.5
SESSION_EXPIRY_SECONDS = 3600
DEVICES = 10


@dataclass
class PubackTally:
    """What the broker answered, per reading (guarded by `lock`; paho calls
    back on its network thread, the readings leave from another)."""

    acked: set[int] = field(default_factory=set)  # PUBACK Success: the broker has it
    no_subscribers: int = 0  # PUBACKs 0x10, each published again
    refused: dict[int, str] = field(default_factory=dict)  # failure reason codes
    lock: threading.Lock = field(default_factory=threading.Lock)


class SteadyGateway:
    """Publishes readings 0..count-1 of project `project` at `rate` a second."""

    def __init__(self, port: int, project: str, run: str, prefix: str = "edgesense") -> None:
        self.port, self.project, self.run, self.prefix = port, project, run, prefix
        self.tally = PubackTally()
        self.sent = 0  # readings handed to paho (first copies)
        self.started_at = self.finished_at = 0.0
        self._pending: dict[int, int] = {}  # mid -> seq, for publishes not yet acknowledged
        self._early: dict[int, ReasonCode] = {}  # PUBACKs that beat the mid's bookkeeping
        self._again: list[tuple[float, int]] = []  # (when, seq) to publish again
        self._stop = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"chaos-gateway-{run}",
            protocol=paho.MQTTv5,
            reconnect_on_failure=True,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_publish = self._on_publish

    def connect(self) -> None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
        self.client.connect(
            "127.0.0.1", self.port, keepalive=10, clean_start=False, properties=properties
        )
        self.client.loop_start()

    def publish_all(self, count: int, rate: float) -> None:
        """Blocking: reading n leaves at start + n / rate (and 0x10s again
        meanwhile). Run it in a thread."""
        self.started_at = start = time.monotonic()
        for seq in range(count):
            if self._stop.is_set():
                break
            delay = start + seq / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing a steady rate, not waiting for a condition
            self._publish(seq)
            self.sent += 1
            self._publish_again(time.monotonic())
        self.finished_at = time.monotonic()

    def settle(self, count: int, seconds: float) -> None:
        """Blocking: publish the 0x10s again until every reading has a Success
        PUBACK or refusal, or `seconds` pass."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stop.is_set():
            with self.tally.lock:
                if len(self.tally.acked) + len(self.tally.refused) >= count:
                    return
            self._publish_again(time.monotonic())
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()

    def _publish(self, seq: int) -> None:
        device = f"dev-{seq % DEVICES}"
        topic = f"{self.prefix}/{self.project}/gw-chaos/{device}/data"
        payload = json.dumps({"seq": seq, "run": self.run, "temperature": 21.5}).encode()
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = ("event-id", f"chaos:{self.run}:{seq}")
        # Not connected (the broker restarts): paho keeps it and sends it on reconnect.
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        with self.tally.lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = seq
            else:
                self._answered(seq, early)

    def _publish_again(self, now: float) -> None:
        with self.tally.lock:
            due = [seq for when, seq in self._again if when <= now]
            self._again = [(when, seq) for when, seq in self._again if when > now]
        for seq in due:
            self._publish(seq)

    def _on_publish(
        self, _c: paho.Client, _u: object, mid: int, reason: ReasonCode, _p: Properties
    ) -> None:
        # paho holds its own lock here; ours is never held while calling paho.
        with self.tally.lock:
            seq = self._pending.pop(mid, None)
            if seq is None:
                self._early[mid] = reason
            else:
                self._answered(seq, reason)

    def _answered(self, seq: int, reason: ReasonCode) -> None:
        if reason.value == NO_MATCHING_SUBSCRIBERS:
            self.tally.no_subscribers += 1
            self._again.append((time.monotonic() + REPUBLISH_AFTER_SECONDS, seq))
        elif reason.is_failure:
            self.tally.refused[seq] = str(reason)
        else:
            self.tally.acked.add(seq)
