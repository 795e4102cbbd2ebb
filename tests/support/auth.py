"""Shared by the tests/test_auth_*.py files: a token-file config and `auth login` as a process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.sandbox_process import Sandbox
from tests.support.sync import ROOT, write_config

CLIENT_SECRET = "demo-secret"  # the shipped seed's OAuth client
LOGIN_ARGS = ("--no-browser", "--timeout", "60")
SECRET_ENV = {"FLEXTELL_CLIENT_SECRET": CLIENT_SECRET}


def token_config(tmp: Path, **api: Any) -> Path:
    """config/demo.toml with both tenants on one token file and the OAuth client set."""
    path = write_config(
        tmp,
        oauth_client_id='"demo-client"',
        oauth_client_secret='"env:FLEXTELL_CLIENT_SECRET"',
        **api,
    )
    text = path.read_text(encoding="utf-8").replace(
        'token = "env:FLEXTELL_TOKEN"', 'token = "file:secrets/flextell-token.json"'
    )
    path.write_text(text, encoding="utf-8")
    return path


def token_file(config: Path) -> Path:
    return config.parent / "secrets" / "flextell-token.json"


def write_token_file(config: Path, refresh_token: str) -> Path:
    """A private token file holding only a refresh token (as if logged in long ago)."""
    path = token_file(config)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    state = {"client_id": "demo-client", "client_secret": CLIENT_SECRET}
    path.write_text(json.dumps(state | {"refresh_token": refresh_token}))
    path.chmod(0o600)
    return path


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return env | SECRET_ENV | extra


def start_login(config: Path, sb: Sandbox, *args: str, stdin: int | None = None) -> Any:
    """`auth login` as a process; returns it and the authorize URL it printed."""
    command = [sys.executable, "-m", "worker", "auth", "login", "-c", str(config)]
    proc = subprocess.Popen(
        [*command, *LOGIN_ARGS, "--base-url", sb.base_url, *args],
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=worker_env(),
        cwd=ROOT,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "/oauth/authorize?" in line:
            return proc, line.strip(), "".join(seen)
    proc.kill()
    raise AssertionError(
        f"no authorize URL printed: {''.join(seen)} {proc.stderr.read() if proc.stderr else ''}"
    )


async def _follow(url: str, follow: bool) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, allow_redirects=follow) as resp,
    ):
        return resp.status, resp.headers.get("Location", "") or await resp.text()


def open_in_browser(url: str, *, follow: bool = True) -> tuple[int, str]:
    """What a browser does: GET the authorize URL and (if `follow`) its redirect."""
    return asyncio.run(_follow(url, follow))


def login(config: Path, sb: Sandbox) -> dict[str, Any]:
    """A complete loopback login; the stored token file's JSON."""
    proc, url, _ = start_login(config, sb)
    status, _body = open_in_browser(url)
    out, err = proc.communicate(timeout=60)
    assert (status, proc.returncode) == (200, 0), (out, err)
    data: dict[str, Any] = json.loads(token_file(config).read_text())
    return data


def run_worker(*args: str, env: dict[str, str] | None = None, umask: int = 0o022) -> Any:
    """The CLI as a process under a permissive umask (the worker must tighten it itself)."""
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        capture_output=True,
        text=True,
        env=env or worker_env(),
        cwd=ROOT,
        timeout=120,
        preexec_fn=lambda: os.umask(umask),
    )
