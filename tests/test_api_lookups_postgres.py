"""lookup = "api" on a shared PostgreSQL ledger, against the sandbox process.

The sample export resolves as on SQLite (samples/api-lookups.expected.jsonl), its
new patient is created once, and a run over resolved rows asks the API nothing:
the cache is the ledger's. Two workers sharing two tenants create each tenant's
new patient exactly once, by the tenant's lease holder; a worker without the lease
creates no customer at all.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.drills import worker_env
from bench.measure import worker_cmd
from samples.api_lookups import write_seed
from tests.support.sandbox_process import Sandbox, sandbox_process
from tests.support.sync import import_file, run_cli
from tests.test_api_lookups import (
    NEW_PHONE,
    SAMPLE,
    customers_with_phone,
    expected,
    reference_calls,
    requests_since,
    setup,
)
from worker.commands.validate import source_options
from worker.config import load_config
from worker.ledger.postgres import LeaseLostError, PgLedger
from worker.references.prepass import prepare

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TENANT2_PHONE = "+905553334455"
TENANT2_ROWS = [
    "2;S-2001;10.03.2026;09:30;Ali;Veli;+905331109666;;Dr. Kerem Korkmaz;;Carbon Peel;"
    "Room 1 - Laser;Onaylandı",
    "2;S-2002;10.03.2026;10:30;Can;Demir;0555 333 44 55;can.demir@example.com;"
    "Dr. Kerem Korkmaz;;Lip Filler;;Bekliyor",
    "2;S-2003;11.03.2026;10:30;Can;Demir;+90 555 333 44 55;;Dr. Kerem Korkmaz;;Carbon Peel;;"
    "Bekliyor",
]


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    """The sandbox of tests/test_api_lookups.py: the seed the sample is checked against."""
    with sandbox_process(tmp_path, "--seed-data", str(write_seed(tmp_path / "seed.json"))) as s:
        yield s


def pg_config(tmp_path: Path, url: str, *, two_tenants: bool = False) -> Path:
    """config/api-lookups.toml (fast), its ledger the PostgreSQL database at `url`."""
    cfg = setup(tmp_path)
    text = cfg.read_text(encoding="utf-8").replace(
        'path = "ledger.sqlite"', f'url = "{url}"\ntenants_per_worker = 1'
    )
    if two_tenants:
        text = text.replace("[mapping]\n", '[mapping]\ntenant = { column = "Klinik" }\n', 1)
        text = text.replace("[source]", '[tenants.2]\nname = "Besiktas Clinic"\n\n[source]', 1)
    cfg.write_text(text, encoding="utf-8")
    return cfg


def pg_query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def customers_of(sb: Sandbox, tenant: int, phone: str) -> list[dict[str, Any]]:
    seed = next(t for t in sb.get("/_sandbox/seed")["tenants"] if t["id"] == tenant)
    return [c for c in seed["customers"] if c.get("phone_number") == phone]


def test_the_sample_on_a_postgresql_ledger_resolves_creates_once_then_asks_nothing(
    tmp_path: Path, sb: Sandbox, pg_url: str
) -> None:
    cfg = pg_config(tmp_path, pg_url)
    want = expected()
    ok = [w for w in want if "error" not in w]
    start = time.time() - 1
    result, event = import_file(cfg, sb, SAMPLE)
    assert result.exit_code == 1, result.output  # five rows are row errors, on purpose
    totals = event["totals"]
    assert (totals["created"], totals["invalid"], totals["failed"]) == (len(ok), 5, 0)
    [created] = customers_with_phone(sb, NEW_PHONE)
    assert sb.stats()["customers_created"] == 1
    stored = {a["scheduled_at"]: a for a in sb.appointments()}
    for w in ok:
        appt = stored[w["scheduled_at"]]
        got = (appt["customer_id"], appt["user_id"], appt["assistant_id"], appt["room_id"])
        assert got == (w.get("customer_id", created["id"]), w["user_id"], w["assistant_id"],
                       w["room_id"]), w["key"]  # fmt: skip
        assert appt["treatment_ids"] == w["treatments"], w["key"]
    rows = {
        key: (status, field, message)
        for key, status, field, message in pg_query(
            pg_url,
            "SELECT source_key, status, error_field, error_message FROM flextell_worker.entries",
        )
    }
    for w in want:
        status, field, message = rows[w["key"]]
        if "error" in w:
            assert (status, field) == ("invalid", w["error_field"]) and w["error"] in message
        else:
            assert status == "created", (w["key"], status, message)
    calls = reference_calls(requests_since(sb, start))
    assert sorted(p for m, p, _ in calls if m == "GET" and p != "customers") == [
        "rooms", "treatments", "users",
    ]  # fmt: skip
    assert len([q for m, p, q in calls if m == "GET" and p == "customers"]) == 8
    assert [m for m, _, _ in calls if m == "POST"] == ["POST"]
    made = pg_query(
        pg_url, "SELECT state, customer_id, attempts FROM flextell_worker.ref_creations"
    )
    assert made == [("created", created["id"], 1)]
    assert pg_query(pg_url, "SELECT count(*) FROM flextell_worker.refs")[0][0] > 20

    # Run 2 (the pass had row errors, so a new worker takes the file again): only what
    # was not resolved is asked again, as on SQLite.
    second = time.time()
    _, event2 = import_file(cfg, sb, SAMPLE)
    assert event2["totals"]["unchanged"] == len(ok) and event2["totals"]["invalid"] == 5
    calls2 = reference_calls(requests_since(sb, second))
    assert sorted(p for _, p, _ in calls2 if p != "customers") == ["treatments", "users"]
    assert len([p for _, p, _ in calls2 if p == "customers"]) == 2
    # The rows that resolve, alone: every name is in the cache, no reference call at all;
    # a dry run too reads the PostgreSQL cache and creates nothing.
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    resolved = tmp_path / "resolved.csv"
    resolved.write_text("\n".join(lines[:7]) + "\n", encoding="utf-8")
    third = time.time()
    out3, event3 = import_file(cfg, sb, resolved)
    assert out3.exit_code == 0 and event3["totals"]["unchanged"] == 6, out3.output
    dry, event4 = import_file(cfg, sb, resolved, "--dry-run")
    assert dry.exit_code == 0 and event4["totals"]["unchanged"] == 6, dry.output
    assert reference_calls(requests_since(sb, third)) == []
    assert sb.stats()["customers_created"] == 1


def test_validate_online_with_a_postgresql_ledger_configured(
    tmp_path: Path, sb: Sandbox, pg_url: str
) -> None:
    cfg = pg_config(tmp_path, pg_url)
    out = run_cli("validate", str(SAMPLE), "-c", str(cfg), "--online", "--base-url", sb.base_url)
    assert out.exit_code == 1, out.output  # the sample's five row errors
    assert "customers the import would create: 1" in out.output
    assert sb.stats()["customers_created"] == 0
    # validate reads no ledger: the database is left as it was (no schema).
    assert pg_query(pg_url, "SELECT to_regnamespace('flextell_worker') IS NULL") == [(True,)]


def _worker(cfg: Path, file: Path, sb: Sandbox, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = worker_cmd("import", str(file), "-c", str(cfg), "--base-url", sb.base_url,
                     "--no-progress", *extra)  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=worker_env(), stdout=out, stderr=out)


def test_two_workers_sharing_two_tenants_create_each_new_customer_once(
    tmp_path: Path, sb: Sandbox, pg_url: str
) -> None:
    cfg = pg_config(tmp_path, pg_url, two_tenants=True)
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    export = tmp_path / "two.csv"
    export.write_text(
        "\n".join(["Klinik;" + lines[0], *("1;" + x for x in lines[1:7]), *TENANT2_ROWS]) + "\n",
        encoding="utf-8",
    )
    start = time.time() - 1
    for round_name in ("first", "second"):
        logs = [tmp_path / f"{round_name}-{i}.log" for i in (1, 2)]
        procs = [_worker(cfg, export, sb, log, "--round", round_name) for log in logs]
        codes = [p.wait(timeout=90) for p in procs]
        assert codes == [0, 0], [log.read_text(errors="replace") for log in logs]
        if round_name == "first":
            again = time.time()
    [one] = customers_of(sb, 1, NEW_PHONE)
    [two] = customers_of(sb, 2, TENANT2_PHONE)
    assert (two["first_name"], two["email"]) == ("Can", "can.demir@example.com")
    assert sb.stats()["customers_created"] == 2
    # Each creation was sent by the holder of its own tenant's lease.
    log = requests_since(sb, start)
    posts = [r for r in log if r["method"] == "POST" and r["path"].endswith("/customers")]
    assert sorted(r["tenant"] for r in posts) == [1, 2]
    for r in posts:
        assert any(part.split(":")[0] == str(r["tenant"]) for part in r["lease"].split(","))
    made = pg_query(
        pg_url,
        "SELECT tenant, state, customer_id, attempts FROM flextell_worker.ref_creations"
        " ORDER BY tenant",
    )
    assert made == [(1, "created", one["id"], 1), (2, "created", two["id"], 1)]
    by_row = {(a["tenant"], a["scheduled_at"]): a["customer_id"] for a in sb.appointments()}
    assert len(by_row) == 9
    assert sorted(c for (t, _), c in by_row.items() if t == 2) == sorted(
        [2001, two["id"], two["id"]]
    )
    # The second round (both workers again, same tenants): every name from the cache.
    assert reference_calls(requests_since(sb, again)) == []


async def test_a_worker_without_the_tenants_lease_creates_no_customer(
    tmp_path: Path, sb: Sandbox, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEXTELL_TOKEN", "sandbox-token-all")
    ledger = await PgLedger.open_url(pg_url)  # registered, but holding no lease
    try:
        await _creates_no_customer(tmp_path, sb, pg_url, ledger)
    finally:
        await ledger.close()
    assert pg_query(pg_url, "SELECT count(*) FROM flextell_worker.ref_creations") == [(0,)]


async def test_a_customer_post_past_the_leases_local_deadline_is_not_sent(
    tmp_path: Path, sb: Sandbox, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database still grants the lease, but this worker's monotonic deadline has
    passed (as after a pause): the intent may be written, the POST never leaves."""
    from tests.conftest import FakeClock
    from worker.ledger.leases import LeaseKeeper

    monkeypatch.setenv("FLEXTELL_TOKEN", "sandbox-token-all")
    ledger = await PgLedger.open_url(pg_url)
    clock = FakeClock()
    keeper = await LeaseKeeper.open(pg_url, ledger.worker_id, lease_seconds=600, clock=clock)
    ledger.attach(keeper)
    assert await keeper.acquire([1], "r") is not None
    clock.advance(600 - keeper.margin)  # the heartbeat never ran: as if paused that long
    try:
        await _creates_no_customer(tmp_path, sb, pg_url, ledger)
    finally:
        await keeper.close()
        await ledger.close()


async def _creates_no_customer(tmp_path: Path, sb: Sandbox, pg_url: str, ledger: PgLedger) -> None:
    """Resolving the sample with `ledger` stops on its lease, and no customer POST leaves."""
    cfg = pg_config(tmp_path, pg_url)
    config = load_config(cfg)
    opts = source_options(config, None)
    start = time.time() - 1
    with pytest.raises(LeaseLostError, match="lease of tenant 1"):
        await prepare(config, str(SAMPLE), opts, tenant=None, base_url=sb.base_url,
                      ledger=ledger, create=True)  # fmt: skip
    posts = [r for r in requests_since(sb, start) if r["method"] == "POST"]
    assert posts == [] and sb.stats()["customers_created"] == 0
    assert customers_with_phone(sb, NEW_PHONE) == []
