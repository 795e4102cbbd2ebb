"""Hostile values are row errors, never tracebacks: numbers of any size or form, deep
nesting, odd Unicode; through the CLI in a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.configs import CFG

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

# test_validate's config (Europe/Istanbul), plus a room read from a dotted JSON path.
CONFIG = CFG + 'room_id = "extra.room"\n'

ROOT = Path(__file__).resolve().parent.parent
OK = '"doctor":101,"start":"2026-01-01T10:00:00","treatments":[201]'
BIG = "9" * 5000


def validate(tmp_path: Path, name: str, text: str | bytes) -> tuple[int, str, str, dict]:  # type: ignore[type-arg]
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    src = tmp_path / name
    if isinstance(text, str):
        src.write_text(text, encoding="utf-8")
    else:
        src.write_bytes(text)
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "validate", str(src), "-c", str(cfg),
         "--max-errors", "200", "--report", str(report),
         "--failures", str(tmp_path / f"failures{src.suffix}"),
         "--payloads", str(tmp_path / "payloads.jsonl")],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
    return proc.returncode, proc.stdout, proc.stderr, data


def test_jsonl_hostile_values_are_each_one_row_error(tmp_path: Path) -> None:
    lines = {
        1: '{"id":"1","customer":1e400,' + OK + "}",
        2: '{"id":"2","customer":' + BIG + "," + OK + "}",
        3: '{"id":"3","customer":-0.0,' + OK + "}",
        4: '{"id":"4","customer":NaN,' + OK + "}",
        5: '{"id":"5","customer":' + "[" * 100_000 + "]" * 100_000 + "}",
        6: '{"id":"6","customer":1001,' + OK + ',"notes":"\\ud800 half a pair"}',
        7: '{"id\\u200b":"7","customer":1001,' + OK + "}",
        8: '{"id":"8","customer\\u202e":1001,' + OK + "}",
        9: '{"id":"9","customer":1001,' + OK + ',"extra":{"room":1e400}}',
        10: '{"id":' + BIG + ',"customer":1001,' + OK + "}",
        11: '{"id":"11","customer":1001,"doctor":101,"start":"9999-12-31T23:59:59-05:00",'
        '"treatments":[201]}',
        12: '{"id":"12","customer":"' + BIG + '",' + OK + "}",
        13: '{"id":"13","customer":1001,' + OK + ',"status":"\\u202eapproved"}',
        14: '{"id":"14","customer":-Infinity,' + OK + "}",
        15: '{"id":"15","customer":1001,' + OK + ',"notes":"\\u0000 NUL"}',
        16: '{"id":"16","customer":1001,' + OK + ',"notes":"\\ud83d\\ude00 ok"}',
    }
    code, out, _, report = validate(tmp_path, "in.jsonl", "\n".join(lines.values()) + "\n")
    assert code == 1, out
    assert (report["rows"], report["valid"]) == (16, 1)  # only line 16 is a real value
    by_line: dict[int, list[str]] = {}
    for err in report["errors"]:
        by_line.setdefault(err["line"], []).append(err["message"])
    assert set(by_line) == set(range(1, 16))
    assert "out of range" in by_line[1][0] and "5000 digits" in by_line[2][0]
    assert "decimal" in by_line[3][0] and "NaN" in by_line[4][0]
    assert "nested too deeply" in by_line[5][0] and "without its pair" in by_line[6][0]
    assert "U+200B (ZERO WIDTH SPACE)" in by_line[7][0]
    assert "U+202E (RIGHT-TO-LEFT OVERRIDE)" in by_line[8][0]
    assert "out of range once converted to UTC" in by_line[11][0]
    assert "below 2^63" in by_line[12][0] and "unknown status" in by_line[13][0]
    preview = (tmp_path / "payloads.jsonl").read_bytes().decode()
    assert "holds a NUL character (U+0000) at character 1" in by_line[15][0]
    assert '"description":"😀 ok"' in preview
    # The failures file holds every bad line, and reads back.
    assert len((tmp_path / "failures.jsonl").read_text("utf-8").splitlines()) == 15


def test_csv_hostile_values_are_each_one_row_error(tmp_path: Path) -> None:
    head = "id,customer,doctor,start,status,treatments,notes,extra.room\n"
    rows = [
        "1,1e400,101,2026-01-01T10:00:00,,201,,",
        f"2,{BIG},101,2026-01-01T10:00:00,,201,,",
        "3,-0,101,2026-01-01T10:00:00,,201,,1e400",
        "4,NaN,101,2026-01-01T10:00:00,,201,,",
        f"5,1001,101,2026-01-01T10:00:00,,{BIG}|1e400,,",
        "6,1001,101,2026-01-01T10:00:00,\u202eapproved,201,,",
        "7,1001,101,9999-12-31T23:59:59-05:00,,201,,",
        "8,1001,101,2026-01-01T10:00:00,,201,a\x00b,",
        "9,-1,101,2026-01-01T10:00:00,,201,,-0",
    ]
    code, out, _, report = validate(tmp_path, "in.csv", head + "\n".join(rows) + "\n")
    assert code == 1, out
    assert (report["rows"], report["valid"]) == (9, 0)
    lines = {e["line"] for e in report["errors"]}
    assert lines == set(range(2, 11))
    messages = " | ".join(e["message"] for e in report["errors"])
    assert "out of range" in messages and "1 or more" in messages
    assert "holds a NUL character (U+0000) at character 2" in messages  # a damaged export


def test_invisible_character_in_a_csv_header_is_a_one_line_error(tmp_path: Path) -> None:
    code, _, err, _ = validate(tmp_path, "in.csv", "id,cus\u200btomer\n1,2\n")
    assert code == 2
    assert err.count("\n") == 1 and "U+200B (ZERO WIDTH SPACE)" in err


def test_an_invisible_character_in_a_key_or_an_id_is_a_row_error(tmp_path: Path) -> None:
    # "R9" and "R9" + a zero-width space look alike and were two keys: two appointments
    # for one visit. A NUL in a key the same; an id names the character too.
    head = "id,customer,doctor,start,status,treatments,notes,extra.room\n"
    rows = [
        "R9,1009,101,2026-01-01T10:00:00,,201,,",
        "R9\u200b,1009,101,2026-01-01T10:00:00,,201,,",
        "R4\x00,1004,101,2026-01-01T11:00:00,,201,,",
        "R5,1005\u200b,101,2026-01-01T12:00:00,,201,,",
    ]
    code, out, _, report = validate(tmp_path, "in.csv", head + "\n".join(rows) + "\n")
    assert code == 1, out
    assert (report["rows"], report["valid"]) == (4, 1)
    by_line = {e["line"]: e for e in report["errors"]}
    assert set(by_line) == {3, 4, 5}
    assert by_line[3]["field"] == "source_key"
    assert by_line[3]["source_key"] == "R9\u200b"  # the row keeps its key: a created
    # row under it is an invalid version of that row, not a missing one
    assert (
        "the key holds an invisible character, U+200B (ZERO WIDTH SPACE)" in by_line[3]["message"]
    )
    assert "U+0000" in by_line[4]["message"] and by_line[4]["field"] == "source_key"
    assert by_line[5]["field"] == "customer_id"
    assert "invisible U+200B (ZERO WIDTH SPACE)" in by_line[5]["message"]
