"""The interface between the MQTT adapter and the rest of the bridge, free of paho.

The adapter hands over each message as an `InboundMessage`: the raw message
(see `parsing.RawMessage`) and a `Receipt`, which is what acknowledging it
takes. The bridge gives the adapter back receipts once delivery stored the events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from edgesense.common.config import BrokerUrl
from edgesense_bridge.parsing import RawMessage


class Receipt(NamedTuple):
    """Acknowledges one message: its connection (epoch), packet id and QoS."""

    epoch: int
    mid: int
    qos: int


class InboundMessage(NamedTuple):
    raw: RawMessage
    receipt: Receipt
    dup: bool = False


class MessageHandler(Protocol):
    def __call__(self, message: InboundMessage) -> None: ...


class SessionHandler(Protocol):
    """Called after each CONNACK, before the first message of that connection."""

    def __call__(self, epoch: int, session_present: bool) -> None: ...


class Acknowledger(Protocol):
    """What the bridge needs from the adapter to close the loop."""

    def ack(self, receipt: Receipt) -> bool: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


@dataclass(frozen=True)
class Presence:
    """A retained online/offline message kept up to date with the broker's help
    (Sparkplug 3.0's host STATE): before each CONNECT the offline one is our
    Will; once subscribed we publish the online one; on a clean stop, the
    offline one. All three of a connection carry the same timestamp (ms),
    which is how an edge node tells a stale offline from a current one."""

    topic: str
    payload: Callable[[bool, int], bytes]  # (online, timestamp_ms) -> payload


@dataclass(frozen=True)
class MqttOptions:
    """`subscriptions`: every topic filter, subscribed in one SUBSCRIBE; the
    connection is ready once the broker granted all of them."""

    broker: BrokerUrl
    client_id: str
    subscriptions: tuple[str, ...]
    mqtt5: bool = True
    session_expiry_seconds: int = 86400
    keepalive_seconds: int = 30
    receive_maximum: int = 1000
    ca_file: str | None = None
    reconnect_min_seconds: float = 0.5
    reconnect_max_seconds: float = 30.0
    presence: Presence | None = None
