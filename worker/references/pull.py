"""``flextell-worker lookups pull``: each tenant's reference lists as CSV lookup tables.

``DIR/tenant-N/{customers,users,treatments,rooms}.csv``, owner-only (customers are
patient data), each with an ``id`` column and the columns a ``[lookups.X]`` table
keys by, for a person to check or edit.

The cells come from the API, so they are written as the failures files write theirs
(`worker.source.failures`): a cell a spreadsheet would run as a formula
(``=HYPERLINK(...)``, ``+cmd|...``) gets a leading quote, and the added
``worker_quoted`` column lists those cells' columns, so a ``[lookups.X]`` table reads
them back as the API has them (`worker.mapping.lookups`). Every row of
``customers.csv`` says in the added ``worker_patient_data`` column that the file holds
patient data.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from worker.config import Config
from worker.delivery import LaneBuilder, http_session
from worker.errors import AbortError, ConfigError
from worker.fileperms import open_private, private_dir
from worker.mapping.refkeys import KeyError_, phone_key
from worker.references.api import RefApi, RefCallError
from worker.source.failures import PATIENT_DATA_COLUMN, PATIENT_DATA_NOTE, neutralised
from worker.source.quoted import QUOTED_COLUMN

COLUMNS = {
    "customers": ("id", "first_name", "last_name", "phone", "email", "identity_number"),
    "users": ("id", "name", "email", "role"),
    "treatments": ("id", "name"),
    "rooms": ("id", "name", "status"),
}


def _row(kind: str, obj: dict[str, Any], region: str | None) -> dict[str, Any]:
    row = {c: obj.get(c) for c in COLUMNS[kind]}
    if kind == "customers":
        raw = obj.get("phone_number")
        phone = raw if isinstance(raw, str) else ""
        try:
            row["phone"] = phone_key(phone, region) if phone.strip() else ""
        except KeyError_:
            row["phone"] = phone  # as the API has it: a person can see it is no number
    return {k: "" if v is None else v for k, v in row.items()}


def _write(fh: IO[str], kind: str, rows: Iterable[dict[str, Any]]) -> None:
    """One list as CSV: formula-like cells quoted and listed, customers marked as patient
    data (see the module's doc)."""
    columns = COLUMNS[kind]
    marked = kind == "customers"
    writer = csv.writer(fh)
    writer.writerow([*columns, *([PATIENT_DATA_COLUMN] if marked else []), QUOTED_COLUMN])
    for row in rows:
        safe, quoted = neutralised(columns, [str(row[c]) for c in columns])
        writer.writerow([*safe, *([PATIENT_DATA_NOTE] if marked else []), quoted])


async def pull(
    config: Config, out: Path, *, tenant: int | None = None, base_url: str | None = None
) -> dict[int, dict[str, int]]:
    """Write every tenant's lists under `out`; returns rows written per tenant and kind."""
    tenants = sorted(config.tenants) if tenant is None else [tenant]
    if not tenants:
        raise ConfigError(f"{config.path}: [tenants]: no tenant to pull (add [tenants.N])")
    config.check_tenant_option(tenant)
    written: dict[int, dict[str, int]] = {}
    async with http_session(config, base_url=base_url) as session:
        lanes = LaneBuilder(config, session, base_url=base_url)
        for tid in tenants:
            api = RefApi(await lanes.lane(tid))
            region = config.phone_region_for(tid)
            folder = out / f"tenant-{tid}"
            try:
                private_dir(folder)
            except OSError as exc:
                raise ConfigError(f"--out {out}: cannot create {folder}: {exc.strerror}") from None
            counts = written[tid] = {}
            for kind in COLUMNS:
                try:
                    items = await api.list_all(kind)
                except RefCallError as exc:
                    raise AbortError(f"tenant {tid}: {exc}") from None
                path = folder / f"{kind}.csv"
                with open_private(path, encoding="utf-8", newline="") as fh:
                    _write(fh, kind, (_row(kind, obj, region) for obj in items))
                counts[kind] = len(items)
    return written


def show_pulled(written: dict[int, dict[str, int]], out_dir: Path) -> None:
    """`lookups pull`'s lines: per tenant, what was written where."""
    for tid, counts in written.items():
        shown = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        print(f"tenant {tid}: {shown} -> {out_dir / f'tenant-{tid}'}")
