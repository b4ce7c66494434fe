"""What `edgesense simulate` publishes: devices with drifting readings.

Each device keeps a temperature, humidity and pressure that take a small
random step at every reading, so a dashboard shows believable curves. The
traffic is, device after device in turn:

- first, when `status` is simulated, `online` for every device;
- then mostly `data` (readings), sometimes an `alert` (a temperature above
  `ALERT_THRESHOLD`), rarely `status` `online` again (a heartbeat), among the
  kinds asked for.

Payloads are the contract's (section 4): a JSON object for `data` and
`alert`, the plain text `online` for `status`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

ALERT_THRESHOLD = 30.0
KIND_WEIGHTS = {"data": 90, "alert": 7, "status": 3}


@dataclass
class SimulatedDevice:
    device_id: str
    temperature: float
    humidity: float
    pressure: float

    @classmethod
    def create(cls, device_id: str, rng: random.Random) -> SimulatedDevice:
        return cls(
            device_id,
            temperature=rng.uniform(19.0, 25.0),
            humidity=rng.uniform(35.0, 60.0),
            pressure=rng.uniform(100.5, 102.0),
        )

    def reading(self, rng: random.Random) -> dict[str, float]:
        """The next reading: a random walk, kept within plausible bounds."""
        self.temperature = min(max(self.temperature + rng.gauss(0, 0.3), -20.0), 29.5)
        self.humidity = min(max(self.humidity + rng.gauss(0, 0.8), 5.0), 95.0)
        self.pressure = min(max(self.pressure + rng.gauss(0, 0.05), 95.0), 105.0)
        return {
            "temperature": round(self.temperature, 2),
            "humidity": round(self.humidity, 1),
            "pressure": round(self.pressure, 2),
        }

    def alert(self, rng: random.Random) -> dict[str, object]:
        value = ALERT_THRESHOLD + rng.uniform(0.5, 6.0)
        return {"metric": "temperature", "value": round(value, 2), "threshold": ALERT_THRESHOLD}


@dataclass(frozen=True)
class Message:
    device_id: str
    kind: str
    payload: bytes


def device_ids(count: int) -> list[str]:
    return [f"sensor-{n:03d}" for n in range(1, count + 1)]


def traffic(devices: int, kinds: Sequence[str], rng: random.Random) -> Iterator[Message]:
    """Messages without end, the devices taking turns."""
    fleet = [SimulatedDevice.create(device_id, rng) for device_id in device_ids(devices)]
    if "status" in kinds:
        for device in fleet:
            yield Message(device.device_id, "status", b"online")
    weighted = [kind for kind in KIND_WEIGHTS if kind in kinds]
    weights = [KIND_WEIGHTS[kind] for kind in weighted]
    turn = 0
    while True:
        device = fleet[turn % len(fleet)]
        turn += 1
        kind = rng.choices(weighted, weights)[0]
        if kind == "status":
            payload = b"online"
        elif kind == "alert":
            payload = json.dumps(device.alert(rng)).encode()
        else:
            payload = json.dumps(device.reading(rng)).encode()
        yield Message(device.device_id, kind, payload)
