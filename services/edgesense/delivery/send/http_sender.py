"""The one module of the delivery service that speaks HTTP: one POST = one attempt.

Why aiohttp: with many requests in flight, aiohttp's client measured 30-70x
faster than httpx's here (encode/httpx#3215), and delivery keeps hundreds of
POSTs in flight. One `TCPConnector` is shared by all attempts: keep-alive
connections pooled per target, bounded overall but not per host: the
dispatcher bounds each webhook's attempts itself, and a per-host bound would
make webhooks on one host (a SaaS, a reverse proxy) share one pool, where one
webhook's hanging requests hold every connection the others need. TLS is verified
against the system CAs plus `EDGESENSE_CA_BUNDLE`; redirects are not
followed (a 3xx is a failed attempt); no cookies are kept; no proxy from the
environment is used. `post()` turns every network, TLS, HTTP and timeout
failure into an `AttemptResult` with a short reason; it raises only for
programming errors.

The private-network rule (`netpolicy.is_forbidden_address`) is applied to the
address actually connected to: the connector gets a resolver that drops every
forbidden address from what DNS answers, and refuses the host when none is
left. The connector only connects to addresses its resolver returned, so
there is no window between the check and the connection for DNS rebinding to
use. aiohttp does not consult the resolver for IP-literal hosts, so `post()`
checks those itself before connecting.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from edgesense.common.backoff import RETRY_AFTER_STATUSES, parse_retry_after
from edgesense.common.config import Settings
from edgesense.common.netpolicy import is_forbidden_address
from edgesense.common.signing import USER_AGENT
from edgesense.delivery.send.attempt import AttemptResult

EXCERPT_BYTES = 1024


class PrivateAddressError(OSError):
    """The target resolves only to addresses the private-network rule forbids."""

    def __init__(self, host: str) -> None:
        super().__init__(
            f"refused: {host} resolves to a private address "
            "(set EDGESENSE_ALLOW_PRIVATE_NETWORKS=1 to allow)"
        )
        self.host = host


class PublicAddressResolver(AbstractResolver):
    """Resolves with `inner` and keeps only addresses webhooks may reach."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        allowed = [
            result
            for result in await self._inner.resolve(host, port, family)
            if not is_forbidden_address(result["host"])
        ]
        if not allowed:
            raise PrivateAddressError(host)
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class HttpSender:
    """Sends webhook POSTs over one pooled aiohttp session; `start()` before use."""

    def __init__(
        self,
        timeout_seconds: float = 3.0,
        allow_private_networks: bool = False,
        ca_bundle: str | os.PathLike[str] | None = None,
        max_connections: int = 256,
        user_agent: str = USER_AGENT,
        *,
        resolver: AbstractResolver | None = None,
    ) -> None:
        """`resolver` replaces aiohttp's default DNS resolver (the private-network
        filter still wraps it); tests use it to make a name resolve to loopback."""
        self.timeout_seconds = timeout_seconds
        self.allow_private_networks = allow_private_networks
        self._ca_bundle = ca_bundle
        self._max_connections = max_connections
        self._user_agent = user_agent
        self._inner_resolver = resolver
        self._resolver: AbstractResolver | None = None  # closed by us: the connector won't
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpSender:
        return cls(
            timeout_seconds=settings.delivery_timeout_seconds,
            allow_private_networks=settings.allow_private_networks,
            ca_bundle=settings.ca_bundle,
            max_connections=settings.delivery_concurrency,
        )

    async def start(self) -> None:
        if self._session is not None:
            return
        tls = ssl.create_default_context()
        if self._ca_bundle is not None:
            tls.load_verify_locations(cafile=self._ca_bundle)
        resolver = self._inner_resolver or DefaultResolver()
        if not self.allow_private_networks:
            resolver = PublicAddressResolver(resolver)
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            ssl=tls,
            resolver=resolver,
        )
        self._resolver = resolver
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
            headers={"User-Agent": self._user_agent},
            trust_env=False,
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        resolver, self._resolver = self._resolver, None
        if session is not None:
            await session.close()
        if resolver is not None:
            await resolver.close()

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
        session = self._session
        if session is None:
            raise RuntimeError("HttpSender.start() has not been awaited")
        started_at = datetime.now(UTC)
        began = time.monotonic()
        status: int | None = None
        excerpt = b""
        retry_after: float | None = None
        error: str | None = None
        target: URL | None = None
        try:
            target = URL(url)
        except ValueError as exc:
            error = f"invalid URL: {exc}"
        else:
            error = self._refuse_ip_literal(target.raw_host)
        try:
            if target is not None and error is None:
                async with session.post(
                    target, data=body, headers=headers, allow_redirects=False
                ) as response:
                    status = response.status
                    if status in RETRY_AFTER_STATUSES:
                        retry_after = parse_retry_after(
                            response.headers.get("Retry-After"), datetime.now(UTC)
                        )
                    while len(excerpt) < EXCERPT_BYTES:
                        chunk = await response.content.read(EXCERPT_BYTES - len(excerpt))
                        if not chunk:
                            break
                        excerpt += chunk
                    if not response.content.at_eof():
                        response.close()  # do not download the rest; drop the connection
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            error = self._describe(exc)
        return AttemptResult(
            started_at=started_at,
            duration_ms=round((time.monotonic() - began) * 1000),
            status_code=status,
            error=error,
            response_excerpt=excerpt.decode("utf-8", errors="replace"),
            retry_after=retry_after,
        )

    def _refuse_ip_literal(self, host: str | None) -> str | None:
        # The same test aiohttp uses to skip the resolver (helpers.is_ip_address).
        if self.allow_private_networks or not host:
            return None
        if (":" in host or host.replace(".", "").isdigit()) and is_forbidden_address(host):
            return str(PrivateAddressError(host))
        return None

    def _describe(self, exc: BaseException) -> str:
        """A short, human reason for the attempt log."""
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, PrivateAddressError):
                return str(cause)
            cause = cause.__cause__ or getattr(cause, "os_error", None)
        if isinstance(exc, TimeoutError):  # aiohttp's timeouts subclass it too
            return f"timeout after {float(self.timeout_seconds)} s"
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            reason = exc.certificate_error
            detail = getattr(reason, "verify_message", None) or str(reason)
            return f"TLS certificate verify failed: {detail}"
        if isinstance(exc, aiohttp.ClientConnectorSSLError):
            return f"TLS error: {getattr(exc.os_error, 'reason', None) or exc.os_error}"
        if isinstance(exc, aiohttp.ClientConnectorError):
            if exc.os_error.errno == errno.ECONNREFUSED:
                return "connection refused"
            if isinstance(exc.os_error, socket.gaierror):
                return f"cannot resolve {exc.host}: {exc.os_error.strerror}"
            return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc}"
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return "the server closed the connection without answering"
        if isinstance(exc, aiohttp.ClientPayloadError):
            return f"broken response body: {exc}"
        if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
            return f"invalid URL: {exc}"
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
