"""Patient data at rest (issue 24): an encrypted ledger holds no patient value in clear,
nightly sync, reports, rekey and purge work on it, and commands that need patient
values refuse to run without its key.

The export is the API-lookups sample (patients by phone, a customer created by name
and e-mail, invalid rows) with a notes column of distinctive strings.
"""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from samples.api_lookups import write_seed
from tests.conftest import FakeClock
from tests.support.importing import (
    assert_all_created_once,
    assert_one_error_line,
    setup,
    start_worker,
    wait_for_appointments,
)
from tests.support.sandbox_process import Sandbox, sandbox_process, start_sandbox, stop
from tests.support.sync import TOKEN_ENV, run_cli
from worker.commands.ledger_care import purge
from worker.ledger import Ledger, SeenRow, Status
from worker.ledger.crypto import LedgerKey

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "api-lookups.csv"
KEY = "dGhpcyBpcyBhIHRlc3Qga2V5IG9mIDMyIGJ5dGVzISE="
NEW_KEY = "YW5vdGhlciB0ZXN0IGtleSBvZiBlbm91Z2ggbGVuZ3Ro"
NOTES = ["ZQXJ-note-7781", '=HYPERLINK("http://x","ZQXJ")']
# Notes, names, phones (as exported and normalised) and an e-mail address of the sample.
NEEDLES = [
    "ZQXJ",
    "HYPERLINK",
    "Yılmaz",
    "Y\\u0131lmaz",
    "ayse.yilmaz",
    "5551112233",
    "555 111 22 33",
    "5537801526",
    "Şimşek",
    "Emine",
]
# What the worklist shows of a sealed reason without the key (docs/security-at-rest.md).
LOCKED = "(encrypted: run with the ledger's key to read it)"


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    seed = write_seed(tmp_path / "seed.json")
    proc, sandbox = start_sandbox(tmp_path, "--seed-data", str(seed))
    try:
        yield sandbox
    finally:
        stop(proc)


def config(
    tmp: Path,
    name: str = "run.toml",
    key: str | None = "env:FW_LEDGER_KEY",
    ledger_url: str | None = None,
    ledger_extra: str = "",
) -> Path:
    text = (ROOT / "config" / "api-lookups.toml").read_text(encoding="utf-8")
    text = text.replace('rate_limit = "20/second"', 'rate_limit = "1000/second"\ntimeout = 5')
    text = text.replace(
        'source_key = { column = "Randevu" }',
        'source_key = { column = "Randevu" }\ndescription = "Not"',
    )
    where = f'url = "{ledger_url}"' if ledger_url else 'path = "ledger.sqlite"'
    ledger = f"\n[ledger]\n{where}\n{ledger_extra}"
    if key is not None:
        ledger += f'encryption_key = "{key}"\n'
    path = tmp / name
    path.write_text(text + ledger, encoding="utf-8")
    return path


def export(tmp: Path, notes: dict[str, str] | None = None) -> Path:
    with SAMPLE.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    out = tmp / "export.csv"
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=";")
        writer.writerow([*rows[0], "Not"])
        for i, row in enumerate(rows[1:]):
            note = (notes or {}).get(row[0], NOTES[i % 2] + f" {i}")
            writer.writerow([*row, note])
    return out


def env(key: str | None = KEY, **more: str) -> dict[str, str]:
    return TOKEN_ENV | ({"FW_LEDGER_KEY": key} if key else {}) | more


