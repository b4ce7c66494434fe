"""The parsers of the commands that run locally: `simulate` (an MQTT gateway)
and `receive` (a webhook receiver). Their handlers are imported lazily."""

from __future__ import annotations

import argparse

from edgesense.tools.arguments import Subcommands, bounded, comma_list, command, int_in, lazy
from edgesense.tools.sim_devices import check_spike

SIMULATED_KINDS = ("data", "alert", "status")
SIMULATE_MORE = """\
Publishes with QoS 1 to {prefix}/{project}/{gateway}/{device}/{kind}. The
gateway's own status, {prefix}/{project}/{gateway}/status, is a retained
"online" from the start; its Last Will is a retained "offline". On --count,
--duration or Ctrl-C it waits for the PUBACKs, publishes "offline" itself and
disconnects cleanly (so the Will is not sent); a crash or kill -9 leaves the
Will to say "offline".

--sparkplug publishes as a Sparkplug B edge node instead: group {project},
edge node {gateway}, one Sparkplug device per device. Its Will is the NDEATH
(bdSeq, one more per connection); it publishes NBIRTH and a DBIRTH per device
(each reading's name, alias and datatype), then readings as DDATA by alias
(QoS 1, where Sparkplug says 0: acknowledged by the broker, and after a
reconnect sent again behind the new births), and
answers an NCMD "Node Control/Rebirth" with its births again. On --count,
--duration or Ctrl-C it publishes a DDEATH per device and the NDEATH, then
disconnects cleanly; a kill -9 leaves the Will.
  edgesense simulate --sparkplug --project dev --gateway line-1

--spike FIELD=VALUE (repeatable: temperature, humidity or pressure, each
outside its normal range) makes every reading carry VALUE (or a little
beyond) from --spike-after for --spike-for seconds, by default the middle
third of the run (of --duration, else of --count / --rate; 10 s to 20 s in a
run without end); the readings before and after are the normal ones. A rule
such as `temperature gt 80` then raises a `triggered` alert and, after the
spike, a `resolved` one:
  edgesense simulate --duration 30 --spike temperature=95"""
RECEIVE_MORE = """\
Prints one line per request: time, event, deviceId, eventId, delivery id,
"signature ok" or "BAD SIGNATURE (why)", the status answered. Answers --status
if given; else 401 on a bad signature (both X-EdgeSense-Signature and the
Standard Webhooks headers are checked, timestamps within 5 minutes); else 500
for a --fail-rate fraction; else 200."""


def kinds_list(raw: str) -> list[str]:
    kinds = comma_list(raw)
    unknown = [k for k in kinds if k not in SIMULATED_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"kinds are a comma list of {', '.join(SIMULATED_KINDS)}")
    return kinds


def spike(raw: str) -> tuple[str, float]:
    """`temperature=95` -> ("temperature", 95.0), a field the readings carry,
    outside its normal range."""
    name, equals, value = (part.strip() for part in raw.partition("="))
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE (temperature=95), not {raw!r}")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: not a number: {value!r}") from None
    problem = check_spike(name, number)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{name}: {problem}")
    return name, number


def add_simulate(sub: Subcommands) -> None:
    text = "a gateway that publishes device readings, alerts and status over MQTT"
    sim = command(sub, "simulate", text, more=SIMULATE_MORE)
    sim.set_defaults(handler=lazy("simulate", "simulate"))
    sim.add_argument("--devices", metavar="N", type=int_in(1, 100_000), default=3, help="default 3")
    sim.add_argument(
        "--rate",
        metavar="R",
        type=bounded(float, 0.01, 100_000),
        default=5.0,
        help="messages per second, all devices together (default 5)",
    )
    until = sim.add_mutually_exclusive_group()
    until.add_argument(
        "--duration", metavar="S", type=bounded(float, 0.0), help="stop after S seconds"
    )
    until.add_argument("--count", metavar="C", type=int_in(1), help="stop after C device messages")
    sim.add_argument(
        "--project", metavar="P", default="dev", help="project id (default dev: the dev key's)"
    )
    sim.add_argument("--gateway", metavar="G", default="gw-sim", help="gateway id (default gw-sim)")
    sim.add_argument(
        "--kinds",
        metavar="KINDS",
        type=kinds_list,
        help="comma list of data,alert,status (default all; not with --sparkplug)",
    )
    sim.add_argument(
        "--sparkplug",
        action="store_true",
        help="publish as a Sparkplug B edge node (spBv1.0/{project}/…/{gateway}/…)",
    )
    sim.add_argument(
        "--mqtt-url",
        metavar="URL",
        help="broker (default: EDGESENSE_MQTT_URL, else mqtt://127.0.0.1:1883)",
    )
    sim.add_argument(
        "--topic-prefix",
        metavar="PREFIX",
        help="first topic level (default: EDGESENSE_MQTT_TOPIC_PREFIX, else edgesense)",
    )
    sim.add_argument(
        "--max-in-flight",
        metavar="N",
        type=int_in(1, 65_535),
        default=100,
        help="published and not yet acknowledged, at most (default 100)",
    )
    sim.add_argument("--seed", metavar="N", type=int, help="random seed, for repeatable readings")
    sim.add_argument(
        "--spike",
        metavar="FIELD=VALUE",
        type=spike,
        action="append",
        default=[],
        help="readings cross VALUE part-way through the run and come back (e.g. "
        "temperature=95); repeat for more fields",
    )
    sim.add_argument(
        "--spike-after",
        metavar="S",
        type=bounded(float, 0.0),
        help="the spike starts S seconds into the run (default: a third of the run)",
    )
    sim.add_argument(
        "--spike-for",
        metavar="S",
        type=bounded(float, 0.001),
        help="the spike lasts S seconds (default: a third of the run)",
    )


def add_receive(sub: Subcommands) -> None:
    text = "a local webhook receiver that checks both signatures and prints each event"
    rec = command(sub, "receive", text, more=RECEIVE_MORE)
    rec.set_defaults(handler=lazy("receive", "receive"))
    rec.add_argument(
        "--port",
        metavar="PORT",
        type=int_in(0, 65_535),
        default=9000,
        help="default 9000; 0 picks a free one",
    )
    rec.add_argument("--host", default="127.0.0.1")
    rec.add_argument("--path", metavar="PATH", default="/", help="URL path to answer (default /)")
    rec.add_argument(
        "--secret", metavar="S", help="the webhook's secret; without it nothing is verified"
    )
    rec.add_argument(
        "--fail-rate",
        metavar="F",
        type=bounded(float, 0.0, 1.0),
        default=0.0,
        help="answer 500 to this fraction of requests, to watch retries",
    )
    rec.add_argument(
        "--status",
        metavar="CODE",
        type=int_in(100, 599),
        help="always answer this status (e.g. 500), signature or not",
    )
