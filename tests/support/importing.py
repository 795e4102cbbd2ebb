"""Helpers of the import-engine tests: input rows, configs, CLI runs, sandbox and ledger views.

No tests live here; the `test_import_*` modules import these helpers.
"""

from __future__ import annotations

import asyncio
import csv
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from click.testing import CliRunner, Result

from bench.generate import COLUMNS  # the export's columns, one list for tests and bench
from tests.support.unprivileged import without_file_override
from worker.cli import cli

REPO = Path(__file__).resolve().parents[2]
TOKEN_ENV = "FLEXTELL_TOKEN"
TOKEN_ALL = "sandbox-token-all"

# Reference data of the default seed, per tenant.
CUSTOMERS = {1: list(range(1001, 1031)), 2: list(range(2001, 2031))}
DOCTORS = {1: [101, 102, 103, 104, 105], 2: [111, 112, 113, 114, 115]}
ASSISTANTS = {1: [151, 152, 153], 2: [161, 162, 163]}
TREATMENTS = {1: list(range(201, 211)), 2: list(range(211, 221))}
ROOMS = {1: [301, 302, 303, 304], 2: [311, 312, 313, 314]}
STATUSES = ("pending", "approved", "completed", "cancelled")
ISTANBUL_OFFSET = timedelta(hours=3)  # no DST in Turkey since 2016


MAPPING = """
[mapping]
tenant = { column = "clinic" }
source_key = { column = "appointment_id" }
customer_id = "customer_id"
user_id = "doctor_id"
scheduled_at = { column = "start", formats = ["iso"] }
status = { column = "status", default = "pending" }
treatments = { column = "treatment_ids", split = "|" }
room_id = "room_id"
assistant_id = "assistant_id"
description = "notes"
cancellation_reason = "cancellation_reason"
"""


@dataclass(frozen=True)
class Row:
    """One input appointment, with what the API must end up holding for it."""

    key: str
    tenant: int
    customer: int
    doctor: int
    local: datetime  # naive, the clinic's wall clock (Europe/Istanbul)
    status: str
    treatments: tuple[int, ...]
    room: int | None
    assistant: int | None
    notes: str | None

    @property
    def utc(self) -> str:
        return (self.local - ISTANBUL_OFFSET).strftime("%Y-%m-%dT%H:%M:%SZ")

    def csv_fields(self) -> dict[str, str]:
        return {
            "appointment_id": self.key,
            "clinic": str(self.tenant),
            "customer_id": str(self.customer),
            "doctor_id": str(self.doctor),
            "start": self.local.strftime("%Y-%m-%dT%H:%M:%S"),
            "status": self.status,
            "treatment_ids": "|".join(str(t) for t in self.treatments),
            "room_id": "" if self.room is None else str(self.room),
            "assistant_id": "" if self.assistant is None else str(self.assistant),
            "notes": self.notes or "",
            "cancellation_reason": "changed plans" if self.status == "cancelled" else "",
        }


def make_rows(n: int, tenants: Sequence[int] = (1, 2), prefix: str = "R") -> list[Row]:
    """`n` valid rows spread over `tenants`; every row's identity (instant) is unique."""
    start = datetime(2026, 12, 1, 9, 0)
    rows = []
    for i in range(n):
        tenant = tenants[i % len(tenants)]
        rows.append(
            Row(
                key=f"{prefix}-{i:04d}",
                tenant=tenant,
                customer=CUSTOMERS[tenant][i % 30],
                doctor=DOCTORS[tenant][i % 5],
                local=start + timedelta(minutes=20 * i),
                status=STATUSES[i % 4],
                treatments=tuple(TREATMENTS[tenant][(i + j) % 10] for j in range(1 + i % 3)),
                room=None if i % 5 == 4 else ROOMS[tenant][i % 4],
                assistant=ASSISTANTS[tenant][i % 3] if i % 2 else None,
                notes=f"note {i} ğüşiöç" if i % 3 == 0 else None,
            )
        )
    return rows


def write_csv(path: Path, rows: Sequence[Row]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.csv_fields())
    return path


def write_config(
    path: Path,
    *,
    rate: str = "1000/second",
    concurrency: int = 4,
    timeout: float = 5.0,
    max_attempts: int = 6,
    max_backoff: float = 0.5,
    settle_seconds: float = 2.0,
    unreachable_seconds: float = 10.0,
    tenants: dict[int, dict[str, Any]] | None = None,
) -> Path:
    """A demo-like config with test-sized timeouts; `tenants` adds keys per ``[tenants.N]``."""
    tenants = tenants if tenants is not None else {1: {}, 2: {}}
    lines = [
        "[api]",
        'base_url = "http://127.0.0.1:9/api"',
        f'token = "env:{TOKEN_ENV}"',
        f'rate_limit = "{rate}"',
        f"concurrency = {concurrency}",
        'timezone = "Europe/Istanbul"',
        f"timeout = {timeout}",
        f"max_attempts = {max_attempts}",
        f"max_backoff = {max_backoff}",
        # The sandbox's slow faults commit before they stall: a short settle suffices.
        f"settle_seconds = {settle_seconds}",
        f"unreachable_seconds = {unreachable_seconds}",
        "",
    ]
    for tenant, extra in tenants.items():
        lines.append(f"[tenants.{tenant}]")
        for k, v in extra.items():
            lines.append(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}")
        lines.append("")
    path.write_text("\n".join(lines) + MAPPING, encoding="utf-8")
    return path