def run(
    cfg: Path, sb: Sandbox, data: Path, key: str | None = KEY
) -> tuple[int, dict[str, Any], str]:
    result = run_cli(
        "import", str(data), "-c", str(cfg), "--base-url", sb.base_url, "--json-logs", env=env(key)
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, (json.loads(lines[-1]) if lines else {}), result.output


def clear_hits(ledger: Path) -> list[str]:
    """Every needle found in the bytes of the ledger and its -wal and -shm files."""
    hits = []
    for path in (
        ledger,
        ledger.with_name(ledger.name + "-wal"),
        ledger.with_name(ledger.name + "-shm"),
    ):
        if path.exists():
            data = path.read_bytes()
            hits += [f"{path.name}: {n}" for n in NEEDLES if n.encode() in data]
    return hits


def totals(event: dict[str, Any]) -> dict[str, int]:
    found = event["totals"]
    assert isinstance(found, dict)
    return found


def _first_import(tmp_path: Path, sb: Sandbox) -> tuple[Path, Path, Path]:
    """An encrypted ledger after one import of the export (exit 1: it has bad rows):
    the config, the ledger and the export."""
    cfg, data = config(tmp_path), export(tmp_path)
    assert run(cfg, sb, data)[0] == 1
    return cfg, tmp_path / "ledger.sqlite", data


def test_an_encrypted_ledger_holds_no_patient_value_and_syncs_as_before(
    tmp_path: Path, sb: Sandbox
) -> None:
    cfg = config(tmp_path)
    ledger = tmp_path / "ledger.sqlite"
    data = export(tmp_path)
    code, event, out = run(cfg, sb, data)
    assert code == 1, out  # five rows of the sample are row errors, on purpose
    first = totals(event)
    assert first["created"] == 6 and first["invalid"] == 5, first
    assert clear_hits(ledger) == []
    with sqlite3.connect(ledger) as db:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        assert meta["encryption"] == "aes-256-gcm" and len(meta["encryption_key_id"]) == 16
        # The invalid rows keep their (sealed) source rows for the failures file.
        sealed = db.execute("SELECT source_row FROM entries WHERE status = 'invalid'").fetchall()
        assert sealed and all(r[0].startswith("enc1:") for r in sealed)

    # The same export again: nothing new, nothing changed (keyed hashes compare equal).
    code, event, out = run(cfg, sb, data)
    again = totals(event)
    assert (again["new"], again["created"], again["changed"]) == (0, 0, 0), again
    assert again["unchanged"] == 6, again

    # One note edited upstream: that row, and only it, is changed.
    code, event, out = run(cfg, sb, export(tmp_path, {"R-1001": "ZQXJ moved"}))
    edited = totals(event)
    assert (edited["changed"], edited["unchanged"], edited["created"]) == (1, 5, 0), edited
    assert [c["source_key"] for c in event["changed"]] == ["R-1001"]
    assert clear_hits(ledger) == []

    # Counting needs no key; the failures file, verify and import do: one line, exit 2.
    plain = config(tmp_path, "nokey.toml", key=None)
    counted = run_cli("report", "--ledger", str(ledger), "--format", "json", env=env(None))
    assert counted.exit_code == 0, counted.output
    report = json.loads(counted.stdout)
    assert report["statuses"]["created"] == 6 and report["patient_data"] is False
    failures = tmp_path / "failures.csv"
    refused = [
        run_cli("report", "--ledger", str(ledger), "--failures", str(failures), env=env(None)),
        run_cli("verify", "-c", str(plain), "--base-url", sb.base_url, env=env(None)),
        run_cli("import", str(data), "-c", str(plain), "--base-url", sb.base_url, env=env(None)),
        run_cli("import", str(data), "-c", str(plain), "--dry-run", env=env(None)),
    ]
    for result in refused:
        assert result.exit_code == 2, result.output
        assert_one_error_line(result.output, "is encrypted (key id", "encryption_key")
    assert not failures.exists()
    missing_env = run_cli("verify", "-c", str(cfg), "--base-url", sb.base_url, env=env(None))
    assert missing_env.exit_code == 2
    assert_one_error_line(missing_env.output, "FW_LEDGER_KEY is not set")

    # With the key: verify compares every created row; the failures file is written.
    checked = run_cli("verify", "-c", str(cfg), "--base-url", sb.base_url, env=env())
    assert checked.exit_code == 0, checked.output
    wrote = run_cli("report", "-c", str(cfg), "--failures", str(failures), env=env())
    assert wrote.exit_code == 0, wrote.output
    assert "Yılmaz" in failures.read_text(encoding="utf-8") or "Çelik" in failures.read_text(
        encoding="utf-8"
    )


def test_worklist_files_and_the_html_page_need_the_ledgers_key(tmp_path: Path, sb: Sandbox) -> None:
    from openpyxl import load_workbook

    cfg = config(tmp_path)
    assert run(cfg, sb, export(tmp_path))[0] == 1
    listed = run_cli("worklist", "-c", str(cfg), "--format", "json", env=env())
    assert listed.exit_code == 0, listed.output
    reasons = [i["reason"] for i in json.loads(listed.stdout)]
    assert len(reasons) == 5 and LOCKED not in reasons, reasons
    fixes, sheet, page = tmp_path / "fixes.csv", tmp_path / "wl.xlsx", tmp_path / "page.html"
    writes = [
        ("worklist", "--format", "csv", "--out", str(fixes)),
        ("worklist", "--format", "xlsx", "--out", str(sheet)),
        ("report", "--html", str(page)),
    ]
    for args in writes:
        done = run_cli(*args, "-c", str(cfg), env=env())
        assert done.exit_code == 0, done.output
    assert "Şimşek" in fixes.read_text(encoding="utf-8")  # the row's own cells, to fix
    rows = list(load_workbook(sheet, read_only=True).active.iter_rows(values_only=True))
    assert "Şimşek" in {cell for row in rows for cell in row}
    assert "5 row(s) need a person" in page.read_text(encoding="utf-8")

    # Without the key the table and json list the items, their reasons locked; the files
    # are refused. Another key is refused by every one of them.
    plain = config(tmp_path, "nokey.toml", key=None)
    keyless = run_cli("worklist", "-c", str(plain), "--format", "json", env=env(None))
    assert keyless.exit_code == 0, keyless.output
    assert {i["reason"] for i in json.loads(keyless.stdout)} == {LOCKED}
    for path in (fixes, sheet, page):
        path.unlink()
    refusals: list[tuple[Path, str | None, tuple[str, ...], str]]
    refusals = [(plain, None, args, "is encrypted (key id") for args in writes]
    other_key = "but the key env:FW_LEDGER_KEY has key id"
    refusals += [(cfg, NEW_KEY, args, other_key) for args in [*writes, ("worklist",)]]
    for cfg_used, key, args, needle in refusals:
        refused = run_cli(*args, "-c", str(cfg_used), env=env(key))
        assert refused.exit_code == 2, (args, refused.output)
        assert_one_error_line(refused.output, needle)
    assert not [p for p in (fixes, sheet, page) if p.exists()]


def test_an_altered_sealed_value_is_one_line_and_exit_3_in_every_reader(
    tmp_path: Path, sb: Sandbox
) -> None:
    """One sealed value changed in the file: worklist and the report's files printed a
    75-line traceback and exit 1 ('rows need a person'); import said it in one line."""
    cfg, ledger, data = _first_import(tmp_path, sb)
    with sqlite3.connect(ledger) as db:
        key, sealed = db.execute(
            "SELECT source_key, source_row FROM worklist WHERE source_row LIKE 'enc1:%' LIMIT 1"
        ).fetchone()
        flipped = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
        db.execute("UPDATE worklist SET source_row = ? WHERE source_key = ?", (flipped, key))
        db.execute("UPDATE entries SET source_row = ? WHERE source_key = ?", (flipped, key))
    readers = [
        ("worklist",),
        ("worklist", "--format", "csv", "--out", str(tmp_path / "fixes.csv")),
        ("report", "--html", str(tmp_path / "page.html")),
        ("report", "--failures", str(tmp_path / "failures.csv")),
        ("import", str(data), "--base-url", sb.base_url),
    ]
    for args in readers:
        done = run_cli(*args, "-c", str(cfg), env=env())
        assert done.exit_code == 3, (args, done.output)
        assert_one_error_line(done.output, "a ledger value fails authentication (altered or ")
        assert "restore the ledger from a backup" in done.output


def test_ack_on_an_encrypted_ledger_seals_its_note_and_quiets_the_next_import(
    tmp_path: Path, sb: Sandbox
) -> None:
    cfg, ledger, data = _first_import(tmp_path, sb)
    plain = config(tmp_path, "nokey.toml", key=None)
    keyless = run_cli("ack", "--all-open", "-c", str(plain), "--note", "seen", env=env(None))
    assert keyless.exit_code == 2
    assert_one_error_line(keyless.output, "is encrypted (key id", "encryption_key")

    note = "ZQXJ: Şimşek called back"  # a note may name a patient: sealed like the rows
    acked = run_cli("ack", "--all-open", "-c", str(cfg), "--note", note, env=env())
    assert acked.exit_code == 0, acked.output
    assert "acknowledged 5 item(s)" in acked.stdout
    assert clear_hits(ledger) == []
    code, event, out = run(cfg, sb, data)
    assert code == 0, out  # nothing open: the nightly run is quiet again
    assert event["worklist"] == {"new": 0, "open": 0, "acknowledged": 5}
    shown = run_cli(
        "worklist", "-c", str(cfg), "--state", "acknowledged", "--format", "json", env=env()
    )
    listed = json.loads(shown.stdout)
    assert [i["ack_note"] for i in listed] == [note] * 5

    reopened = run_cli("unack", listed[0]["source_key"], "-c", str(cfg), env=env())
    assert reopened.exit_code == 0, reopened.output
    code, event, out = run(cfg, sb, data)
    assert code == 1 and event["worklist"]["open"] == 1, out


def test_a_dry_run_without_the_key_is_refused_before_any_api_call(
    tmp_path: Path, sb: Sandbox
) -> None:
    data = export(tmp_path)
    assert run(config(tmp_path), sb, data)[0] == 1
    before = sb.stats()["requests_total"]
    plain = config(tmp_path, "nokey.toml", key=None)
    args = ("import", str(data), "-c", str(plain), "--base-url", sb.base_url, "--dry-run")
    refused = run_cli(*args, env=env(None))
    assert refused.exit_code == 2, refused.output
    assert_one_error_line(refused.output, "import --dry-run needs its patient data")
    # No patient's phone went out as a search query to find what the ledger caches.
    assert sb.stats()["requests_total"] == before


def test_a_keyless_ledger_is_not_mixed_with_a_key(tmp_path: Path, sb: Sandbox) -> None:
    plain = config(tmp_path, "nokey.toml", key=None)
    data = export(tmp_path)
    code, _, out = run(plain, sb, data, key=None)
    assert code == 1, out
    # The needles are there in clear without a key: the search would see them.
    assert len(clear_hits(tmp_path / "ledger.sqlite")) >= 5
    code, _, out = run(config(tmp_path), sb, data)
    assert code == 2
    assert_one_error_line(out, "is not encrypted and already holds rows")


def test_rekey_leaves_everything_readable_under_the_new_key_only(
    tmp_path: Path, sb: Sandbox
) -> None:
    cfg, ledger, data = _first_import(tmp_path, sb)
    with sqlite3.connect(ledger) as db:
        before = db.execute("SELECT value FROM meta WHERE key = 'encryption_key_id'").fetchone()

    shared = tmp_path / "new.key"
    shared.write_text(NEW_KEY, encoding="utf-8")
    shared.chmod(0o644)
    loose = run_cli("ledger", "rekey", "-c", str(cfg), "--new-key", f"file:{shared}", env=env())
    assert loose.exit_code == 2
    assert_one_error_line(loose.output, "permissions 0644 are too open")
    done = run_cli(
        "ledger",
        "rekey",
        "-c",
        str(cfg),
        "--new-key",
        "env:FW_NEW_KEY",
        env=env(FW_NEW_KEY=NEW_KEY),
    )
    assert done.exit_code == 0, done.output
    assert clear_hits(ledger) == []
    with sqlite3.connect(ledger) as db:
        after = db.execute("SELECT value FROM meta WHERE key = 'encryption_key_id'").fetchone()
        old_id_values = db.execute(
            "SELECT count(*) FROM entries WHERE payload_json LIKE ? OR source_row LIKE ?",
            (f"enc1:{before[0]}%", f"enc1:{before[0]}%"),
        ).fetchone()[0]
    assert after != before and old_id_values == 0
    # No page of the file holds a value sealed under the old key id any more.
    assert f"enc1:{before[0]}".encode() not in ledger.read_bytes()

    code, _, out = run(cfg, sb, data)  # the config still names the old key
    assert code == 2
    assert_one_error_line(out, f"encrypted with key id {after[0]}")
    code, event, out = run(cfg, sb, data, key=NEW_KEY)
    assert code == 1, out
    assert (totals(event)["created"], totals(event)["unchanged"]) == (0, 6)
    wrote = run_cli(
        "report", "-c", str(cfg), "--failures", str(tmp_path / "f.csv"), env=env(NEW_KEY)
    )
    assert wrote.exit_code == 0, wrote.output
    trail = json.loads(
        run_cli("report", "-c", str(cfg), "--format", "json", env=env(NEW_KEY)).stdout
    )["audit"]
    assert [a["action"] for a in trail] == ["rekey"]
    assert trail[0]["detail"]["new_key_id"] == after[0] and "@" in trail[0]["who"]


def test_after_purge_the_same_export_creates_nothing_and_reports_no_change(
    tmp_path: Path, sb: Sandbox
) -> None:
    cfg, ledger, data = _first_import(tmp_path, sb)
    kept = run_cli("ledger", "purge", "-c", str(cfg), "--older-than", "90d", env=env())
    assert kept.exit_code == 0 and "from 0 created row(s)" in kept.output, kept.output
    purged = run_cli("ledger", "purge", "-c", str(cfg), "--older-than", "0d", env=env())
    assert purged.exit_code == 0 and "from 6 created row(s)" in purged.output, purged.output
    with sqlite3.connect(ledger) as db:
        left = db.execute(
            "SELECT count(*) FROM entries WHERE status = 'created' AND payload_json IS NULL"
            " AND payload_hash IS NOT NULL AND appointment_id IS NOT NULL"
        ).fetchone()[0]
    assert left == 6

    event = run(cfg, sb, data)[1]
    after = totals(event)
    assert (after["new"], after["created"], after["changed"], after["unchanged"]) == (0, 0, 0, 6)
    checked = run_cli("verify", "-c", str(cfg), "--base-url", sb.base_url, env=env())
    assert checked.exit_code == 0, checked.output  # existence only, for purged rows
    # Not "matched 6": nothing was compared (a staff edit of these would not show).
    assert "not compared: 6 row(s) whose values `ledger purge` dropped" in checked.output
    as_json = run_cli("verify", "-c", str(cfg), "--base-url", sb.base_url, "--json-logs",
                      env=env())  # fmt: skip
    summary = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert (summary["totals"]["matched"], summary["totals"]["not_compared"]) == (0, 6)
    trail = json.loads(run_cli("report", "-c", str(cfg), "--format", "json", env=env()).stdout)
    assert [(a["action"], a["detail"]["rows"]) for a in trail["audit"]] == [("purge", 6)]


@pytest.mark.slow
async def test_resume_after_sigkill_on_an_encrypted_ledger_creates_every_row_once(
    tmp_path: Path,
) -> None:
    with sandbox_process(
        tmp_path, "--fault", "drop_after_commit=0.15", "--fault-seed", "3", "--latency-ms", "40"
    ) as sandbox:
        s = setup(tmp_path, sandbox.root, n=120, concurrency=8, timeout=2.0)
        with s.config.open("a", encoding="utf-8") as fh:
            fh.write('\n[ledger]\nencryption_key = "env:FW_LEDGER_KEY"\n')
        proc = await start_worker(s.args(), FW_LEDGER_KEY=KEY)
        try:
            await wait_for_appointments(sandbox.root, 30)
        finally:
            proc.kill()
            await proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        wal = s.ledger.with_name(s.ledger.name + "-wal")
        assert wal.exists() and wal.stat().st_size > 0  # the newest rows are only there
        notes = [r.notes for r in s.rows if r.notes]
        for path in (s.ledger, wal):
            data = path.read_bytes()
            assert not [n for n in notes if n.encode() in data], path
            assert "ğüşiöç".encode() not in data

        rerun = await start_worker(s.args(), FW_LEDGER_KEY=KEY)
        out, err = await asyncio.wait_for(rerun.communicate(), 60)
        assert rerun.returncode == 0, (out.decode(), err.decode())
        await assert_all_created_once(s)


def test_a_postgresql_ledger_holds_no_patient_value_and_syncs_as_before(
    tmp_path: Path, sb: Sandbox, pg_url: str
) -> None:
    import psycopg

    cfg = config(tmp_path, ledger_url=pg_url)
    data = export(tmp_path)
    code, event, out = run(cfg, sb, data)
    assert code == 1, out
    assert totals(event)["created"] == 6, totals(event)
    # The raw contents of every table of the worker's schema, as COPY writes them.
    dump = b""
    with psycopg.connect(pg_url) as db:
        tables = db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            ("flextell_worker",),
        ).fetchall()
        assert {"entries", "refs", "ref_creations", "meta"} <= {t[0] for t in tables}
        for (table,) in tables:
            with db.cursor().copy(f"COPY flextell_worker.{table} TO STDOUT") as copy:
                dump += b"".join(bytes(chunk) for chunk in copy)
    assert b"enc1:" in dump and b"ZQXJ" not in dump
    assert [n for n in NEEDLES if n.encode() in dump] == []

    again = totals(run(cfg, sb, data)[1])
    assert (again["created"], again["changed"], again["unchanged"]) == (0, 0, 6), again
    plain = config(tmp_path, "nokey.toml", key=None, ledger_url=pg_url)
    code, _, out = run(plain, sb, data, key=None)
    assert code == 2
    assert_one_error_line(out, "is encrypted (key id")


