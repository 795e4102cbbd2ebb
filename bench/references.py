"""Bench scenario ``references``: API calls per 1,000 rows when names are resolved through
the API (``lookup = "api"``), 300 distinct patients, 60 of them unknown to Flextell.

The export names patients by national phone number, doctors, treatments and rooms by
name. Run 1 resolves and creates; run 2 imports the same file again and must ask the
API nothing about references (all cached). Calls are counted from the sandbox's
request log. The baseline is the per-row alternative: one customer search per row
(what a worker without per-value resolution and cache makes), plus the three lists.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

from bench.generate import load_seed
from bench.measure import run_child, worker_cmd
from bench.sandbox import SandboxProcess

ROWS = 1000
PATIENTS = 300
NEW_PATIENTS = 60
REF_PATHS = ("/api/v1/customers", "/api/v1/users", "/api/v1/treatments", "/api/v1/rooms")
FIRST = ("Ayşe", "Mehmet", "Zeynep", "Emre", "Elif", "Can", "Deniz", "Burak", "İrem", "Oğuz")
LAST = ("Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Yıldız", "Öztürk", "Aydın", "Arslan")

CONFIG = """
[api]
base_url = "http://127.0.0.1:1/api"
token = "env:FLEXTELL_TOKEN"
rate_limit = "1000/second"
concurrency = 8
timeout = 10
timezone = "Europe/Istanbul"
phone_region = "TR"

[tenants.1]
name = "Kadikoy Clinic"

[ledger]
path = "ledger.sqlite"

[mapping]
source_key = "Randevu"
scheduled_at = { column = "Zaman", formats = ["%d.%m.%Y %H:%M"] }
status = { value = "pending" }
user_id = { column = "Doktor", lookup = "api" }
treatments = { column = "Islemler", split = "|", lookup = "api" }
room_id = { column = "Oda", lookup = "api" }

[mapping.customer_id]
column = "Telefon"
lookup = "api"
by = "phone"
create_missing = true
create = { first_name = "Ad", last_name = "Soyad" }
"""


def _phone(n: int) -> str:
    return f"+90555{n:07d}"


def _national(phone: str) -> str:
    digits = phone.removeprefix("+90")
    return f"0{digits[:3]} {digits[3:6]} {digits[6:8]} {digits[8:]}"


def write_data(workdir: Path, rows: int) -> tuple[Path, Path]:
    """The seed (tenant 1 with 240 of the file's patients) and the export."""
    rng = random.Random(20261203)
    seed = load_seed()
    tenant = next(t for t in seed["tenants"] if t["id"] == 1)
    patients = [(_phone(i), rng.choice(FIRST), rng.choice(LAST)) for i in range(1, PATIENTS + 1)]
    known = patients[: PATIENTS - NEW_PATIENTS]
    tenant["customers"].extend(
        {"id": 5000 + i, "first_name": f, "last_name": last, "phone_number": p}
        for i, (p, f, last) in enumerate(known)
    )
    seed_path = workdir / "seed.json"
    seed_path.write_text(json.dumps(seed, ensure_ascii=False), encoding="utf-8")
    doctors = [u["name"] for u in tenant["users"] if u["role"] == "doctor"]
    treatments = [t["name"] for t in tenant["treatments"]]
    rooms = [r["name"] for r in tenant["rooms"] if r["status"] == "active"]
    csv_path = workdir / "export.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Randevu", "Zaman", "Telefon", "Ad", "Soyad", "Doktor", "Islemler", "Oda"])
        for i in range(rows):
            phone, first, last = patients[i % PATIENTS] if i < PATIENTS else rng.choice(patients)
            day, slot = divmod(i, 20)
            hour, minute = 8 + slot // 2, slot % 2 * 30
            when = f"{1 + day % 28:02d}.{1 + day // 28:02d}.2027 {hour:02d}:{minute:02d}"
            names = "|".join(rng.sample(treatments, rng.choice((1, 2))))
            writer.writerow(
                [f"B-{i}", when, _national(phone), first, last, rng.choice(doctors), names,
                 rng.choice(rooms)]
            )  # fmt: skip
    return seed_path, csv_path


def _reference_calls(sb: SandboxProcess, since: float) -> dict[str, int]:
    calls: dict[str, int] = {}
    for r in sb.requests(since):
        if r["path"] in REF_PATHS:
            what = f"{r['method']} {r['path'].removeprefix('/api/v1/')}"
            calls[what] = calls.get(what, 0) + 1
    return calls


def measure(workdir: Path, env: dict[str, str], quick: bool) -> dict[str, Any]:
    """Two imports of the export; reference calls of each, per 1,000 rows."""
    rows = 400 if quick else ROWS
    seed_path, csv_path = write_data(workdir, rows)
    cfg = workdir / "references.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    out: dict[str, Any] = {"rows": rows, "distinct_patients": PATIENTS}
    with SandboxProcess(workdir, ["--seed-data", str(seed_path)]) as sb:
        for run in (1, 2):
            since = sb.requests()[-1]["t"] if sb.requests() else 0.0
            child = run_child(
                worker_cmd("import", str(csv_path), "-c", str(cfg), "--base-url", sb.api_url,
                           "--no-progress"),
                env=env,
                log_dir=workdir,
                name=f"worker-{run}",
            )  # fmt: skip
            if child.returncode != 0:
                raise RuntimeError(f"import run {run} exited {child.returncode}: {child.stderr}")
            calls = _reference_calls(sb, since + 1e-6)
            total = sum(calls.values())
            out[f"run{run}_calls"] = calls
            out[f"run{run}_per_1000_rows"] = round(total * 1000 / rows, 1)
            out[f"run{run}_seconds"] = round(child.seconds, 2)
        stats = sb.stats()
        out["customers_created"] = stats["customers_created"]
        out["appointments"] = stats["appointments_total"]
    out["baseline_per_1000_rows"] = round((rows + 3) * 1000 / rows, 1)
    return out
