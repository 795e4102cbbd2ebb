"""The declarative mapping: config compilation errors and per-row behaviour."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import BASE, MAPPING, ROW
from tests.support.sync import run_cli
from worker.config import load_config
from worker.errors import ConfigError
from worker.mapping import InvalidRow, MappedRow, Mapper
from worker.source import RowProblem, SourceOptions, SourceRow, open_source


def make(tmp_path: Path, mapping: str = MAPPING, extra: str = "", **kw: Any) -> Mapper:
    path = tmp_path / "cfg.toml"
    path.write_text(BASE + textwrap.dedent(extra) + textwrap.dedent(mapping), encoding="utf-8")
    return Mapper.from_config(load_config(path), **kw)


def row(**changes: Any) -> SourceRow:
    fields = {**ROW, **changes}
    return SourceRow("in.csv", 7, {k: v for k, v in fields.items() if v is not ...})


def ok(result: MappedRow | InvalidRow) -> MappedRow:
    assert isinstance(result, MappedRow), getattr(result, "errors", None)
    return result


def bad(result: MappedRow | InvalidRow) -> InvalidRow:
    assert isinstance(result, InvalidRow), result
    return result


def test_maps_a_row_to_the_contract(tmp_path: Path) -> None:
    out = ok(make(tmp_path).map(row()))
    assert out.tenant == 1 and out.source_key == "A1"
    # Canonical JSON: the contract's field order, nulls left out, no whitespace, UTC instant.
    assert out.payload_json == (
        b'{"customer_id":1001,"user_id":101,"scheduled_at":"2026-12-01T07:30:00Z",'
        b'"status":"approved","treatments":[201,203],"description":"first visit"}'
    )
    assert out.payload_hash == out.payload.payload_hash()
    assert out.payload.room_id is None  # empty optional cell -> None


def test_default_used_for_empty_cell(tmp_path: Path) -> None:
    assert ok(make(tmp_path).map(row(status="  "))).payload.status == "pending"


def test_required_empty_is_a_row_error_naming_the_column(tmp_path: Path) -> None:
    errors = bad(make(tmp_path).map(row(doctor=""))).errors
    assert [(e.field, e.column) for e in errors] == [("user_id", "doctor")]
    assert "required" in errors[0].message


def test_a_json_object_without_the_key_says_so_and_names_a_key_that_differs_in_case(
    tmp_path: Path,
) -> None:
    """A JSONL line has no `doctor` key: "is empty" would send a person to the value."""
    mapper = make(tmp_path)
    [cased] = bad(mapper.map(row(doctor=..., Doctor="101"))).errors
    assert (cased.field, cased.column) == ("user_id", "doctor")
    assert cased.message == (
        "required, but this object has no key 'doctor'; it has 'Doctor' (keys must match exactly)"
    )
    [absent] = bad(mapper.map(row(doctor=...))).errors
    assert absent.message == "required, but this object has no key 'doctor'"
    [empty] = bad(mapper.map(row(doctor=""))).errors  # a CSV cell: the key is there
    assert empty.message == "required, but column 'doctor' is empty"
    # A dotted path is followed part by part: the part that differs is the one named.
    nested = make(tmp_path, MAPPING.replace('user_id = "doctor"', 'user_id = "doctor.id"'))
    [cased] = bad(nested.map(row(doctor={"ID": 101}))).errors
    assert cased.message == (
        "required, but this object has no key 'doctor.id'; it has 'doctor.ID' "
        "(keys must match exactly)"
    )
    [outer] = bad(nested.map(row(doctor=..., Doctor={"id": 101}))).errors
    assert outer.message.endswith("no key 'doctor'; it has 'Doctor' (keys must match exactly)")
    # A value where an object was expected: it said "column 'doctor.id' is empty".
    [scalar] = bad(nested.map(row(doctor=101))).errors
    assert scalar.message == "required, but 'doctor' is a number, not an object with key 'id'"
    [listed] = bad(nested.map(row(doctor=[{"id": 101}]))).errors
    assert listed.message == "required, but 'doctor' is a list, not an object with key 'id'"


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("123.0", "decimal"),
        ("12a", "whole number"),
        ("", "required"),
        # An export's digit grouping: it said "got a decimal" of 1.016.
        ("1.016", "1016 written with a thousands separator ('.')? Export ids without"),
        ("1\u00a0008", "1008 written with a thousands separator ('\\xa0')?"),
        ("12.345.678", "12345678 written with a thousands separator ('.')?"),
    ],
)
def test_integers_are_strict(tmp_path: Path, value: str, needle: str) -> None:
    err = bad(make(tmp_path).map(row(customer=value))).errors[0]
    assert err.field == "customer_id" and needle in err.message


def test_integer_whitespace_trimmed_and_json_float_refused(tmp_path: Path) -> None:
    mapper = make(tmp_path)
    assert ok(mapper.map(row(customer=" 1002 "))).payload.customer_id == 1002
    assert "decimal" in bad(mapper.map(row(customer=1002.0))).errors[0].message


def test_value_map_normalises_turkish_case_and_spaces(tmp_path: Path) -> None:
    mapping = MAPPING.replace(
        'status = { column = "status", default = "pending" }',
        'status = { column = "status", map = { "Onaylandı" = "approved", "İptal" = "cancelled",'
        ' "no-show" = "no_show" } }',
    )
    mapper = make(tmp_path, mapping)
    assert ok(mapper.map(row(status="  ONAYLANDI "))).payload.status == "approved"
    assert ok(mapper.map(row(status="iptal"))).payload.status == "cancelled"
    assert ok(mapper.map(row(status="IPTAL"))).payload.status == "cancelled"
    assert ok(mapper.map(row(status="No-Show"))).payload.status == "no_show"
    assert ok(mapper.map(row(status="Completed"))).payload.status == "completed"
    err = bad(mapper.map(row(status="Belki"))).errors[0]
    assert err.field == "status" and err.value == "Belki" and "pending" in err.message
    # Said once, not nested (a walkthrough: '... add it there (as a value of its own:
    # unknown status (expected ...; translate other words with mapping.status.map))').
    # The cell is not quoted (a free-text cell may hold a name); err.value carries it.
    # The keys the map has, said as such: "is not in ... ('Confirmed')" read as if the
    # cell held 'Confirmed'.
    assert err.message.startswith("the value is none of mapping.status.map's keys ('Onaylandı'")
    assert "Belki" not in err.message
    assert err.message.count("status.map") == 1 and "))" not in err.message
    # An empty map (init drafts one for a status column of unknown words): no "()".
    empty = make(tmp_path, MAPPING.replace(
        'status = { column = "status", default = "pending" }',
        'status = { column = "status", map = {} }',
    ))  # fmt: skip
    err = bad(empty.map(row(status="Belki"))).errors[0]
    assert "()" not in err.message, err.message


def test_treatments_from_several_columns_skip_empty(tmp_path: Path) -> None:
    mapping = MAPPING.replace(
        'treatments = { column = "treatments", split = "|" }',
        'treatments = { columns = ["t1", "t2", "t3"] }',
    )
    mapper = make(tmp_path, mapping)
    out = ok(mapper.map(row(treatments=..., t1="201", t2=" ", t3="205")))
    assert out.payload.treatments == [201, 205]
    err = bad(mapper.map(row(treatments=..., t1="", t2="", t3=""))).errors[0]
    assert err.field == "treatments" and "t1, t2, t3" in err.message
    err = bad(mapper.map(row(treatments=..., t1="201", t2="x", t3=""))).errors[0]
    assert (err.field, err.column, err.value) == ("treatments.1", "t2", "x")


def test_treatments_split_and_json_list(tmp_path: Path) -> None:
    mapper = make(tmp_path)
    assert ok(mapper.map(row(treatments=" 201 | | 202"))).payload.treatments == [201, 202]
    assert ok(mapper.map(row(treatments=[204, "205"]))).payload.treatments == [204, 205]
    errors = bad(mapper.map(row(treatments="201|x|2.5"))).errors
    assert [e.field for e in errors] == ["treatments.1", "treatments.2"]
    assert "at least one" in bad(mapper.map(row(treatments=""))).errors[0].message


LOOKUPS = """
[lookups.customers]
file = "lookups/customers.csv"
key = ["legacy_id", "name"]
value = "flextell_id"
"""


def write_lookup(tmp_path: Path) -> None:
    (tmp_path / "lookups").mkdir()
    (tmp_path / "lookups" / "customers.csv").write_text(
        "legacy_id,name,flextell_id\nH-1,Ayşe Yılmaz,1001\nH-2,İbrahim Işık,1002\n",
        encoding="utf-8",
    )


def test_lookup_by_any_key_normalised(tmp_path: Path) -> None:
    write_lookup(tmp_path)
    mapping = MAPPING.replace(
        'customer_id = "customer"', 'customer_id = { column = "customer", lookup = "customers" }'
    )
    mapper = make(tmp_path, mapping, LOOKUPS)
    assert ok(mapper.map(row(customer="h-1"))).payload.customer_id == 1001
    assert ok(mapper.map(row(customer="  AYŞE   YILMAZ "))).payload.customer_id == 1001
    assert ok(mapper.map(row(customer="IBRAHIM IŞIK"))).payload.customer_id == 1002
    err = bad(mapper.map(row(customer="Nobody"))).errors[0]
    assert (
        err.value == "Nobody"
        and "customers" in err.message
        and "lookups/customers.csv" in (err.message)
    )


@pytest.mark.parametrize(
    ("mapping", "extra", "key"),
    [
        ('[mapping]\nbogus = "x"\n', "", "mapping.bogus"),
        (
            '[mapping]\ncustomer_id = { column = "c", split = "|" }\n',
            "",
            "mapping.customer_id.split",
        ),
        (
            '[mapping]\nscheduled_at = { column = "s", formats = ["iso", "%Q"] }\n',
            "",
            "mapping.scheduled_at.formats[1]",
        ),
        (
            '[mapping]\nscheduled_at = { column = "s", timezone = "Mars/Base" }\n',
            "",
            "mapping.scheduled_at.timezone",
        ),
        ('[mapping]\ncustomer_id = { column = "c", lookup = "nope" }\n', "", "mapping.customer_id"),
        ('[mapping]\ncustomer_id = "c"\n', LOOKUPS, "lookups.customers.file"),
        ('[mapping]\ncustomer_id = { value = "1.5" }\n', "", "mapping.customer_id.value"),
        ('[mapping]\ncustomer_id = "c"\n', "", "mapping.user_id"),
        ('[mapping]\nstatus = { column = "s", map = { a = "maybe" } }\n', "", "mapping.status.map"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, mapping: str, extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(tmp_path, mapping, extra)
    assert f"cfg.toml: {key}" in str(info.value)


def test_bad_format_string_message(tmp_path: Path) -> None:
    mapping = MAPPING.replace(
        'scheduled_at = { column = "start" }',
        'scheduled_at = { column = "start", formats = ["%d.%m.%Y %H:%M", "%Q"] }',
    )
    with pytest.raises(ConfigError, match=r"formats\[1\]: bad format string '%Q'"):
        make(tmp_path, mapping)


def test_lookup_key_column_missing(tmp_path: Path) -> None:
    write_lookup(tmp_path)
    extra = LOOKUPS.replace('key = ["legacy_id", "name"]', 'key = "code"')
    with pytest.raises(ConfigError, match=r"lookups.customers.key: column 'code' is not in"):
        make(tmp_path, MAPPING, extra)


def test_a_lookup_files_first_line_is_never_echoed_in_its_error(tmp_path: Path) -> None:
    secret = "ghp_" + "Q7x9" * 10  # a token file named by mistake: one long cell
    (tmp_path / "lookups").mkdir()
    files = {
        "secret-token": secret + "\n",
        # A customers file without its header: the first line is a patient's row.
        "customers.csv": "H-1,Ayşe Yılmaz,1001\nH-2,İbrahim Işık,1002\n",
        "typo.csv": "legacy_id,nmae,flextell_id,a column name longer than forty characters\n",
    }
    for name, text in files.items():
        (tmp_path / "lookups" / name).write_text(text, encoding="utf-8")
    mapping = MAPPING.replace(
        'customer_id = "customer"', 'customer_id = { column = "customer", lookup = "customers" }'
    )
    export = tmp_path / "in.csv"
    export.write_text(",".join(ROW) + "\n" + ",".join(ROW.values()) + "\n", encoding="utf-8")
    said = {}
    for name in files:
        extra = LOOKUPS.replace("lookups/customers.csv", f"lookups/{name}")
        (tmp_path / "cfg.toml").write_text(BASE + extra + mapping, encoding="utf-8")
        done = run_cli("validate", str(export), "-c", str(tmp_path / "cfg.toml"))
        assert done.exit_code == 2 and "Traceback" not in done.output, done.output
        said[name] = done.output
    assert "has 1 cell(s), none of them a configured column" in said["secret-token"]
    assert secret not in said["secret-token"] and secret[:20] not in said["secret-token"]
    assert "has 3 cell(s)" in said["customers.csv"] and "Yılmaz" not in said["customers.csv"]
    typo = said["typo.csv"]
    assert "column 'name' is not in lookups/typo.csv" in typo and "has 4 cell(s)" in typo
    assert "it has 'legacy_id', 'flextell_id'); did you mean 'nmae'?" in typo
    assert "forty" not in typo


def test_day_first_formats_and_offsets(tmp_path: Path) -> None:
    mapping = MAPPING.replace(
        'scheduled_at = { column = "start" }',
        'scheduled_at = { column = "start", formats = ["%d.%m.%Y %H:%M", "iso"] }',
    )
    mapper = make(tmp_path, mapping)

    def as_json(r: SourceRow) -> object:
        return ok(mapper.map(r)).payload.to_json_dict()["scheduled_at"]

    assert as_json(row(start="21.12.2026 14:30")) == "2026-12-21T11:30:00Z"
    assert as_json(row(start="2026-12-21T14:30:00+01:00")) == "2026-12-21T13:30:00Z"
    assert as_json(row(start="21.12.2026 14:30", clinic="2")) == "2026-12-21T13:30:00Z"  # Berlin
    err = bad(mapper.map(row(start="31.02.2027 10:00"))).errors[0]
    assert err.field == "scheduled_at" and "out of range" in err.message
    assert "expected" in bad(mapper.map(row(start="tomorrow"))).errors[0].message


def test_date_and_time_columns_and_field_timezone(tmp_path: Path) -> None:
    mapping = MAPPING.replace(
        'scheduled_at = { column = "start" }',
        'scheduled_at = { date_column = "d", time_column = "t", formats = ["%d/%m/%Y %H:%M"],'
        ' timezone = "America/New_York" }',
    )
    mapper = make(tmp_path, mapping)
    out = ok(mapper.map(row(start=..., d="05/01/2027", t="09:15")))
    assert out.payload.to_json_dict()["scheduled_at"] == "2027-01-05T14:15:00Z"
    err = bad(mapper.map(row(start=..., d="05/01/2027", t=""))).errors[0]
    assert "'t' is empty" in err.message and err.column == "d + t"


@pytest.mark.parametrize(
    ("ambiguous", "wall", "expected"),
    [
        ("", "2026-10-25T02:30:00", None),  # Berlin overlap: error by default
        ("", "2026-10-25 02:30", None),  # ... its value as written, not as read
        ('ambiguous = "earlier"', "2026-10-25T02:30:00", "2026-10-25T00:30:00Z"),
        ('ambiguous = "later"', "2026-10-25T02:30:00", "2026-10-25T01:30:00Z"),
        ('ambiguous = "later"', "2027-03-28T02:30:00", None),  # gap: never exists
        ("", "2027-03-28T03:30:00", "2027-03-28T01:30:00Z"),
    ],
)
def test_dst_gap_and_overlap(
    tmp_path: Path, ambiguous: str, wall: str, expected: str | None
) -> None:
    sep = ", " if ambiguous else ""
    mapping = MAPPING.replace(
        'scheduled_at = { column = "start" }',
        f'scheduled_at = {{ column = "start", timezone = "Europe/Berlin"{sep}{ambiguous} }}',
    )
    result = make(tmp_path, mapping).map(row(start=wall))
    if expected is None:
        err = bad(result).errors[0]
        assert err.field == "scheduled_at"
        assert ("twice" in err.message) if "10-25" in wall else ("does not exist" in err.message)
        assert err.value == wall  # as the export wrote it, not as it was read
        # What to write instead, as a person can (not only a mapping setting for all rows).
        if "10-25" in wall:
            assert (
                "write it with its offset, 2026-10-25T02:30:00+02:00 (the first) or "
                in (err.message)
                and "2026-10-25T02:30:00+01:00 (the second)" in err.message
            )
        else:
            assert "its clocks skip an hour there" in err.message
            assert "e.g. 03:30 (2027-03-28T03:30:00+02:00, the same moment" in err.message
    else:
        assert ok(result).payload.to_json_dict()["scheduled_at"] == expected


def test_tenant_value_map_unknown_and_override(tmp_path: Path) -> None:
    mapping = MAPPING.replace(
        'tenant = { column = "clinic" }',
        'tenant = { column = "clinic", map = { "Kadıköy" = 1, "Beşiktaş" = 2 } }',
    )
    mapper = make(tmp_path, mapping)
    assert ok(mapper.map(row(clinic="KADIKÖY"))).tenant == 1
    invalid = bad(mapper.map(row(clinic="9")))
    assert invalid.tenant is None and invalid.source_key == "A1"
    assert invalid.errors[0].field == "tenant" and "not in [tenants]" in invalid.errors[0].message
    assert ok(make(tmp_path, mapping, tenant_override=2).map(row(clinic="9"))).tenant == 2
    with pytest.raises(ConfigError, match="--tenant 7"):
        make(tmp_path, mapping, tenant_override=7)


def test_constant_tenant_and_no_key_falls_back_to_hash(tmp_path: Path) -> None:
    mapping = MAPPING.replace('tenant = { column = "clinic" }', "tenant = { value = 2 }").replace(
        'source_key = { column = "id" }\n', ""
    )
    mapper = make(tmp_path, mapping)
    out = ok(mapper.map(row()))
    assert out.tenant == 2 and out.source_key == "h:" + out.payload_hash[:32]
    problem = bad(mapper.map(RowProblem("in.csv", 3, "row has 2 cells, header has 9")))
    assert problem.tenant == 2 and problem.source_key is None
    assert problem.errors[0].field == "source"


def test_source_key_prefix_and_invalid_rows_keep_key(tmp_path: Path) -> None:
    mapping = MAPPING.replace(
        'source_key = { column = "id" }', 'source_key = { column = "id", prefix = "legacy:" }'
    )
    mapper = make(tmp_path, mapping)
    assert ok(mapper.map(row())).source_key == "legacy:A1"
    invalid = bad(mapper.map(row(customer="x")))
    assert invalid.source_key == "legacy:A1" and invalid.tenant == 1
    assert bad(mapper.map(row(id=""))).errors[0].field == "source_key"


def test_json_dotted_paths_and_type_errors(tmp_path: Path) -> None:
    mapping = MAPPING.replace('customer_id = "customer"', 'customer_id = "patient.id"')
    mapper = make(tmp_path, mapping)
    assert ok(mapper.map(row(customer=..., patient={"id": 1003}))).payload.customer_id == 1003
    err = bad(mapper.map(row(customer=..., patient={"id": [1]}))).errors[0]
    assert err.column == "patient.id" and "single value" in err.message
    assert bad(mapper.map(row(customer=..., patient=None))).errors[0].field == "customer_id"


def test_contract_errors_become_clear_field_errors(tmp_path: Path) -> None:
    err = bad(make(tmp_path).map(row(notes="x" * 1001))).errors[0]
    assert err.field == "description" and err.column == "notes"
    assert "1001 characters (at most 1000)" in err.message and len(err.value or "") == 200


def test_check_columns_names_the_key(tmp_path: Path) -> None:
    mapper = make(tmp_path)
    mapper.check_columns([*ROW], "in.csv")
    with pytest.raises(ConfigError, match=r"mapping\.room_id\.column: column 'room' is not in"):
        mapper.check_columns([c for c in ROW if c != "room"], "in.csv")


@pytest.mark.parametrize(
    ("sample", "config"),
    [
        ("appointments.csv", "demo.toml"),
        ("appointments.jsonl", "demo.toml"),
        ("messy-export.csv", "messy-export.toml"),
    ],
)
def test_payload_bytes_equal_the_contracts_canonical_json(sample: str, config: str) -> None:
    root = Path(__file__).resolve().parent.parent
    cfg = load_config(root / "config" / config)
    mapper = Mapper.from_config(cfg)
    opts = SourceOptions(format=cfg.source.format, encoding=cfg.source.encoding)
    mapped = 0
    with open_source(str(root / "samples" / sample), opts) as src:
        for item in src:
            result = mapper.map(item)
            if isinstance(result, MappedRow):
                mapped += 1
                assert result.payload_json == result.payload.canonical_json()
                assert result.payload_hash == result.payload.payload_hash()
    assert mapped >= 40


def test_an_excel_serial_exported_as_text_is_named_so(tmp_path: Path) -> None:
    # "46371,60417" in a date column (a CSV of a sheet whose dates were numbers) said
    # only that it was no date-time in the expected format.
    err = bad(make(tmp_path).map(row(start="46371,60417"))).errors[0]
    assert err.field == "scheduled_at"
    assert "it looks like an Excel date serial (2026-12-15 14:30)" in err.message
    assert "export it as dates" in err.message
