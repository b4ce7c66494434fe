"""`edgesense simulate` as a subprocess against a private Mosquitto, watched by
a paho subscriber: the contract's topics and payloads, the gateway's retained
status, its Last Will on kill -9, and a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgesense.common.events import DEVICE_ID, EVENT_ID_PROPERTY
from tests.support.ports import free_port, wait_for_port
from tests.tools.conftest import Broker, clean_env, cli_command

pytestmark = pytest.mark.mosquitto
WAIT_SECONDS = 20.0


@dataclass(frozen=True)
class Seen:
    topic: str
    payload: bytes
    retained: bool


class Subscriber:
    """A paho client subscribed (QoS 1) to one filter; `wait_for` blocks on a condition."""

    def __init__(
        self, broker: Broker, topic: str, protocol: MQTTProtocolVersion = paho.MQTTv311
    ) -> None:
        self.seen: list[Seen] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex}", protocol=protocol
        )
        self._client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()
        assert self._subscribed.wait(WAIT_SECONDS), "no SUBACK"

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        with self._changed:
            self.seen.append(Seen(message.topic, bytes(message.payload), bool(message.retain)))
            self._changed.notify_all()

    def wait_for(self, condition: Callable[[list[Seen]], bool]) -> list[Seen]:
        with self._changed:
            assert self._changed.wait_for(lambda: condition(self.seen), WAIT_SECONDS), self.seen
            return list(self.seen)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        # paho closes its wake-up socket pair in __del__: break the callbacks'
        # reference cycle so that happens now, not in a later garbage collection.
        self._client.on_message = self._client.on_subscribe = self._client.on_connect = None


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def subscribe(mosquitto: Broker) -> Iterator[Callable[[str], Subscriber]]:
    made: list[Subscriber] = []

    def make(topic: str) -> Subscriber:
        made.append(Subscriber(mosquitto, topic))
        return made[-1]

    yield make
    for subscriber in made:
        subscriber.close()


def simulate(broker: Broker, *args: str) -> list[str]:
    return cli_command("simulate", "--mqtt-url", broker.url, *args)


def env(prefix: str) -> dict[str, str]:
    return clean_env({"EDGESENSE_MQTT_TOPIC_PREFIX": prefix})


def device_messages(seen: list[Seen], prefix: str) -> list[Seen]:
    return [s for s in seen if len(s.topic.split("/")) == 5 and s.topic.startswith(prefix)]


def gateway_statuses(seen: list[Seen], status_topic: str) -> list[bytes]:
    return [s.payload for s in seen if s.topic == status_topic]


def test_count_publishes_the_contracts_topics_and_payloads(
    mosquitto: Broker, prefix: str, subscribe: Callable[[str], Subscriber]
) -> None:
    watcher = subscribe(f"{prefix}/#")
    done = subprocess.run(
        simulate(mosquitto, "--count", "20", "--devices", "3", "--rate", "400",
                 "--seed", "7", "--project", "plant-7", "--gateway", "gw-a"),
        env=env(prefix), capture_output=True, text=True, timeout=WAIT_SECONDS,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith(
        "published 20  acknowledged 20  in flight 0  "
    ), done.stdout

    status_topic = f"{prefix}/plant-7/gw-a/status"
    seen = watcher.wait_for(lambda s: gateway_statuses(s, status_topic) == [b"online", b"offline"])
    devices = device_messages(seen, prefix)
    assert len(devices) == 20
    by_kind: dict[str, list[Seen]] = {}
    for message in devices:
        _, project, gateway, device, kind = message.topic.split("/")
        assert (project, gateway) == ("plant-7", "gw-a")
        assert device in {"sensor-001", "sensor-002", "sensor-003"}
        by_kind.setdefault(kind, []).append(message)
    assert set(by_kind) <= {"data", "alert", "status"}
    # Every device says it is online first; most of the rest are readings.
    assert sorted(s.topic for s in devices[:3]) == [
        f"{prefix}/plant-7/gw-a/sensor-00{n}/status" for n in (1, 2, 3)
    ]
    assert {s.payload for s in by_kind["status"]} == {b"online"}
    assert len(by_kind["data"]) >= 10
    for message in by_kind["data"]:
        reading = json.loads(message.payload)
        assert set(reading) == {"temperature", "humidity", "pressure"}
        assert all(isinstance(v, float) for v in reading.values())
        assert -20 <= reading["temperature"] <= 30
        assert 95 <= reading["pressure"] <= 105

    # The gateway's last word stays retained for whoever subscribes later.
    late = subscribe(status_topic)
    [retained] = late.wait_for(lambda s: len(s) == 1)
    assert retained == Seen(status_topic, b"offline", True)


def test_kinds_limits_what_is_published(
    mosquitto: Broker, prefix: str, subscribe: Callable[[str], Subscriber]
) -> None:
    watcher = subscribe(f"{prefix}/+/+/+/+")
    done = subprocess.run(
        simulate(mosquitto, "--count", "6", "--devices", "2", "--rate", "400",
                 "--kinds", "alert"),
        env=env(prefix), capture_output=True, text=True, timeout=WAIT_SECONDS,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = watcher.wait_for(lambda s: len(s) >= 6)
    assert {s.topic.rsplit("/", 1)[1] for s in seen} == {"alert"}
    for message in seen:
        alert = json.loads(message.payload)
        assert set(alert) == {"metric", "value", "threshold"}
        assert alert["metric"] == "temperature"
        assert alert["value"] > alert["threshold"]


def test_kill_9_leaves_the_last_will(
    mosquitto: Broker, prefix: str, subscribe: Callable[[str], Subscriber]
) -> None:
    status_topic = f"{prefix}/dev/gw-sim/status"
    watcher = subscribe(f"{prefix}/#")
    process = subprocess.Popen(
        simulate(mosquitto, "--rate", "50"), env=env(prefix),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        watcher.wait_for(lambda s: b"online" in gateway_statuses(s, status_topic))
        watcher.wait_for(lambda s: len(device_messages(s, prefix)) >= 5)
        process.send_signal(signal.SIGKILL)
        assert process.wait(WAIT_SECONDS) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait()
    seen = watcher.wait_for(lambda s: gateway_statuses(s, status_topic)[-1:] == [b"offline"])
    assert gateway_statuses(seen, status_topic) == [b"online", b"offline"]
    [retained] = subscribe(status_topic).wait_for(lambda s: len(s) == 1)
    assert retained == Seen(status_topic, b"offline", True)


def test_ctrl_c_stops_cleanly(
    mosquitto: Broker, prefix: str, subscribe: Callable[[str], Subscriber]
) -> None:
    status_topic = f"{prefix}/dev/gw-sim/status"
    watcher = subscribe(f"{prefix}/#")
    process = subprocess.Popen(
        simulate(mosquitto, "--rate", "100", "--devices", "5", "--duration", "60"),
        env=env(prefix), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        watcher.wait_for(lambda s: len(device_messages(s, prefix)) >= 10)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=WAIT_SECONDS)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, err
    final = out.splitlines()[-1]
    published = int(final.split()[1])
    assert final.startswith(f"published {published}  acknowledged {published}  in flight 0")
    seen = watcher.wait_for(lambda s: gateway_statuses(s, status_topic)[-1:] == [b"offline"])
    # Every message it counted reached the broker.
    assert len(device_messages(seen, prefix)) == published


def test_unreachable_broker_exits_3_and_bad_ids_exit_2(prefix: str) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    done = subprocess.run(
        cli_command("simulate", "--mqtt-url", url, "--count", "1"),
        env=env(prefix), capture_output=True, text=True, timeout=WAIT_SECONDS,
    )  # fmt: skip
    assert done.returncode == 3
    assert done.stderr.startswith(f"error: cannot reach the MQTT broker at {url} (")
    for bad in (["--gateway", "gw/+"], ["--mqtt-url", "http://x"], ["--kinds", "data,config"]):
        done = subprocess.run(
            cli_command("simulate", "--count", "1", *bad),
            env=env(prefix), capture_output=True, text=True, timeout=WAIT_SECONDS,
        )  # fmt: skip
        assert done.returncode == 2, (bad, done.stderr)
        assert "error: " in done.stderr


class PropertySubscriber(Subscriber):
    """An MQTT 5 subscriber that also records each message's `event-id`."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.event_ids: dict[str, list[str | None]] = {}
        super().__init__(broker, topic, protocol=paho.MQTTv5)

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        properties = dict(getattr(message.properties, "UserProperty", []) or [])
        self.event_ids.setdefault(message.topic, []).append(properties.get(EVENT_ID_PROPERTY))
        super()._on_message(_c, _u, message)


