"""The interface between the MQTT adapter and the rest of the bridge, free of paho.

The adapter hands over each message as an `InboundMessage`: the raw message
(see `parsing.RawMessage`) and a `Receipt`, which is what acknowledging it
takes. The bridge gives the adapter back receipts once delivery stored the events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edgesense.common.config import BrokerUrl
from edgesense_bridge.parsing import RawMessage


@dataclass(frozen=True)
class Receipt:
    """Acknowledges one message: its connection (epoch), packet id and QoS."""

    epoch: int
    mid: int
    qos: int


@dataclass(frozen=True)
class InboundMessage:
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
class MqttOptions:
    broker: BrokerUrl
    client_id: str
    subscription: str
    mqtt5: bool = True
    session_expiry_seconds: int = 86400
    keepalive_seconds: int = 30
    receive_maximum: int = 1000
    ca_file: str | None = None
    reconnect_min_seconds: float = 0.5
    reconnect_max_seconds: float = 30.0
