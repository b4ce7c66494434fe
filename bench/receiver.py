"""Webhook receivers in one process: verify, count, time; or fail, or hang.

    python -m bench.receiver '[{"name": "a", "secret": "s", "mode": "ok"}, ...]'

Each endpoint listens on its own free port and answers every POST path:
`ok` answers 204 after checking `X-EdgeSense-Signature` (hex HMAC-SHA256 of
the raw body with the endpoint's secret: what EdgeSense and the baseline both
send), `fail` answers 500, `hang` answers nothing for `HANG_SECONDS`, past
any sender's timeout. A verified body's `payload` carries the publisher's
`seq` and `sent` (unix µs): the first arrival of each `seq` is a delivery and
gives a latency sample; later ones are duplicates. The publisher numbers
each device's events in increasing `seq`: a delivery whose `seq` is below
one of the same device (`deviceId`) that arrived before it is counted
`out_of_order` (normal for an unordered webhook, which sends many at once;
none for an ordered one). Probe events (`"probe":
true`) and background load (`"background": true`) are counted apart. The
first stdout line is JSON naming the ports; `GET /stats` on the control
port answers the counters (`?full=1` adds the latency percentiles).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bench import aio

HANG_SECONDS = 60.0
MODES = ("ok", "fail", "hang")


@dataclass
class Endpoint:
    """One receiver's behaviour and counters."""

    name: str
    secret: bytes
    mode: str
    requests: int = 0
    bad_signature: int = 0
    bad_body: int = 0
    probes: int = 0
    background: int = 0
    duplicates: int = 0
    first_ns: int = 0
    last_ns: int = 0
    seen: set[int] = field(default_factory=set)
    out_of_order: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)  # by device
    latencies_us: list[int] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        now_ns = time.time_ns()
        self.requests += 1
        if self.mode == "fail":
            return web.Response(status=500)
        if self.mode == "hang":
            await asyncio.sleep(HANG_SECONDS)
            return web.Response(status=503)
        expected = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-EdgeSense-Signature", "")):
            self.bad_signature += 1
            return web.Response(status=401)
        try:
            event = json.loads(body)
            payload, device = event["payload"], str(event.get("deviceId", ""))
            seq, sent = int(payload["seq"]), int(payload["sent"])
        except (ValueError, KeyError, TypeError):
            self.bad_body += 1
            return web.Response(status=400)
        if payload.get("probe"):
            self.probes += 1
        elif payload.get("background"):
            self.background += 1
        elif seq in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(seq)
            if seq < self.last_seq.get(device, -1):
                self.out_of_order += 1
            else:
                self.last_seq[device] = seq
            self.latencies_us.append(now_ns // 1000 - sent)
            self.first_ns = self.first_ns or now_ns
            self.last_ns = now_ns
        return web.Response(status=204)

    def stats(self, full: bool) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "mode": self.mode,
            "requests": self.requests,
            "delivered": len(self.seen),
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "probes": self.probes,
            "background": self.background,
            "bad_signature": self.bad_signature,
            "bad_body": self.bad_body,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
        }
        if full:
            answer["latency_ms"] = percentiles(self.latencies_us)
            # p50 of each quarter of the arrivals: steady, or a queue that builds up?
            n = len(self.latencies_us)
            quarters = [self.latencies_us[i * n // 4 : (i + 1) * n // 4] for i in range(4)]
            answer["p50_ms_by_quarter"] = [percentiles(q).get("p50") for q in quarters]
        return answer


def percentiles(samples_us: list[int]) -> dict[str, float]:
    """p50/p95/p99/max (nearest rank) and the mean, in milliseconds."""
    if not samples_us:
        return {}
    ordered = sorted(samples_us)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] / 1000

    mean = sum(ordered) / len(ordered) / 1000
    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": rank(1.0), "mean": mean}


async def serve(app: web.Application) -> int:
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    return int(runner.addresses[0][1])


async def main(spec: list[dict[str, str]]) -> None:
    endpoints = []
    for item in spec:
        if item["mode"] not in MODES:
            raise SystemExit(f"mode must be one of {MODES}, not {item['mode']!r}")
        endpoints.append(Endpoint(item["name"], item["secret"].encode(), item["mode"]))
    ports = {}
    for endpoint in endpoints:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("POST", "/{tail:.*}", endpoint.handle)
        ports[endpoint.name] = await serve(app)

    async def stats(request: web.Request) -> web.Response:
        full = request.query.get("full") == "1"
        return web.json_response({e.name: e.stats(full) for e in endpoints})

    control = web.Application()
    control.router.add_get("/stats", stats)
    control_port = await serve(control)
    print(json.dumps({"control": control_port, "endpoints": ports}), flush=True)
    await asyncio.Event().wait()  # until the orchestrator terminates us


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        aio.run(main(json.loads(sys.argv[1])))
