"""A gateway publishing device readings with QoS 1: as fast as allowed, or at a fixed rate.

    python -m bench.publisher --port 1883 --project p --count 30000 [--rate 500] [--sparkplug]

Topic `{prefix}/{project}/{gateway}/{device}/data` over `--devices` devices.
With `--sparkplug` the gateway is a Sparkplug B edge node of group
`{project}` instead (the simulator's `EdgeNode`, which encodes with our
compiled schema): it first publishes its NBIRTH and a DBIRTH per device
(QoS 0, as Sparkplug has them; not measured: the measured time starts once
they are written, and the readings they declare are background load), then
each reading as a DDATA to `spBv1.0/{project}/DDATA/{gateway}/{device}`
with its fields by alias, QoS 1 (Double numbers: `sent` in µs is exact in a
double). The bridge resolves the aliases, so the receivers see the same
reading either way.
Each payload carries its sequence number, the run id and the time it was
published (`sent`, unix microseconds: the bridge turns readings into a
protobuf Struct, whose numbers are doubles, exact only below 2**53, so
nanoseconds would lose their last digits). At most `--window` messages wait
for a PUBACK. At the end one JSON line goes to stdout: how many were
published, when the first and last left, and when the last PUBACK came.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

from bench import aio
from bench.mqtt import MqttClient
from edgesense.tools.sim_sparkplug import EdgeNode, Value

GATEWAY = "gw-bench"
DEVICES = 100  # dev-0 ... dev-99; probes come from dev-0


def payload(seq: int, run: str, *, probe: bool = False, background: bool = False) -> bytes:
    """A reading as a gateway would send it, plus what the receivers measure with
    (probes and background load are counted apart)."""
    sent = time.time_ns() // 1000
    extra = ',"probe":true' if probe else ',"background":true' if background else ""
    return b'{"sent":%d,"seq":%d,"run":"%s","temperature":21.5%s}' % (
        sent,
        seq,
        run.encode(),
        extra.encode(),
    )


def device_id(device: int) -> str:
    return f"dev-{device}"


def topic(prefix: str, project: str, device: int) -> str:
    return f"{prefix}/{project}/{GATEWAY}/{device_id(device)}/data"


# A reading's fields, in the order `payload` writes them; `background` only
# in the births (see `births`).
FIELDS = ("sent", "seq", "run", "temperature", "background")


async def births(client: MqttClient, node: EdgeNode, run: str) -> None:
    """The edge node's NBIRTH and DBIRTHs (QoS 0), until paho has written them all.

    The bridge makes a `device.data` of each DBIRTH's values too: they say
    `background`, so the receivers count them apart, as they are not measured."""
    written = asyncio.Event()
    pending: set[int] = set()

    def on_published(mid: int) -> None:
        pending.discard(mid)
        if not pending:
            written.set()

    client.on_published = on_published
    declared: dict[str, Value] = {
        "sent": 0,
        "seq": -1,
        "run": run,
        "temperature": 21.5,
        "background": True,
    }
    pending.update(
        client.publish(birth.topic, birth.payload, qos=birth.qos)
        for birth in node.births(dict.fromkeys(node.aliases, declared))
    )
    await asyncio.wait_for(written.wait(), 30)


def sparkplug_data(node: EdgeNode, device: int, seq: int, run: str) -> tuple[str, bytes]:
    """A reading as a DDATA by alias: the fields of `payload`'s measured readings."""
    reading: dict[str, Value] = {
        "sent": time.time_ns() // 1000,
        "seq": seq,
        "run": run,
        "temperature": 21.5,
    }
    message = node.data(device_id(device), reading)
    return message.topic, message.payload


async def publish(args: argparse.Namespace) -> dict[str, float]:
    client = MqttClient(args.port, f"bench-pub-{args.run}", receive_maximum=65535)
    window = asyncio.Semaphore(args.window)
    acked = 0
    last_ack_ns = 0
    all_acked = asyncio.Event()

    def on_published(_mid: int) -> None:
        nonlocal acked, last_ack_ns
        acked += 1
        last_ack_ns = time.time_ns()
        window.release()
        if acked == args.count:
            all_acked.set()

    await client.connect()
    node = None
    if args.sparkplug:
        node = EdgeNode(args.project, GATEWAY, [device_id(d) for d in range(args.devices)], FIELDS)
        await births(client, node, args.run)
    client.on_published = on_published
    topics = [topic(args.prefix, args.project, d) for d in range(args.devices)]
    start_ns = time.time_ns()
    start = time.perf_counter()
    for seq in range(args.count):
        if args.rate:
            delay = start + seq / args.rate - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
        await window.acquire()
        if node is not None:
            client.publish(*sparkplug_data(node, seq % args.devices, seq, args.run))
        else:
            client.publish(
                topics[seq % args.devices], payload(seq, args.run, background=args.background)
            )
    end_ns = time.time_ns()
    if args.count:
        await asyncio.wait_for(all_acked.wait(), 120)
    await client.disconnect()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "published": args.count,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "acked_ns": last_ack_ns,
        # Its own figures: it may end between two of the orchestrator's samples.
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", default="edgesense")
    parser.add_argument("--project", required=True)
    parser.add_argument("--run", default="run")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="events/s; 0: as fast as allowed")
    parser.add_argument("--devices", type=int, default=DEVICES)
    parser.add_argument("--window", type=int, default=1000, help="publishes awaiting PUBACK")
    parser.add_argument(
        "--background", action="store_true", help="load the receivers count apart, not measured"
    )
    parser.add_argument(
        "--sparkplug", action="store_true", help="as a Sparkplug B edge node: births, then DDATA"
    )
    args = parser.parse_args()
    print(json.dumps(aio.run(publish(args))), flush=True)


if __name__ == "__main__":
    main()
