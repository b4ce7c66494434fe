"""The baseline: a minimal MQTT-to-webhook forwarder in one asyncio process.

    python -m bench.baseline --port 1883 --targets '[{"url", "secret", "webhookId"}]'

Subscribe QoS 1 to `{prefix}/#`, turn each `.../{device}/data` message into
the same webhook body EdgeSense sends, sign it (hex HMAC-SHA256 in
`X-EdgeSense-Signature`), POST it with aiohttp to every target with at most
`--in-flight` (64) requests in flight, and acknowledge the message once its
POSTs have finished. No storage, no retries, no isolation between targets: it
is what the durable design is compared with, built to be fast (uvloop, paho on
the event loop, one shared connection pool, reading paused while it holds
`--receive-maximum` messages so that memory stays bounded and the broker keeps
the backlog).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import random
import signal
import sys
import time
from dataclasses import dataclass

import aiohttp
import paho.mqtt.client as paho

from bench import aio
from bench.mqtt import MqttClient

DRAIN_SECONDS = 5.0


@dataclass(frozen=True)
class Target:
    url: str
    secret: bytes
    webhook_id: str


class Forwarder:
    """MQTT message in, one signed POST per target out, PUBACK when they are done."""

    def __init__(self, targets: list[Target], in_flight: int, timeout: float) -> None:
        self.targets = targets
        self.slots = asyncio.Semaphore(in_flight)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.pending = 0
        self.sent = 0
        self.failed = 0
        self.idle = asyncio.Event()
        self.client: MqttClient
        self.session: aiohttp.ClientSession
        self.running: set[asyncio.Task[None]] = set()
        self.max_pending = 0

    def on_message(self, message: paho.MQTTMessage) -> None:
        levels = message.topic.split("/")
        if len(levels) != 5 or levels[4] != "data":
            self.client.ack(message.mid)
            return
        fields = {
            "event": "device.data",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "deviceId": levels[3],
            "payload": json.loads(message.payload),
            "eventId": f"evt_{random.getrandbits(96):024x}",
            "gatewayId": levels[2],
        }
        self.pending += 1
        self.idle.clear()
        if self.pending >= self.max_pending:
            self.client.pause_reading()
        task = asyncio.get_running_loop().create_task(self.forward(message.mid, fields))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def forward(self, mid: int, fields: dict[str, object]) -> None:
        if len(self.targets) == 1:
            await self.post(self.targets[0], fields)
        else:
            await asyncio.gather(*(self.post(target, fields) for target in self.targets))
        self.client.ack(mid)
        self.pending -= 1
        if self.pending < self.max_pending:
            self.client.resume_reading()
        if not self.pending:
            self.idle.set()

    async def post(self, target: Target, fields: dict[str, object]) -> None:
        body = json.dumps({**fields, "webhookId": target.webhook_id}, separators=(",", ":"))
        raw = body.encode()
        headers = {
            "Content-Type": "application/json",
            "X-EdgeSense-Event": "device.data",
            "X-EdgeSense-Delivery": str(fields["eventId"]),
            "X-EdgeSense-Signature": hmac.new(target.secret, raw, hashlib.sha256).hexdigest(),
        }
        async with self.slots:
            try:
                async with self.session.post(target.url, data=raw, headers=headers) as answer:
                    await answer.read()
                    ok = 200 <= answer.status < 300
            except (aiohttp.ClientError, TimeoutError):
                ok = False
        if ok:
            self.sent += 1
        else:
            self.failed += 1

    async def run(self, args: argparse.Namespace) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.max_pending = args.receive_maximum
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector, timeout=self.timeout) as session:
            self.session = session
            self.client = MqttClient(
                args.port,
                args.client_id,
                on_message=self.on_message,
                receive_maximum=args.receive_maximum,
                session_expiry=3600,
                mqtt5=args.mqtt == "5",
            )
            await self.client.connect()
            await self.client.subscribe(f"{args.prefix}/#")
            print("baseline: forwarding", flush=True)
            await stop.wait()
            self.client.pause_reading()
            try:
                await asyncio.wait_for(self.idle.wait(), DRAIN_SECONDS)
            except TimeoutError:
                print(f"baseline: {self.pending} messages left unacknowledged", flush=True)
            await self.client.disconnect()
            for task in self.running:
                task.cancel()  # unacknowledged: the broker sends these again
            await asyncio.gather(*self.running, return_exceptions=True)
        print(f"baseline: {self.sent} POSTs succeeded, {self.failed} failed", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", default="edgesense")
    parser.add_argument("--targets", required=True, help="JSON list of {url, secret, webhookId}")
    parser.add_argument("--client-id", default="bench-baseline")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--receive-maximum", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--mqtt", choices=("5", "3.1.1"), default="5", help="as the bridge: 5")
    args = parser.parse_args()
    targets = [
        Target(t["url"], t["secret"].encode(), t["webhookId"]) for t in json.loads(args.targets)
    ]
    aio.run(Forwarder(targets, args.in_flight, args.timeout).run(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
