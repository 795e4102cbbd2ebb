"""Injected faults of ``POST /v1/appointments``: drawn per request, answered like a real outage."""

from __future__ import annotations

import asyncio
import contextlib
import math

from aiohttp import web

from worker.sandbox.options import FAULTS_AFTER, FAULTS_BEFORE
from worker.sandbox.state import DROPPED_KEY, RATE_HEADERS_KEY, SandboxState, dumps, json_response

HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def draw(state: SandboxState) -> tuple[str | None, str | None]:
    """Draw every configured kind independently; the first hit before and after commit win."""
    table = state.faults
    if not table:
        return None, None
    rng = state.fault_rng
    hits = {kind for kind, p in table.items() if p > 0 and rng.random() < p}
    before = next((k for k in FAULTS_BEFORE if k in hits), None)
    after = next((k for k in FAULTS_AFTER if k in hits), None)
    return before, after


def drop(request: web.Request) -> web.Response:
    """Abort the connection: the client gets no response at all."""
    if request.transport is not None:
        request.transport.abort()
    request[DROPPED_KEY] = True
    # Writing this to the aborted transport fails quietly inside aiohttp.
    return web.Response(status=204)


def before_commit(state: SandboxState, request: web.Request, kind: str) -> web.Response:
    """Answer a fault that creates nothing."""
    state.stats.faults[kind] += 1
    if kind == "reset_before":
        return drop(request)
    if kind == "error500":
        return json_response({"message": "Server Error"}, 500)
    if kind == "error503":
        return json_response({"message": "Service Unavailable"}, 503, {"Retry-After": "1"})
    if kind == "html502":
        return web.Response(text=HTML_502, status=502, content_type="text/html")
    # throttle429: a 429 the limiter did not decide, shaped exactly like a real one.
    limit = state.limiter.rate.count if state.limiter else 60
    reset = math.ceil(state.clock() + 1)
    request[RATE_HEADERS_KEY] = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0"}
    return json_response(
        {"message": "Too Many Attempts."},
        429,
        {"Retry-After": "1", "X-RateLimit-Reset": str(reset)},
    )


async def after_commit(
    state: SandboxState, request: web.Request, kind: str | None, body: dict[str, object]
) -> web.Response:
    """Answer a committed create, unless a fault loses or mangles the answer."""
    if kind is None:
        return json_response(body, 201)
    state.stats.faults[kind] += 1
    if kind == "drop_after_commit":
        return drop(request)
    if kind == "slow_after_commit":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), state.opts.slow_seconds)
        if state.stopping.is_set():
            return drop(request)
        return json_response(body, 201)
    text = dumps(body).encode()
    return web.Response(body=text[: len(text) // 2], status=201, content_type="application/json")
