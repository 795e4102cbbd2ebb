"""bench.baselines durable, the `throughput` scenario's durable floor, as real processes:
against the sandbox it creates every row once, and its SQLite file ends with every row
created under the appointment id the sandbox gave, as the worker's ledger would."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from bench.generate import ROOT, load_seed, tenant_ids, write_bench_seed, write_csv
from bench.sandbox import SandboxProcess


def test_the_floor_creates_each_row_once_and_records_it_created_with_its_id(
    tmp_path: Path,
) -> None:
    seed = write_bench_seed(tmp_path / "seed.json", 3)
    csv = write_csv(tmp_path / "rows.csv", 120, tenant_ids(load_seed(seed))[:3])
    ledger = tmp_path / "floor.sqlite"
    with SandboxProcess(tmp_path, ["--seed-data", str(seed)]) as sb:
        run = subprocess.run(
            [sys.executable, "-m", "bench.baselines", "durable", str(csv), "--url",
             sb.api_url, "--concurrency", "6", "--ledger", str(ledger)],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        posts = [r for r in sb.requests() if r["method"] == "POST"]
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert (out["rows"], out["ok"]) == (120, 120)
    assert len(posts) == 120
    with sqlite3.connect(ledger) as conn:
        rows = conn.execute("SELECT status, appointment_id FROM rows").fetchall()
    assert len(rows) == 120
    assert {status for status, _ in rows} == {"created"}
    assert len({appointment for _, appointment in rows}) == 120
