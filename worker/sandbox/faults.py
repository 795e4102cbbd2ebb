"""Injected faults of ``POST /v1/appointments``: drawn per request, answered like a real outage."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import NamedTuple

from aiohttp import web

from worker.sandbox.options import FAULTS_AFTER, FAULTS_BEFORE, FAULTS_LATE, retry_after_until
from worker.sandbox.state import DROPPED_KEY, RATE_HEADERS_KEY, SandboxState, dumps, json_response
from worker.sandbox.store import Appointment

HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


GATEWAY_503 = (
    "upstream connect error or disconnect/reset before headers. "
    "reset reason: connection termination"
)
"""What Envoy (Istio's gateway) answers when the upstream's connection ends before its
answer: the request may well have been processed."""


HTML_500 = (
    '<!DOCTYPE html>\n<html lang="en">\n<head><title>Server Error</title></head>\n'
    '<body><div class="code">500</div><div class="message">Server Error</div></body>\n'
    "</html>\n"
)


class Drawn(NamedTuple):
    """The faults one POST gets: before commit, after it, and a late commit."""

    before: str | None
    after: str | None
    late: str | None


def draw(state: SandboxState, table: dict[str, float] | None = None) -> Drawn:
    """Draw every configured kind independently; the first hit of each group wins.

    A fault before commit beats a late commit, which beats a fault after commit
    (a late commit answers 201 to whoever is still listening).
    """
    table = state.faults if table is None else table
    if not table:
        return Drawn(None, None, None)
    rng = state.fault_rng
    hits = {kind for kind, p in table.items() if p > 0 and rng.random() < p}
    before = next((k for k in FAULTS_BEFORE if k in hits), None)
    after = next((k for k in FAULTS_AFTER if k in hits), None)
    late = next((k for k in FAULTS_LATE if k in hits), None)
    return Drawn(before, after, late)


def listening(request: web.Request) -> bool:
    """Whether the client of `request` still holds its connection open."""
    transport = request.transport
    return transport is not None and not transport.is_closing()


async def commit_when_due(
    state: SandboxState, request: web.Request, delay: float, commit: Callable[[], Appointment]
) -> tuple[Appointment | None, bool]:
    """Run `commit` after `delay` seconds, whatever the client does meanwhile.

    The wait and the commit run in their own task behind ``asyncio.shield``: a
    client that disconnects (and a server that cancels handlers when it does)
    cannot stop them, as a PHP worker behind a proxy finishes after the client
    left. Returns the appointment (None if the sandbox began stopping first:
    nothing committed) and whether the client was still there to hear of it.
    """
    if delay <= 0:
        return commit(), True

    async def later() -> tuple[Appointment | None, bool]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), delay)
        if state.stopping.is_set():
            return None, False
        appt = commit()
        heard = listening(request)
        if not heard:
            state.stats.unheard_commits += 1
        return appt, heard

    task = asyncio.ensure_future(later())
    state.background.add(task)
    task.add_done_callback(state.background.discard)
    return await asyncio.shield(task)


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
    retry_after = state.opts.retry_after
    if kind == "error503":
        return json_response({"message": "Service Unavailable"}, 503, {"Retry-After": retry_after})
    if kind == "html502":
        return web.Response(text=HTML_502, status=502, content_type="text/html")
    # throttle429: a 429 the limiter did not decide, shaped exactly like a real one.
    limit = state.limiter.rate.count if state.limiter else 60
    reset = math.ceil(retry_after_until(retry_after, state.clock()))
    request[RATE_HEADERS_KEY] = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0"}
    return json_response(
        {"message": "Too Many Attempts."},
        429,
        {"Retry-After": retry_after, "X-RateLimit-Reset": str(reset)},
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
    if kind == "gateway503_after_commit":
        headers = {"Retry-After": state.opts.retry_after}
        return web.Response(text=GATEWAY_503, status=503, headers=headers)
    text = dumps(body).encode()
    return web.Response(body=text[: len(text) // 2], status=201, content_type="application/json")
