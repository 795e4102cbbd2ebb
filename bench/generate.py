"""Seeded bench data: appointment CSVs valid against a seed, a 3-tenant seed, run configs.

Everything is derived at run time (nothing large is committed) and is the same
for the same arguments. Rows follow the columns of `config/demo.toml`, so one
mapping reads them. By default every row of a tenant gets its own start time,
so no two valid rows are the same appointment in the sandbox's duplicate check;
`share` makes a fraction of rows share customer, doctor, instant and
treatments with another row of the tenant, as real exports do (a cancelled
booking and its re-booking, two sessions in different rooms), and
`identical` a fraction that repeat another row exactly.

    python -m bench.generate OUT.csv --rows 5000 --tenants 3 [--share 0.25] [--identical 0.01]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

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
TIMEZONE = "Europe/Istanbul"  # write_config's; naive starts are wall times there
CANCEL_REASON = "Hasta iptal etti"


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
            # Users 1x1 and 1x6 of tenant 2 would meet tenant 1's 15x at tenant 6:
            # from there on users move by thousands (tenants 3 to 5 keep their ids).
            step = 1000 if kind == "users" and shift > 3 else 10
            for obj in t[kind]:
                obj["id"] += step * shift
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
    count: int,
    tenants: Sequence[TenantIds],
    seed: int = 20261122,
    *,
    share: float = 0.0,
    identical: float = 0.0,
) -> Iterator[dict[str, str]]:
    """`count` valid rows, tenants taking turns; deterministic for a given seed.

    `share`: the fraction of rows that share customer, doctor, instant and
    treatments with exactly one other row and differ from it in status (a
    cancelled booking and its re-booking) or room (two sessions). `identical`:
    the fraction of rows that repeat an earlier row in every field but the key.
    Both 0 give the same rows as before they existed.
    """
    rng = random.Random(seed)
    twin_rng = random.Random(seed + 1)  # never shifts the base rows' draws
    per_tenant = [0] * len(tenants)
    unpaired: list[list[dict[str, str]]] = [[] for _ in tenants]
    for i in range(count):
        k = i % len(tenants)
        t = tenants[k]
        n = per_tenant[k]
        per_tenant[k] += 1
        key = f"B{t.id}-{n:07d}"
        roll = twin_rng.random() if share or identical else 1.0
        pool = unpaired[k]
        if pool and roll < identical:
            yield pool[-1] | {"appointment_id": key}
            continue
        if pool and roll < identical + share / 2:
            # The twin takes the place of a row of its own: 2 x share/2 rows are in pairs.
            yield _twin(pool.pop(twin_rng.randrange(len(pool))), key, t, twin_rng)
            continue
        status = rng.choices(["pending", "approved", "cancelled"], weights=[50, 44, 6])[0]
        treatments = rng.sample(t.treatments, rng.choice([1, 1, 1, 2, 2, 3]))
        row = {
            "appointment_id": key,
            "clinic": str(t.id),
            "customer_id": str(rng.choice(t.customers)),
            "doctor_id": str(rng.choice(t.doctors)),
            "start": (FIRST_START + n * STEP).strftime("%Y-%m-%dT%H:%M:%S"),
            "status": status,
            "treatment_ids": "|".join(map(str, treatments)),
            "room_id": str(rng.choice(t.rooms)) if rng.random() < 0.8 else "",
            "assistant_id": str(rng.choice(t.assistants)) if rng.random() < 0.4 else "",
            "notes": rng.choice(NOTES),
            "cancellation_reason": CANCEL_REASON if status == "cancelled" else "",
        }
        if share or identical:
            pool.append(row)
            del pool[:-50]  # pair with a recent row, as a re-booking usually is
        yield row


def _twin(base: dict[str, str], key: str, t: TenantIds, rng: random.Random) -> dict[str, str]:
    """A row with base's customer, doctor, instant and treatments, differing in status or room."""
    twin = base | {"appointment_id": key}
    if rng.random() < 0.5:
        if base["status"] == "cancelled":
            twin |= {"status": rng.choice(["approved", "pending"]), "cancellation_reason": ""}
        else:
            twin |= {"status": "cancelled", "cancellation_reason": CANCEL_REASON}
    else:
        rooms = [str(r) for r in t.rooms if str(r) != base["room_id"]]
        twin["room_id"] = rng.choice(rooms)
    return twin


