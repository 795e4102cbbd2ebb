"""Bench scenario `report-html`: `report --html` on a ledger of 100,000 rows.

The ledger is written directly (the schema made by the worker's own Ledger, the
rows inserted in bulk) so that the figure is the report's alone: one import run
over 3 tenants, 93% created over ~40 minutes at 40/s with a few resends, and 7%
invalid, failed or unknown (7,000 items: more than the page's bound of 5,000).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.measure import run_child, worker_cmd
from worker.commands.reporting.report_page import EMBED_LIMIT
from worker.ledger import Ledger

_TENANTS = (1, 2, 3)
_RATE = 40.0
_NAMES = ("Zeynep Kaya", "Ayşe Yılmaz", "Elif Şahin", "Hülya Öztürk", "Derya Aydın")


def _entry(i: int, start: float, rng: random.Random) -> tuple[Any, ...]:
    tenant = _TENANTS[i % len(_TENANTS)]
    key = f"R{i:07d}"
    when = datetime(2026, 12, 1, 9, tzinfo=UTC) + timedelta(minutes=15 * (i % 2000))
    fields = {
        "appointment_id": key,
        "clinic": str(tenant),
        "patient": _NAMES[i % len(_NAMES)],
        "phone": f"+90 5{i % 100:02d} {i % 1000:03d} {i % 97:02d} {i % 89:02d}",
        "start": when.strftime("%Y-%m-%dT%H:%M:%S"),
        "notes": "Hasta telefonla onayladı",
    }
    payload = {
        "customer_id": 1000 + i % 300,
        "user_id": 101 + i % 5,
        "scheduled_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "status": "pending",
        "treatments": [201],
        "description": fields["notes"],
    }
    roll = rng.random()
    sent = start + i / _RATE
    status, code, message, field_ = "created", None, None, None
    http: int | None = 201
    appt: int | None = i
    attempts = 1
    if roll < 0.03:
        status, code, field_ = "invalid", "invalid", "scheduled_at"
        message = "scheduled_at (column 'start'): not a valid date-time"
        http, appt, attempts = None, None, 0
    elif roll < 0.06:
        status, code, field_, http, appt = "failed", "validation_error", "user_id", 422, None
        message = "user_id: The selected user id is invalid."
    elif roll < 0.07:
        status, code, http, appt = "unknown", "timeout", None, None
        message = "no answer after 4 attempts"
    elif roll < 0.09:
        attempts = 2  # resent after a 429
    first_sent = None if status == "invalid" else sent
    last_sent = None if first_sent is None else sent + (3.0 if attempts > 1 else 0.0)
    row = json.dumps({"fields": fields, "raw": None}, ensure_ascii=False)
    now = datetime.fromtimestamp(sent, UTC).isoformat(timespec="milliseconds")
    return (
        tenant,
        key,
        status,
        f"h{i}",
        None if status == "invalid" else json.dumps(payload, ensure_ascii=False),
        appt,
        attempts,
        http,
        code,
        message,
        field_,
        "export.csv",
        i + 2,
        row,
        1,
        1,
        1,
        now,
        now,
        last_sent,
        first_sent,
        "posted" if status == "created" else None,
    )


async def _schema(path: Path) -> None:
    async with await Ledger.open(path) as ledger:
        await ledger.start_run(
            mode="import",
            source_file="export.csv",
            source_sha256=None,
            source_format="csv",
            source_columns=["appointment_id", "clinic", "patient", "phone", "start", "notes"],
            source_delimiter=",",
            source_encoding="utf-8",
        )


def write_ledger(path: Path, rows: int) -> None:
    """A finished import run over `rows` rows."""
    asyncio.run(_schema(path))
    rng = random.Random(22)
    start = datetime(2026, 12, 6, 1, tzinfo=UTC).timestamp()
    entries = [_entry(i, start, rng) for i in range(rows)]
    counts: dict[str, int] = {"read": rows}
    for e in entries:
        counts[e[2]] = counts.get(e[2], 0) + 1
        prefix = f"tenant.{e[0]}."
        counts[prefix + "read"] = counts.get(prefix + "read", 0) + 1
        counts[prefix + e[2]] = counts.get(prefix + e[2], 0) + 1
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO entries (tenant, source_key, status, payload_hash, payload_json,"
            " appointment_id, attempts, http_status, error_code, error_message, error_field,"
            " source_file, source_line, source_row, first_run_id, last_run_id, seen_run_id,"
            " created_at, updated_at, sent_at, first_sent_at, origin)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            entries,
        )
        end = datetime.fromtimestamp(start + rows / _RATE + 5, UTC)
        conn.execute(
            "UPDATE runs SET status = 'finished', started_at = ?, finished_at = ?, counts = ?",
            (
                datetime.fromtimestamp(start, UTC).isoformat(timespec="milliseconds"),
                end.isoformat(timespec="milliseconds"),
                json.dumps(counts),
            ),
        )


def measure(workdir: Path, rows: int) -> dict[str, Any]:
    """Write the ledger, then time `report --html` on it as a user runs it."""
    ledger = workdir / "ledger.sqlite"
    # In a child of its own: the rows held while writing would otherwise show in the
    # report's peak RSS (a forked child starts with its parent's pages).
    made = run_child(
        [sys.executable, "-m", "bench.report_html", str(ledger), str(rows)],
        log_dir=workdir,
        name="write-ledger",
    )
    if made.returncode != 0:
        raise SystemExit(f"writing the ledger failed: {made.stderr[-2000:]}")
    page = workdir / "report.html"
    run = run_child(
        worker_cmd("report", "--ledger", str(ledger), "--html", str(page)),
        log_dir=workdir,
        name="report-html",
    )
    if run.returncode != 0:
        raise SystemExit(f"report --html exit {run.returncode}: {run.stderr[-2000:]}")
    html = page.read_text(encoding="utf-8")
    return {
        "rows": rows,
        "seconds": round(run.seconds, 2),
        "page_bytes": page.stat().st_size,
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "worklist_rows_embedded": html.count('<tr data-kind="'),
        "embed_limit": EMBED_LIMIT,
    }


if __name__ == "__main__":
    write_ledger(Path(sys.argv[1]), int(sys.argv[2]))
