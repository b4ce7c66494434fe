"""The REST API's request handlers: transcode a request to its backend, and the built-ins.

`ApiHandlers.transcode` answers every `/api` route: match, read the body (within
the body timeout, 408 after it; 499 when the client goes away meanwhile),
build the request message, check it fits the backend's receive limit (413
naming the limit: gRPC's own refusal would be RESOURCE_EXHAUSTED, a 429),
call the backend, render the answer or the error, and count it. `/healthz`,
`/metrics` and `/openapi.json` are answered here too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import grpc
from aiohttp import web

from edgesense.api.backends import Backends
from edgesense.api.comments import load_comments
from edgesense.api.connections import HttpLimits
from edgesense.api.metadata import outgoing_metadata
from edgesense.api.metrics import CONTENT_TYPE, UNMATCHED_ROUTE, ApiMetrics
from edgesense.api.openapi import openapi_document
from edgesense.api.router import RouteMatch, Router
from edgesense.api.status import TranscodeError
from edgesense.api.transcode import (
    MAX_BODY_BYTES,
    build_request,
    check_charset,
    render_response,
)
from edgesense.common.message_limits import max_receive

log = logging.getLogger(__name__)


class ApiHandlers:
    """The request handlers, over a router, the backends and the metrics."""

    def __init__(
        self,
        router: Router,
        backends: Backends,
        metrics: ApiMetrics,
        body_timeout: float = HttpLimits.body_timeout,
    ) -> None:
        self.router = router
        self.backends = backends
        self.metrics = metrics
        self.body_timeout = body_timeout
        comments = load_comments()
        document = openapi_document(router.routes, comments=comments)
        self.openapi = json.dumps(document, indent=2).encode()

    async def transcode(self, request: web.Request) -> web.Response:
        started, label = time.perf_counter(), UNMATCHED_ROUTE
        with self.metrics.in_flight.track_inprogress():
            try:
                match = self.router.match(request.method, request.rel_url.raw_path)
                label = match.route.template.source
                response = _json_response(await self._forward(match, request))
            except TranscodeError as exc:
                response = error_response(exc)
                if exc.status == 408:  # the rest of the body may still come: drop it
                    response.force_close()
            except Exception:
                log.exception("api: unexpected error answering %s %s", request.method, request.path)
                response = error_response(
                    TranscodeError(grpc.StatusCode.INTERNAL, "internal error in the REST API")
                )
        self.metrics.observe(label, request.method, response.status, time.perf_counter() - started)
        return response

    async def _forward(self, match: RouteMatch, request: web.Request) -> bytes:
        route = match.route
        body = b""
        if route.body:
            check_charset(request.charset)
            body = await _read_body(request, self.body_timeout)
        message = build_request(match, body, request.rel_url.query.items())
        limit = max_receive(route.service)
        if message.ByteSize() > limit:
            raise _too_large(f"the request is larger than the {limit} bytes {route.service} reads")
        metadata = outgoing_metadata(
            request.headers.items(), peer=request.remote, host=request.headers.get("Host")
        )
        try:
            answer = await self.backends.call(route, message, metadata)
        except TranscodeError as exc:
            self.metrics.backend_call(route.grpc_path, exc.code.name)
            raise
        self.metrics.backend_call(route.grpc_path, grpc.StatusCode.OK.name)
        return render_response(route, answer)

    async def openapi_json(self, request: web.Request) -> web.Response:
        return self._builtin("/openapi.json", request, _json_response(self.openapi))

    async def healthz(self, request: web.Request) -> web.Response:
        return self._builtin("/healthz", request, _json_response(b'{"status": "ok"}'))

    async def metrics_text(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
        return self._builtin("/metrics", request, response)

    def _builtin(self, label: str, request: web.Request, response: web.Response) -> web.Response:
        self.metrics.observe(label, request.method, response.status, 0.0)
        return response


def error_response(error: TranscodeError) -> web.Response:
    return web.Response(
        status=error.status,
        body=error.body(),
        content_type="application/json",
        headers=error.headers,
    )


def _json_response(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def _too_large(message: str) -> TranscodeError:
    return TranscodeError(grpc.StatusCode.INVALID_ARGUMENT, message, status=413)


async def _read_body(request: web.Request, seconds: float) -> bytes:
    too_large = _too_large(f"request body is larger than {MAX_BODY_BYTES} bytes")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise too_large
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        raise TranscodeError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the request body did not arrive within {seconds:g} s",
            status=408,
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    except ConnectionError:
        # Nobody is left to answer: counted as 499 (nginx's "client closed
        # request"), not as our failure, and no traceback for a client's choice.
        log.debug(
            "api: client closed the connection mid-body (%s %s)", request.method, request.path
        )
        raise TranscodeError(
            grpc.StatusCode.CANCELLED, "the client closed the connection before the whole body"
        ) from None
