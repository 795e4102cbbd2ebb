"""Shared fixtures: an in-process Flextell sandbox and helpers to talk to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from worker.sandbox import RunningSandbox, SandboxOptions, running_sandbox

SandboxFactory = Callable[..., AbstractAsyncContextManager[RunningSandbox]]

TOKEN_T1 = "sandbox-token-tenant-1"
TOKEN_T2 = "sandbox-token-tenant-2"
TOKEN_ALL = "sandbox-token-all"


class FakeClock:
    """Time that only moves when a test says so, or when code sleeps on it.

    Callable, for SandboxOptions(clock=...); and a `worker.clock.Clock` for lanes,
    pause gates and retries: `sleep` moves time on at once (and records how long),
    so a 30-second pause takes no real time.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)  # a suspension point first, as a real sleep is
        self.now += max(0.0, seconds)


def api_headers(token: str = TOKEN_ALL, tenant: int | None = 1) -> dict[str, str]:
    """Authorization and X-Tenant headers for the default seed."""
    headers = {"Authorization": f"Bearer {token}"}
    if tenant is not None:
        headers["X-Tenant"] = str(tenant)
    return headers


async def read_stats(sb: RunningSandbox | str) -> dict[str, Any]:
    """``GET /_sandbox/stats`` of a running sandbox (or its root URL)."""
    url = sb if isinstance(sb, str) else sb.url
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/_sandbox/stats") as resp,
    ):
        resp.raise_for_status()
        data: dict[str, Any] = await resp.json()
        return data


@pytest.fixture
def sandbox_factory() -> SandboxFactory:
    """Start a sandbox in-process: ``async with sandbox_factory(faults={...}) as sb:``."""

    def factory(**kwargs: Any) -> AbstractAsyncContextManager[RunningSandbox]:
        return running_sandbox(SandboxOptions(**kwargs))

    return factory


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    """A sandbox with default options (default seed, in memory, no faults)."""
    async with running_sandbox(SandboxOptions()) as sb:
        yield sb


@pytest.fixture
def sandbox_stats() -> Callable[[RunningSandbox | str], Awaitable[dict[str, Any]]]:
    """The `read_stats` helper as a fixture, for tests outside this package's imports."""
    return read_stats


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session, closed after the test."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def sbx(tmp_path: Path) -> Iterator[Any]:
    """A sandbox as a real process (default seed, in memory, no faults), stopped after the test."""
    from tests.support.sandbox_process import sandbox_process

    with sandbox_process(tmp_path) as sb:
        yield sb


# --- PostgreSQL (the shared ledger) ----------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One real PostgreSQL for the session, from the machine's own initdb/pg_ctl.

    Skips with the reason when none is installed (see bench/pgserver.py).
    """
    from bench.pgserver import PgServer, find_bin_dir

    if find_bin_dir() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed")
    server = PgServer()
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_server: Any, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the session's PostgreSQL for one test."""
    import re

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    url: str = pg_server.create_database(name)
    return url
