"""paho-mqtt 2 on the asyncio loop: the only module that speaks MQTT (paho_properties
only makes paho's decoding of MQTT 5 properties cheaper).

Why paho and not aiomqtt: aiomqtt 2.x acknowledges QoS 1 messages on receipt
(aiomqtt#345); paho 2 has `manual_ack=True` and `ack(mid, qos)`, so a message
is acknowledged only once delivery stored its event. paho's network loop runs
on the asyncio loop through its socket callbacks (as aiomqtt does): acks,
publishes and message callbacks all happen on one thread, without locks.

What `MqttConnection` guarantees:
- a persistent session: stable client id, MQTT 5 clean start off with a session
  expiry (3.1.1: clean session off), the QoS 1 subscriptions renewed on every
  connection; reconnects forever with backoff and jitter, logging each attempt;
- a `Presence` (Sparkplug's host STATE), when configured: its offline message
  is the Will of every connection, its online one published once all
  subscriptions are granted, its offline one published on `close()` before the
  DISCONNECT (a clean DISCONNECT discards the Will), all with the timestamp
  chosen for that connection;
- `ack(receipt)` sends PUBACK only on the connection the message came in on.
  After a reconnect the broker resends unacknowledged messages under their
  packet ids and may reuse an id once it is acknowledged, so a late ack on a
  newer connection could acknowledge another message: it is dropped instead;
- a broker that does not speak the configured protocol version (it refuses
  MQTT 5, or answers only an MQTT 3.1.1 CONNECT: amqtt) ends `run()` with
  `ProtocolRefused`, a configuration error naming EDGESENSE_MQTT_PROTOCOL,
  instead of retrying forever;
- `wait_ready(ready)`: the bridge's gRPC health follows the connection
  (ready = connected and every subscription granted);
- a bounded window: MQTT 5 receive maximum, plus `pause_reading()` for a broker
  that overshoots it (Mosquitto 2.0.11 sends up to a whole window more per
  PUBACK, as measured here; cf. eclipse-mosquitto/mosquitto#2301). While paused,
  ping responses go unread: a pause longer than about twice the keepalive ends
  in a reconnect, after which the broker resends what we had not acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgesense.common.backoff import backoff_delay
from edgesense.common.mqtt_probe import speaks_only_311
from edgesense_bridge import metrics, paho_properties
from edgesense_bridge.errors import MqttUnavailable, ProtocolRefused
from edgesense_bridge.inbound import (
    InboundMessage,
    MessageHandler,
    MqttOptions,
    Receipt,
    SessionHandler,
)
from edgesense_bridge.parsing import RawMessage
from edgesense_bridge.version_evidence import VersionEvidence

log = logging.getLogger(__name__)
if not paho_properties.install():  # every PUBLISH received: see paho_properties.py
    log.info("mqtt: paho's decoders are not where paho 2.2 has them; its own properties are used")

CONNACK_TIMEOUT_SECONDS = 10.0
PUBLISH_TIMEOUT_SECONDS = 10.0
READ_BURST = 64
STABLE_SECONDS = 10.0  # a connection that lasted this long resets the reconnect backoff
UNSUPPORTED_VERSION = "Unsupported protocol version"  # paho's name for CONNACK 0x84 (and 3.1.1's 1)
NO_ANSWER = ("no CONNACK in time", "the connection closed")
Props = Properties | None


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails: paho's `_ssl_wrap_socket` leaves it open."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.sslsocket_class = _ClosingSSLSocket
    return context


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


class MqttConnection:
    def __init__(
        self, options: MqttOptions, on_message: MessageHandler, on_session: SessionHandler
    ) -> None:
        self.options = options
        self._on_message = on_message
        self._on_session = on_session
        self._client = self._make_client()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._epoch = 0
        self._connected = False
        self._versions = VersionEvidence()  # may a silent broker mean "no MQTT 5"?
        self._connack: asyncio.Future[str] | None = None
        self._lost = asyncio.Event()
        self._closing = asyncio.Event()
        self._fd: int | None = None
        self._paused = False
        self._received = 0  # messages handed over, to see whether a read made progress
        self._publishes: dict[int, asyncio.Future[None]] = {}
        self._presence_ms = 0  # the timestamp of this connection's Will and presence messages
        self.subscribed = asyncio.Event()  # set by SUBACK, cleared when the connection is lost

    @property
    def connected(self) -> bool:
        return self._connected

    async def wait_ready(self, ready: bool) -> None:
        """Return once the connection is ready (connected and subscribed) or, with
        False, once it is not."""
        while self.subscribed.is_set() != ready:
            # `_lost` is the current connection's while subscribed is set
            await (self.subscribed.wait() if ready else self._lost.wait())

    def _make_client(self) -> paho.Client:
        opts = self.options
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=opts.client_id,
            clean_session=None if opts.mqtt5 else False,
            protocol=paho.MQTTv5 if opts.mqtt5 else paho.MQTTv311,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        if opts.broker.username is not None:
            client.username_pw_set(opts.broker.username, opts.broker.password)
        if opts.broker.tls:
            client.tls_set_context(_tls_context(opts.ca_file))
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        client.on_publish = self._handle_publish
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        return client

    async def run(self) -> None:
        """Stay connected until `close()`: connect, serve, reconnect with backoff."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        opts, attempt = self.options, 0
        while not self._closing.is_set():
            attempt += 1
            log.info(
                "mqtt: connecting to %s as %r (attempt %d)", opts.broker, opts.client_id, attempt
            )
            try:
                await self._connect()
            except MqttUnavailable as exc:
                metrics.MQTT_CONNECT_ATTEMPTS.labels("failed").inc()
                await self._back_off(attempt, exc.message)
                continue
            metrics.MQTT_CONNECT_ATTEMPTS.labels("connected").inc()
            connected_at = time.monotonic()
            while not self._lost.is_set():
                try:
                    await asyncio.wait_for(self._lost.wait(), 1.0)
                except TimeoutError:
                    self._client.loop_misc()  # keepalive pings; notices a silent broker
            if time.monotonic() - connected_at > STABLE_SECONDS:
                attempt = 0  # a connection that held starts the backoff over; a flapping one not
            if not self._closing.is_set():
                await self._back_off(attempt + 1, "the connection was lost")
        if self._client.socket() is not None:  # closed while connecting
            self._client.disconnect()
            self._client.loop_write()

    async def _back_off(self, attempt: int, why: str) -> None:
        opts = self.options
        delay = backoff_delay(attempt, opts.reconnect_min_seconds, opts.reconnect_max_seconds)
        log.warning("mqtt: %s; retrying in %.1f s", why, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)

    async def _connect(self) -> None:
        assert self._loop is not None
        self._lost = asyncio.Event()
        self._connack = self._loop.create_future()
        opts = self.options
        if opts.presence is not None:  # the Will is part of the CONNECT
            self._presence_ms = time.time_ns() // 1_000_000
            will = opts.presence.payload(False, self._presence_ms)
            self._client.will_set(opts.presence.topic, will, qos=1, retain=True)
        try:  # connect() blocks on DNS, TCP and TLS: keep it off the loop
            await asyncio.to_thread(self._blocking_connect)
        except (OSError, ValueError) as exc:
            self._versions.failed()
            raise MqttUnavailable(f"cannot connect to {opts.broker}: {exc}") from exc
        try:
            refused = await asyncio.wait_for(self._connack, CONNACK_TIMEOUT_SECONDS)
        except TimeoutError:
            refused = "no CONNACK in time"
        if refused:
            self._client.disconnect()
            if opts.mqtt5 and refused == UNSUPPORTED_VERSION and self._versions.wrong_version():
                raise ProtocolRefused(opts.broker, f"it refused MQTT 5: {refused}")
            if opts.mqtt5 and refused in NO_ANSWER and self._versions.may_conclude():
                if self._versions.unanswered(await self._only_311()):
                    raise ProtocolRefused(
                        opts.broker,
                        f"{refused} to an MQTT 5 CONNECT; it answers MQTT 3.1.1"
                        f" ({self._versions.strikes} attempts in a row)",
                    )
            else:
                self._versions.failed()
            raise MqttUnavailable(f"{opts.broker} did not accept the connection: {refused}")

    async def _only_311(self) -> bool:
        """After an MQTT 5 CONNECT went unanswered: does the broker answer 3.1.1 only?"""
        opts = self.options
        tls = _tls_context(opts.ca_file) if opts.broker.tls else None
        return await asyncio.to_thread(speaks_only_311, opts.broker.host, opts.broker.port, tls)

    def _blocking_connect(self) -> None:
        opts = self.options
        host, port, keepalive = opts.broker.host, opts.broker.port, opts.keepalive_seconds
        if not opts.mqtt5:
            self._client.connect(host, port, keepalive)
            return
        properties = _properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = opts.session_expiry_seconds
        properties.ReceiveMaximum = opts.receive_maximum
        self._client.connect(host, port, keepalive, clean_start=False, properties=properties)

    async def close(self, grace: float = 2.0) -> None:
        """Disconnect cleanly; the session, with whatever we did not ack, stays at the broker."""
        self._closing.set()
        if self._client.socket() is not None:
            if self._connected:
                # Not waiting for its PUBACK (reading may be paused): the broker
                # takes the PUBLISH before the DISCONNECT that follows it on the socket.
                self._publish_presence(online=False)
            self._client.disconnect()
            try:
                await asyncio.wait_for(self._lost.wait(), grace)
            except TimeoutError:
                log.warning("mqtt: no clean disconnect within %.1f s", grace)
        self._set_lost()

    def ack(self, receipt: Receipt) -> bool:
        """PUBACK one message; False if its connection is gone (the broker resends it)."""
        if receipt.qos == 0:
            return True
        if receipt.epoch != self._epoch or not self._connected:
            return False
        self._client.ack(receipt.mid, receipt.qos)
        return True

    async def publish(self, topic: str, payload: bytes, content_type: str | None = None) -> None:
        """Publish with QoS 1, not retained, and wait for the broker's PUBACK."""
        if self._loop is None:
            raise MqttUnavailable("not connected to the MQTT broker")
        info = self._send(topic, payload, 1, content_type)
        future: asyncio.Future[None] = self._loop.create_future()
        self._publishes[info.mid] = future
        try:
            await asyncio.wait_for(future, PUBLISH_TIMEOUT_SECONDS)
        except TimeoutError:
            raise MqttUnavailable("the broker did not acknowledge the publish in time") from None
        finally:
            self._publishes.pop(info.mid, None)

    def publish_now(self, topic: str, payload: bytes) -> None:
        """Publish with QoS 0, not retained: handed to the connection, no ack to
        wait for (a Sparkplug rebirth request). Raises MqttUnavailable."""
        self._send(topic, payload, 0, None)

    def reassert_presence(self) -> None:
        """Publish the online presence message again, with this connection's
        timestamp: Sparkplug 3.0 has a host that sees an offline STATE on its
        own topic (a late Will of an older connection, another process with
        the same host id) publish online again at once."""
        if self._connected and self.subscribed.is_set() and not self._closing.is_set():
            self._publish_presence(online=True)

    def _send(
        self, topic: str, payload: bytes, qos: int, content_type: str | None
    ) -> paho.MQTTMessageInfo:
        if not self._connected:
            raise MqttUnavailable("not connected to the MQTT broker")
        properties = None
        if self.options.mqtt5 and content_type is not None:
            properties = _properties(PacketTypes.PUBLISH)
            properties.ContentType = content_type
        info = self._client.publish(topic, payload, qos=qos, properties=properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise MqttUnavailable(f"publish failed: {paho.error_string(info.rc)}")
        return info

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            metrics.READING_PAUSED.set(1)
            if self._loop is not None and self._fd is not None:
                self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            metrics.READING_PAUSED.set(0)
            if self._loop is not None and self._fd is not None:
                self._loop.add_reader(self._fd, self._readable)
                self._loop.call_soon(self._readable)  # TLS may hold decrypted bytes

    # paho callbacks: on the loop thread (socket ones may come from connect's thread)

    def _handle_connect(
        self, client: paho.Client, _: Any, flags: Any, reason: Any, p: Props
    ) -> None:
        if self._connack is None or self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_result(str(reason))
            return
        self._epoch += 1
        self._connected = True
        self._versions.connected()
        metrics.MQTT_CONNECTED.set(1)
        topics, session = self.options.subscriptions, "resumed" if flags.session_present else "new"
        log.info(
            "mqtt: connected to %s (%s session), subscribing to %s",
            self.options.broker,
            session,
            ", ".join(topics),
        )
        if self.options.mqtt5:  # retained messages are old state: only on a new subscription
            retain = SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
            options = SubscribeOptions(qos=1, retainHandling=retain)
            client.subscribe([(topic, options) for topic in topics])
        else:
            client.subscribe([(topic, 1) for topic in topics])
        self._on_session(self._epoch, bool(flags.session_present))
        self._connack.set_result("")

    def _handle_disconnect(self, _c: paho.Client, _: Any, _f: Any, reason: Any, _p: Props) -> None:
        if self._connected and not self._closing.is_set():
            log.warning("mqtt: disconnected from %s: %s", self.options.broker, reason)
        elif self._connected:  # our own clean stop: no warning
            log.info("mqtt: disconnected from %s", self.options.broker)
        self._set_lost()

    def _set_lost(self) -> None:
        self._connected = False
        self.subscribed.clear()
        metrics.MQTT_CONNECTED.set(0)
        if self._connack is not None and not self._connack.done():
            self._connack.set_result("the connection closed")
        for future in self._publishes.values():
            if not future.done():
                future.set_exception(MqttUnavailable("the broker connection was lost"))
        self._lost.set()

    def _handle_subscribe(self, _c: paho.Client, _: Any, _m: int, reasons: Any, _p: Props) -> None:
        refused = False
        for topic, reason in zip(self.options.subscriptions, reasons, strict=False):
            if reason.is_failure:
                refused = True
                log.error("mqtt: the broker refused the subscription %s: %s", topic, reason)
        if not refused:
            self._publish_presence(online=True)
            self.subscribed.set()

    def _publish_presence(self, online: bool) -> None:
        """Fire and forget: if it is lost with the connection, the Will says offline
        and the next connection publishes online again."""
        presence = self.options.presence
        if presence is not None:
            payload = presence.payload(online, self._presence_ms)
            self._client.publish(presence.topic, payload, qos=1, retain=True)

    def _handle_publish(self, _c: paho.Client, _: Any, mid: int, reason: Any, _p: Props) -> None:
        future = self._publishes.get(mid)
        if future is None or future.done():
            return
        if reason.is_failure:
            future.set_exception(MqttUnavailable(f"the broker refused the publish: {reason}"))
        else:
            future.set_result(None)

    def _handle_message(self, _c: paho.Client, _: Any, message: paho.MQTTMessage) -> None:
        properties = message.properties
        raw = RawMessage(
            topic=message._topic,  # bytes: `.topic` raises on invalid UTF-8; we count it
            payload=bytes(message.payload),
            received_ns=time.time_ns(),
            content_type=getattr(properties, "ContentType", None),
            user_properties=tuple(getattr(properties, "UserProperty", None) or ()),
            retain=bool(message.retain),
        )
        receipt = Receipt(self._epoch, message.mid, message.qos)
        self._received += 1
        self._on_message(InboundMessage(raw, receipt, bool(message.dup)))

    # sockets: paho says when to watch them

    def _in_loop(self, callback: Callable[[], object]) -> None:
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            callback()
        else:
            self._loop.call_soon_threadsafe(callback)

    def _socket_open(self, _c: paho.Client, _: Any, sock: Any) -> None:
        fd = sock.fileno()

        def watch() -> None:
            assert self._loop is not None
            # A new connection reads (its CONNACK must get through); the bridge
            # pauses it again if it still holds too much.
            self._fd, self._paused = fd, False
            metrics.READING_PAUSED.set(0)
            self._loop.add_reader(fd, self._readable)

        self._in_loop(watch)

    def _socket_close(self, _c: paho.Client, _: Any, sock: Any) -> None:
        fd = sock.fileno()

        def unwatch() -> None:
            assert self._loop is not None
            if fd >= 0:
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
            if self._fd == fd:
                self._fd = None

        self._in_loop(unwatch)

    def _register_write(self, _c: paho.Client, _: Any, sock: Any) -> None:
        fd, loop = sock.fileno(), self._loop
        if loop is not None:
            self._in_loop(lambda: loop.add_writer(fd, self._writable))

    def _unregister_write(self, _c: paho.Client, _: Any, sock: Any) -> None:
        fd, loop = sock.fileno(), self._loop
        if loop is not None:
            self._in_loop(lambda: loop.remove_writer(fd))

    def _readable(self) -> None:
        try:
            # paho reads one packet per loop_read(); taking up to READ_BURST messages per
            # wakeup saves an event-loop turn per message (~+50% throughput, measured).
            for _ in range(READ_BURST):
                if self._paused or self._client.socket() is None:
                    return
                before = self._received
                self._client.loop_read()
                if self._received == before:  # no whole message (or another packet): wait
                    break
            # TLS may hold decrypted bytes the selector does not see (paho.mqtt.python#131).
            sock = self._client.socket()
            while isinstance(sock, ssl.SSLSocket) and sock.pending() and not self._paused:
                self._client.loop_read()
                sock = self._client.socket()
        except Exception:
            log.exception("mqtt: reading from the broker failed")
            self._drop()

    def _writable(self) -> None:
        try:
            self._client.loop_write()
        except Exception:
            log.exception("mqtt: writing to the broker failed")
            self._drop()

    def _drop(self) -> None:
        self._client.disconnect()
        self._set_lost()
