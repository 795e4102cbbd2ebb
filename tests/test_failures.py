"""FailureWriter: original format, all columns, spreadsheet-safe cells."""

from __future__ import annotations

import codecs
import csv
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.support.configs import CFG
from worker.cli import cli
from worker.source import RowProblem, SourceRow
from worker.source.failures import FailureWriter, neutralise

# Every row says the file holds patient data (issue 24).
PATIENT = "yes: keep private, delete once fixed"


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=SUM(A1:A2)", "'=SUM(A1:A2)"),
        ("@cmd", "'@cmd"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3+cmd|x", "'-2+3+cmd|x"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("-5", "-5"),
        ("-12.5", "-12.5"),
        ("+90 532 111 22 33", "+90 532 111 22 33"),
        ("+90 (532) 111-22-33", "+90 (532) 111-22-33"),
        ("plain = text", "plain = text"),
        ("", ""),
    ],
)
def test_neutralise(cell: str, expected: str) -> None:
    assert neutralise(cell) == expected


def test_csv_keeps_columns_delimiter_encoding_and_replaces_old_error_columns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.csv"
    columns = ["Hasta", "Not", "error_field", "error_message"]  # a failures file fed back
    with FailureWriter(
        path, format="csv", columns=columns, delimiter=";", encoding="utf-8-sig",
        extra_columns=("error_field", "error_message"),
    ) as writer:  # fmt: skip
        writer.write(
            SourceRow("in.csv", 2, {"Hasta": "Şule", "Not": "=1+1", "error_field": "old"}),
            {"error_field": "customer_id", "error_message": "customer_id: bad"},
        )
        writer.write(
            RowProblem("in.csv", 3, "too few cells", raw="Ayşe"), {"error_field": "source"}
        )
        writer.write(RowProblem("in.csv", 4, "too many", raw="a;b;c;d;e"), {})
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    assert rows == [
        ["Hasta", "Not", "error_field", "error_message", "worker_patient_data", "worker_quoted"],
        ["Şule", "'=1+1", "customer_id", "customer_id: bad", PATIENT, '["Not"]'],
        ["Ayşe", "", "source", "", PATIENT, ""],
        ["a;b;c;d;e", "", "", "", PATIENT, ""],  # cannot fit the header: nothing lost
    ]


def test_jsonl_adds_keys_to_the_original_object(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    with FailureWriter(path, format="jsonl", columns=None, delimiter=None) as writer:
        writer.write(SourceRow("in.jsonl", 1, {"a": {"b": [1]}, "t": "=x"}), {"error_field": "a"})
        writer.write(RowProblem("in.jsonl", 2, "not JSON", raw="{oops"), {"error_field": "source"})
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [
        {
            "a": {"b": [1]},
            "t": "=x",
            "error_field": "a",
            "error_message": "",
            "worker_patient_data": PATIENT,
        },
        {
            "error_raw": "{oops",
            "error_field": "source",
            "error_message": "",
            "worker_patient_data": PATIENT,
        },
    ]


@pytest.mark.parametrize("bom", [True, False])
def test_a_csv_that_starts_with_a_bom_gets_its_failures_file_with_one(
    tmp_path: Path, bom: bool
) -> None:
    # Excel shows a UTF-8 CSV's letters ("İşlemler", "Onaylandı") only with the BOM the
    # export had; the failures file dropped it (a new-user walkthrough).
    src = tmp_path / "in.csv"
    body = (
        "id;customer;doctor;start;status;treatments;notes\n"
        "A1;10x1;101;2026-12-01T10:00:00;onaylandı;201;İşlem\n"
    )
    src.write_bytes((codecs.BOM_UTF8 if bom else b"") + body.encode("utf-8"))
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CFG, encoding="utf-8")
    failures = tmp_path / "failures.csv"
    result = CliRunner().invoke(
        cli, ["validate", str(src), "-c", str(cfg), "--failures", str(failures)]
    )
    assert result.exit_code == 1, result.output
    data = failures.read_bytes()
    assert data.startswith(codecs.BOM_UTF8) is bom
    assert "İşlem" in data.decode("utf-8-sig")


def test_a_cp1252_export_gets_its_failures_file_when_a_message_names_what_cp1252_lacks(
    tmp_path: Path,
) -> None:
    # The lookup table is UTF-8: its nearest name 'Dr. Ayşe Kaya' has a letter cp1252
    # has not. The error message in the failures file says '?' there; the row's own
    # cells (the export's, so cp1252's) are written as they were read.
    (tmp_path / "doctors.csv").write_text("name,flextell_id\nDr. Ayşe Kaya,101\n", "utf-8")
    (tmp_path / "run.toml").write_text(
        CFG.replace('user_id = "doctor"', 'user_id = { column = "doctor", lookup = "doctors" }')
        + '\n[source]\nencoding = "cp1252"\n'
        + '\n[lookups.doctors]\nfile = "doctors.csv"\nkey = "name"\nvalue = "flextell_id"\n',
        encoding="utf-8",
    )
    export = tmp_path / "de.csv"
    export.write_bytes(
        "id;customer;doctor;start;status;treatments;notes\n"
        "2;1002;Dr. Ayse Kayaa;2026-12-01T10:00:00;;201;Müller\n".encode("cp1252")
    )
    result, failures = _validate_to_fix(tmp_path, export)
    assert result.exit_code == 1, result.output
    assert "1 rows, 0 valid, 1 invalid" in result.stdout
    [row] = list(csv.DictReader(failures.open(encoding="cp1252", newline=""), delimiter=";"))
    assert row["doctor"] == "Dr. Ayse Kayaa" and row["notes"] == "Müller"
    assert "nearest: 'Dr. Ay?e Kaya'" in row["error_message"]


def test_an_unterminated_quote_keeps_only_its_own_line_in_the_failures_file(
    tmp_path: Path,
) -> None:
    # Line 3 opens a quote it never closes; line 4 is read again as its own (valid)
    # row. The row to fix held line 4 too, so a fixed file re-imported line 4's row.
    (tmp_path / "run.toml").write_text(CFG, encoding="utf-8")
    export = tmp_path / "in.csv"
    export.write_text(
        "id,customer,doctor,start,status,treatments,notes\n"
        "R4,1004,101,2026-12-02T18:00:00,,201,ok\n"
        'R5,1005,101,2026-12-02T18:30:00,,201,"unterminated\n'
        "R6,1006,101,2026-12-02T19:00:00,,201,ok\n",
        encoding="utf-8",
    )
    result, failures = _validate_to_fix(tmp_path, export)
    assert result.exit_code == 1, result.output
    assert "3 rows, 2 valid, 1 invalid" in result.stdout
    [row] = list(csv.DictReader(failures.open(encoding="utf-8", newline="")))
    assert (row["id"], row["customer"], row["notes"]) == ("R5", "1005", "unterminated")
    assert "R6" not in json.dumps(row)


def _validate_to_fix(tmp_path: Path, export: Path) -> tuple[Any, Path]:
    """`validate EXPORT -c run.toml --failures fix.csv`: the result and the failures file."""
    failures = tmp_path / "fix.csv"
    result = CliRunner().invoke(
        cli,
        ["validate", str(export), "-c", str(tmp_path / "run.toml"), "--failures", str(failures)],
    )
    return result, failures
