"""The alert rules of the `rules` scenario (issue 13): 100 rules in the
measured project, as a plant would have them, created over REST before the
load.

Every measured reading is `{"sent", "seq", "run", "temperature": 21.5}` from
one of the publisher's 100 devices (dev-0 ... dev-99, gateway gw-bench). A
real project's rules are mostly about the fields its devices send, some for
all devices and many for a few, plus rules about fields and devices this
traffic does not carry. So the 100 are:

- 1 `temperature gt 80` (critical) for every device;
- 50 `temperature gt 60` (clear at 55, 3 readings in a row), each for a pair
  of devices (dev-0/dev-1, dev-2/dev-3, ...): one for every device;
- 10 `temperature lt -10` for 5 minutes, each for a pair of dev-1 ... dev-20;
- 1 `seq lt 0` for dev-0, the canary (below);
- 20 on fields these readings lack (humidity outside 20..80, pressure, vibration,
  motor.rpm, battery; 4 each) for every device;
- 13 `temperature gt 40` for devices that send nothing here (boiler-1 ...);
- 5 `temperature gt 45` for other gateways (gw-plant-1 ...), every device.

So a reading of dev-21 ... dev-99 can match 2 rules by field, device and
gateway, one of dev-0 ... dev-20 3 (about 2.2 on average): an evaluator that
indexes rules by field and device looks at those (and turns down the 5
gateway rules, which apply to every device, by their gateway), and never at
the other 80. No threshold is crossed by the load (21.5 degrees, seq from
0), so the measured cost is judging readings and keeping each pair's state,
not extra events: the run raises no alert but the canary's resolution.

The canary proves the rules are live where readings are judged before the
load starts: it is created last, and probe readings (`seq` -1, from dev-0)
trigger it, so once GET /api/alerts shows it active, delivery has the rules
created before it (the registry streams changes in the order they were
made). The first measured reading of dev-0 (seq 0) resolves it: one
device.alert event, which no webhook of the bench subscribes to.
"""

from __future__ import annotations

from typing import Any

from bench.publisher import DEVICES, GATEWAY, device_id

Rule = dict[str, Any]  # a RuleSpec as JSON: the body of POST /api/rules
CANARY_NAME = "bench canary: a reading with seq below 0"
MISSING_FIELDS: list[Rule] = [
    {"field": "humidity", "operator": "outside", "threshold": 20, "thresholdHigh": 80},
    {"field": "pressure", "operator": "lt", "threshold": 95, "clearThreshold": 97},
    {"field": "vibration", "operator": "gte", "threshold": 12, "count": 5},
    {"field": "motor.rpm", "operator": "gt", "threshold": 3000, "forSeconds": 30},
    {"field": "battery", "operator": "lte", "threshold": 10, "severity": "info"},
]


def _devices(*numbers: int) -> list[str]:
    return [device_id(n) for n in numbers]


def rule_mix() -> list[Rule]:
    """The 100 rules, the canary last (see the module's docstring for why this mix)."""
    rules: list[Rule] = [
        {"name": "Overheating", "field": "temperature", "operator": "gt", "threshold": 80,
         "severity": "critical"},
    ]  # fmt: skip
    rules += [
        {"name": f"Line {n}: running hot", "field": "temperature", "operator": "gt",
         "threshold": 60, "clearThreshold": 55, "count": 3,
         "deviceIds": _devices(2 * n, 2 * n + 1)}
        for n in range(DEVICES // 2)
    ]  # fmt: skip
    rules += [
        {"name": f"Cold store {n}: freezing", "field": "temperature", "operator": "lt",
         "threshold": -10, "forSeconds": 300, "deviceIds": _devices(2 * n + 1, 2 * n + 2)}
        for n in range(10)
    ]  # fmt: skip
    rules += [
        {"name": f"{spec['field']} check {n}", "description": "a field these readings lack",
         **spec}
        for spec in MISSING_FIELDS
        for n in range(1, 5)
    ]  # fmt: skip
    rules += [
        {"name": f"Boiler {n}: hot", "field": "temperature", "operator": "gt",
         "threshold": 40, "deviceIds": [f"boiler-{n}"]}
        for n in range(1, 14)
    ]  # fmt: skip
    rules += [
        {"name": f"Plant {n}: hot", "field": "temperature", "operator": "gt",
         "threshold": 45, "gatewayIds": [f"gw-plant-{n}"]}
        for n in range(1, 6)
    ]  # fmt: skip
    rules.append(
        {"name": CANARY_NAME, "field": "seq", "operator": "lt", "threshold": 0,
         "severity": "info", "deviceIds": _devices(0), "gatewayIds": [GATEWAY]}
    )  # fmt: skip
    return rules