def test_every_message_carries_its_own_event_id(mosquitto: Broker, prefix: str) -> None:
    watcher = PropertySubscriber(mosquitto, f"{prefix}/#")
    try:
        done = subprocess.run(
            simulate(mosquitto, "--count", "30", "--devices", "3", "--rate", "400"),
            env=env(prefix), capture_output=True, text=True, timeout=WAIT_SECONDS,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "MQTT 3.1.1" not in done.stdout
        status_topic = f"{prefix}/dev/gw-sim/status"
        watcher.wait_for(lambda s: gateway_statuses(s, status_topic) == [b"online", b"offline"])
    finally:
        watcher.close()
    ids = [event_id for per_topic in watcher.event_ids.values() for event_id in per_topic]
    assert len(ids) == 32  # 30 device messages, the gateway's online and offline
    assert None not in ids
    assert len(set(ids)) == len(ids), "an event id was used twice"
    assert all(DEVICE_ID.fullmatch(str(event_id)) for event_id in ids), ids


def test_a_broker_without_mqtt_5_gets_3_1_1_without_event_ids(prefix: str) -> None:
    port = free_port()
    broker = subprocess.Popen(
        [sys.executable, "-m", "edgesense.embedded_broker", "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        done = subprocess.run(
            cli_command("simulate", "--mqtt-url", f"mqtt://127.0.0.1:{port}", "--count", "5",
                        "--rate", "400"),
            env=env(prefix), capture_output=True, text=True, timeout=WAIT_SECONDS,
        )  # fmt: skip
    finally:
        broker.terminate()
        broker.wait(WAIT_SECONDS)
    assert done.returncode == 0, done.stderr
    assert "the broker speaks only MQTT 3.1.1: messages carry no event-id" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("published 5  acknowledged 5  in flight 0")


def readings(seen: list[Seen]) -> list[dict[str, float]]:
    return [json.loads(s.payload) for s in seen if s.topic.endswith("/data")]


def spiked_block(
    values: list[dict[str, float]], spiked: Callable[[dict[str, float]], bool]
) -> range:
    """Where the spiked readings are: one run of them, with normal ones before and after."""
    marks = [spiked(v) for v in values]
    first = marks.index(True)
    end = first + marks[first:].index(False)
    assert not any(marks[:first]), marks
    assert not any(marks[end:]), marks
    assert 0 < first < end < len(values), marks
    return range(first, end)


def test_a_spike_crosses_its_value_and_comes_back(
    mosquitto: Broker, prefix: str, subscribe: Callable[[str], Subscriber]
) -> None:
    watcher = subscribe(f"{prefix}/+/+/+/+")
    done = subprocess.run(
        simulate(mosquitto, "--count", "90", "--devices", "2", "--rate", "150", "--kinds", "data",
                 "--spike", "temperature=95", "--spike", "humidity=2",
                 "--spike-after", "0.2", "--spike-for", "0.2"),
        env=env(prefix), capture_output=True, text=True, timeout=WAIT_SECONDS,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "spike temperature=95 humidity=2 from 0.2 s to 0.4 s of the run" in done.stdout
    values = readings(watcher.wait_for(lambda s: len(s) >= 90))
    assert len(values) == 90
    block = spiked_block(values, lambda v: v["temperature"] >= 95)
    # Messages 30 to 59 are due 0.2 s to 0.4 s into the run (150 a second).
    assert abs(block.start - 30) <= 1, block
    assert abs(block.stop - 60) <= 1, block
    for n, value in enumerate(values):
        # Both fields spike together, beyond their value; pressure does not move.
        assert (value["humidity"] <= 2) == (n in block), (n, value)
        assert 95 <= value["pressure"] <= 105
        if n in block:
            assert 95 <= value["temperature"] < 100, value
        else:
            assert -20 <= value["temperature"] <= 29.5, value
    # Each device crosses it: normal, spiked, normal again.
    for device in (0, 1):
        spiked_block(values[device::2], lambda v: v["temperature"] >= 95)


def test_a_spike_covers_the_middle_third_of_the_run_by_default(
    mosquitto: Broker, prefix: str, subscribe: Callable[[str], Subscriber]
) -> None:
    watcher = subscribe(f"{prefix}/+/+/+/+")
    done = subprocess.run(
        simulate(mosquitto, "--duration", "1.5", "--devices", "3", "--rate", "60",
                 "--kinds", "data", "--spike", "pressure=110"),
        env=env(prefix), capture_output=True, text=True, timeout=WAIT_SECONDS,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "spike pressure=110 from 0.5 s to 1 s of the run" in done.stdout
    published = int(done.stdout.splitlines()[-1].split()[1])
    values = readings(watcher.wait_for(lambda s: len(s) >= published))
    block = spiked_block(values, lambda v: v["pressure"] >= 110)
    # Messages 30 to 59 of about 90 (60 a second for 1.5 s).
    assert abs(block.start - 30) <= 1, (block, len(values))
    assert abs(block.stop - 60) <= 1, (block, len(values))


def test_without_a_spike_no_reading_reaches_one(
    mosquitto: Broker, prefix: str, subscribe: Callable[[str], Subscriber]
) -> None:
    watcher = subscribe(f"{prefix}/+/+/+/+")
    done = subprocess.run(
        simulate(mosquitto, "--count", "600", "--devices", "2", "--rate", "3000",
                 "--kinds", "data", "--seed", "11"),
        env=env(prefix), capture_output=True, text=True, timeout=WAIT_SECONDS,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "spike" not in done.stdout
    values = readings(watcher.wait_for(lambda s: len(s) >= 600))
    assert all(v["temperature"] < 95 and v["humidity"] > 2 for v in values)
    assert all(v["pressure"] < 110 for v in values)


def test_bad_spikes_exit_2_naming_the_field(prefix: str) -> None:
    for bad, says in (
        (["--spike", "temperature=25"], "temperature: 25 is within temperature's normal range"),
        (["--spike", "rpm=3000"], "rpm: readings have no field 'rpm'"),
        (["--spike", "temperature"], "expected FIELD=VALUE"),
        (["--spike-for", "3"], "--spike-after and --spike-for need --spike"),
        (["--spike", "humidity=1", "--spike", "humidity=2"], "--spike humidity is given twice"),
        (["--spike", "humidity=1", "--spike-after", "9"], "--spike-after 9 is not before the end"),
    ):
        done = subprocess.run(
            cli_command("simulate", "--count", "10", "--rate", "2", "--mqtt-url",
                        f"mqtt://127.0.0.1:{free_port()}", *bad),
            env=env(prefix), capture_output=True, text=True, timeout=WAIT_SECONDS,
        )  # fmt: skip
        assert done.returncode == 2, (bad, done.stderr)
        assert says in done.stderr, (bad, done.stderr)
