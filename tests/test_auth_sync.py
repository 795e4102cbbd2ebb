"""Imports on OAuth tokens: expiry and rotation mid-run, a dead refresh token; modes; transport."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.auth import (
    CLIENT_SECRET,
    login,
    run_worker,
    token_config,
    token_file,
    worker_env,
    write_token_file,
)
from tests.support.sandbox_process import Sandbox, start_sandbox, stop
from tests.support.sync import ROOT, sample_rows, write_csv

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow


@pytest.fixture
def short_tokens(tmp_path: Path) -> Iterator[Sandbox]:
    """A sandbox whose access tokens live two seconds."""
    proc, sb = start_sandbox(tmp_path, "--token-ttl", "2")
    try:
        yield sb
    finally:
        stop(proc)


def _export(tmp: Path, n: int) -> Path:
    columns, rows = sample_rows()
    return write_csv(tmp / "export.csv", columns, rows[:n])


def _summary(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, stdout
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def _token_posts(sb: Sandbox) -> list[int]:
    requests = sb.get("/_sandbox/requests")["requests"]
    return [r["status"] for r in requests if r["path"] == "/oauth/token"]


def test_a_sync_outlives_its_access_tokens_and_two_rotations(
    tmp_path: Path, short_tokens: Sandbox
) -> None:
    sb = short_tokens
    config = token_config(tmp_path, rate_limit='"15/second"', concurrency="2")
    first = login(config, sb)
    export = _export(tmp_path, 80)  # about 5 s at 15/s: beyond two 2-second tokens
    run = run_worker(
        "import", str(export), "-c", str(config), "--base-url", sb.base_url, "--json-logs"
    )
    summary = _summary(run.stdout)
    assert run.returncode == 0, run.stderr[-2000:]
    totals = summary["totals"]
    assert totals["created"] == 80, summary
    assert totals.get("failed", 0) == 0 and totals.get("unknown", 0) == 0
    assert sb.stats()["appointments_total"] == 80
    posts = _token_posts(sb)
    assert posts.count(200) >= 3 and 400 not in posts  # the login, then >= 2 rotations
    last = json.loads(token_file(config).read_text())
    assert last["refresh_token"] != first["refresh_token"]
    assert stat.S_IMODE(token_file(config).stat().st_mode) == 0o600


def test_a_dead_refresh_token_stops_the_tenant_with_the_relogin_message(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = token_config(tmp_path)
    write_token_file(config, "revoked-long-ago-0001")
    export = _export(tmp_path, 10)
    run = run_worker("import", str(export), "-c", str(config), "--base-url", sbx.base_url)
    assert run.returncode == 3, run.stdout + run.stderr
    out = run.stdout + run.stderr
    assert "refresh token rejected" in out and "run `flextell-worker auth login" in out
    assert "revoked-long-ago-0001" not in out and CLIENT_SECRET not in out
    assert sbx.stats()["appointments_total"] == 0


WORKER = (sys.executable, "-m", "worker")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_file_the_worker_writes_is_owner_only(tmp_path: Path, sbx: Sandbox) -> None:
    config = token_config(tmp_path, rate_limit='"20/second"', concurrency="1")
    text = config.read_text().replace('[ledger]\npath = "ledger.sqlite"', "")
    config.write_text(text)
    login(config, sbx)
    state_dir = tmp_path / "state" / "flextell-worker"
    env = {"FLEXTELL_WORKER_STATE_DIR": str(state_dir)}
    columns, rows = sample_rows()
    rows = rows[:40]
    rows[3] = rows[3] | {"customer_id": "not-a-number"}  # one invalid row for the failures
    export = write_csv(tmp_path / "export.csv", columns, rows)
    ledger = state_dir / "run.sqlite"
    proc = subprocess.Popen(
        [*WORKER, "import", str(export), "-c", str(config), "--base-url", sbx.base_url],
        env=worker_env(**env),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.umask(0o022),
    )
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        for suffix in ("", "-wal", "-shm", ".lock"):
            candidate = ledger.with_name(ledger.name + suffix)
            with contextlib.suppress(FileNotFoundError):
                seen[suffix] = _mode(candidate)
        time.sleep(0.02)
    assert proc.wait(60) == 1  # the invalid row needs a person
    assert seen == {"": 0o600, "-wal": 0o600, "-shm": 0o600, ".lock": 0o600}
    assert _mode(state_dir) == 0o700 and _mode(state_dir.parent) == 0o700
    assert _mode(token_file(config)) == 0o600
    worker = worker_env(**env)
    failures = tmp_path / "failures.csv"
    run = run_worker("report", "-c", str(config), "--failures", str(failures), env=worker)
    assert run.returncode == 0 and _mode(failures) == 0o600
    report = tmp_path / "verify.json"
    run = run_worker(
        "verify", "-c", str(config), "--base-url", sbx.base_url, "--report", str(report), env=worker
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert _mode(report) == 0o600
    vreport, vfailures = tmp_path / "validate.json", tmp_path / "invalid.csv"
    run = run_worker(
        *("validate", str(export), "-c", str(config)),
        *("--report", str(vreport), "--failures", str(vfailures)),
        env=worker,
    )
    assert run.returncode == 1 and _mode(vreport) == 0o600 and _mode(vfailures) == 0o600


@pytest.mark.parametrize("command", ["import", "verify", "reconcile", "auth status", "auth login"])
def test_plain_http_to_another_host_is_refused_before_connecting(
    tmp_path: Path, command: str
) -> None:
    config = token_config(tmp_path)
    export = _export(tmp_path, 3)
    args = [*command.split(), *([str(export)] if command == "import" else [])]
    # 192.0.2.1 is TEST-NET-1: nothing answers there, so only a refusal ends this quickly.
    run = run_worker(*args, "-c", str(config), "--base-url", "http://192.0.2.1/api")
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.startswith("error: --base-url: http://192.0.2.1/api is plain http://")
    assert "--allow-insecure-http" in run.stderr


@pytest.mark.parametrize("command", ["import", "verify", "reconcile", "auth status"])
def test_a_port_out_of_range_is_a_clear_error_naming_the_setting(
    tmp_path: Path, command: str
) -> None:
    config = token_config(tmp_path)
    args = [*command.split(), *([str(_export(tmp_path, 3))] if command == "import" else [])]
    run = run_worker(*args, "-c", str(config), "--base-url", "http://127.0.0.1:99999/api")
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr == (
        "error: --base-url: http://127.0.0.1:99999/api has port '99999': expected a number "
        "from 1 to 65535, or no port (443 for https://, 80 for http://)\n"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://clinic:Tr0ub4dor/3@api.example.com/api",
        "https://clinic:Sec?ret9@api.example.com/api",
        "https://clinic:Sec#ret9@api.example.com/api",
        "htps://clinic:Sec/ret9@api.example.com/api",
    ],
)
def test_a_password_that_breaks_the_host_part_is_refused_unshown(tmp_path: Path, url: str) -> None:
    # The port check came first: "https://clinic:Tr0ub4dor/3@..." has no user part for
    # urlsplit, so the error showed the URL, the password read as its port, and the
    # summary file a scheduler mails held it too.
    config = token_config(tmp_path)
    config.write_text(config.read_text().replace("http://127.0.0.1:8787/api", url))
    export = str(_export(tmp_path, 3))
    summary = tmp_path / "summary.txt"
    runs = [
        run_worker("import", export, "-c", str(config), "--summary-file", str(summary)),
        run_worker("validate", export, "-c", str(config)),
        run_worker("auth", "status", "-c", str(token_config(tmp_path)), "--base-url", url),
    ]
    for run in runs:
        assert run.returncode == 2, run.stdout + run.stderr
        assert "the URL must not contain a user name or password" in run.stderr
        assert "ret9" not in run.stdout + run.stderr and "Tr0ub4dor" not in run.stderr
    assert "Tr0ub4dor" not in summary.read_text() and "ret9" not in summary.read_text()


def test_plain_http_in_the_config_is_refused_and_the_flag_allows_it(tmp_path: Path) -> None:
    config = token_config(tmp_path)
    text = config.read_text().replace("http://127.0.0.1:8787/api", "http://flextell.example/api")
    config.write_text(text)
    export = _export(tmp_path, 3)
    run = run_worker("import", str(export), "-c", str(config), "--dry-run")
    assert run.returncode == 2 and "api.base_url: http://flextell.example/api" in run.stderr
    run = run_worker("import", str(export), "-c", str(config), "--dry-run", "--allow-insecure-http")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://dev.flextell.ai/api", True),
        ("http://127.0.0.1:8099/api", True),
        ("http://127.8.9.10/api", True),
        ("http://[::1]:80/api", True),
        ("http://localhost/api", True),
        ("http://10.0.0.5/api", False),
        ("http://localhost.evil.example/api", False),
        ("ftp://dev.flextell.ai/api", False),
        ("https://user:pw@dev.flextell.ai/api", False),
        ("https://dev.flextell.ai:8443/api", True),
        ("http://127.0.0.1:99999/api", False),
        ("http://127.0.0.1:0/api", False),
        ("http://[::1]:65536/api", False),
        ("https://dev.flextell.ai:443x/api", False),
        ("https://user:pw@[::1/api", False),
    ],
)
def test_which_base_urls_pass(url: str, ok: bool) -> None:
    from worker.api.transport import check_base_url
    from worker.errors import ConfigError

    if ok:
        check_base_url(url, allow_insecure_http=False)
    else:
        with pytest.raises(ConfigError) as caught:
            check_base_url(url, allow_insecure_http=False)
        assert "pw" not in str(caught.value)


def test_a_bad_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    config = token_config(tmp_path, ca_bundle=f'"{bundle}"')
    run = run_worker("auth", "status", "-c", str(config))
    assert run.returncode == 2 and "api.ca_bundle" in run.stderr and "PEM" in run.stderr
