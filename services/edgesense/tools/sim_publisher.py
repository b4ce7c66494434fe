"""The simulator's MQTT side: paho-mqtt 2, QoS 1, a bounded window of PUBACKs.

The only tool module that touches paho. paho's network loop runs on its own
thread (`loop_start`); the caller publishes from its thread and never has
more than `max_in_flight` messages without a PUBACK: `publish` waits for a
free slot, and `on_publish` (PUBACK received) frees one.

The gateway's Last Will is a retained `offline` on its status topic, so a
crash, a kill -9 or a lost network still reports the gateway offline. A clean
stop publishes that `offline` itself and then disconnects normally (a
DISCONNECT packet, so the broker drops the Will instead of sending it too).

MQTT 5, so that every message carries the user property `event-id`: unique
to the message (this run's random tag and the message's number) and the same
on each of its retries (paho resends the packet as it was), so the bridge
makes one event of a message the broker or paho delivers twice. A broker that
speaks only MQTT 3.1.1 (the embedded amqtt one) refuses MQTT 5 with "Unsupported
protocol version": then it is 3.1.1 without event ids (`mqtt5` says which).

For `--sparkplug` (sim_sparkplug) it also: publishes messages that are not
counted (`send`: births and deaths, QoS 0 as Sparkplug wants them), listens
on topics (`listen`: the node's NCMD, subscribed again on every connection),
changes the Will before paho reconnects (`next_will`: each connection has its
own bdSeq), counts `connections`, and sets no event ids: a Sparkplug edge
node sends none, and the bridge must not need them.

And it keeps each connection's messages to that connection (`fresh_sessions`).
paho, reconnected, resends every QoS 1 message the old connection left
unacknowledged (and those published while it was away) at once, before the
caller can publish anything: a Sparkplug edge node's DDATA would reach the
host before the new connection's NBIRTH (and after the old one's NDEATH
Will), and the host rejects data of a node it does not know as born. So on
each reconnect `_on_connect` takes them out of paho's queue
(`drop_out_messages`, paho 2's hook for this), and `publish`, `send` and
`resend` take the connection they were encoded for and do not publish on
another one. The counted messages so held back stay counted (published, not
yet acknowledged: they keep their slot of the window, which bounds them) and
wait in `take_stale` for the caller, who publishes them again with `resend`
once its births are out; uncounted ones (old births and deaths) mean nothing
on a new connection and are dropped. `_session` orders the two threads: a
message is either in paho's queue before `_on_connect` empties it, or sees
the new connection number and is held back.
"""

from __future__ import annotations

import itertools
import os
import secrets
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgesense.common.config import BrokerUrl
from edgesense.common.errors import ConfigurationError
from edgesense.common.events import EVENT_ID_PROPERTY
from edgesense.tools.errors import CannotConnect, UsageError

CONNECT_TIMEOUT_SECONDS = 10.0
KEEPALIVE_SECONDS = 30
UNSUPPORTED_PROTOCOL_VERSION = 0x84  # CONNACK reason code
# How long an MQTT 5 CONNECT waits before 3.1.1 is tried: a 3.1.1-only broker
# may never answer it, a real one answers within milliseconds.
MQTT5_WAIT_SECONDS = 3.0


@dataclass(frozen=True)
class Broker:
    """`mqtt[s]://[user[:password]@]host[:port]`."""

    url: str
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> Broker:
        try:
            parsed = BrokerUrl.parse(url)  # as the bridge reads it
        except ConfigurationError as exc:
            raise UsageError(exc.message) from None
        return cls(
            str(parsed), parsed.host, parsed.port, parsed.tls, parsed.username, parsed.password
        )


