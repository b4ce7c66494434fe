"""`edgesense receive`: a local webhook receiver to watch deliveries arrive.

An aiohttp server answering POSTs on `--path`. Each request is printed on one
line: time received, event, deviceId, eventId, delivery id, the signature
verdict and the status answered, plus `(seen N times)` for a delivery that
came before (a retry or a redelivery). The answer is, in this order:

1. `--status CODE`, when given, for every request (to break the endpoint);
2. 401 when `--secret` is given and a signature does not hold (`verify.py`);
3. 500 for a `--fail-rate` fraction of requests (to watch retries);
4. 200.

Ctrl-C (or SIGTERM) stops it; exit 0. An address it cannot listen on ends in
exit 3. Every value printed passes through `output.clean`: the body comes
from anyone who can reach the port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shlex
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from edgesense.tools.errors import CannotConnect
from edgesense.tools.output import clean
from edgesense.tools.verify import check_request

SEEN_LIMIT = 10_000


@dataclass(frozen=True)
class ReceiverOptions:
    host: str = "127.0.0.1"
    port: int = 9000
    path: str = "/"
    secret: str | None = None
    fail_rate: float = 0.0
    status: int | None = None


def _print_line(line: str) -> None:
    print(line, flush=True)


class WebhookReceiver:
    """The server; `emit` gets each printed line (stdout by default)."""

    def __init__(
        self,
        options: ReceiverOptions,
        emit: Callable[[str], None] = _print_line,
        rng: random.Random | None = None,
    ) -> None:
        self.options = options
        self.emit = emit
        self.url = ""
        self._rng = rng or random.Random()
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen; returns the URL to register. Raises CannotConnect if the port is taken."""
        app = web.Application()
        path = self.options.path if self.options.path.startswith("/") else "/" + self.options.path
        app.router.add_post(path, self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            where = f"{self.options.host}:{self.options.port}"
            raise CannotConnect(f"cannot listen on {where}: {exc.strerror or exc}") from exc
        port = self._runner.addresses[0][1]
        host = self.options.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        self.url = f"http://{host}:{port}{path}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verdict, authentic = "not verified (no --secret)", True
        if self.options.secret is not None:
            reason = check_request(self.options.secret, request.headers, body, time.time())
            authentic = reason is None
            verdict = "signature ok" if reason is None else f"BAD SIGNATURE ({reason})"
        if self.options.status is not None:
            status = self.options.status
        elif not authentic:
            status = 401
        elif self._rng.random() < self.options.fail_rate:
            status = 500
        else:
            status = 200
        self.emit(self._line(request, body, verdict, status))
        return web.Response(status=status, text="ok" if status < 300 else "not ok")

    def _line(self, request: web.Request, body: bytes, verdict: str, status: int) -> str:
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            event = {
                "event": request.headers.get("X-EdgeSense-Event"),
                "deviceId": "(body is not JSON)",
            }
        delivery = request.headers.get("X-EdgeSense-Delivery") or request.headers.get("webhook-id")
        fields = [
            time.strftime("%H:%M:%S"),
            clean(event.get("event")),
            clean(event.get("deviceId")),
            clean(event.get("eventId")),
            clean(delivery),
            clean(verdict),
            f"-> {status}",
        ]
        if delivery:
            times = self._seen.pop(delivery, 0) + 1
            self._seen[delivery] = times
            if len(self._seen) > SEEN_LIMIT:
                self._seen.popitem(last=False)
            if times > 1:
                fields.append(f"(seen {times} times)")
        return "  ".join(fields)


def banner(url: str, secret: str | None) -> list[str]:
    """What to do next: the register command to copy, with the secret given to
    `--secret` (as `stripe listen` prints its signing secret: the user typed it
    on this terminal), or a placeholder to replace in both commands."""
    given = secret is not None
    lines = [
        f"listening on {url}",
        "register it with:" if given else "register it with (and restart this with --secret S):",
        f"  edgesense webhooks register --url {url} --events device.data,device.alert "
        f"--secret {shlex.quote(secret) if secret is not None else 'YOUR_SECRET'}",
        "http:// and loopback targets need dev mode (`edgesense up --dev`, or "
        "EDGESENSE_ALLOW_INSECURE_URLS=1 and EDGESENSE_ALLOW_PRIVATE_NETWORKS=1)",
    ]
    if not given:
        lines.append("no --secret: signatures are not verified")
    return [*lines, "Ctrl-C stops it."]


async def serve(options: ReceiverOptions, stop: asyncio.Event) -> None:
    receiver = WebhookReceiver(options)
    url = await receiver.start()
    try:
        for line in banner(url, options.secret):
            _print_line(line)
        await stop.wait()
    finally:
        await receiver.stop()


async def _main(options: ReceiverOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = threading.current_thread() is threading.main_thread()
    if handled:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    try:
        await serve(options, stop)
    finally:
        if handled:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)


def receive(args: argparse.Namespace) -> int:
    options = ReceiverOptions(
        host=args.host,
        port=args.port,
        path=args.path,
        secret=args.secret,
        fail_rate=args.fail_rate,
        status=args.status,
    )
    asyncio.run(_main(options))
    print("stopped", file=sys.stderr, flush=True)
    return 0
