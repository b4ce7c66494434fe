"""paho-mqtt 2 driven by the asyncio loop, for the publisher, the baseline and probes.

paho's network loop runs through its socket callbacks (as aiomqtt and the
bridge do), so publishing, PUBACKs and incoming messages all happen on the
loop's thread with no locks. Incoming QoS 1 messages are acknowledged by the
caller (`manual_ack`), after its work is done, and `pause_reading` stops
taking messages from the socket when the caller holds enough of them.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

READ_BURST = 64
MessageHandler = Callable[[paho.MQTTMessage], None]


class MqttClient:
    """One MQTT connection to 127.0.0.1:`port`, served by the running loop.

    MQTT 5 by default, as the bridge; with `mqtt5=False`, 3.1.1 (no receive
    maximum: the broker's `max_inflight_messages` bounds the window, and a
    `session_expiry` means a persistent session, clean session off).
    """

    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        on_message: MessageHandler | None = None,
        receive_maximum: int = 1000,
        session_expiry: int = 0,
        mqtt5: bool = True,
    ) -> None:
        self.port = port
        self.mqtt5 = mqtt5
        self.receive_maximum = receive_maximum
        self.session_expiry = session_expiry
        self.on_published: Callable[[int], None] = lambda mid: None
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if mqtt5 else session_expiry == 0,
            protocol=paho.MQTTv5 if mqtt5 else paho.MQTTv311,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        self._client.max_inflight_messages_set(65535)
        self._client.max_queued_messages_set(0)
        self._loop = asyncio.get_running_loop()
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self._suback: asyncio.Future[None] | None = None
        self._sock: socket.socket | None = None
        self._paused = False
        self._misc: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        c = self._client
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *args: self._resolve(self._suback)
        c.on_publish = lambda _c, _u, mid, *rest: self.on_published(mid)
        c.on_disconnect = lambda *args: self.closed.set()
        if on_message is not None:
            c.on_message = lambda _c, _u, message: on_message(message)
        c.on_socket_open = self._socket_open
        c.on_socket_close = self._socket_close
        c.on_socket_register_write = lambda _c, _u, sock: self._loop.add_writer(
            sock, self._client.loop_write
        )
        c.on_socket_unregister_write = self._unregister_write

    async def connect(self) -> None:
        if not self.mqtt5:
            self._client.connect("127.0.0.1", self.port, keepalive=60)
            await asyncio.wait_for(self._connack, 10)
            return
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.ReceiveMaximum = self.receive_maximum
        if self.session_expiry:
            properties.SessionExpiryInterval = self.session_expiry
        self._client.connect(
            "127.0.0.1",
            self.port,
            keepalive=60,
            clean_start=self.session_expiry == 0,
            properties=properties,
        )
        await asyncio.wait_for(self._connack, 10)

    async def subscribe(self, topic: str) -> None:
        self._suback = self._loop.create_future()
        self._client.subscribe(topic, qos=1)
        await asyncio.wait_for(self._suback, 10)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Queue a publish; `on_published(mid)` runs when its PUBACK arrives
        (QoS 0: once paho has written it)."""
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish failed: {paho.error_string(info.rc)}")
        return info.mid

    def ack(self, mid: int) -> None:
        self._client.ack(mid, 1)

    def pause_reading(self) -> None:
        if not self._paused and self._sock is not None:
            self._loop.remove_reader(self._sock)
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused and self._sock is not None:
            self._loop.add_reader(self._sock, self._read)
        self._paused = False

    async def disconnect(self) -> None:
        if self._sock is not None:
            self._client.disconnect()
            await asyncio.wait_for(self.closed.wait(), 5)

    def _on_connect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            if not self._connack.done():
                self._connack.set_exception(ConnectionError(f"CONNACK: {reason}"))
            return
        self._resolve(self._connack)

    @staticmethod
    def _resolve(future: asyncio.Future[None] | None) -> None:
        if future is not None and not future.done():
            future.set_result(None)

    def _read(self) -> None:
        self._client.loop_read(READ_BURST)

    def _socket_open(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._sock = sock
        if not self._paused:
            self._loop.add_reader(sock, self._read)
        self._misc = self._loop.create_task(self._misc_loop())

    def _socket_close(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        self._sock = None
        if self._misc is not None:
            self._misc.cancel()
        self.closed.set()

    def _unregister_write(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._loop.remove_writer(sock)

    async def _misc_loop(self) -> None:
        # A timer (keepalive pings), not a wait for a condition.
        while self._client.loop_misc() == paho.MQTT_ERR_SUCCESS:  # noqa: ASYNC110
            await asyncio.sleep(1)