def payload_of(row: dict[str, str], timezone: str = TIMEZONE) -> dict[str, Any]:
    """The POST body a generated row must become under demo.toml's mapping, nulls left out.

    Written from the row's meaning, not with the worker's mapper, so a drill
    that compares with it also checks the mapping.
    """
    start = datetime.fromisoformat(row["start"]).replace(tzinfo=ZoneInfo(timezone))
    body: dict[str, Any] = {
        "customer_id": int(row["customer_id"]),
        "user_id": int(row["doctor_id"]),
        "scheduled_at": start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "status": row["status"] or "pending",
        "treatments": [int(x) for x in row["treatment_ids"].split("|")],
        "assistant_id": int(row["assistant_id"]) if row["assistant_id"] else None,
        "description": row["notes"] or None,
        "cancellation_reason": row["cancellation_reason"] or None,
        "room_id": int(row["room_id"]) if row["room_id"] else None,
    }
    return {k: v for k, v in body.items() if v is not None}


def write_csv(
    path: Path,
    count: int,
    tenants: Sequence[TenantIds],
    seed: int = 20261122,
    *,
    share: float = 0.0,
    identical: float = 0.0,
) -> Path:
    """Write `count` rows to `path` (UTF-8, header first); `share`, `identical` as in `rows`."""
    write_rows(path, rows(count, tenants, seed, share=share, identical=identical))
    return path


def write_rows(path: Path, data: Iterable[dict[str, str]]) -> Path:
    """Write rows (of `rows`) to `path` as CSV (UTF-8, header first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(data)
    return path


_NUMBER_COLUMNS = frozenset({"clinic", "customer_id", "doctor_id", "room_id", "assistant_id"})


def excel_cell(column: str, text: str) -> Any:
    """A CSV cell as an Excel export types it: numbers as floats (1016.0), the start as a
    date-time, empty as no cell, text as text."""
    if text == "":
        return None
    if column in _NUMBER_COLUMNS or (column == "treatment_ids" and text.isdigit()):
        return float(text)
    if column == "start":
        return datetime.fromisoformat(text)
    return text


def write_xlsx(
    path: Path, columns: Sequence[str], data: Iterable[Sequence[str]], sheet: str = "Sheet1"
) -> Path:
    """Write CSV-like rows (text cells) to `path` as one typed sheet (`excel_cell`), streaming."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    path.parent.mkdir(parents=True, exist_ok=True)
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(sheet)
    ws.append(list(columns))
    for row in data:
        cells: list[Any] = []
        for column, text in zip(columns, row, strict=True):
            value = excel_cell(column, text)
            if isinstance(value, str):
                value = WriteOnlyCell(ws, value)
                value.data_type = "s"  # "=HYPERLINK(...)" notes stay text, not formulas
            elif isinstance(value, datetime):
                value = WriteOnlyCell(ws, value)
                value.number_format = "dd.mm.yyyy hh:mm"
            cells.append(value)
        ws.append(cells)
    wb.save(path)
    return path


def write_config(
    path: Path,
    tenants: Sequence[int],
    *,
    rate_limit: str = "100000/second",
    concurrency: int = 8,
    timeout: float | None = 30.0,
    max_backoff: float = 60.0,
    extra_api: dict[str, float] | None = None,
) -> Path:
    """A run config: demo.toml's mapping with these API settings and tenants.

    `timeout` None leaves the worker's default; `extra_api` adds ``[api]`` keys.
    """
    mapping = DEMO_CONFIG.read_text(encoding="utf-8").split("[mapping]", 1)[1]
    lines = [
        "[api]",
        'base_url = "http://127.0.0.1:1/api"',
        'token = "env:FLEXTELL_TOKEN"',
        f'rate_limit = "{rate_limit}"',
        f"concurrency = {concurrency}",
        *([] if timeout is None else [f"timeout = {timeout}"]),
        f"max_backoff = {max_backoff}",
        f'timezone = "{TIMEZONE}"',
        *(f"{key} = {value}" for key, value in (extra_api or {}).items()),
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
    parser.add_argument(
        "--share", type=float, default=0.0, help="fraction of rows sharing identity in pairs"
    )
    parser.add_argument(
        "--identical", type=float, default=0.0, help="fraction of rows repeating another exactly"
    )
    args = parser.parse_args(argv)
    seed_path = write_bench_seed(OUT / "bench-seed.json", max(args.tenants, 2))
    ids = tenant_ids(load_seed(seed_path))[: args.tenants]
    write_csv(args.out, args.rows, ids, args.seed, share=args.share, identical=args.identical)
    print(f"{args.out}: {args.rows} rows over tenants {[t.id for t in ids]}; seed {seed_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
