"""`edgesense simulate --sparkplug` as a subprocess against a private Mosquitto,
watched by a paho subscriber that decodes with pysparkplug (an independent
Sparkplug B implementation, not our encoder run backwards): births with
bdSeq, aliases and datatypes, data by alias only, seq continuity, a rebirth
on NCMD, DDEATH and NDEATH on SIGTERM, the Will's NDEATH on kill -9, and a
reconnect: the new connection's births before any data."""

from __future__ import annotations

import itertools
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import paho.mqtt.client as paho
import pysparkplug as sp
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pysparkplug import _protobuf as spb

from tests.support.waiting import wait_until
from tests.tools.conftest import Broker, clean_env, cli_command
from tests.tools.test_simulate import WAIT_SECONDS, Subscriber

pytestmark = pytest.mark.mosquitto
FIELDS = {"temperature", "humidity", "pressure"}


@dataclass(frozen=True)
class Heard:
    topic: str
    payload: bytes
    qos: int
    retained: bool

    @property
    def kind(self) -> str:
        return self.topic.split("/")[2]

    @property
    def device(self) -> str | None:
        parts = self.topic.split("/")
        return parts[4] if len(parts) == 5 else None


class SparkplugWatcher(Subscriber):
    """Subscribed (QoS 1) to one group's Sparkplug topics; keeps what the edge
    node published (not the NCMDs the test sends) with its QoS."""

    def __init__(self, broker: Broker, group: str) -> None:
        self.heard: list[Heard] = []
        super().__init__(broker, f"spBv1.0/{group}/#")

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        if "/NCMD/" in message.topic:
            return
        with self._changed:
            self.heard.append(
                Heard(message.topic, bytes(message.payload), message.qos, bool(message.retain))
            )
        super()._on_message(_c, _u, message)

    def until(self, condition: Callable[[list[Heard]], bool]) -> list[Heard]:
        self.wait_for(lambda _seen: condition(self.heard))
        with self._changed:
            return list(self.heard)

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=0)


@pytest.fixture
def group() -> str:
    return f"plant-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def watch(mosquitto: Broker, group: str) -> Iterator[SparkplugWatcher]:
    watcher = SparkplugWatcher(mosquitto, group)
    yield watcher
    watcher.close()


def simulate(broker: Broker, group: str, *args: str) -> list[str]:
    return cli_command(
        "simulate", "--sparkplug", "--mqtt-url", broker.url, "--project", group, *args
    )


def kinds(heard: list[Heard]) -> list[str]:
    return [h.kind for h in heard]


def seq_of(message: Heard) -> int:
    payload = spb.Payload.FromString(message.payload)
    assert payload.HasField("seq"), message
    return int(payload.seq)


def bd_seq(message: Heard) -> int:
    """The bdSeq of an NBIRTH or NDEATH, checking it is declared Int64."""
    if message.kind == "NDEATH":
        metric = sp.NDeath.decode(message.payload).bd_seq_metric
    else:
        [metric] = [m for m in sp.NBirth.decode(message.payload).metrics if m.name == "bdSeq"]
    assert metric.name == "bdSeq"
    assert metric.datatype == sp.DataType.INT64
    return int(metric.value)  # type: ignore[arg-type]


def check_births(heard: list[Heard], node: str, devices: int, bd: int) -> dict[str, sp.DBirth]:
    """An NBIRTH (seq 0, bdSeq `bd`, Rebirth false) and then a DBIRTH per device,
    each declaring the three fields with unique aliases as Double; QoS 0."""
    nbirth, *dbirths = heard[: 1 + devices]
    assert nbirth.topic.endswith(f"/NBIRTH/{node}"), nbirth
    assert seq_of(nbirth) == 0
    assert bd_seq(nbirth) == bd
    metrics = {m.name: m for m in sp.NBirth.decode(nbirth.payload).metrics}
    rebirth = metrics["Node Control/Rebirth"]
    assert (rebirth.datatype, rebirth.value) == (sp.DataType.BOOLEAN, False)
    births: dict[str, sp.DBirth] = {}
    aliases: list[int] = []
    for n, message in enumerate(dbirths, 1):
        assert message.kind == "DBIRTH", message
        birth = sp.DBirth.decode(message.payload)
        assert birth.seq == n
        assert {m.name for m in birth.metrics} == FIELDS
        for metric in birth.metrics:
            assert metric.datatype == sp.DataType.DOUBLE, metric
            assert isinstance(metric.value, float)
            assert metric.alias is not None
            aliases.append(metric.alias)
        assert message.device is not None
        births[message.device] = birth
    assert sorted(births) == [f"sensor-{n:03d}" for n in range(1, devices + 1)]
    assert len(set(aliases)) == len(aliases) == 3 * devices, "aliases unique across the node"
    assert {m.qos for m in heard[: 1 + devices]} == {0}
    return births


