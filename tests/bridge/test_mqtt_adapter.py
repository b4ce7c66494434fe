"""The paho adapter against a real Mosquitto: acks only when asked, only on the
connection a message came in on; sessions survive; reconnects; TLS and passwords."""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from edgesense.common.config import BrokerUrl
from edgesense_bridge.errors import MqttUnavailable
from edgesense_bridge.inbound import InboundMessage, MqttOptions
from edgesense_bridge.mqtt_adapter import MqttConnection
from tests.bridge.conftest import sample
from tests.support.broker import Gateway, Mosquitto
from tests.support.waiting import eventually


@dataclass
class Recorder:
    messages: list[InboundMessage] = field(default_factory=list)
    sessions: list[tuple[int, bool]] = field(default_factory=list)

    def on_message(self, message: InboundMessage) -> None:
        self.messages.append(message)

    def on_session(self, epoch: int, session_present: bool) -> None:
        self.sessions.append((epoch, session_present))

    async def wait(self, count: int) -> None:
        await eventually(lambda: len(self.messages) >= count, 5, f"{count} messages")


def options(url: str, prefix: str, client_id: str, **extra: object) -> MqttOptions:
    return MqttOptions(
        broker=BrokerUrl.parse(url),
        client_id=client_id,
        subscriptions=(f"{prefix}/#",),
        reconnect_min_seconds=0.1,
        reconnect_max_seconds=0.5,
        **extra,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def connected(
    opts: MqttOptions, recorder: Recorder, wait: bool = True
) -> AsyncIterator[MqttConnection]:
    connection = MqttConnection(opts, recorder.on_message, recorder.on_session)
    task = asyncio.create_task(connection.run())
    try:
        if wait:
            await asyncio.wait_for(connection.subscribed.wait(), 5)
        yield connection
    finally:
        await connection.close()
        await asyncio.wait_for(task, 5)


MARKER = b'{"marker": true}'


def failed_attempts() -> float:
    return sample("edgesense_bridge_mqtt_connect_attempts_total", result="failed")


def readable(sock: socket.socket, seconds: float) -> bool:
    """Whether bytes wait unread in `sock` (within `seconds`)."""
    return bool(select.select([sock], [], [], seconds)[0])


def messages(prefix: str, count: int) -> list[tuple[str, bytes, None]]:
    return [(f"{prefix}/p/g/d/data", b'{"n": %d}' % n, None) for n in range(count)]


async def test_unacknowledged_messages_come_back_on_the_resumed_session(
    mosquitto: Mosquitto, gateway: Gateway, prefix: str
) -> None:
    opts = options(mosquitto.url, prefix, f"adapter-{uuid.uuid4().hex[:8]}")
    first = Recorder()
    async with connected(opts, first) as connection:
        await gateway.publish(messages(prefix, 3))
        await first.wait(3)
        assert connection.ack(first.messages[0].receipt)
    assert first.sessions == [(1, False)]
    second = Recorder()
    async with connected(opts, second) as connection:
        await second.wait(2)
        assert second.sessions == [(1, True)]
        assert [m.raw.payload for m in second.messages] == [b'{"n": 1}', b'{"n": 2}']
        assert all(m.dup for m in second.messages)
        assert [m.receipt.mid for m in second.messages] == [
            m.receipt.mid for m in first.messages[1:]
        ]
        for message in second.messages:
            assert connection.ack(message.receipt)
    third = Recorder()
    async with connected(opts, third):
        # The broker resends a session's unacknowledged messages at once on
        # reconnecting, before anything published later: once the marker is
        # here, anything left unacknowledged would be here too.
        await gateway.publish([(f"{prefix}/p/g/d/data", MARKER, None)])
        await third.wait(1)
        assert [m.raw.payload for m in third.messages] == [MARKER]


async def test_an_ack_from_an_earlier_connection_is_dropped(
    mosquitto: Mosquitto, gateway: Gateway, prefix: str
) -> None:
    recorder = Recorder()
    opts = options(mosquitto.url, prefix, f"adapter-{uuid.uuid4().hex[:8]}")
    async with connected(opts, recorder) as connection:
        await gateway.publish(messages(prefix, 1))
        await recorder.wait(1)
        old = recorder.messages[0]
        sock = connection._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # the network drops us; we reconnect
        await recorder.wait(2)
        assert recorder.sessions == [(1, False), (2, True)]
        again = recorder.messages[1]
        assert again.dup
        assert again.receipt.mid == old.receipt.mid
        assert again.receipt.epoch == 2
        assert not connection.ack(old.receipt), "a stale receipt must not be acknowledged"
        assert connection.ack(again.receipt)


async def test_publish_waits_for_the_broker(mosquitto: Mosquitto, prefix: str) -> None:
    recorder = Recorder()
    opts = options(mosquitto.url, prefix, f"adapter-{uuid.uuid4().hex[:8]}")
    connection = MqttConnection(opts, recorder.on_message, recorder.on_session)
    with pytest.raises(MqttUnavailable, match="not connected"):
        await connection.publish(f"{prefix}/x", b"{}", "application/json")
    async with connected(opts, recorder) as connection:
        await connection.publish(f"{prefix}/p/g/d/config/set", b'{"a": 1}', "application/json")
        await recorder.wait(1)
        assert recorder.messages[0].raw.content_type == "application/json"
        assert recorder.messages[0].raw.topic == f"{prefix}/p/g/d/config/set".encode()


async def test_paused_reading_holds_messages_until_resumed(
    mosquitto: Mosquitto, gateway: Gateway, prefix: str
) -> None:
    recorder = Recorder()
    opts = options(mosquitto.url, prefix, f"adapter-{uuid.uuid4().hex[:8]}")
    async with connected(opts, recorder) as connection:
        connection.pause_reading()
        await gateway.publish(messages(prefix, 5))
        sock = connection._client.socket()
        assert isinstance(sock, socket.socket)
        # The messages reach our socket (the loop is free meanwhile: it would
        # read them if reading were not paused, and they would never show here)...
        assert await asyncio.to_thread(readable, sock, 5), "nothing waits unread in the socket"
        # Two turns of the loop: in the first its selector sees the socket
        # ready and runs a reader after us, if one were registered.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # ...and stay there, unread.
        assert readable(sock, 0)
        assert recorder.messages == []
        connection.resume_reading()
        await recorder.wait(5)


async def test_receive_maximum_bounds_unacknowledged_messages(
    mosquitto: Mosquitto, gateway: Gateway, prefix: str
) -> None:
    recorder = Recorder()
    opts = options(mosquitto.url, prefix, f"adapter-{uuid.uuid4().hex[:8]}", receive_maximum=20)
    async with connected(opts, recorder) as connection:
        await gateway.publish(messages(prefix, 100))  # all 100 are at the broker
        await recorder.wait(20)
        # A round trip on the same connection as a marker: the broker handled
        # all 100 publishes before it answers ours, so whatever more it would
        # send us stands in our socket before this PUBACK, and is read first.
        await connection.publish(f"elsewhere/{prefix}", b"{}", "application/json")
        assert len(recorder.messages) == 20


async def test_reconnects_forever_with_backoff_and_logs_each_attempt(
    broker_factory: Callable[..., Mosquitto], prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edgesense_bridge.mqtt_adapter")
    broker = broker_factory()
    recorder = Recorder()
    opts = options(broker.url, prefix, f"adapter-{uuid.uuid4().hex[:8]}")
    async with connected(opts, recorder) as connection:
        broker.stop()
        await eventually(lambda: "(attempt 3)" in caplog.text, 5, "three attempts")
        assert not connection.connected
        assert "retrying in" in caplog.text
        broker.start()
        await asyncio.wait_for(connection.subscribed.wait(), 5)
        gateway = Gateway(broker.port, "gw-after-restart")
        try:
            await gateway.publish(messages(prefix, 1))
        finally:
            gateway.close()
        await recorder.wait(1)


async def test_mqtt_311_keeps_a_persistent_session(
    mosquitto: Mosquitto, gateway: Gateway, prefix: str
) -> None:
    opts = options(mosquitto.url, prefix, f"adapter-{uuid.uuid4().hex[:8]}", mqtt5=False)
    async with connected(opts, Recorder()):
        pass
    await gateway.publish(messages(prefix, 2))  # while the bridge is away
    recorder = Recorder()
    async with connected(opts, recorder):
        await recorder.wait(2)
        assert recorder.sessions == [(1, True)]


def _password_file(directory: Path, user: str, password: str) -> str:
    path = directory / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(path), user, password], check=True)
    path.chmod(0o600)
    return str(path)


