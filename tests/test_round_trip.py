"""validate -> failures file -> fix -> import: notes that look like formulas reach the
sandbox byte for byte, in CSV (several encodings and delimiters) and JSONL."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.recording_proxy import recording_proxy
from tests.support.sync import import_file, run_cli

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

NOTES = [
    '=HYPERLINK("http://x.example/?a=1","click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|x",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1 after a tab",
    "\r=1+1 after a CR",
    "'=typed with a quote by the user",  # stays as typed
    "-5",
    "İptal; çağrı: ĞÜŞİÖÇ ğüşıöç",
]

CONFIG = """
[api]
token = "env:FLEXTELL_TOKEN"
rate_limit = "1000/second"
timeout = 5
max_attempts = 3
max_backoff = 0.5
timezone = "Europe/Istanbul"

[tenants.1]

[source]
encoding = "{encoding}"

[ledger]
path = "ledger.sqlite"

[mapping]
tenant = {{ value = 1 }}
source_key = "id"
customer_id = "customer"
user_id = "doctor"
scheduled_at = {{ column = "start", formats = ["iso"] }}
status = "status"
treatments = {{ column = "treatments", split = "|" }}
description = {{ column = "notes", trim = false }}
"""

COLUMNS = ["id", "customer", "doctor", "start", "status", "treatments", "notes"]


def source_rows() -> list[dict[str, Any]]:
    # Every row has a bad customer cell, but the last, which is valid as it is.
    return [
        {
            "id": f"N{i}",
            "customer": "10x1" if i < len(NOTES) - 1 else str(1001 + i),
            "doctor": "101",
            "start": f"2026-12-0{1 + i % 9}T1{i % 10}:00:00",
            "status": "approved",
            "treatments": "201",
            "notes": note,
        }
        for i, note in enumerate(NOTES)
    ]


def expected_body(row: dict[str, Any]) -> bytes:
    """The canonical JSON of the corrected row, built without the worker's code."""
    day, hour = row["start"][8:10], int(row["start"][11:13]) - 3  # Istanbul is UTC+3
    body = {
        "customer_id": int(row["customer"]),
        "user_id": 101,
        "scheduled_at": f"2026-12-{day}T{hour:02d}:00:00Z",
        "status": "approved",
        "treatments": [201],
        "description": row["notes"],
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def fixed(row: dict[str, Any]) -> dict[str, Any]:
    return row | {"customer": str(1001 + int(row["id"][1:]))}


def write_source(path: Path, rows: list[dict[str, Any]], encoding: str, delimiter: str) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
        return
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def fix_failures(path: Path, encoding: str, delimiter: str) -> None:
    """What a user does: correct the customer cell, keep every other cell as it is."""
    if path.suffix == ".jsonl":
        objs = [json.loads(x) for x in path.read_text("utf-8").splitlines()]
        path.write_text(
            "".join(json.dumps(fixed(o), ensure_ascii=False) + "\n" for o in objs), "utf-8"
        )
        return
    with path.open(encoding=encoding, newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        header, rows = list(reader.fieldnames or []), list(reader)
    assert "worker_quoted" in header
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.DictWriter(fh, header, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(fixed(r) for r in rows)


@pytest.mark.parametrize(
    ("suffix", "encoding", "delimiter"),
    [(".csv", "utf-8", ","), (".csv", "cp1254", ";"), (".csv", "utf-16", "\t"),
     (".jsonl", "utf-8", "")],
)  # fmt: skip
def test_formula_notes_survive_the_round_trip_byte_for_byte(
    tmp_path: Path, sbx: Any, suffix: str, encoding: str, delimiter: str
) -> None:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG.format(encoding=encoding), encoding="utf-8")
    rows = source_rows()
    src = tmp_path / f"export{suffix}"
    write_source(src, rows, encoding, delimiter)
    failures = tmp_path / f"failures{suffix}"
    out = run_cli("validate", str(src), "-c", str(cfg), "--failures", str(failures))
    assert out.exit_code == 1, out.output
    if suffix == ".csv":
        text = failures.read_text(encoding=encoding)
        assert "'=HYPERLINK" in text and "'@SUM" in text  # spreadsheet-safe on disk
    fix_failures(failures, encoding, delimiter)

    preview = tmp_path / "payloads.jsonl"
    out = run_cli("validate", str(failures), "-c", str(cfg), "--payloads", str(preview))
    assert out.exit_code == 0, out.output
    bad = [r for r in rows if r["customer"] == "10x1"]
    want = {fixed(r)["id"]: expected_body(fixed(r)) for r in bad}
    lines = preview.read_bytes().splitlines()
    assert len(lines) == len(want)
    for line in lines:
        head = json.loads(line)
        body = line[line.index(b',"body":') + 8 : -1]
        assert body == want[head["key"]], head["key"]

    # import --dry-run --payloads previews the same rows with the same bytes.
    dry = tmp_path / "dry.jsonl"
    result, _ = import_file(cfg, sbx, failures, "--dry-run", "--payloads", str(dry))
    assert result.exit_code == 0, result.output
    assert sorted(dry.read_bytes().splitlines()) == sorted(lines)
    no_dry = run_cli("import", str(failures), "-c", str(cfg), "--payloads", str(dry))
    assert no_dry.exit_code == 2 and "--payloads goes with --dry-run" in no_dry.output

    with recording_proxy(sbx.root) as (proxy_root, recorded):
        result, event = import_file(
            cfg, sbx, failures, "--partial", "--base-url", proxy_root + "/api"
        )
    assert result.exit_code == 0, result.output
    assert event["totals"]["created"] == len(want)
    received = recorded.bodies("POST", "/v1/appointments")
    assert sorted(received) == sorted(want.values())
    stored = {a["description"] for a in sbx.appointments()}
    assert stored == {r["notes"] for r in bad}
