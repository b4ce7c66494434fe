"""A real Mosquitto for the bridge tests, and a gateway that publishes to it.

`Mosquitto` runs /usr/sbin/mosquitto on a free port with its own config:
`max_queued_messages` raised (stock Mosquitto silently drops beyond 1000
queued QoS 1 messages for a lagging subscriber), no inflight cap, TCP_NODELAY,
and optionally a TLS listener with a password file, or persistence on (as
deploy/mosquitto/mosquitto.conf has it) for a test that restarts it.
`Gateway` is a paho client (its own network thread) that publishes QoS 1 and
waits for every PUBACK, off the event loop. `gateway_with_will` is a gateway in
a process of its own, with a Last Will, for a test to kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.ports import free_port, wait_for_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def burst_settings(port: int, max_queued: int, persist_in: Path | None = None) -> list[str]:
    """Mosquitto config lines for bursts of QoS 1 traffic on 127.0.0.1:`port`
    (the tests' broker and bench/'s): up to `max_queued` messages queued per
    subscriber, no inflight cap, TCP_NODELAY, errors and warnings on stderr.
    Nothing is persisted unless `persist_in` names a folder: then sessions,
    subscriptions and queued messages are saved there on a clean stop
    (SIGTERM) and every `autosave_interval`, as deploy/ configures it.
    Authentication and TLS are the caller's to add."""
    persistence = (
        [
            "persistence true",
            f"persistence_location {persist_in}/",  # Mosquitto wants the trailing slash
            "autosave_interval 60",
        ]
        if persist_in is not None
        else ["persistence false"]
    )
    return [
        f"listener {port} 127.0.0.1",
        f"max_queued_messages {max_queued}",
        "max_queued_bytes 0",
        "max_inflight_messages 0",
        "set_tcp_nodelay true",
        *persistence,
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        # Run as ourselves: as root, Mosquitto would drop to `mosquitto`, which cannot
        # read the password and key files in our temporary folder.
        f"user {pwd.getpwuid(os.getuid()).pw_name}",
    ]


@dataclass
class Mosquitto:
    directory: Path
    port: int = field(default_factory=free_port)
    tls: tuple[str, str, str] | None = None  # (ca file, cert file, key file)
    password_file: str | None = None
    persistent: bool = False  # persistence on, in `directory`
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def config(self) -> str:
        lines = burst_settings(self.port, 1_000_000, self.directory if self.persistent else None)
        if self.password_file:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            ca, cert, key = self.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        path = self.directory / f"mosquitto-{self.port}.conf"
        path.write_text(self.config())
        log = (self.directory / f"mosquitto-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(path)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_for_port(self.port)

    def stop(self) -> None:
        """SIGTERM: Mosquitto disconnects its clients and, if persistent, saves
        its database before it exits."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def message_properties(content_type: str | None, event_id: str | None = None) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if content_type:
        properties.ContentType = content_type
    if event_id:
        properties.UserProperty = ("event-id", event_id)
    return properties


class Gateway:
    """Publishes like an EdgeSense gateway: MQTT 5, QoS 1, waiting for PUBACKs."""

    def __init__(self, port: int, client_id: str) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish_now(
        self,
        messages: Sequence[tuple[str, bytes, Properties | None]],
        pause_every: int = 0,
    ) -> None:
        infos = []
        for n, (topic, payload, properties) in enumerate(messages, 1):
            infos.append(self.client.publish(topic, payload, qos=1, properties=properties))
            if pause_every and n % pause_every == 0:
                time.sleep(0.01)
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published(), "the broker did not acknowledge a publish"

    async def publish(
        self, messages: Sequence[tuple[str, bytes, Properties | None]], pause_every: int = 0
    ) -> None:
        await asyncio.to_thread(self.publish_now, messages, pause_every)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.asynccontextmanager
async def gateway_with_will(
    broker: Mosquitto, gateway_id: str, status_topic: str
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A gateway process (paho, its own MQTT connection, client id `gateway_id`)
    with a Last Will of `offline` on `status_topic`, once it has published
    `online` there; kill() it for the broker to publish the Will (no DISCONNECT)."""
    script = (
        "import sys, time, paho.mqtt.client as m\n"
        "from paho.mqtt.enums import CallbackAPIVersion\n"
        "c = m.Client(CallbackAPIVersion.VERSION2, client_id=sys.argv[2])\n"
        "c.will_set(sys.argv[3], b'offline', qos=1, retain=True)\n"
        "c.connect('127.0.0.1', int(sys.argv[1]), keepalive=5)\n"
        "c.loop_start()\n"
        "c.publish(sys.argv[3], b'online', qos=1, retain=True).wait_for_publish(10)\n"
        "print('online', flush=True)\n"
        "time.sleep(600)\n"
    )
    gateway = subprocess.Popen(  # noqa: ASYNC220 - a short-lived helper process
        [sys.executable, "-c", script, str(broker.port), gateway_id, status_topic],
        stdout=subprocess.PIPE,
    )
    try:
        assert gateway.stdout is not None
        assert (await asyncio.to_thread(gateway.stdout.readline)).strip() == b"online"
        yield gateway
    finally:
        gateway.kill()
        gateway.wait()
        if gateway.stdout is not None:
            gateway.stdout.close()
