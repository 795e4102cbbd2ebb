"""Names that match (issue 21): titles, case, accents and Turkish I are normalised the same
way for the cell and for the names it is looked up in (a table or the API's list); a name
found nowhere is answered with the nearest names and their scores."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox_process import Sandbox, start_sandbox, stop
from tests.support.sync import run_cli

HEADER = "id;customer;doctor;start;treatment\n"
ROWS = [
    "A1;1001;Dr. Dr. Esra Aslan;01.12.2026 10:00;Botox",
    "A2;1001;Dr. Tugba Polat;01.12.2026 11:00;botox",
    "A3;1001;DR. MEHMET ÇELİK;01.12.2026 12:00;Botox",
    "A4;1001;Uzm. Dr.  mehmet   celik;01.12.2026 13:00;Botox",
    "A5;1001;Dr. Esra Aslann;01.12.2026 14:00;Botox",
]
CFG = """
[api]
timezone = "Europe/Istanbul"
timeout = 5
[tenants.1]
[source]
delimiter = ";"
[mapping]
tenant = { value = 1 }
source_key = "id"
customer_id = "customer"
scheduled_at = { column = "start", formats = ["%d.%m.%Y %H:%M"] }
status = { value = "pending" }
"""


def write(tmp_path: Path, mapping: str, lookups: str = "") -> tuple[Path, Path]:
    export = tmp_path / "export.csv"
    export.write_text(HEADER + "\n".join(ROWS) + "\n", encoding="utf-8")
    cfg = tmp_path / "clinic.toml"
    cfg.write_text(CFG + mapping + lookups, encoding="utf-8")
    return export, cfg


def validate(export: Path, cfg: Path, *extra: str) -> tuple[int, dict[int, Any], list[Any]]:
    payloads, report = export.parent / "payloads.jsonl", export.parent / "report.json"
    result = run_cli(
        "validate", str(export), "-c", str(cfg), "--payloads", str(payloads),
        "--report", str(report), "--no-progress", *extra,
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    bodies = {}
    for line in payloads.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        bodies[item["line"]] = item["body"]
    errors = json.loads(report.read_text(encoding="utf-8"))["errors"]
    return result.exit_code, bodies, errors


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    proc, sandbox = start_sandbox(tmp_path)
    try:
        yield sandbox
    finally:
        stop(proc)


def test_the_issues_doctors_match_the_api_with_the_default_normalisation(
    tmp_path: Path, sb: Sandbox
) -> None:
    # The API has "Dr. Esra Aslan" (101), "Tugba Polat" (151), "Dr. Mehmet Celik" (104).
    export, cfg = write(
        tmp_path,
        'user_id = { column = "doctor", lookup = "api" }\n'
        'treatments = { column = "treatment", lookup = "api" }\n',
    )
    code, bodies, errors = validate(export, cfg, "--online", "--base-url", sb.base_url)
    assert code == 1
    assert {line: b["user_id"] for line, b in bodies.items()} == {2: 101, 3: 151, 4: 104, 5: 104}
    assert all(b["treatments"] == [201] for b in bodies.values())
    [error] = errors
    assert error["line"] == 6 and error["field"] == "user_id"
    assert "no user with this name in tenant 1" in error["message"]
    assert re.search(r"nearest: 'Dr. Esra Aslan' \(9\d% alike\)", error["message"])


def test_without_normalisation_the_titled_names_are_not_found(tmp_path: Path, sb: Sandbox) -> None:
    export, cfg = write(
        tmp_path,
        'user_id = { column = "doctor", lookup = "api", normalize = false }\n'
        "treatments = { value = 201 }\n",
    )
    _code, bodies, errors = validate(export, cfg, "--online", "--base-url", sb.base_url)
    assert set(bodies) == set()  # "Dr. Dr. ...", "ÇELİK" vs "Celik": none meets exactly
    assert {e["line"] for e in errors} == {2, 3, 4, 5, 6}


def doctors(tmp_path: Path, rows: str) -> str:
    table = tmp_path / "doctors.csv"
    table.write_text("name,flextell_id\n" + rows, encoding="utf-8")
    return f'\n[lookups.doctors]\nfile = "{table.name}"\nkey = "name"\nvalue = "flextell_id"\n'


def test_a_lookup_table_matches_the_same_way_and_suggests_from_its_names(
    tmp_path: Path,
) -> None:
    export, cfg = write(
        tmp_path,
        'user_id = { column = "doctor", lookup = "doctors" }\ntreatments = { value = 201 }\n',
        doctors(tmp_path, "Dr. Esra Aslan,101\nTugba Polat,151\nDr. Mehmet Celik,104\n"),
    )
    code, bodies, errors = validate(export, cfg)
    assert code == 1
    assert {line: b["user_id"] for line, b in bodies.items()} == {2: 101, 3: 151, 4: 104, 5: 104}
    [error] = errors
    assert "not found in lookup table 'doctors'" in error["message"]
    assert "nearest: 'Dr. Esra Aslan' (9" in error["message"]


def test_names_that_meet_once_normalised_are_an_error_not_a_pick(tmp_path: Path) -> None:
    export, cfg = write(
        tmp_path,
        'user_id = { column = "doctor", lookup = "doctors" }\ntreatments = { value = 201 }\n',
        doctors(tmp_path, "Dr. Esra Aslan,101\nEsra Aslan,109\nTugba Polat,151\n"),
    )
    _code, bodies, errors = validate(export, cfg)
    assert bodies[3]["user_id"] == 151
    line2 = next(e for e in errors if e["line"] == 2)
    assert "matches several entries of lookup table 'doctors'" in line2["message"]


def test_own_titles_and_replacements(tmp_path: Path) -> None:
    export, cfg = write(
        tmp_path,
        "treatments = { value = 201 }\n"
        '[mapping.user_id]\ncolumn = "doctor"\nlookup = "doctors"\n'
        'normalize = { titles = ["Dr", "Uzm"], replace = [["aslann$", "aslan"]] }\n',
        doctors(tmp_path, "Esra Aslan,101\nTugba Polat,151\nMehmet Celik,104\n"),
    )
    code, bodies, _errors = validate(export, cfg)
    assert code == 0
    assert bodies[6]["user_id"] == 101


def test_patient_names_are_never_suggested(tmp_path: Path) -> None:
    table = tmp_path / "patients.csv"
    table.write_text("name,flextell_id\nZeynep Kaya,1001\n", encoding="utf-8")
    export, cfg = write(
        tmp_path,
        "user_id = { value = 101 }\ntreatments = { value = 201 }\n",
        f'\n[lookups.patients]\nfile = "{table.name}"\nkey = "name"\nvalue = "flextell_id"\n',
    )
    cfg.write_text(
        cfg.read_text(encoding="utf-8").replace(
            'customer_id = "customer"', 'customer_id = { column = "doctor", lookup = "patients" }'
        ),
        encoding="utf-8",
    )
    _code, _bodies, errors = validate(export, cfg)
    assert errors and all("nearest" not in e["message"] for e in errors)


def test_a_bad_normalize_option_names_its_key(tmp_path: Path) -> None:
    export, cfg = write(
        tmp_path,
        'treatments = { value = 201 }\n[mapping.user_id]\ncolumn = "doctor"\nlookup = "api"\n'
        'normalize = { titels = ["Dr"] }\n',
    )
    result = run_cli("validate", str(export), "-c", str(cfg))
    assert result.exit_code == 2
    assert "mapping.user_id.normalize.titels: unknown option" in result.stderr
    assert "did you mean 'titles'?" in result.stderr


def test_patients_that_meet_once_normalised_are_counted_not_named(tmp_path: Path) -> None:
    export, cfg = write(
        tmp_path,
        "user_id = { value = 101 }\ntreatments = { value = 201 }\n"
        'customer_id = { column = "customer", lookup = "customers" }\n',
    )
    cfg.write_text(
        cfg.read_text(encoding="utf-8").replace('customer_id = "customer"\n', ""),
        encoding="utf-8",
    )
    export.write_text(HEADER + "A1;Ayşe Yilmaz;x;01.12.2026 10:00;x\n", encoding="utf-8")
    (tmp_path / "customers.csv").write_text(
        "name,flextell_id\nAyşe Yılmaz,1001\nAYSE YILMAZ,1017\n", encoding="utf-8"
    )
    with cfg.open("a", encoding="utf-8") as fh:
        fh.write(
            '\n[lookups.customers]\nfile = "customers.csv"\nkey = "name"\nvalue = "flextell_id"\n'
        )
    result = run_cli("validate", str(export), "-c", str(cfg), "--no-progress")
    assert result.exit_code == 1, result.output
    assert "matches several entries of lookup table 'customers' once normalised (2 entries)" in (
        result.output
    )
    assert "Yılmaz" not in result.output and "YILMAZ" not in result.output
