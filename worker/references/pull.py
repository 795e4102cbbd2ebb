"""``flextell-worker lookups pull``: each tenant's reference lists as CSV lookup tables.

``DIR/tenant-N/{customers,users,treatments,rooms}.csv``, owner-only (customers are
patient data), each with an ``id`` column and the columns a ``[lookups.X]`` table
keys by, for a person to check or edit.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from worker.config import Config
from worker.delivery import LaneBuilder, http_session
from worker.errors import AbortError, ConfigError
from worker.fileperms import open_private, private_dir
from worker.mapping.refkeys import KeyError_, phone_key
from worker.references.api import RefApi, RefCallError

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


async def pull(
    config: Config, out: Path, *, tenant: int | None = None, base_url: str | None = None
) -> dict[int, dict[str, int]]:
    """Write every tenant's lists under `out`; returns rows written per tenant and kind."""
    tenants = sorted(config.tenants) if tenant is None else [tenant]
    if not tenants:
        raise ConfigError(f"{config.path}: [tenants]: no tenant to pull (add [tenants.N])")
    if tenant is not None and not config.is_known_tenant(tenant):
        raise ConfigError(f"--tenant {tenant}: not a tenant of {config.path}")
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
            for kind, columns in COLUMNS.items():
                try:
                    items = await api.list_all(kind)
                except RefCallError as exc:
                    raise AbortError(f"tenant {tid}: {exc}") from None
                path = folder / f"{kind}.csv"
                with open_private(path, encoding="utf-8", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=columns)
                    writer.writeheader()
                    for obj in items:
                        writer.writerow(_row(kind, obj, region))
                counts[kind] = len(items)
    return written


def show_pulled(written: dict[int, dict[str, int]], out_dir: Path) -> None:
    """`lookups pull`'s lines: per tenant, what was written where."""
    for tid, counts in written.items():
        shown = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        print(f"tenant {tid}: {shown} -> {out_dir / f'tenant-{tid}'}")
