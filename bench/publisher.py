"""A gateway publishing device readings with QoS 1: as fast as allowed, or at a fixed rate.

    python -m bench.publisher --port 1883 --project p --count 30000 [--rate 500]

Topic `{prefix}/{project}/{gateway}/{device}/data` over `--devices` devices.
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

    client.on_published = on_published
    await client.connect()
    topics = [topic(args.prefix, args.project, d) for d in range(args.devices)]
    start_ns = time.time_ns()
    start = time.perf_counter()
    for seq in range(args.count):
        if args.rate:
            delay = start + seq / args.rate - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
        await window.acquire()
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
    args = parser.parse_args()
    print(json.dumps(aio.run(publish(args))), flush=True)


if __name__ == "__main__":
    main()