def check_data(message: Heard, births: dict[str, sp.DBirth]) -> dict[str, float]:
    """A DDATA by alias only (no names, no datatypes), QoS 1; its reading by name."""
    assert message.kind == "DDATA", message
    assert message.qos == 1
    raw = spb.Payload.FromString(message.payload)  # pysparkplug's schema: names are not resolved
    assert all(
        not m.HasField("name") and not m.HasField("datatype") and m.HasField("alias")
        for m in raw.metrics
    ), raw
    assert message.device is not None
    named = sp.DData.decode(message.payload, birth=births[message.device])
    reading = {str(m.name): float(m.value) for m in named.metrics}  # type: ignore[arg-type]
    assert set(reading) == FIELDS
    assert -20 <= reading["temperature"] <= 29.5
    assert 95 <= reading["pressure"] <= 105
    return reading


def check_seq_runs_on(heard: list[Heard]) -> None:
    """Every message but the NDEATH one seq more than the one before (255 -> 0)."""
    numbered = [seq_of(h) for h in heard if h.kind != "NDEATH"]
    for before, after in itertools.pairwise(numbered):
        assert after == (before + 1) % 256, numbered


def test_births_then_data_by_alias_then_deaths(
    mosquitto: Broker, group: str, watch: SparkplugWatcher
) -> None:
    done = subprocess.run(
        simulate(mosquitto, group, "--count", "300", "--devices", "3", "--rate", "3000",
                 "--gateway", "line-1", "--seed", "5"),
        env=clean_env(), capture_output=True, text=True, timeout=WAIT_SECONDS,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-2].startswith("published 300  acknowledged 300  in flight 0  "), done.stdout
    assert lines[-1] == "rebirths requested 0"
    heard = watch.until(lambda h: "NDEATH" in kinds(h))
    assert not any(h.retained for h in heard)

    births = check_births(heard, "line-1", 3, bd=0)
    data, deaths = heard[4:304], heard[304:]
    for message in data:
        check_data(message, births)
    # The devices take turns.
    assert [m.device for m in data[:6]] == ["sensor-001", "sensor-002", "sensor-003"] * 2
    assert kinds(deaths) == ["DDEATH"] * 3 + ["NDEATH"]
    assert sorted(str(d.device) for d in deaths[:3]) == sorted(births)
    assert [d.qos for d in deaths] == [0, 0, 0, 1]
    assert bd_seq(deaths[-1]) == 0
    assert sp.NDeath.decode(deaths[-1].payload).bd_seq_metric.alias is None
    # 307 numbered messages: seq wraps once, and the NDEATH has none.
    check_seq_runs_on(heard)
    assert seq_of(deaths[2]) == 306 % 256


def test_a_rebirth_request_brings_the_births_again(
    mosquitto: Broker, group: str, watch: SparkplugWatcher
) -> None:
    process = subprocess.Popen(
        simulate(mosquitto, group, "--rate", "100", "--devices", "2", "--duration", "60"),
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        watch.until(lambda h: kinds(h).count("DDATA") >= 5)
        ncmd = f"spBv1.0/{group}/NCMD/gw-sim"
        stamp = sp.get_current_timestamp()

        def command(value: bool) -> bytes:
            metric = sp.Metric(stamp, "Node Control/Rebirth", sp.DataType.BOOLEAN, value=value)
            return sp.NCmd(stamp, (metric,)).encode(include_dtypes=True)

        # Neither garbage nor Rebirth = false brings births.
        watch.publish(ncmd, b"\xff not protobuf")
        watch.publish(ncmd, command(False))
        watch.publish(ncmd, command(True))
        watch.until(lambda h: kinds(h).count("NBIRTH") == 2)
        watch.until(lambda h: kinds(h)[kinds(h).index("NBIRTH", 1) :].count("DDATA") >= 5)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=WAIT_SECONDS)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, err
    assert out.splitlines()[-1] == "rebirths requested 1; 1 NCMDs ignored: not Sparkplug B payloads"
    heard = watch.until(lambda h: "NDEATH" in kinds(h))
    assert kinds(heard).count("NBIRTH") == 2
    again = kinds(heard).index("NBIRTH", 1)
    first = check_births(heard, "gw-sim", 2, bd=0)
    # The same connection: the same bdSeq, seq from 0 again, the same aliases.
    second = check_births(heard[again:], "gw-sim", 2, bd=0)
    for device, birth in first.items():
        assert {(m.name, m.alias) for m in birth.metrics} == {
            (m.name, m.alias) for m in second[device].metrics
        }
    check_seq_runs_on(heard[:again])
    check_seq_runs_on(heard[again:])
    for message in heard:
        if message.kind == "DDATA":
            check_data(message, first)
    assert kinds(heard)[-3:] == ["DDEATH", "DDEATH", "NDEATH"]
    assert bd_seq(heard[-1]) == 0