@dataclass
class Setup:
    """Files of one test: input, config, ledger, and the sandbox's URLs."""

    tmp: Path
    url: str  # the sandbox root, e.g. http://127.0.0.1:PORT
    rows: list[Row]
    config: Path
    data: Path
    ledger: Path = field(init=False)

    def __post_init__(self) -> None:
        self.ledger = self.tmp / "ledger.db"

    @property
    def api_url(self) -> str:
        return self.url + "/api"

    def args(self, *extra: str) -> list[str]:
        """`import` arguments for this setup's files, no progress display."""
        return [
            "import",
            str(self.data),
            "-c",
            str(self.config),
            "--base-url",
            self.api_url,
            "--ledger",
            str(self.ledger),
            "--no-progress",
            *extra,
        ]


def setup(tmp: Path, url: str, rows: list[Row] | None = None, n: int = 20, **config: Any) -> Setup:
    rows = rows if rows is not None else make_rows(n)
    return Setup(
        tmp=tmp,
        url=url,
        rows=rows,
        config=write_config(tmp / "run.toml", **config),
        data=write_csv(tmp / "rows.csv", rows),
    )


# --- running the CLI -----------------------------------------------------------------


async def run_cli(args: Sequence[str], env: dict[str, str | None] | None = None) -> Result:
    """Invoke the CLI in a thread, so an in-process sandbox on this loop keeps serving
    (`env`: variables to set, None to unset)."""
    full_env: dict[str, str | None] = {TOKEN_ENV: TOKEN_ALL, **(env or {})}

    def invoke() -> Result:
        return CliRunner().invoke(cli, list(args), env=full_env, catch_exceptions=True)

    result = await asyncio.to_thread(invoke)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"CLI raised {result.exception!r}\n{result.output}")
    return result


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXTELL")}
    env.update({TOKEN_ENV: TOKEN_ALL, "PYTHONUNBUFFERED": "1", **extra})
    return env


async def start_worker(args: Sequence[str], **env: str) -> asyncio.subprocess.Process:
    """The worker as a real process (signals, SIGKILL); stdout/stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        *args,
        cwd=REPO,
        env=worker_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


# --- what the sandbox and the ledger hold ---------------------------------------------


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        resp.raise_for_status()
        return await resp.json()


async def stats(url: str) -> dict[str, Any]:
    data: dict[str, Any] = await get_json(f"{url}/_sandbox/stats")
    return data


async def appointments(url: str, tenant: int) -> list[dict[str, Any]]:
    data = await get_json(f"{url}/_sandbox/appointments?tenant={tenant}")
    items: list[dict[str, Any]] = data["data"]
    return items


async def requests_log(url: str) -> list[dict[str, Any]]:
    data = await get_json(f"{url}/_sandbox/requests")
    items: list[dict[str, Any]] = data["requests"]
    return items


def posts(log: Sequence[dict[str, Any]], tenant: int | None = None) -> list[dict[str, Any]]:
    """POSTs of appointments in the request log, optionally of one tenant."""
    return [
        r
        for r in log
        if r["method"] == "POST"
        and r["path"].endswith("/v1/appointments")
        and (tenant is None or r["tenant"] == tenant)
    ]


def ledger_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Every ledger entry by source key (read-only; the run must be over)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM entries").fetchall()
    finally:
        conn.close()
    return {r["source_key"]: dict(r) for r in rows}


def matches(row: Row, appt: dict[str, Any]) -> list[str]:
    """Fields where the sandbox's appointment differs from the input row (empty: all equal)."""
    expected = {
        "tenant_id": row.tenant,
        "customer_id": row.customer,
        "user_id": row.doctor,
        "scheduled_at": row.utc,
        "status": row.status,
        "treatment_ids": list(row.treatments),
        "room_id": row.room,
        "assistant_id": row.assistant,
        "description": row.notes,
    }
    return [f"{k}: {appt.get(k)!r} != {v!r}" for k, v in expected.items() if appt.get(k) != v]


async def assert_all_created_once(s: Setup, rows: Sequence[Row] | None = None) -> None:
    """Every row created exactly once, with the ledger pointing at the sandbox's appointment."""
    rows = list(rows if rows is not None else s.rows)
    st = await stats(s.url)
    # By identity, not by payload: rows may legitimately be alike (a double booking).
    assert st["appointments_total"] == len(rows), st
    ledger = ledger_rows(s.ledger)
    by_id: dict[int, dict[str, Any]] = {}
    for tenant in sorted({r.tenant for r in rows}):
        for appt in await appointments(s.url, tenant):
            by_id[appt["id"]] = appt
    problems = []
    for row in rows:
        entry = ledger.get(row.key)
        if entry is None or entry["status"] != "created":
            problems.append(f"{row.key}: ledger {entry and entry['status']}")
            continue
        found = by_id.get(entry["appointment_id"])
        if found is None:
            problems.append(f"{row.key}: appointment {entry['appointment_id']} not in sandbox")
            continue
        diff = matches(row, found)
        if diff:
            problems.append(f"{row.key}: {diff}")
    assert not problems, problems[:10]
    ids = [ledger[r.key]["appointment_id"] for r in rows]
    assert len(set(ids)) == len(ids), "two rows claim one appointment"


async def wait_for_appointments(url: str, at_least: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (await stats(url))["appointments_total"] < at_least:
        assert time.monotonic() < deadline, "the worker did not get going"
        await asyncio.sleep(0.05)


def run_worker(
    args: Sequence[str],
    *,
    preexec: Callable[[], None] | None = None,
    timeout: float = 120,
    obey_file_modes: bool = False,
) -> subprocess.CompletedProcess[str]:
    """The worker as a process; a hang fails the test at `timeout` instead of blocking it.

    `obey_file_modes`: run it without root's override of file permissions."""
    command = [sys.executable, "-m", "worker", *args]
    return subprocess.run(
        without_file_override(command) if obey_file_modes else command,
        cwd=REPO,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec,
    )


def assert_one_error_line(err: str, *needles: str) -> str:
    """Exactly one `error:` line, no traceback; returns that line."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
