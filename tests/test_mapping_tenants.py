"""Per-tenant mapping keys, per-tenant lookups, lookups keyed by several columns,
and values built from several columns."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from worker.config import load_config
from worker.errors import ConfigError
from worker.mapping import InvalidRow, MappedRow, Mapper
from worker.source import SourceRow

CONFIG = """
[api]
timezone = "Europe/Berlin"

[tenants.1]
[tenants.2]

[lookups.rooms]
file = "rooms.csv"
key = ["branch", "name"]
match = "all"
value = "flextell_id"

[mapping]
tenant = { column = "branch", map = { "Kadıköy" = 1, "Beşiktaş" = 2 } }
source_key = "id"
customer_id = "customer"
user_id = "doctor"
scheduled_at = { column = "start", formats = ["%d.%m.%Y %H:%M"] }
treatments = { column = "treatments", split = "|" }
room_id = { columns = ["branch", "room"], lookup = "rooms" }
description = { columns = ["note", "branch"], join = " / " }

[mapping.status]
column = "status"
map = { "Onaylandı" = "approved" }

[tenants.2.mapping.scheduled_at]
timezone = "Europe/Athens"

[tenants.2.mapping.status.map]
"Tamam" = "approved"
"""

ROOMS = "branch,name,flextell_id\nKadıköy,Room 1 - Laser,301\nBeşiktaş,Room 1 - Laser,311\n"


def make(tmp_path: Path, config: str = CONFIG, rooms: str = ROOMS, **kw: Any) -> Mapper:
    (tmp_path / "rooms.csv").write_text(rooms, encoding="utf-8")
    path = tmp_path / "cfg.toml"
    path.write_text(textwrap.dedent(config), encoding="utf-8")
    return Mapper.from_config(load_config(path), **kw)


def row(**changes: str) -> SourceRow:
    fields = {
        "id": "R1",
        "branch": "Kadıköy",
        "customer": "1001",
        "doctor": "101",
        "start": "30.03.2025 02:30",
        "status": "Onaylandı",
        "treatments": "201",
        "room": "room 1 - LASER",
        "note": "first visit",
    }
    return SourceRow("in.csv", 2, fields | changes)


def ok(result: MappedRow | InvalidRow) -> MappedRow:
    assert isinstance(result, MappedRow), getattr(result, "errors", None)
    return result


def test_lookup_by_branch_and_name_and_per_tenant_zone_and_map(tmp_path: Path) -> None:
    mapper = make(tmp_path)
    # 02:30 on 2025-03-30 does not exist in Berlin, but does in Athens (tenant 2's zone).
    gap = mapper.map(row())
    assert isinstance(gap, InvalidRow)
    assert "does not exist in Europe/Berlin" in gap.errors[0].message
    one = ok(mapper.map(row(start="30.03.2025 03:30")))
    assert one.tenant == 1 and one.payload.room_id == 301
    assert one.payload.scheduled_at.isoformat() == "2025-03-30T01:30:00+00:00"
    assert one.payload.description == "first visit / Kadıköy"
    two = ok(mapper.map(row(branch="Beşiktaş", status="Tamam")))
    assert two.tenant == 2 and two.payload.room_id == 311
    assert two.payload.scheduled_at.isoformat() == "2025-03-30T00:30:00+00:00"
    assert two.payload.status == "approved"
    # Tenant 1 keeps the shared map only: "Tamam" is tenant 2's word.
    bad = mapper.map(row(start="30.03.2025 03:30", status="Tamam"))
    assert isinstance(bad, InvalidRow) and bad.errors[0].field == "status"
    missing = mapper.map(row(branch="Beşiktaş", room="Room 9"))
    assert isinstance(missing, InvalidRow)
    err = missing.errors[0]
    assert (err.field, err.value) == ("room_id", "Beşiktaş + Room 9")
    assert "lookup table 'rooms'" in err.message


def test_tenant_lookup_replaces_the_shared_one(tmp_path: Path) -> None:
    (tmp_path / "rooms2.csv").write_text("name,flextell_id\nroom 1 - laser,312\n", "utf-8")
    config = CONFIG + textwrap.dedent(
        """
        [tenants.2.lookups.rooms_by_name]
        file = "rooms2.csv"
        key = "name"
        value = "flextell_id"

        [tenants.2.mapping]
        room_id = { column = "room", lookup = "rooms_by_name" }
        """
    )
    mapper = make(tmp_path, config)
    assert ok(mapper.map(row(branch="Beşiktaş"))).payload.room_id == 312
    assert ok(mapper.map(row(start="30.03.2025 03:30"))).payload.room_id == 301
    only_two = make(tmp_path, config, tenant_override=2)
    assert ok(only_two.map(row(branch="Kadıköy"))).payload.room_id == 312


def test_same_name_two_ids_without_branch_says_how_to_key_by_both(tmp_path: Path) -> None:
    config = CONFIG.replace('key = ["branch", "name"]\nmatch = "all"', 'key = "name"')
    with pytest.raises(ConfigError) as info:
        make(tmp_path, config)
    text = str(info.value)
    assert "lookups.rooms:" in text and "map to both '301' and '311'" in text
    assert "have the same key (" in text and "Laser" not in text  # the key is not shown
    assert 'match = "all"' in text


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("[tenants.2.mapping.scheduled_at]",
          "[tenants.2.mapping.tenant]\nvalue = 1\n[tenants.2.mapping.scheduled_at]"),
         "tenants.2.mapping.tenant"),
        (('timezone = "Europe/Athens"', 'timezone = "Mars/Base"'),
         "tenants.2.mapping.scheduled_at.timezone"),
        (('columns = ["branch", "room"]', 'columns = ["room"]'), "mapping.room_id.columns"),
        (('match = "all"', 'match = "some"'), "lookups.rooms.match"),
        (('join = " / "', "join = 3"), "mapping.description.join"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(tmp_path, CONFIG.replace(*change))
    assert f"cfg.toml: {key}:" in str(info.value)


def test_a_lookup_keyed_by_several_columns_normalises_each_part(tmp_path: Path) -> None:
    """`normalize` (and its default) was never applied to a lookup keyed by several
    columns: 'Dr. Tuğba Koç', 'DR. TUGBA KOC' and 'Uzm. Dr. Tugba Koc' beside the
    table's 'Dr. Tugba Koc' were each "not found" (889 of 1,993 rows of a helper's
    export), and `normalize` set explicitly changed nothing, with no word."""
    config = CONFIG.replace(
        'room_id = { columns = ["branch", "room"], lookup = "rooms" }',
        'room_id = { columns = ["branch", "room"], lookup = "rooms", '
        'normalize = { titles = ["Dr.", "Uzm."], fold = true } }',
    )
    rooms = "branch,name,flextell_id\nKadıköy,Dr. Tugba Koc,301\nBeşiktaş,Dr. Tugba Koc,311\n"
    mapper = make(tmp_path, config, rooms)
    at = "10.04.2025 10:00"
    for cell in ("Dr. Tuğba Koç", "DR. TUGBA KOC", "Uzm. Dr. Tugba Koc", "Tugba Koc"):
        assert ok(mapper.map(row(room=cell, start=at))).payload.room_id == 301, cell
    other = row(branch="Beşiktaş", room="tugba koç", start=at, status="Tamam")
    assert ok(mapper.map(other)).payload.room_id == 311
