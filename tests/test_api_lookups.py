"""lookup = "api": the sample export names patients by phone and staff, treatments and rooms
by name; imported against the sandbox, every row resolves as samples/api-lookups.expected.jsonl
says, a second run asks the API nothing it has cached, and a lost answer while creating a
customer leaves exactly one customer."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from samples.api_lookups import write_seed
from tests.test_sync import Sandbox, import_file, run_cli, start_sandbox, stop

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "api-lookups.csv"
EXPECTED = ROOT / "samples" / "api-lookups.expected.jsonl"
NEW_PHONE = "+905551112233"


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    seed = write_seed(tmp_path / "seed.json")
    proc, sandbox = start_sandbox(tmp_path, "--seed-data", str(seed))
    try:
        yield sandbox
    finally:
        stop(proc)


def setup(tmp_path: Path, extra: str = "") -> Path:
    text = (ROOT / "config" / "api-lookups.toml").read_text(encoding="utf-8")
    text = text.replace('rate_limit = "20/second"', 'rate_limit = "1000/second"\ntimeout = 5')
    cfg = tmp_path / "api-lookups.toml"
    cfg.write_text(text + extra + '\n[ledger]\npath = "ledger.sqlite"\n', encoding="utf-8")
    return cfg


def expected() -> list[dict[str, Any]]:
    return [json.loads(x) for x in EXPECTED.read_text(encoding="utf-8").splitlines()]


def requests_since(sb: Sandbox, since: float) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = sb.get(f"/_sandbox/requests?since={since}")["requests"]
    return log


def reference_calls(log: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (r["method"], r["path"].removeprefix("/api/v1/"), r["query"])
        for r in log
        if r["path"].split("/")[-1] in ("customers", "users", "treatments", "rooms")
    ]


def customers_with_phone(sb: Sandbox, phone: str) -> list[dict[str, Any]]:
    tenant = next(t for t in sb.get("/_sandbox/seed")["tenants"] if t["id"] == 1)
    return [c for c in tenant["customers"] if c.get("phone_number") == phone]


def ledger_rows(cfg: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(cfg.parent / "ledger.sqlite") as db:
        db.row_factory = sqlite3.Row
        return {r["source_key"]: dict(r) for r in db.execute("SELECT * FROM entries")}


def test_the_sample_resolves_every_row_as_expected_and_a_second_run_asks_nothing_cached(
    tmp_path: Path, sb: Sandbox
) -> None:
    cfg = setup(tmp_path)
    want = expected()
    start = time.time() - 1
    result, event = import_file(cfg, sb, SAMPLE)
    assert result.exit_code == 1, result.output  # four rows are row errors, on purpose
    totals = event["totals"]
    ok = [w for w in want if "error" not in w]
    assert (totals["created"], totals["invalid"], totals["failed"]) == (len(ok), 4, 0)

    created = customers_with_phone(sb, NEW_PHONE)
    assert len(created) == 1, created  # two rows name the new patient: one customer
    assert (created[0]["first_name"], created[0]["last_name"]) == ("Ayşe", "Yılmaz")
    assert created[0]["email"] == "ayse.yilmaz@example.com"
    assert sb.stats()["customers_created"] == 1

    stored = {a["scheduled_at"]: a for a in sb.appointments()}
    assert len(stored) == len(ok)
    for w in ok:
        appt = stored[w["scheduled_at"]]
        customer = w.get("customer_id", created[0]["id"])
        got = (appt["customer_id"], appt["user_id"], appt["assistant_id"], appt["room_id"])
        assert got == (customer, w["user_id"], w["assistant_id"], w["room_id"]), w["key"]
        assert appt["treatment_ids"] == w["treatments"], w["key"]

    rows = ledger_rows(cfg)
    for w in want:
        row = rows[w["key"]]
        if "error" in w:
            assert row["status"] == "invalid" and row["error_field"] == w["error_field"], row
            assert w["error"] in row["error_message"], row["error_message"]
        else:
            assert row["status"] == "created", row

    # Run 1 listed each small list once and searched each distinct phone once.
    calls = reference_calls(requests_since(sb, start))
    lists = sorted(p for m, p, q in calls if m == "GET" and p != "customers")
    assert lists == ["rooms", "treatments", "users"]
    searches = [q for m, p, q in calls if m == "GET" and p == "customers"]
    assert len(searches) == len(set(searches)) == 7  # 8 distinct phones, one not a number
    assert [m for m, p, _ in calls if m == "POST"] == ["POST"]

    # Run 2, same file: nothing cached is asked again. Only what was not resolved is:
    # the ambiguous phone, and the lists holding an unknown name (users, treatments).
    second = time.time()
    _, event2 = import_file(cfg, sb, SAMPLE)
    assert event2["totals"]["unchanged"] == len(ok) and event2["totals"]["invalid"] == 4
    calls2 = reference_calls(requests_since(sb, second))
    assert sorted(p for m, p, _ in calls2 if p != "customers") == ["treatments", "users"]
    assert [q for _, p, q in calls2 if p == "customers"] == [
        "search=5554445566&per_page=100&page=1"
    ]
    assert customers_with_phone(sb, NEW_PHONE) == created


def test_validate_online_and_dry_run_resolve_every_row_and_create_nothing(
    tmp_path: Path, sb: Sandbox
) -> None:
    cfg = setup(tmp_path)
    report = tmp_path / "report.json"
    out = run_cli(
        "validate", str(SAMPLE), "-c", str(cfg), "--online", "--base-url", sb.base_url,
        "--report", str(report),
    )  # fmt: skip
    assert out.exit_code == 1, out.output
    text = out.output
    errors = {e["line"]: e for e in json.loads(report.read_text(encoding="utf-8"))["errors"]}
    for w in expected():
        if "error" in w:
            assert f":{w['line']}: {w['error_field']}" in text and w["error"] in text, w
            got = errors[w["line"]]  # the value is named in the report, not on screen
            assert (got["field"], got["value"]) == (w["error_field"], w["value"]), got
    assert "5554445566" not in text and "Nobody" not in text
    assert "the import would create it (create_missing)" in text
    assert "customers the import would create: 1" in text
    _, event = import_file(cfg, sb, SAMPLE, "--dry-run")
    assert event["totals"]["invalid"] == 6  # the 4 errors and the 2 rows of the new patient
    assert customers_with_phone(sb, NEW_PHONE) == []
    assert sb.stats()["customers_created"] == 0 and sb.stats()["appointments_total"] == 0


def test_a_lost_answer_while_creating_a_customer_leaves_exactly_one(
    tmp_path: Path, sb: Sandbox
) -> None:
    cfg = setup(tmp_path)
    body = json.dumps({"customer_faults": {"drop_after_commit": 1.0}}).encode()
    req = urllib.request.Request(
        sb.root + "/_sandbox/faults", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 200
    _, event = import_file(cfg, sb, SAMPLE)
    assert sb.stats()["faults"].get("drop_after_commit") == 1
    created = customers_with_phone(sb, NEW_PHONE)
    assert len(created) == 1
    # The lookup after the lost answer found it: both of its rows were sent with its id.
    ids = {a["customer_id"] for a in sb.appointments()}
    assert created[0]["id"] in ids
    assert event["totals"]["created"] == 6
    with sqlite3.connect(cfg.parent / "ledger.sqlite") as db:
        made = db.execute("SELECT state, customer_id, attempts FROM ref_creations").fetchall()
    assert made == [("created", created[0]["id"], 1)]
    # A second run creates nothing more.
    import_file(cfg, sb, SAMPLE)
    assert customers_with_phone(sb, NEW_PHONE) == created
    assert sb.stats()["customers_created"] == 1