def test_kill_9_leaves_the_will_s_ndeath(
    mosquitto: Broker, group: str, watch: SparkplugWatcher
) -> None:
    process = subprocess.Popen(
        simulate(mosquitto, group, "--rate", "50", "--gateway", "gw-k"),
        env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        watch.until(lambda h: kinds(h).count("DDATA") >= 5)
        process.send_signal(signal.SIGKILL)
        assert process.wait(WAIT_SECONDS) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait()
    heard = watch.until(lambda h: "NDEATH" in kinds(h))
    [will] = [h for h in heard if h.kind == "NDEATH"]
    assert will.topic == f"spBv1.0/{group}/NDEATH/gw-k"
    assert (will.qos, will.retained) == (1, False)
    assert bd_seq(will) == 0
    assert "DDEATH" not in kinds(heard)  # the broker has only the node's Will


def take_over(broker: Broker, client_id: str) -> None:
    """Connect with `client_id`, so the broker drops the client that has it
    (and sends its Will), then leave cleanly."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    try:
        client.loop_start()
        wait_until(client.is_connected, WAIT_SECONDS, "the takeover's CONNACK")
    finally:
        client.disconnect()
        client.loop_stop()


def test_after_a_reconnect_the_births_come_before_any_data(
    mosquitto: Broker, group: str, watch: SparkplugWatcher
) -> None:
    """paho would resend the old connection's unacknowledged DDATA (and those
    published while disconnected) as soon as it is connected again, before
    the new NBIRTH, after the broker sent the old NDEATH: a host rejects
    them. The simulator sends them again itself, after the births, as new
    DDATA of the new connection."""
    process = subprocess.Popen(
        simulate(mosquitto, group, "--rate", "200", "--devices", "2", "--gateway", "gw-r",
                 "--duration", "60", "--max-in-flight", "50"),
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        watch.until(lambda h: kinds(h).count("DDATA") >= 20)
        # The simulator's client id (sim_publisher.client_id): the broker drops it.
        take_over(mosquitto, f"edgesense-sim-gw-r-{process.pid}")

        def data_after_the_second_birth(heard: list[Heard]) -> int:
            seen = kinds(heard)
            return seen[seen.index("NBIRTH", 1) :].count("DDATA") if seen.count("NBIRTH") > 1 else 0

        watch.until(lambda h: data_after_the_second_birth(h) >= 100)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=WAIT_SECONDS)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, err
    *_, counters, commands = out.splitlines()
    published = int(counters.split()[1])
    assert counters.startswith(f"published {published}  acknowledged {published}  in flight 0")
    assert commands.startswith("rebirths requested 0; ")
    assert commands.endswith(" DDATA of an older connection sent again after the births"), out
    assert int(commands.split("; ")[1].split()[0]) > 0, "the reconnect left no DDATA behind"

    heard = watch.until(lambda h: kinds(h).count("NDEATH") == 2)
    will = kinds(heard).index("NDEATH")
    assert bd_seq(heard[will]) == 0
    # The old connection's Will, then at once the new connection's NBIRTH.
    assert kinds(heard)[will + 1] == "NBIRTH", kinds(heard)[will : will + 5]
    first = check_births(heard, "gw-r", 2, bd=0)
    check_seq_runs_on(heard[:will])
    again = heard[will + 1 :]
    second = check_births(again, "gw-r", 2, bd=1)
    check_seq_runs_on(again)
    assert kinds(again)[-3:] == ["DDEATH", "DDEATH", "NDEATH"]
    assert bd_seq(again[-1]) == 1
    for births, messages in ((first, heard[:will]), (second, again)):
        for message in messages:
            if message.kind == "DDATA":
                check_data(message, births)
    # What was sent again goes oldest first: each device's readings keep
    # their order after the reconnect too.
    for device in second:
        stamps = [
            spb.Payload.FromString(m.payload).timestamp
            for m in again
            if m.kind == "DDATA" and m.device == device
        ]
        assert stamps == sorted(stamps), device
    # At least once: every acknowledged DDATA reached the watcher (a DDATA whose
    # PUBACK the old connection lost may arrive twice).
    assert kinds(heard).count("DDATA") >= published


def test_kinds_do_not_apply_to_sparkplug() -> None:
    done = subprocess.run(
        cli_command("simulate", "--sparkplug", "--kinds", "data", "--count", "1"),
        env=clean_env(), capture_output=True, text=True, timeout=WAIT_SECONDS,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("error: --kinds does not apply to --sparkplug")
