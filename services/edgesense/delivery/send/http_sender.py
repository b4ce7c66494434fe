"""The one module of the delivery service that speaks HTTP: one POST = one attempt.

Why libcurl (pycurl): a webhook POST costs its sender process about half the
CPU that aiohttp's client did (measured here: 160 against 310 µs per request
with 64 in flight, uvloop; `make bench` fan-out on PostgreSQL: the senders'
CPU 11 s -> 6 s for 30,000 POSTs), because libcurl writes the request,
parses the answer, pools connections and keeps its timers in C. Python is
left with the glue below: one `CurlMulti` driven by the event loop through
libcurl's socket and timer callbacks (`_CurlLoop`), and one reusable easy
handle per request in flight. aiohttp had replaced httpx before for the same
reason (encode/httpx#3215).

What a POST does: HTTP/1.1 (no HTTP/2: one request per connection at a
time, as receivers expect of webhooks), keep-alive connections pooled per
target and bounded overall (`max_connections`) but not per host: the
dispatcher bounds each webhook's attempts itself, and a per-host bound would
make webhooks on one host (a SaaS, a reverse proxy) share one pool, where one
webhook's hanging requests hold every connection the others need. TLS is
verified against the system CAs plus `EDGESENSE_CA_BUNDLE`; redirects are not
followed (a 3xx is a failed attempt); no cookies are kept; no proxy from the
environment is used; only http and https URLs are sent; no `Expect:
100-continue` round trip. The timeout covers the whole attempt, connecting
and reading the answer included. At most `EXCERPT_BYTES` of the answer are
read: a longer body is not downloaded, its connection is dropped. `post()`
turns every network, TLS, HTTP and timeout failure into an `AttemptResult`
with a short reason; it raises only for programming errors. One rule of
libcurl's is kept on purpose: a POST on a reused keep-alive connection that
the receiver closes without a byte of answer (usually an idle connection it
was closing just then) is sent once more on a new connection within the same
attempt; Go's net/http does the same for requests with an idempotency key,
which `webhook-id` is, so a receiver that did process it drops the copy.

The private-network rule (`netpolicy.is_forbidden_address`) is applied to the
address actually connected to: libcurl asks `_open_socket` for every socket
it connects, with the address it resolved (or the IP literal of the URL),
and a forbidden address gets no socket at all. There is no window between
the check and the connection for DNS rebinding to use, and no connection is
ever attempted to a refused address.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import pycurl
from yarl import URL

from edgesense.common.backoff import RETRY_AFTER_STATUSES, parse_retry_after
from edgesense.common.config import Settings
from edgesense.common.netpolicy import is_forbidden_address
from edgesense.common.signing import USER_AGENT
from edgesense.delivery.send.attempt import AttemptResult, elapsed_ms, failed_attempt

EXCERPT_BYTES = 1024
Done = Callable[[AttemptResult], None]
_EPOCH = datetime.fromtimestamp(0, UTC)
_RETRY_AFTER = b"retry-after:"
# A transfer's code when it did not end in libcurl: the sender was closed, or
# libcurl's multi handle failed (both end every attempt in flight).
_CLOSED = -1
_BROKEN = -2
# What libcurl says when the answer itself was broken, and when TLS failed.
_BROKEN_ANSWER = (
    pycurl.E_RECV_ERROR,
    pycurl.E_PARTIAL_FILE,
    pycurl.E_FTP_WEIRD_SERVER_REPLY,  # 8, CURLE_WEIRD_SERVER_REPLY: pycurl keeps its old name
)
_TLS_ERRORS = (
    pycurl.E_SSL_CONNECT_ERROR,
    pycurl.E_SSL_CERTPROBLEM,
    pycurl.E_SSL_CIPHER,
    pycurl.E_SSL_CACERT_BADFILE,
)


def private_refusal(host: str) -> str:
    """The reason of an attempt whose target has only addresses the private-network rule forbids."""
    return (
        f"refused: {host} resolves to a private address "
        "(set EDGESENSE_ALLOW_PRIVATE_NETWORKS=1 to allow)"
    )


def _open_socket(address: Any) -> int:
    """The one place a webhook's socket is made, for libcurl's `address`
    (family, socktype, protocol, addr); tests watch it. libcurl owns (and
    closes) the descriptor."""
    return socket.socket(address.family, address.socktype, address.protocol).detach()


class _Transfer:
    """One easy handle and the attempt it is making; reused for the next one."""

    __slots__ = (
        "allow_private",
        "began",
        "connected",
        "curl",
        "done",
        "excerpt",
        "refused",
        "retry_after",
        "socket_error",
        "started_at",
        "truncated",
        "url",
    )

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.curl = pycurl.Curl()
        self.done: Done | None = None  # told how the attempt ended
        self.url = ""
        self.started_at = _EPOCH
        self.began = 0.0
        self.excerpt = bytearray()
        self.retry_after: bytes | None = None
        self.refused = False  # an address was refused by the private-network rule
        self.connected = False  # a socket was made for an address
        self.socket_error: OSError | None = None
        self.truncated = False

    def reset(self, url: str, done: Done, started_at: datetime, began: float) -> None:
        self.url, self.done, self.started_at, self.began = url, done, started_at, began
        self.excerpt.clear()
        self.retry_after = None
        self.refused = self.connected = self.truncated = False
        self.socket_error = None

    def write(self, data: bytes) -> int | None:
        room = EXCERPT_BYTES - len(self.excerpt)
        self.excerpt += data[:room]
        if len(data) <= room:
            return None
        # Anything but None or len(data) stops the transfer (E_WRITE_ERROR):
        # the rest of a long answer is not downloaded.
        self.truncated = True
        return 0

    def header(self, line: bytes) -> None:
        if line[:12].lower() == _RETRY_AFTER:
            self.retry_after = line[12:]

    def open_socket(self, purpose: int, address: Any) -> int:
        """Every socket libcurl connects, refused for a forbidden address."""
        if not self.allow_private and is_forbidden_address(address.addr[0]):
            self.refused = True
            return pycurl.SOCKET_BAD
        try:
            made = _open_socket(address)
        except OSError as exc:  # out of descriptors, say: told as the attempt's reason
            self.socket_error = exc
            return pycurl.SOCKET_BAD
        self.connected = True
        return made


class _CurlLoop:
    """A `CurlMulti` driven by the running event loop: libcurl says which
    sockets to watch and when its next timeout is; the loop calls back with
    readiness, and each finished transfer goes to `finished` with libcurl's
    code (0: done) or `_CLOSED` / `_BROKEN`."""

    def __init__(self, max_connections: int, finished: Callable[[_Transfer, int], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._finished = finished
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self._watch)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self._set_timer)
        self.multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, max_connections)
        self.multi.setopt(pycurl.M_MAXCONNECTS, max_connections)
        self._watched: dict[int, int] = {}  # fd -> POLL_IN | POLL_OUT bits watched
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.transfers: dict[pycurl.Curl, _Transfer] = {}  # in flight
        self.broken = ""  # why the multi handle failed, once it has

    def start(self, transfer: _Transfer) -> None:
        self.multi.add_handle(transfer.curl)  # libcurl sets a 0 ms timer: it starts there
        self.transfers[transfer.curl] = transfer

    def stop(self, transfer: _Transfer) -> None:
        """Abandon a transfer in flight (its attempt was cancelled)."""
        if self.transfers.pop(transfer.curl, None) is not None:
            self.multi.remove_handle(transfer.curl)

    def close(self) -> None:
        """End every transfer in flight (its attempt gets `_CLOSED`) and the multi handle."""
        self._end_all(_CLOSED)
        if self._timer is not None:
            self._timer.cancel()
        for fd in list(self._watched):
            self._watch(pycurl.POLL_REMOVE, fd, self.multi, None)
        self.multi.close()

    def _end_all(self, code: int) -> None:
        for transfer in list(self.transfers.values()):
            self.stop(transfer)
            self._finished(transfer, code)

    def _watch(self, what: int, fd: int, _multi: Any, _data: Any) -> None:
        loop, before = self._loop, self._watched.get(fd, 0)
        want = 0 if what == pycurl.POLL_REMOVE else what  # POLL_IN 1, POLL_OUT 2, INOUT 3
        if want & pycurl.POLL_IN and not before & pycurl.POLL_IN:
            loop.add_reader(fd, self._act, fd, pycurl.CSELECT_IN)
        elif before & pycurl.POLL_IN and not want & pycurl.POLL_IN:
            loop.remove_reader(fd)
        if want & pycurl.POLL_OUT and not before & pycurl.POLL_OUT:
            loop.add_writer(fd, self._act, fd, pycurl.CSELECT_OUT)
        elif before & pycurl.POLL_OUT and not want & pycurl.POLL_OUT:
            loop.remove_writer(fd)
        if want:
            self._watched[fd] = want
        else:
            self._watched.pop(fd, None)

    def _set_timer(self, milliseconds: int) -> None:
        # libcurl moves its one timeout often; a timer firing early only makes
        # it say the next one, so a pending earlier timer is kept.
        if milliseconds < 0:
            return
        at = self._loop.time() + milliseconds / 1000
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._act(pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, events: int) -> None:
        multi = self.multi
        try:
            multi.socket_action(fd, events)
        except pycurl.error as exc:
            # libcurl's multi handle failed (a callback of ours raised, say):
            # no transfer in it will end, so each attempt ends now, told why;
            # later ones fail to start, and the pool's hung-sender watch
            # replaces the process.
            self.broken = str(exc)
            self._end_all(_BROKEN)
            return
        while True:
            queued, done, failed = multi.info_read()
            for curl in done:
                self._finish(curl, 0)
            for curl, code, _message in failed:
                self._finish(curl, code)
            if not queued:
                return

    def _finish(self, curl: pycurl.Curl, code: int) -> None:
        self.multi.remove_handle(curl)
        self._finished(self.transfers.pop(curl), code)


class HttpSender:
    """Sends webhook POSTs over one pooled libcurl multi handle; `start()` before use."""

    def __init__(
        self,
        timeout_seconds: float = 3.0,
        allow_private_networks: bool = False,
        ca_bundle: str | os.PathLike[str] | None = None,
        max_connections: int = 256,
        user_agent: str = USER_AGENT,
        *,
        hosts: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """`hosts` answers these names with these addresses instead of DNS (as
        /etc/hosts would; the private-network rule still applies): tests use
        it to make a name resolve to loopback."""
        self.timeout_seconds = timeout_seconds
        self.allow_private_networks = allow_private_networks
        self._ca_bundle = ca_bundle
        self._max_connections = max_connections
        self._user_agent = user_agent
        self._hosts = dict(hosts or {})
        self._trust: Trust | None = None
        self._curl: _CurlLoop | None = None
        self._idle: list[_Transfer] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpSender:
        return cls(
            timeout_seconds=settings.delivery_timeout_seconds,
            allow_private_networks=settings.allow_private_networks,
            ca_bundle=settings.ca_bundle,
            max_connections=settings.delivery_concurrency,
        )

    async def start(self) -> None:
        if self._curl is not None:
            return
        self._trust = Trust(self._ca_bundle)
        self._curl = _CurlLoop(self._max_connections, self._finished)

    async def close(self) -> None:
        curl = self._curl
        if curl is not None:
            curl.close()  # attempts in flight end now, as _CLOSED
            self._curl = None
        for transfer in self._idle:
            transfer.curl.close()
        self._idle.clear()
        if self._trust is not None:
            self._trust.close()
            self._trust = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        """POST `body` to `url`; every way it can end is an AttemptResult."""
        future: asyncio.Future[AttemptResult] = asyncio.get_running_loop().create_future()

        def done(result: AttemptResult) -> None:
            if not future.done():
                future.set_result(result)

        transfer = self.submit(url, body, headers, done)
        try:
            return await future
        except BaseException:
            if transfer is not None and self._curl is not None:
                self._curl.stop(transfer)
            raise

    def submit(
        self, url: str, body: bytes, headers: Mapping[str, str], done: Done
    ) -> _Transfer | None:
        """Start POSTing `body` to `url`; `done(result)` is called once, from
        the event loop, with how it ended (before `submit` returns when the URL
        cannot be sent at all). No task per attempt: what the sender processes
        use. Answers the transfer (for `post()` to abandon), or None."""
        curl = self._curl
        if curl is None:
            raise RuntimeError("HttpSender.start() has not been awaited")
        started_at = datetime.now(UTC)
        began = time.monotonic()
        if not url.isascii():
            url = ascii_url(url)
            if not url.isascii():
                done(failed_attempt(started_at, began, "invalid URL: not a URL libcurl can send"))
                return None
        transfer = self._idle.pop() if self._idle else self._new_transfer()
        transfer.reset(url, done, started_at, began)
        handle = transfer.curl
        handle.setopt(pycurl.URL, url)
        handle.setopt(pycurl.POSTFIELDS, body)
        # "name;" is libcurl's way to send an empty value ("name:" would drop
        # the header); "Expect:" drops its 100-continue round trip.
        lines = [f"{k}: {v}" if v else f"{k};" for k, v in headers.items()]
        lines.append("Expect:")
        try:
            handle.setopt(pycurl.HTTPHEADER, lines)
        except UnicodeEncodeError:  # registration allows only ASCII values; as UTF-8 anyway
            handle.setopt(pycurl.HTTPHEADER, [line.encode() for line in lines])
        if self._hosts:
            handle.setopt(pycurl.RESOLVE, self._resolve(url))
        curl.start(transfer)
        return transfer

    def _finished(self, transfer: _Transfer, code: int) -> None:
        done, transfer.done = transfer.done, None
        if code == _CLOSED:
            result = failed_attempt(
                transfer.started_at, transfer.began, "the sender stopped before the attempt ended"
            )
        elif code == _BROKEN:
            broken = self._curl.broken if self._curl is not None else ""
            result = failed_attempt(
                transfer.started_at, transfer.began, f"internal error: libcurl: {broken}"
            )
        else:
            result = self._result(transfer, code)
        if code >= 0 and self._curl is not None and not self._curl.broken:
            self._idle.append(transfer)
        else:  # the multi handle is going or gone
            transfer.curl.close()
        if done is not None:
            done(result)

    def _result(self, transfer: _Transfer, code: int) -> AttemptResult:
        handle, url = transfer.curl, transfer.url
        status: int | None = handle.getinfo(pycurl.RESPONSE_CODE) or None
        stopped_reading = code == pycurl.E_WRITE_ERROR and transfer.truncated
        error = None if code == 0 or stopped_reading else self._describe(transfer, code, url)
        retry_after = None
        if status in RETRY_AFTER_STATUSES and transfer.retry_after is not None:
            value = transfer.retry_after.decode("latin-1").strip()
            retry_after = parse_retry_after(value, datetime.now(UTC))
        return AttemptResult(
            started_at=transfer.started_at,
            duration_ms=elapsed_ms(transfer.began),
            status_code=status,
            error=error,
            response_excerpt=transfer.excerpt.decode("utf-8", errors="replace"),
            retry_after=retry_after,
        )

    def _new_transfer(self) -> _Transfer:
        transfer = _Transfer(self.allow_private_networks)
        handle = transfer.curl
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.TIMEOUT_MS, max(1, round(self.timeout_seconds * 1000)))
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        handle.setopt(pycurl.PROXY, "")  # none from the environment
        handle.setopt(pycurl.USERAGENT, self._user_agent)
        for option, value in self._trust.options if self._trust else ():
            handle.setopt(option, value)
        handle.setopt(pycurl.WRITEFUNCTION, transfer.write)
        handle.setopt(pycurl.HEADERFUNCTION, transfer.header)
        handle.setopt(pycurl.OPENSOCKETFUNCTION, transfer.open_socket)
        return transfer

    def _resolve(self, url: str) -> list[str]:
        """libcurl's RESOLVE entry for `url`'s host when `hosts` names it."""
        try:
            parts = urlsplit(url)
            host, port = parts.hostname or "", parts.port
        except ValueError:
            return []
        addresses = self._hosts.get(host)
        if not addresses:
            return []
        port = port or (443 if parts.scheme == "https" else 80)
        listed = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
        return [f"{host}:{port}:{listed}"]

    def _describe(self, transfer: _Transfer, code: int, url: str) -> str:
        """A short, human reason for the attempt log."""
        handle = transfer.curl
        message = handle.errstr()
        if code == pycurl.E_OPERATION_TIMEDOUT:
            return f"timeout after {float(self.timeout_seconds)} s"
        if code == pycurl.E_COULDNT_CONNECT:
            if transfer.refused and not transfer.connected:
                return private_refusal(_host_of(url))
            if transfer.socket_error is not None and not transfer.connected:
                return f"cannot connect: {transfer.socket_error.strerror or transfer.socket_error}"
            if handle.getinfo(pycurl.OS_ERRNO) == errno.ECONNREFUSED:
                return "connection refused"
            return f"cannot connect: {message}"
        if code == pycurl.E_COULDNT_RESOLVE_HOST:
            return f"cannot resolve {_host_of(url)}"
        if code == pycurl.E_PEER_FAILED_VERIFICATION:
            return f"TLS certificate verify failed: {message}"
        if code in _TLS_ERRORS:
            return f"TLS error: {message}"
        if code == pycurl.E_GOT_NOTHING:
            return "the server closed the connection without answering"
        if code in _BROKEN_ANSWER:
            return f"broken response: {message}"
        if code in (pycurl.E_URL_MALFORMAT, pycurl.E_UNSUPPORTED_PROTOCOL):
            return f"invalid URL: {message}"
        return message or f"libcurl error {code}"


def ascii_url(url: str) -> str:
    """`url` as libcurl takes it: an internationalised host in IDNA (this
    libcurl is built without libidn2), any other non-ASCII percent-encoded,
    as browsers send them; a URL that does not parse is left to libcurl's
    refusal."""
    try:
        return str(URL(url))
    except ValueError:
        return url


def _host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or url
    except ValueError:
        return url


class Trust:
    """The CAs TLS trusts: the system's (where Python's ssl finds them; the
    path compiled into the wheel's libcurl may not exist here) plus
    `ca_bundle`, checked when the sender starts so that a bad bundle stops it
    there and not attempt by attempt. With a bundle, both go into one private
    file (libcurl caches a CA file's parsed store for the whole multi handle;
    a CA blob would be parsed again for every new connection), removed by
    `close()`."""

    def __init__(self, ca_bundle: str | os.PathLike[str] | None) -> None:
        paths = ssl.get_default_verify_paths()  # cafile, capath: None where absent
        self.options: list[tuple[int, str]] = []
        self._combined: str | None = None
        cafile = paths.cafile
        if ca_bundle is not None:
            bundle = Path(ca_bundle)
            ssl.create_default_context().load_verify_locations(cafile=bundle)  # or raise
            system = Path(cafile).read_bytes() if cafile else b""
            descriptor, self._combined = tempfile.mkstemp(prefix="edgesense-ca-", suffix=".pem")
            with os.fdopen(descriptor, "wb") as out:
                out.write(system + b"\n" + bundle.read_bytes())
            cafile = self._combined
        if cafile:
            self.options.append((pycurl.CAINFO, cafile))
        if paths.capath:
            self.options.append((pycurl.CAPATH, paths.capath))

    def close(self) -> None:
        if self._combined is not None:
            Path(self._combined).unlink(missing_ok=True)
            self._combined = None
