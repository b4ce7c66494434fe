"""What `edgesense simulate` publishes: devices with drifting readings.

Each device keeps a temperature, humidity and pressure that take a small
random step at every reading, within bounds (`WALKS`), so a dashboard shows
believable curves. The traffic is, device after device in turn:

- first, when `status` is simulated, `online` for every device;
- then mostly `data` (readings), sometimes an `alert` (a temperature above
  `ALERT_THRESHOLD`), rarely `status` `online` again (a heartbeat), among the
  kinds asked for.

A spike (`--spike temperature=95`) replaces a field of every reading, while
it lasts, with its value pushed a little further out (95.0 to about 96), so a
threshold rule at or inside that value breaches on each of them; the field's
own walk goes on meanwhile, and the readings after the spike carry it again.
A spike must lie outside the walk's bounds (`check_spike`), so that readings
really cross it and come back.

Payloads are the contract's (section 4): a JSON object for `data` and
`alert`, the plain text `online` for `status`. `readings` is the same fleet's
readings alone, as values, for `--sparkplug` (sim_sparkplug encodes them).
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

ALERT_THRESHOLD = 30.0
KIND_WEIGHTS = {"data": 90, "alert": 7, "status": 3}


@dataclass(frozen=True)
class Walk:
    """How one field of a reading drifts: where it starts, its random step,
    the bounds it stays within and the digits it is shown with."""

    start: tuple[float, float]
    step: float
    low: float
    high: float
    digits: int

    def next(self, value: float, rng: random.Random) -> float:
        return min(max(value + rng.gauss(0, self.step), self.low), self.high)

    def spiked(self, target: float, rng: random.Random) -> float:
        """`target`, pushed away from the normal range by up to a few steps:
        never back on the normal side of it, even once rounded."""
        outward = 1.0 if target > self.high else -1.0
        return round(target + math.copysign(abs(rng.gauss(0, self.step)), outward), self.digits)


# In the order they are drawn and published (a --seed repeats the same readings).
WALKS = {
    "temperature": Walk((19.0, 25.0), 0.3, -20.0, 29.5, 2),
    "humidity": Walk((35.0, 60.0), 0.8, 5.0, 95.0, 1),
    "pressure": Walk((100.5, 102.0), 0.05, 95.0, 105.0, 2),
}


def check_spike(field: str, value: float) -> str | None:
    """Why `field=value` cannot be a spike, or None if it can."""
    walk = WALKS.get(field)
    if walk is None:
        return f"readings have no field {field!r}; a spike is one of {', '.join(WALKS)}"
    if not math.isfinite(value):
        return f"{value} is not a finite number"
    if walk.low <= value <= walk.high:
        return (
            f"{value:g} is within {field}'s normal range ({walk.low:g} to {walk.high:g}): "
            "a spike lies outside it, so that readings cross it and come back"
        )
    return None


@dataclass
class SimulatedDevice:
    device_id: str
    values: dict[str, float]

    @classmethod
    def create(cls, device_id: str, rng: random.Random) -> SimulatedDevice:
        return cls(device_id, {name: rng.uniform(*walk.start) for name, walk in WALKS.items()})

    def reading(
        self, rng: random.Random, spike: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """The next reading: a random walk, kept within plausible bounds;
        the fields of `spike` at their spiked value instead."""
        shown: dict[str, float] = {}
        for name, walk in WALKS.items():
            self.values[name] = walk.next(self.values[name], rng)
            shown[name] = round(self.values[name], walk.digits)
        for name, target in (spike or {}).items():
            shown[name] = WALKS[name].spiked(target, rng)
        return shown

    def current(self) -> dict[str, float]:
        """The values now, as a reading shows them, without a step of the walk
        (what a Sparkplug birth declares)."""
        return {name: round(self.values[name], walk.digits) for name, walk in WALKS.items()}

    def alert(self, rng: random.Random) -> dict[str, object]:
        value = ALERT_THRESHOLD + rng.uniform(0.5, 6.0)
        return {"metric": "temperature", "value": round(value, 2), "threshold": ALERT_THRESHOLD}


@dataclass(frozen=True)
class Message:
    device_id: str
    kind: str
    payload: bytes


@dataclass(frozen=True)
class Outgoing:
    """One MQTT message to publish. `counted`: a device message, the live
    line's counters and --count's; else (a Sparkplug birth or death) not."""

    topic: str
    payload: bytes
    qos: int = 1
    counted: bool = True


def device_ids(count: int) -> list[str]:
    return [f"sensor-{n:03d}" for n in range(1, count + 1)]


def _no_spike() -> Mapping[str, float]:
    return {}


def fleet(devices: int, rng: random.Random) -> list[SimulatedDevice]:
    return [SimulatedDevice.create(device_id, rng) for device_id in device_ids(devices)]


def readings(
    devices: Sequence[SimulatedDevice],
    rng: random.Random,
    spike: Callable[[], Mapping[str, float]] = _no_spike,
) -> Iterator[tuple[SimulatedDevice, dict[str, float]]]:
    """Readings without end, the devices taking turns, spiked as `traffic`'s."""
    for turn in itertools.count():
        device = devices[turn % len(devices)]
        yield device, device.reading(rng, spike())


def traffic(
    devices: int,
    kinds: Sequence[str],
    rng: random.Random,
    spike: Callable[[], Mapping[str, float]] = _no_spike,
) -> Iterator[Message]:
    """Messages without end, the devices taking turns; `spike()` says, for
    each reading, which fields are spiked to what (none: `{}`)."""
    simulated = fleet(devices, rng)
    if "status" in kinds:
        for device in simulated:
            yield Message(device.device_id, "status", b"online")
    weighted = [kind for kind in KIND_WEIGHTS if kind in kinds]
    weights = [KIND_WEIGHTS[kind] for kind in weighted]
    turn = 0
    while True:
        device = simulated[turn % len(simulated)]
        turn += 1
        kind = rng.choices(weighted, weights)[0]
        if kind == "status":
            payload = b"online"
        elif kind == "alert":
            payload = json.dumps(device.alert(rng)).encode()
        else:
            payload = json.dumps(device.reading(rng, spike())).encode()
        yield Message(device.device_id, kind, payload)
