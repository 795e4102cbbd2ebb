"""The seed samples/api-lookups.csv is checked against: the sandbox's default seed plus
two customers of tenant 1 who share a phone (a mother and her son), so a row that names
that phone is ambiguous. ``python -m samples.api_lookups OUT.json`` writes it; then
``flextell-worker sandbox --seed-data OUT.json``."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

SHARED_PHONE = "+905554445566"
FAMILY = [
    {"id": 1031, "first_name": "Deniz", "last_name": "Kaya", "phone_number": SHARED_PHONE},
    {"id": 1032, "first_name": "Deniz Can", "last_name": "Kaya", "phone_number": SHARED_PHONE},
]


def seed() -> dict[str, Any]:
    text = resources.files("worker.sandbox").joinpath("default_seed.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    tenant = next(t for t in data["tenants"] if t["id"] == 1)
    tenant["customers"].extend(FAMILY)
    return data


def write_seed(path: Path) -> Path:
    path.write_text(json.dumps(seed(), ensure_ascii=False, indent=1), encoding="utf-8")
    return path


if __name__ == "__main__":
    write_seed(Path(sys.argv[1]))