async def test_tls_with_user_and_password_from_the_url(
    broker_factory: Callable[..., Mosquitto], tmp_path: Path, prefix: str
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    broker = broker_factory(
        tls=(str(ca_file), str(cert_file), str(key_file)),
        password_file=_password_file(tmp_path, "bridge", "s3cret:pass"),
    )
    good = f"mqtts://bridge:s3cret%3Apass@localhost:{broker.port}"
    recorder = Recorder()
    opts = options(good, prefix, f"adapter-{uuid.uuid4().hex[:8]}", ca_file=str(ca_file))
    async with connected(opts, recorder) as connection:
        await connection.publish(f"{prefix}/p/g/d/data", b"{}", "application/json")
        await recorder.wait(1)
    wrong = f"mqtts://bridge:nope@localhost:{broker.port}"
    opts = options(wrong, prefix, f"adapter-{uuid.uuid4().hex[:8]}", ca_file=str(ca_file))
    await is_refused(opts)  # a wrong password
    await is_refused(options(good, prefix, f"adapter-{uuid.uuid4().hex[:8]}"))  # untrusted


async def is_refused(opts: MqttOptions) -> None:
    """A connection attempt with `opts` fails, and the adapter never connects."""
    recorder, failed_before = Recorder(), failed_attempts()
    async with connected(opts, recorder, wait=False) as connection:
        await eventually(lambda: failed_attempts() > failed_before, 5, "a refused attempt")
        assert not connection.connected
    assert recorder.sessions == []  # not even for a moment