class Publisher:
    """One MQTT connection that publishes with QoS 1 and counts PUBACKs."""

    def __init__(
        self, broker: Broker, client_id: str, max_in_flight: int, event_ids: bool = True
    ) -> None:
        self.broker = broker
        self.published = 0
        self.acknowledged = 0
        self.connected = False
        self.connections = 0  # CONNACKs that accepted us: more than 1 after a reconnect
        # Called on paho's thread when the connection is lost, before paho
        # reconnects: the Will for the next connection (topic, payload).
        self.next_will: Callable[[], tuple[str, bytes]] | None = None
        self._listening: dict[str, Callable[[bytes], None]] = {}
        # Messages `send` published, not counted: their mids until paho is done with them.
        self._uncounted: set[int] = set()
        self._uncounted_lock = threading.Lock()
        # Set before `connect`: no message of an older connection goes out on a
        # newer one (see the module docstring).
        self.fresh_sessions = False
        # Counted messages of older connections, held back from paho: at most
        # `max_in_flight`, as each keeps its slot.
        self._stale: list[tuple[str, bytes]] = []
        # `publish_status` messages by mid: one is still a status while not
        # published (a mid of an acknowledged one may be reused by any message).
        # Not taken off by `_on_publish`: paho may call it before `publish`
        # has returned the mid here.
        self._statuses: dict[int, paho.MQTTMessageInfo] = {}
        self._session = threading.Lock()  # connections, connected, _stale, paho's queue
        self._closing = False
        self._event_ids = event_ids
        self._will_retain = True
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._acked = threading.Condition()
        self._connack = threading.Event()
        self._disconnected = threading.Event()
        self._refused: str | None = None
        self._refused_code = 0
        self._client_id = client_id
        self._max_in_flight = max_in_flight
        # Event ids: this run's tag and the message's number, unique per gateway.
        self._tag = secrets.token_hex(6)
        self._numbers = itertools.count(1)
        self.mqtt5 = True
        self._client = self._new_client()

    def _new_client(self) -> paho.Client:
        protocol = paho.MQTTv5 if self.mqtt5 else paho.MQTTv311
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=protocol
        )
        client.max_inflight_messages_set(self._max_in_flight)
        client.reconnect_delay_set(1, 10)
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            client.tls_set_context(ssl.create_default_context())
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _properties(self) -> Properties | None:
        """A new message's PUBLISH properties: its own event id (MQTT 5)."""
        if not self.mqtt5 or not self._event_ids:
            return None
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = (EVENT_ID_PROPERTY, f"sim-{self._tag}-{next(self._numbers)}")
        return properties

    @property
    def in_flight(self) -> int:
        return self.published - self.acknowledged

    def listen(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Subscribe (QoS 1) to `topic` on every connection; `handler(payload)`
        runs on paho's thread. Before `connect`."""
        self._listening[topic] = handler

    def connect(self, will_topic: str, will_payload: bytes, will_retain: bool = True) -> None:
        """Connect with the Last Will; raises CannotConnect if the broker won't have us.

        MQTT 5 first. A broker that speaks only 3.1.1 refuses it ("Unsupported
        protocol version"), or never answers (amqtt, given a CONNECT with a
        Will): then 3.1.1."""
        self._will_retain = will_retain
        if not self._connect(will_topic, will_payload, MQTT5_WAIT_SECONDS):
            if self._refused_code not in (0, UNSUPPORTED_PROTOCOL_VERSION):
                raise CannotConnect(
                    f"the MQTT broker at {self.broker.url} refused us: {self._refused}"
                )
            self.mqtt5, self._refused, self._refused_code = False, None, 0
            self._connack.clear()
            self._client = self._new_client()
            if not self._connect(will_topic, will_payload, CONNECT_TIMEOUT_SECONDS):
                raise CannotConnect(
                    f"the MQTT broker at {self.broker.url} refused us: {self._refused}"
                )

    def _connect(self, will_topic: str, will_payload: bytes, seconds: float) -> bool:
        """One attempt with the current client; False (and `_refused` says why) if refused."""
        # The Will has no event id: the broker sends it at most once.
        self._client.will_set(will_topic, will_payload, qos=1, retain=self._will_retain)
        try:
            self._client.connect(self.broker.host, self.broker.port, KEEPALIVE_SECONDS)
        except (OSError, ssl.SSLError) as exc:
            raise CannotConnect(
                f"cannot reach the MQTT broker at {self.broker.url} ({exc.strerror or exc}); "
                "is `edgesense up` (which starts one) or mosquitto running?"
            ) from exc
        self._client.loop_start()
        if not self._connack.wait(seconds):
            self._refused = f"no CONNACK within {seconds:g} s"
        if self._refused is None:
            return True
        # Stopped before paho's next attempt; the connection is closed, not left hanging.
        self._client.loop_stop()
        sock = self._client.socket()
        if sock is not None:
            sock.close()
        return False

    def publish(
        self, topic: str, payload: bytes, wait: float = 0.25, connection: int | None = None
    ) -> bool:
        """Publish once a slot is free; False if none freed up within `wait` seconds.

        With `connection` (`fresh_sessions`), a message for an older connection
        than the current one, or sent while disconnected, is held back for
        `take_stale` instead: published (counted) all the same."""
        if not self._slots.acquire(timeout=wait):
            return False
        with self._session:
            self.published += 1
            if not self._current(connection):
                self._stale.append((topic, payload))
                return True
            # Queued by paho while reconnecting (and sent once connected again,
            # unless `fresh_sessions` holds it back then).
            self._client.publish(topic, payload, qos=1, properties=self._properties())
        return True

    def resend(self, topic: str, payload: bytes, connection: int) -> None:
        """Publish again a message `take_stale` gave back (still counted, its
        slot held); if `connection` is not current either, it is held back again."""
        with self._session:
            if not self._current(connection):
                self._stale.append((topic, payload))
                return
            self._client.publish(topic, payload, qos=1, properties=self._properties())

    def take_stale(self) -> list[tuple[str, bytes]]:
        """The counted messages held back from older connections (topic,
        payload), oldest first; the caller `resend`s them. Called for every
        message the schedule sends: nothing held back (the common case)
        answers without the lock (`_stale` only grows under it, and the next
        call looks again)."""
        if not self._stale:
            return []
        with self._session:
            stale, self._stale = self._stale, []
        return stale

    def send(self, topic: str, payload: bytes, connection: int | None = None) -> bool:
        """Publish at QoS 0 a message that is not counted (a Sparkplug birth or
        death), without waiting for a slot; False if it was not sent: while
        disconnected (lost, as Sparkplug expects of QoS 0), or `connection` is
        not the current one. QoS 0 only: the PUBACK of a QoS 1 message would
        run `_on_publish` under paho's lock that `publish` here waits for."""
        with self._session:
            if not self._current(connection):
                return False
            with self._uncounted_lock:  # on_publish may run before we know the mid
                info = self._client.publish(topic, payload, qos=0, properties=self._properties())
                if info.rc == paho.MQTT_ERR_SUCCESS:
                    self._uncounted.add(info.mid)
                    return True
        return False

    def _current(self, connection: int | None) -> bool:
        """Whether a message for `connection` may go to paho now (under `_session`)."""
        return connection is None or (self.connected and connection == self.connections)

    def publish_status(
        self, topic: str, payload: bytes, seconds: float, retain: bool = True
    ) -> bool:
        """Publish a (by default retained) gateway status and wait for its PUBACK.

        It is not counted: the counters are the device messages'. One that is
        not acknowledged in time stays counted as in flight.
        """
        if not self._slots.acquire(timeout=seconds):
            return False
        with self._session:
            self.published += 1
            info = self._client.publish(
                topic, payload, qos=1, retain=retain, properties=self._properties()
            )
            # `fresh_sessions` drops it on a reconnect (the old connection's
            # status means nothing on the new one), and frees its slot.
            self._statuses[info.mid] = info
        try:
            info.wait_for_publish(seconds)
        except (RuntimeError, ValueError):
            return False  # not connected: paho sends it once it is again
        if not info.is_published():
            return False
        with self._session:
            if self._statuses.get(info.mid) is info:
                del self._statuses[info.mid]
        with self._acked:
            self.published -= 1
            self.acknowledged -= 1
        return True

    def wait_acknowledged(self, seconds: float) -> bool:
        """Wait up to `seconds` until every message published is acknowledged."""
        with self._acked:
            return self._acked.wait_for(lambda: self.in_flight == 0, seconds)

    def close(self) -> None:
        """A clean DISCONNECT (the broker drops the Will), then stop paho's thread."""
        self._closing = True
        self._disconnected.clear()
        self._client.disconnect()
        # paho's thread writes the DISCONNECT; stopping it first could lose it.
        self._disconnected.wait(CONNECT_TIMEOUT_SECONDS)
        self._client.loop_stop()

    def _on_connect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._refused, self._refused_code = str(reason), reason.value
        else:
            # A new session each time (clean start): subscribe again.
            for topic in self._listening:
                self._client.subscribe(topic, qos=1)
            with self._session:
                if self.fresh_sessions and self.connections:
                    # Before paho resends them, which it does once this returns.
                    # They are older than any held back while disconnected: first.
                    stale: list[tuple[str, bytes]] = []
                    dropped_statuses = 0
                    for message in self._client.drop_out_messages():
                        status = self._statuses.get(message.mid)
                        if status is not None and not status.is_published():
                            # A status of the old connection means nothing on
                            # the new one: it is dropped, and its slot freed.
                            del self._statuses[message.mid]
                            dropped_statuses += 1
                        else:
                            stale.append((message.topic, bytes(message.payload)))
                    self._stale[:0] = stale
                    if dropped_statuses:
                        with self._acked:
                            self.published -= dropped_statuses
                        for _ in range(dropped_statuses):
                            self._slots.release()
                with self._uncounted_lock:
                    # `send`s of the old connection: paho sent them, and
                    # `_on_publish` took them off, or lost them with it.
                    self._uncounted.clear()
                self.connected = True
                self.connections += 1
        self._connack.set()

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
        self.connected = False
        if self.next_will is not None and not self._closing and self.connections:
            will_topic, will_payload = self.next_will()
            self._client.will_set(will_topic, will_payload, qos=1, retain=self._will_retain)
        self._disconnected.set()

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        handler = self._listening.get(message.topic)
        if handler is not None:
            handler(bytes(message.payload))

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        with self._uncounted_lock:
            if mid in self._uncounted:
                self._uncounted.discard(mid)
                return
        with self._acked:
            self.acknowledged += 1
            self._acked.notify_all()
        self._slots.release()


def client_id(gateway: str) -> str:
    """Unique per process: two simulators of one gateway must not kick each other off."""
    return f"edgesense-sim-{gateway}-{os.getpid()}"[:64]