def test_purge_age_is_judged_on_the_clock_and_keep_patient_data_purges_after_an_import(
    tmp_path: Path, sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(tmp_path)
    assert run(cfg, sb, export(tmp_path))[0] == 1
    monkeypatch.setenv("FW_LEDGER_KEY", KEY)
    day = 86_400.0
    early = FakeClock(time.time() + 89 * day)
    assert asyncio.run(purge(cfg, None, "90d", None, clock=early)) == 0
    late = FakeClock(time.time() + 91 * day)
    assert asyncio.run(purge(cfg, None, "90d", 2, clock=late)) == 0  # no row of tenant 2
    assert asyncio.run(purge(cfg, None, "90d", 1, clock=late)) == 6

    # keep_patient_data: the import itself purges what is old enough (0d: all created rows).
    other = tmp_path / "keep"
    other.mkdir()
    keep = config(other, ledger_extra='keep_patient_data = "0d"\n')
    data = export(other)
    assert run(keep, sb, data)[0] == 1
    with sqlite3.connect(other / "ledger.sqlite") as db:
        kept = db.execute(
            "SELECT count(*) FROM entries WHERE status = 'created' AND payload_json IS NOT NULL"
        ).fetchone()[0]
    assert kept == 0
    trail = json.loads(run_cli("report", "-c", str(keep), "--format", "json", env=env()).stdout)
    assert [a["detail"]["why"] for a in trail["audit"]] == ["keep_patient_data = 0d"]
    again = totals(run(keep, sb, data)[1])
    assert (again["created"], again["changed"], again["unchanged"]) == (0, 0, 6), again


async def test_outcome_messages_are_sealed_and_read_back_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    key = LedgerKey(KEY.encode(), "env:FW_LEDGER_KEY")
    payload = '{"description":"ZQXJ-note-7781"}'
    async with await Ledger.open(path, key=key) as ledger:
        run_id = await ledger.start_run(mode="import", source_file=None, source_sha256=None)
        seen = SeenRow(1, "K-1", "sha", payload, "in.csv", 2, {"fields": {}, "raw": ""}, run_id)
        await ledger.upsert_seen([seen])
        reason = "description: row 'ZQXJ-note-7781', Flextell 'other'"
        await ledger.record(1, "K-1", status=Status.UNKNOWN, run_id=run_id, error_message=reason)
        await ledger.flush()
        entry = (await ledger.get_many([(1, "K-1")]))[(1, "K-1")]
        assert (entry.error_message, entry.payload_json) == (reason, payload)
        assert entry.payload_hash == ledger.keyed("sha") != "sha"
    assert clear_hits(path) == []
    async with await Ledger.open(path, readonly=True) as keyless:
        assert keyless.key_id == key.key_id and keyless.sealer is None
        entry = (await keyless.get_many([(1, "K-1")]))[(1, "K-1")]
        assert (entry.error_message, entry.payload_json, entry.status) == (None, None, "unknown")
        assert await keyless.count_by_status() == {"unknown": 1}


@pytest.mark.parametrize(
    ("ledger_extra", "key", "needle"),
    [
        ('keep_patient_data = "90 days"\n', None, "keep_patient_data: expected a number of days"),
        ("", "supersecret", "key must be 'env:VARIABLE' or 'file:PATH'"),
        ("", "env:FW_SHORT_KEY", "the key has 5 characters, expected at least 32"),
    ],
)
def test_a_bad_key_or_retention_setting_is_one_line(
    tmp_path: Path, ledger_extra: str, key: str | None, needle: str
) -> None:
    cfg = config(tmp_path, key=key, ledger_extra=ledger_extra)
    out = run_cli(
        "import", str(export(tmp_path)), "-c", str(cfg), env=env(None, FW_SHORT_KEY="short")
    )
    assert out.exit_code == 2
    line = assert_one_error_line(out.output, needle)
    assert "supersecret" not in line and "short" not in line.split("5 characters")[0]
    bad_age = run_cli("ledger", "purge", "-c", str(config(tmp_path)), "--older-than", "3w")
    assert bad_age.exit_code == 2
    assert_one_error_line(bad_age.output, "--older-than: expected a number of days such as '90d'")


def test_a_key_file_that_is_not_text_is_one_line_without_its_bytes(tmp_path: Path) -> None:
    key_file = tmp_path / "key.bin"
    key_file.write_bytes(b"\xff\xfe\x9c" + b"\x00\x81" * 20)
    key_file.chmod(0o600)
    cfg = config(tmp_path, key="file:key.bin")
    out = run_cli("report", "-c", str(cfg), env=env(None))
    assert out.exit_code == 2
    line = assert_one_error_line(out.output, f"cannot read {key_file}: not UTF-8 text")
    assert "0xff" not in line and "\\x" not in line and "\ufffd" not in line


def test_a_ledger_another_program_holds_says_so_not_what_an_import_would(
    tmp_path: Path, sb: Sandbox
) -> None:
    """`ledger purge` while an sqlite3 shell held a write transaction on the file: exit 3
    with "database is locked; fix the cause and run again (nothing was lost: a row is
    marked in flight before it is sent ...)", naming no one and speaking of an import."""
    cfg, ledger, _ = _first_import(tmp_path, sb)
    holder = sqlite3.connect(ledger, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        held = run_cli("ledger", "purge", "-c", str(cfg), "--older-than", "0d", env=env())
    finally:
        holder.close()
    assert held.exit_code == 3, held.output
    assert_one_error_line(held.output, "database is locked: another program holds the ledger")
