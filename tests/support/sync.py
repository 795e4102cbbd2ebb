"""Helpers of the sync, verify, reconcile and report tests: a test config, exports cut
from the sample file, CLI runs and the ledger as JSON."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from tests.support.sandbox_process import Sandbox
from worker.cli import cli
from worker.ledger import Status
from worker.ledger.target import open_ledger

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "appointments.csv"
TOKEN_ENV = {"FLEXTELL_TOKEN": "sandbox-token-all"}


def write_config(tmp: Path, *, ledger_url: str | None = None, **api: Any) -> Path:
    """config/demo.toml with fast test settings and the ledger beside it (or, with
    ledger_url, a PostgreSQL ledger as ``[ledger] url``)."""
    text = (ROOT / "config" / "demo.toml").read_text(encoding="utf-8")
    settings = {
        "rate_limit": '"1000/second"',
        "concurrency": "8",
        "timeout": "5",
        "max_backoff": "0.5",
        "max_attempts": "3",
        # No slow faults here: a lost answer shows at once, so settling takes 2 s, not 40.
        "settle_seconds": "2",
    } | {k: str(v) for k, v in api.items()}
    lines = []
    for line in text.splitlines():
        key = line.split("=")[0].strip()
        if key in ("rate_limit", "concurrency") and not line.startswith("#"):
            continue
        lines.append(line)
        if line.strip() == "[api]":
            lines.extend(f"{k} = {v}" for k, v in settings.items())
    where = f'url = "{ledger_url}"' if ledger_url else 'path = "ledger.sqlite"'
    lines.append(f"\n[ledger]\n{where}")
    path = tmp / "run.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sample_rows() -> tuple[list[str], list[dict[str, str]]]:
    with SAMPLE.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env or TOKEN_ENV, catch_exceptions=False)


def import_file(config: Path, sb: Sandbox, file: Path, *extra: str) -> tuple[Result, Any]:
    """Run `import --json-logs`; the result and its final summary event."""
    result = run_cli(
        "import", str(file), "-c", str(config), "--base-url", sb.base_url, "--json-logs", *extra
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.output
    return result, json.loads(lines[-1])


def verify_report(config: Path, sb: Sandbox, *extra: str) -> tuple[int, dict[str, Any], str]:
    """Run `verify --report`; exit code, the report (empty when none was written), output."""
    report = config.parent / "verify.json"
    result = run_cli(
        "verify", "-c", str(config), "--base-url", sb.base_url, "--report", str(report), *extra
    )
    data = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
    return result.exit_code, data, result.output


def mark_unknown(ledger: Path | str, keys: list[tuple[int, str]]) -> list[int]:
    """What a run leaves behind when a POST's response was lost; the rows' appointment ids.

    ``ledger``: a SQLite file or a postgresql:// URL."""

    async def mark() -> list[int]:
        async with await open_ledger(ledger) as opened:
            found = await opened.get_many(keys)
            for tenant, key in keys:
                await opened.record(tenant, key, status=Status.UNKNOWN, run_id=1, durable=True)
        return [found[k].appointment_id or 0 for k in keys]

    return asyncio.run(mark())


def ledger_json(config: Path, *extra: str) -> Any:
    result = run_cli("report", "-c", str(config), "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- the three nights ------------------------------------------------------------
