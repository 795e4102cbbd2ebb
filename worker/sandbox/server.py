"""Building, starting and stopping the sandbox server, in-process or as a command."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from worker.errors import ConfigError
from worker.sandbox.api import Api, make_middleware
from worker.sandbox.inspection import Inspection
from worker.sandbox.oauth import OAuthServer
from worker.sandbox.options import SandboxOptions, check_options
from worker.sandbox.seed import load_seed
from worker.sandbox.state import SandboxState
from worker.sandbox.store import Store

STATE_KEY = web.AppKey("sandbox_state", SandboxState)


def build_app(opts: SandboxOptions) -> web.Application:
    """The sandbox as an aiohttp application. Raises ConfigError for bad options or seed."""
    check_options(opts)
    seed = load_seed(opts.seed_path)
    for tenant, zone in opts.tenant_timezones.items():
        if tenant not in seed.tenants:
            known = ", ".join(str(t) for t in sorted(seed.tenants))
            raise ConfigError(
                f"--tenant-timezone: the seed has no tenant {tenant} (it has {known})"
            )
        seed.tenants[tenant].timezone = zone
    store = Store(opts.state_path)
    state = SandboxState(opts, seed, store)
    app = web.Application(middlewares=[make_middleware(state)])
    app[STATE_KEY] = state
    app.add_routes(Api(state).routes())
    app.add_routes(Inspection(state).routes())
    app.add_routes(OAuthServer(state).routes())

    async def on_shutdown(_: web.Application) -> None:
        # Wake slow_after_commit handlers so shutdown never waits for them.
        state.stopping.set()

    async def on_cleanup(_: web.Application) -> None:
        store.close()

    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


@dataclass(frozen=True)
class RunningSandbox:
    """A started sandbox: where to reach it."""

    host: str
    port: int
    app: web.Application

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The base URL a client uses, like ``https://dev.flextell.ai/api``."""
        return self.url + "/api"


@asynccontextmanager
async def running_sandbox(opts: SandboxOptions | None = None) -> AsyncIterator[RunningSandbox]:
    """Start a sandbox on the running loop; stop it (state flushed) on exit."""
    opts = opts or SandboxOptions()
    app = build_app(opts)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=2.0,
        handler_cancellation=opts.handler_cancellation,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, opts.host, opts.port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {opts.host}:{opts.port}: {exc.strerror or exc}"
            ) from None
        port = int(runner.addresses[0][1])
        yield RunningSandbox(host=opts.host, port=port, app=app)
    finally:
        await runner.cleanup()


async def serve(opts: SandboxOptions, port_file: Path | None = None) -> None:
    """Run until SIGTERM or SIGINT, announcing the address once connections are accepted."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_sandbox(opts) as sb:
        if port_file is not None:
            tmp = port_file.with_name(port_file.name + ".tmp")
            tmp.write_text(f"{sb.port}\n")
            tmp.replace(port_file)  # a reader never sees a half-written number
        sys.stdout.write(f"sandbox listening on {sb.api_url}\n")
        sys.stdout.flush()
        await stop.wait()
