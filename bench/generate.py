"""Seeded bench data: appointment CSVs valid against a seed, a 3-tenant seed, run configs.

Everything is derived at run time (nothing large is committed) and is the same
for the same arguments. Rows follow the columns of `config/demo.toml`, so one
mapping reads them. Every row of a tenant gets its own start time, so no two
valid rows are the same appointment in the sandbox's duplicate check.

    python -m bench.generate OUT.csv --rows 5000 --tenants 3 [--seed-data S]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
DEFAULT_SEED = ROOT / "worker" / "sandbox" / "default_seed.json"
DEMO_CONFIG = ROOT / "config" / "demo.toml"
TOKEN_ALL = "sandbox-token-all"

COLUMNS = [
    "appointment_id",
    "clinic",
    "customer_id",
    "doctor_id",
    "start",
    "status",
    "treatment_ids",
    "room_id",
    "assistant_id",
    "notes",
    "cancellation_reason",
]
NOTES = ["", "", "", "İlk seans", "Kontrol randevusu", "Hasta telefonla onayladı"]
FIRST_START = datetime(2027, 1, 4, 9, 0)
STEP = timedelta(minutes=10)


@dataclass(frozen=True)
class TenantIds:
    """The reference ids of one seed tenant that a valid row may use."""

    id: int
    customers: list[int]
    doctors: list[int]
    assistants: list[int]
    treatments: list[int]
    rooms: list[int]


def tenant_ids(seed: dict[str, Any]) -> list[TenantIds]:
    """Reference ids per tenant of a seed JSON document."""
    out = []
    for t in seed["tenants"]:
        users = t.get("users", [])
        out.append(
            TenantIds(
                id=t["id"],
                customers=[c["id"] for c in t.get("customers", [])],
                doctors=[u["id"] for u in users if u.get("role") == "doctor"],
                assistants=[u["id"] for u in users if u.get("role") == "assistant"],
                treatments=[x["id"] for x in t.get("treatments", [])],
                rooms=[r["id"] for r in t.get("rooms", [])],
            )
        )
    return out


def load_seed(path: Path = DEFAULT_SEED) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def write_bench_seed(path: Path, tenants: int = 3) -> Path:
    """The default seed plus copies of its last tenant as tenants 3.. with fresh ids.

    Ids stay unique per kind across tenants (the sandbox checks that); every token
    and refresh token that reaches all tenants reaches the new ones too.
    """
    seed = load_seed()
    base = seed["tenants"][-1]
    have = len(seed["tenants"])
    for n in range(have + 1, tenants + 1):
        shift = n - base["id"]
        t = json.loads(json.dumps(base))
        t["id"] = n
        t["name"] = f"Bench Clinic {n}"
        for c in t["customers"]:
            c["id"] += 1000 * shift
        for kind in ("users", "treatments", "rooms"):
            for obj in t[kind]:
                obj["id"] += 10 * shift
        for tr in t["treatments"]:
            # Nested copies would point at the original tenant's objects: drop them.
            tr["users"], tr["sessions"], tr["products"] = [], [], []
        seed["tenants"].append(t)
        seed["tokens"].append({"token": f"sandbox-token-tenant-{n}", "tenants": [n]})
    all_ids = [t["id"] for t in seed["tenants"]]
    grants = list(seed["tokens"])
    for client in seed.get("oauth_clients", []):
        grants += client.get("refresh_tokens", [])
    for grant in grants:
        if len(grant["tenants"]) > 1:
            grant["tenants"] = all_ids
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(seed, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def rows(
    count: int, tenants: Sequence[TenantIds], seed: int = 20261122
) -> Iterator[dict[str, str]]:
    """`count` valid rows, tenants taking turns; deterministic for a given seed."""
    rng = random.Random(seed)
    per_tenant = [0] * len(tenants)
    for i in range(count):
        k = i % len(tenants)
        t = tenants[k]
        n = per_tenant[k]
        per_tenant[k] += 1
        status = rng.choices(["pending", "approved", "cancelled"], weights=[50, 44, 6])[0]
        treatments = rng.sample(t.treatments, rng.choice([1, 1, 1, 2, 2, 3]))
        yield {
            "appointment_id": f"B{t.id}-{n:07d}",
            "clinic": str(t.id),
            "customer_id": str(rng.choice(t.customers)),
            "doctor_id": str(rng.choice(t.doctors)),
            "start": (FIRST_START + n * STEP).strftime("%Y-%m-%dT%H:%M:%S"),
            "status": status,
            "treatment_ids": "|".join(map(str, treatments)),
            "room_id": str(rng.choice(t.rooms)) if rng.random() < 0.8 else "",
            "assistant_id": str(rng.choice(t.assistants)) if rng.random() < 0.4 else "",
            "notes": rng.choice(NOTES),
            "cancellation_reason": "Hasta iptal etti" if status == "cancelled" else "",
        }


def write_csv(path: Path, count: int, tenants: Sequence[TenantIds], seed: int = 20261122) -> Path:
    """Write `count` rows to `path` (UTF-8, header first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows(count, tenants, seed))
    return path


def write_config(
    path: Path,
    tenants: Sequence[int],
    *,
    rate_limit: str = "100000/second",
    concurrency: int = 8,
    timeout: float = 30.0,
    max_backoff: float = 60.0,
) -> Path:
    """A run config: demo.toml's mapping with these API settings and tenants."""
    mapping = DEMO_CONFIG.read_text(encoding="utf-8").split("[mapping]", 1)[1]
    lines = [
        "[api]",
        'base_url = "http://127.0.0.1:1/api"',
        'token = "env:FLEXTELL_TOKEN"',
        f'rate_limit = "{rate_limit}"',
        f"concurrency = {concurrency}",
        f"timeout = {timeout}",
        f"max_backoff = {max_backoff}",
        'timezone = "Europe/Istanbul"',
        "",
    ]
    for t in tenants:
        lines += [f"[tenants.{t}]", f'name = "Clinic {t}"', ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "[mapping]" + mapping, encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args(argv)
    seed_path = write_bench_seed(OUT / "bench-seed.json", max(args.tenants, 2))
    ids = tenant_ids(load_seed(seed_path))[: args.tenants]
    write_csv(args.out, args.rows, ids, args.seed)
    print(f"{args.out}: {args.rows} rows over tenants {[t.id for t in ids]}; seed {seed_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
