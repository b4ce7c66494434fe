"""The two kinds of gateway `edgesense simulate` can be: ours, or a Sparkplug B edge node.

`simulate` keeps the schedule, the counters and the stop; an `Edge` says
what goes on the wire around it:

- `connect`: connect with its Last Will;
- `start` / `stop`: what it says first and last (our retained `online` /
  `offline` status; a Sparkplug node's DDEATHs and NDEATH at the end);
- `urgent`: publishes what must go before the next scheduled message, off
  the schedule (a Sparkplug node's NBIRTH and DBIRTHs, not counted: on its
  first connection, after each reconnect, and when a host asks for a
  rebirth; then the DDATA an older connection left unacknowledged, again);
- `messages`: the scheduled messages, counted (readings, alerts, status);
- `publish`: publishes one of them, or gives it back to try again.

`JsonGateway` publishes the contract's topics (section 4, sim_devices);
paho resends what a lost connection left unacknowledged, with its event id.
`SparkplugNode` is an edge node (sim_sparkplug) whose NCMD subscription
answers `Node Control/Rebirth`. Its commands arrive on paho's thread and
only set an event; the births are encoded and published on the publishing
thread, so their seq numbers follow the order on the wire. Each message it
publishes names the connection it was encoded for (the one of its last
births), and the Publisher (`fresh_sessions`) holds back what would go out
on another: no data before the births of its connection. A DDATA waiting
for a slot while births went out is encoded `again` with the next seq.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from edgesense.tools.sim_devices import WALKS, Outgoing, fleet, readings, traffic
from edgesense.tools.sim_publisher import Publisher
from edgesense.tools.sim_sparkplug import BadCommand, EdgeNode, rebirth_requested

Spike = Callable[[], Mapping[str, float]]


class Edge(Protocol):
    def describe(self) -> str:
        """Where it publishes, for the first line of output."""

    def connect(self, publisher: Publisher) -> None: ...

    def start(self, publisher: Publisher, seconds: float) -> None: ...

    def urgent(self, publisher: Publisher) -> None: ...

    def messages(self, spike: Spike) -> Iterator[Outgoing]: ...

    def publish(self, publisher: Publisher, message: Outgoing) -> Outgoing | None:
        """None once published (counted); else no slot freed up in time:
        the message to try again with (it may have been encoded anew)."""

    def stop(self, publisher: Publisher, seconds: float) -> bool:
        """Its last words, each acknowledged within `seconds` if QoS 1; False if not."""


class JsonGateway:
    """A gateway on our topics: `{base}/{device}/{kind}`, its status at `{base}/status`."""

    def __init__(self, base: str, devices: int, kinds: Sequence[str], rng: random.Random) -> None:
        self.base, self.devices, self.kinds, self.rng = base, devices, kinds, rng
        self.status_topic = f"{base}/status"

    def describe(self) -> str:
        return f"topics {self.base}/…"

    def connect(self, publisher: Publisher) -> None:
        publisher.connect(self.status_topic, b"offline")

    def start(self, publisher: Publisher, seconds: float) -> None:
        publisher.publish_status(self.status_topic, b"online", seconds)

    def urgent(self, publisher: Publisher) -> None:
        """Nothing: the status is `start`'s."""

    def messages(self, spike: Spike) -> Iterator[Outgoing]:
        for message in traffic(self.devices, self.kinds, self.rng, spike):
            yield Outgoing(f"{self.base}/{message.device_id}/{message.kind}", message.payload)

    def publish(self, publisher: Publisher, message: Outgoing) -> Outgoing | None:
        return None if publisher.publish(message.topic, message.payload) else message

    def stop(self, publisher: Publisher, seconds: float) -> bool:
        return publisher.publish_status(self.status_topic, b"offline", seconds)


class SparkplugNode:
    """The gateway as a Sparkplug B edge node of group `project`."""

    def __init__(self, project: str, gateway: str, devices: int, rng: random.Random) -> None:
        self.rng = rng
        self.fleet = fleet(devices, rng)
        self.node = EdgeNode(project, gateway, [d.device_id for d in self.fleet], list(WALKS))
        self.bad_commands = 0  # NCMDs that were not Sparkplug B payloads
        self.rebirths = 0  # rebirth requests answered
        self.sent_again = 0  # DDATA an older connection left unacknowledged, sent again
        self._rebirth = threading.Event()
        self._born_on = 0  # the connection (Publisher.connections) of the last births
        # The DDATA encoded last: a scheduled message that is not it was
        # encoded before births or DDATA sent again, so its seq is behind.
        self._last: Outgoing | None = None

    def describe(self) -> str:
        return f"Sparkplug B topics {self.node.topic('…')}/…"

    def connect(self, publisher: Publisher) -> None:
        publisher.fresh_sessions = True
        publisher.listen(self.node.command_topic, self._on_command)
        publisher.next_will = self.node.next_connection
        will_topic, will_payload = self.node.will()
        # Sparkplug: the NDEATH Will is QoS 1 and not retained.
        publisher.connect(will_topic, will_payload, will_retain=False)

    def start(self, publisher: Publisher, seconds: float) -> None:
        """Nothing: the births are `urgent` once connected."""

    def urgent(self, publisher: Publisher) -> None:
        """The births, when the connection is new or a host asked; then the
        DDATA held back from older connections, after the births."""
        connection = publisher.connections
        if connection != self._born_on or self._rebirth.is_set():
            if connection == self._born_on:
                self.rebirths += 1
            self._rebirth.clear()
            self._born_on = connection
            self._last = None
            for birth in self.node.births({d.device_id: d.current() for d in self.fleet}):
                # Not sent if `connection` is gone already: the next one's births follow.
                publisher.send(birth.topic, birth.payload, connection)
        for topic, payload in publisher.take_stale():
            self._last = None
            self.sent_again += 1
            publisher.resend(topic, self.node.again(payload), self._born_on)

    def messages(self, spike: Spike) -> Iterator[Outgoing]:
        for device, reading in readings(self.fleet, self.rng, spike):
            self._last = self.node.data(device.device_id, reading)
            yield self._last

    def publish(self, publisher: Publisher, message: Outgoing) -> Outgoing | None:
        if message is not self._last:
            message = self._last = replace(message, payload=self.node.again(message.payload))
        if publisher.publish(message.topic, message.payload, connection=self._born_on):
            return None
        return message

    def stop(self, publisher: Publisher, seconds: float) -> bool:
        *device_deaths, node_death = self.node.deaths()
        for death in device_deaths:
            publisher.send(death.topic, death.payload, self._born_on)
        # After the DDEATHs on the same connection: its PUBACK says they all left.
        return publisher.publish_status(node_death.topic, node_death.payload, seconds, retain=False)

    def _on_command(self, payload: bytes) -> None:
        """An NCMD, on paho's thread."""
        try:
            if rebirth_requested(payload):
                self._rebirth.set()
        except BadCommand:
            self.bad_commands += 1
