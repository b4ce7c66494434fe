"""A broker that once accepted the bridge's MQTT 5 connection and then goes
silent (overloaded: no CONNACK in time, while a quick 3.1.1 CONNECT may still
be answered) is retried, never taken for a broker without MQTT 5: that would
end the bridge with exit 2, a crash loop in Kubernetes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import pytest

from edgesense.common.config import Settings
from edgesense_bridge import mqtt_adapter
from edgesense_bridge.server import Bridge
from edgesense_bridge.version_evidence import STRIKES, VersionEvidence
from tests.bridge.conftest import bridge_options
from tests.bridge.delivery_double import FakeDelivery
from tests.support.broker import Mosquitto
from tests.support.waiting import eventually

MQTT_NAME = b"\x00\x04MQTT"  # the CONNECT's protocol name; the level byte follows


class SilentForMqtt5:
    """A TCP proxy to a broker; while `silent`, it accepts MQTT 5 CONNECTs and
    never answers them, and still forwards every 3.1.1 connection."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.silent = False
        self.swallowed = 0
        self.links: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.links.add(writer)
        try:
            first = await reader.read(65536)
            at = first.find(MQTT_NAME)
            if self.silent and at >= 0 and first[at + len(MQTT_NAME)] == 5:
                self.swallowed += 1
                await reader.read()  # until the client gives up
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            self.links.add(up_writer)
            up_writer.write(first)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except ConnectionError:
            pass
        finally:
            writer.transport.abort()

    def go_silent(self) -> None:
        """The broker stops answering MQTT 5: today's connections are cut."""
        self.silent = True
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()


async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    finally:
        sink.transport.abort()


@pytest.fixture
async def proxy(mosquitto: Mosquitto) -> AsyncIterator[tuple[SilentForMqtt5, str]]:
    filtering = SilentForMqtt5(mosquitto.port)
    server = await asyncio.start_server(filtering.handle, "127.0.0.1", 0)
    try:
        yield filtering, f"mqtt://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        filtering.go_silent()
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)


async def test_a_broker_silent_after_an_mqtt_5_connection_is_retried_not_fatal(
    proxy: tuple[SilentForMqtt5, str],
    settings: Settings,
    delivery: FakeDelivery,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mqtt_adapter, "CONNACK_TIMEOUT_SECONDS", 0.5)
    filtering, url = proxy
    bridge = Bridge(
        dataclasses.replace(settings, delivery_addr=delivery.addr), bridge_options(url, prefix)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop, addr="127.0.0.1:0"))
    try:
        await asyncio.wait_for(bridge.connection.subscribed.wait(), 10)
        filtering.go_silent()
        await eventually(lambda: filtering.swallowed >= STRIKES or task.done(), 20, "retries")
        assert not task.done(), f"the bridge ended: {task.exception()!r}"
        filtering.silent = False  # the broker recovers: the bridge is back
        await asyncio.wait_for(bridge.connection.subscribed.wait(), 20)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def test_silence_is_proof_only_several_times_in_a_row_and_never_after_a_connection() -> None:
    evidence = VersionEvidence(strikes=3)
    assert not evidence.unanswered(answers_311_only=True)
    assert not evidence.unanswered(answers_311_only=True)
    evidence.failed()  # a different failure breaks the run
    assert [evidence.unanswered(answers_311_only=True) for _ in range(3)] == [False, False, True]
    assert evidence.wrong_version()
    evidence.connected()
    assert not evidence.may_conclude()
    assert not evidence.wrong_version()
    assert not any(evidence.unanswered(answers_311_only=True) for _ in range(5))
