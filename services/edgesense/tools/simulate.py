"""`edgesense simulate`: a gateway publishing its devices' traffic over MQTT.

Topics are the contract's (section 4): `{prefix}/{project}/{gateway}/{device}/{kind}`
for devices, `{prefix}/{project}/{gateway}/status` for the gateway itself,
which is `online` (retained) from the start and has a retained `offline` as
its Last Will. Every message carries its own MQTT 5 `event-id` (see
sim_publisher), so a retry or a redelivery makes no second event. Messages
leave at `--rate` per second in total, all devices together, with QoS 1 and
at most `--max-in-flight` unacknowledged; when the broker acknowledges more
slowly, the rate shown drops instead of memory growing.

One terminal line counts published / acknowledged / in flight / rate, redrawn
about four times a second with `\\r` on a terminal, or written every
`PLAIN_EVERY_SECONDS` otherwise.

It stops after `--count` device messages, after `--duration` seconds, or on
Ctrl-C/SIGTERM: it waits for the outstanding PUBACKs (a second Ctrl-C stops
waiting), publishes the retained `offline` itself and disconnects cleanly, so
the broker does not send the Will as well. Exit 0; 1 if messages stayed
unacknowledged; 3 if the broker cannot be reached. A kill -9 leaves the Will
to report the gateway offline.

`--spike temperature=95` (repeatable, one field each) makes every reading
carry that value (see sim_devices) during a window of the run, so a threshold
rule triggers and, once the window is over, resolves: from `--spike-after`
for `--spike-for` seconds, by default the middle third of the run (of
`--duration`, or of `--count` / `--rate`; 10 s to 20 s when the run has no
end). The window is on the publishing schedule (message n is due n / rate
seconds in), not on the wall clock, so a `--count` run spikes the same
messages every time.

`--sparkplug` makes the gateway a Sparkplug B edge node (sim_edges says what
each kind of gateway publishes, sim_sparkplug encodes it): the same devices
and readings, as DDATA by alias after the births. The counters and --count
are the DDATA messages'; births and deaths are not counted. After a
reconnect, the DDATA the old connection left unacknowledged are sent again
after the new births, as new DDATA (sim_sparkplug says why, and what that
guarantees): they stay counted once. The last line says how many rebirths
hosts asked for, and how many DDATA were sent again.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from edgesense.common.config import (
    DEFAULT_MQTT_URL,
    DEFAULT_TOPIC_PREFIX,
    check_topic_prefix,
    env_text,
)
from edgesense.common.errors import ConfigurationError
from edgesense.common.events import DEVICE_ID
from edgesense.tools.errors import Unacknowledged, UsageError
from edgesense.tools.local_commands import SIMULATED_KINDS
from edgesense.tools.sim_devices import Outgoing
from edgesense.tools.sim_edges import Edge, JsonGateway, SparkplugNode
from edgesense.tools.sim_publisher import Broker, Publisher, client_id

TTY_EVERY_SECONDS = 0.25
PLAIN_EVERY_SECONDS = 5.0
DRAIN_SECONDS = 10.0
GIVE_UP_SECONDS = 1.0
MAX_LAG_SECONDS = 1.0
RATE_WINDOW_SECONDS = 2.0
RATE_SAMPLE_SECONDS = 0.05
# The spike's start and length when the run has no end (no --duration, no --count).
ENDLESS_SPIKE_SECONDS = 10.0


@dataclass(frozen=True)
class SpikeWindow:
    """Which fields are spiked to what, from `after` for `lasting` seconds of the schedule."""

    values: Mapping[str, float]
    after: float
    lasting: float
    run_seconds: float | None = None  # the run's length, when it has one

    def at(self, offset: float) -> Mapping[str, float]:
        """The spiked fields of a reading due `offset` seconds into the run."""
        return self.values if self.after <= offset < self.after + self.lasting else {}

    def describe(self) -> str:
        fields = " ".join(f"{name}={value:g}" for name, value in self.values.items())
        end = self.after + self.lasting
        text = f"spike {fields} from {self.after:g} s to {end:g} s of the run"
        if self.run_seconds is not None and end >= self.run_seconds:
            text += " (to its end: the readings do not come back)"
        return text


def spike_window(args: argparse.Namespace) -> SpikeWindow | None:
    """The spike the options ask for: --spike-after and --spike-for, else the
    middle third of the run."""
    if not args.spike:
        if args.spike_after is not None or args.spike_for is not None:
            raise UsageError("--spike-after and --spike-for need --spike FIELD=VALUE")
        return None
    values: dict[str, float] = {}
    for name, value in args.spike:
        if name in values:
            raise UsageError(f"--spike {name} is given twice")
        values[name] = value
    length = args.duration if args.duration is not None else None
    if length is None and args.count is not None:
        length = args.count / args.rate
    third = length / 3 if length is not None else ENDLESS_SPIKE_SECONDS
    after = args.spike_after if args.spike_after is not None else third
    lasting = args.spike_for if args.spike_for is not None else third
    if length is not None and after >= length:
        raise UsageError(f"--spike-after {after:g} is not before the end of the run ({length:g} s)")
    return SpikeWindow(values, after, lasting, length)


class LiveLine:
    """The counters on one line: redrawn in place on a terminal, else now and then."""

    def __init__(self, publisher: Publisher, out: TextIO) -> None:
        self.publisher = publisher
        self.out = out
        self.tty = out.isatty()
        self.every = TTY_EVERY_SECONDS if self.tty else PLAIN_EVERY_SECONDS
        self._start = self._last_shown = time.monotonic()
        self._width = 0
        self.note = ""  # said after the counters, e.g. while a spike lasts
        self._window: collections.deque[tuple[float, int]] = collections.deque()

    def text(self, now: float, final: bool = False) -> str:
        p = self.publisher
        if final:
            # The whole run's average: a window rate at the end says little.
            elapsed = now - self._start
            rate = p.acknowledged / elapsed if elapsed > 0 else 0.0
            over = f" over {elapsed:.1f} s"
        else:
            since, acked_then = self._window[0]
            rate = (p.acknowledged - acked_then) / (now - since) if now > since else 0.0
            over = ""
        state = "" if p.connected or final else "  (disconnected, reconnecting)"
        note = "" if final else self.note
        return (
            f"published {p.published}  acknowledged {p.acknowledged}  "
            f"in flight {p.in_flight}  {rate:.1f} msg/s{over}{state}{note}"
        )

    def tick(self, final: bool = False) -> None:
        now = time.monotonic()
        if not self._window or now - self._window[-1][0] >= RATE_SAMPLE_SECONDS:
            self._window.append((now, self.publisher.acknowledged))
        while now - self._window[0][0] > RATE_WINDOW_SECONDS:
            self._window.popleft()
        if not final and now - self._last_shown < self.every:
            return
        self._last_shown = now
        line = self.text(now, final)
        if self.tty:
            self.out.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def finish(self) -> None:
        self.tick(final=True)
        if self.tty:
            self.out.write("\n")
            self.out.flush()


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (in the main thread; elsewhere, nothing to do)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda _n, _f: stop.set())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _check_id(name: str, value: str) -> str:
    if not DEVICE_ID.fullmatch(value):
        raise UsageError(f"--{name} {value!r} is not an id (letters, digits and . _ : -)")
    return value


def simulate(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    project, gateway = _check_id("project", args.project), _check_id("gateway", args.gateway)
    if args.sparkplug and args.kinds is not None:
        raise UsageError(
            "--kinds does not apply to --sparkplug: an edge node publishes readings "
            "(DDATA); its births and deaths are the status, and alerts come from rules"
        )
    # The same variables, defaults and rules as the services' (edgesense.common.config).
    env = os.environ
    try:
        prefix = check_topic_prefix(
            args.topic_prefix or env_text(env, "EDGESENSE_MQTT_TOPIC_PREFIX", DEFAULT_TOPIC_PREFIX)
        )
        broker = Broker.parse(
            args.mqtt_url or env_text(env, "EDGESENSE_MQTT_URL", DEFAULT_MQTT_URL)
        )
    except ConfigurationError as exc:
        raise UsageError(exc.message) from None
    spike = spike_window(args)
    rng = random.Random(args.seed)
    edge: Edge
    if args.sparkplug:
        edge = SparkplugNode(project, gateway, args.devices, rng)
    else:
        kinds = args.kinds or list(SIMULATED_KINDS)
        edge = JsonGateway(f"{prefix}/{project}/{gateway}", args.devices, kinds, rng)
    # A Sparkplug edge node sends no event ids: the bridge must do without.
    publisher = Publisher(
        broker, client_id(gateway), args.max_in_flight, event_ids=not args.sparkplug
    )
    edge.connect(publisher)
    print(
        f"gateway {gateway} of project {project} on {broker.url}: {args.devices} devices, "
        f"{args.rate:g} msg/s, {edge.describe()}  (Ctrl-C stops)",
        file=out,
        flush=True,
    )
    if spike is not None:
        print(spike.describe(), file=out, flush=True)
    if not publisher.mqtt5 and not args.sparkplug:
        print(
            "the broker speaks only MQTT 3.1.1: messages carry no event-id, so one "
            "delivered twice becomes two events",
            file=out,
            flush=True,
        )
    stop = threading.Event()
    live = LiveLine(publisher, out)
    try:
        with stop_on_signals(stop):
            edge.start(publisher, DRAIN_SECONDS)
            _run(args, publisher, live, edge, stop, spike)
            drained = _drain(publisher, live, edge, stop)
            # After a second Ctrl-C, say offline only if the broker answers at once.
            edge.stop(publisher, DRAIN_SECONDS if drained else GIVE_UP_SECONDS)
    finally:
        live.finish()
        publisher.close()
    if isinstance(edge, SparkplugNode):
        print(_commands_line(edge), file=out, flush=True)
    if not drained or publisher.in_flight:
        raise Unacknowledged(
            f"{publisher.in_flight} messages were never acknowledged by the broker"
        )
    return 0


def _commands_line(node: SparkplugNode) -> str:
    line = f"rebirths requested {node.rebirths}"
    if node.sent_again:
        line += f"; {node.sent_again} DDATA of an older connection sent again after the births"
    if node.bad_commands:
        line += f"; {node.bad_commands} NCMDs ignored: not Sparkplug B payloads"
    return line


def _run(
    args: argparse.Namespace,
    publisher: Publisher,
    live: LiveLine,
    edge: Edge,
    stop: threading.Event,
    window: SpikeWindow | None = None,
) -> None:
    """Publish on schedule until the count, the duration or a stop signal;
    the edge's urgent messages (births) as soon as it has them."""
    interval = 1.0 / args.rate
    start = due = time.monotonic()

    def spike() -> Mapping[str, float]:
        """The spiked fields of the message due now; the live line says so."""
        spiked = window.at(due - start) if window is not None else {}
        live.note = "  (spiking " + ", ".join(spiked) + ")" if spiked else ""
        return spiked

    messages = edge.messages(spike)
    sent = 0
    # The message due, until published: while the window is full, the edge's
    # urgent messages still go first (a reconnect's births, and what the old
    # connection left, which holds slots of the window).
    pending: Outgoing | None = None
    while not stop.is_set() and (args.count is None or sent < args.count):
        edge.urgent(publisher)
        now = time.monotonic()
        if args.duration is not None and now - start >= args.duration:
            return
        if pending is None:
            if due > now:
                stop.wait(min(due - now, TTY_EVERY_SECONDS))
                live.tick()
                continue
            pending = next(messages)
        pending = edge.publish(publisher, pending)
        if pending is not None:
            live.tick()
            continue
        sent += 1
        # A stall (a slow broker, a full window) does not become a burst later.
        due = max(due + interval, time.monotonic() - MAX_LAG_SECONDS)
        live.tick()


def _drain(publisher: Publisher, live: LiveLine, edge: Edge, stop: threading.Event) -> bool:
    """Wait for the outstanding PUBACKs, showing progress; a second Ctrl-C gives up.
    The edge's urgent messages still go out: after a reconnect, the births
    and then what the old connection left unacknowledged."""
    stop.clear()
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline and not stop.is_set():
        edge.urgent(publisher)
        if publisher.wait_acknowledged(TTY_EVERY_SECONDS):
            return True
        live.tick()
    return publisher.in_flight == 0
