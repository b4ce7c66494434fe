"""The bridge's exceptions, under the project's tree (`edgesense.common.errors`).

    EdgesenseError
    ├── Unavailable
    │   └── MqttUnavailable      (no broker connection, or it did not confirm a publish)
    ├── ConfigurationError
    │   └── ProtocolRefused      (the broker does not speak EDGESENSE_MQTT_PROTOCOL)
    └── DeliveryStreamError      (the Publish stream to delivery ended; retried)

Malformed MQTT messages are not exceptions that leave `parsing`: they come
back as a `Rejected` value with a reason, because rejecting is a normal outcome.
paho-mqtt and grpc.aio errors are translated where they enter our code
(`mqtt_adapter`, `forwarder`).
"""

from __future__ import annotations

import grpc

from edgesense.common.errors import ConfigurationError, EdgesenseError, Unavailable


class MqttUnavailable(Unavailable):
    """The broker is not connected, or did not acknowledge a publish in time."""


class ProtocolRefused(ConfigurationError):
    """The broker refused the MQTT version we speak, or answers only MQTT 3.1.1.

    Retrying cannot help: the message says which setting to change.
    """

    def __init__(self, broker: object, why: str) -> None:
        super().__init__(
            f"the MQTT broker at {broker} does not speak MQTT 5 ({why}): set "
            "EDGESENSE_MQTT_PROTOCOL=3.1.1 (and lose what needs MQTT 5: the event-id "
            "user property, content types), or use a broker that speaks MQTT 5"
        )


class DeliveryStreamError(EdgesenseError):
    """The Publish stream to the delivery service failed; `status` says how."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.status = code

    @property
    def backpressure(self) -> bool:
        """Delivery asked us to slow down (its outbox is saturated)."""
        return self.status == grpc.StatusCode.RESOURCE_EXHAUSTED
