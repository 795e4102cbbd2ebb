"""Errors that point at the fix: a misread header names the delimiter or encoding to set;
a value missing from a value map names the value and the map."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from worker.cli import cli

CONFIG = """
[api]
timezone = "Europe/Istanbul"
[tenants.1]
[tenants.2]
[source]
{source}
[mapping]
tenant = {{ column = "Şube", map = {{ "Berlin" = 1, "Atina" = 2 }} }}
source_key = {{ column = "No" }}
customer_id = "Hasta"
user_id = {{ value = 7 }}
scheduled_at = {{ column = "Tarih", formats = ["%d.%m.%Y %H:%M"] }}
status = {{ value = "pending" }}
treatments = {{ value = [201] }}
"""
EXPORT = (
    "No;Şube;Hasta;Tarih\r\n1;Berlin;1016;01.12.2026 10:00\r\n2;İzmir;1017;01.12.2026 11:00\r\n"
)


def validate(tmp: Path, source: str, data: bytes) -> tuple[int, str, str]:
    (tmp / "run.toml").write_text(CONFIG.format(source=source), encoding="utf-8")
    (tmp / "export.csv").write_bytes(data)
    result = CliRunner().invoke(
        cli, ["validate", str(tmp / "export.csv"), "-c", str(tmp / "run.toml")]
    )
    return result.exit_code, result.stdout, result.stderr


def test_a_header_split_on_the_wrong_delimiter_names_the_right_one(tmp_path: Path) -> None:
    code, _, err = validate(tmp_path, 'delimiter = ","', EXPORT.encode())
    assert code == 2
    assert "column 'Şube' is not in the header" in err
    assert "the header looks ';'-separated (4 columns): set [source] delimiter = ';'" in err
    tabbed = EXPORT.replace(";", "\t").encode()
    code, _, err = validate(tmp_path, 'delimiter = ";"', tabbed)
    assert "the header looks 'tab'-separated (4 columns): set [source] delimiter = 'tab'" in err


def test_a_header_read_in_the_wrong_encoding_names_the_right_one(tmp_path: Path) -> None:
    code, _, err = validate(tmp_path, 'encoding = "latin-1"', EXPORT.encode("cp1254"))
    assert code == 2
    error = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "column 'Şube' is not in the header" in error
    assert 'cp1254 fits better (Turkish letters) (set [source] encoding = "cp1254"' in error


def test_a_branch_missing_from_the_tenant_map_names_the_map_not_the_cell(tmp_path: Path) -> None:
    code, out, _ = validate(tmp_path, 'encoding = "utf-8"', EXPORT.encode())
    assert code == 1
    assert (
        "export.csv:3: tenant (column 'Şube'): the value is none of mapping.tenant.map's keys "
        "('Berlin', 'Atina'): add it there (as a value of its own: expected a whole number) "
        "[value of 5 chars, in --report/--failures]"
    ) in out
    assert "İzmir" not in out  # a cell is never quoted on the terminal


def test_tenant_over_a_mapped_tenant_column_says_every_row_goes_there(tmp_path: Path) -> None:
    # A walkthrough: `--tenant 2` sent clinic 1's 150 rows to tenant 2 without a word.
    root = Path(__file__).resolve().parent.parent
    result = CliRunner().invoke(
        cli,
        ["validate", str(root / "samples" / "appointments.csv"), "-c",
         str(root / "config" / "demo.toml"), "--tenant", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "warning: --tenant 2 overrides mapping.tenant (column 'clinic'): every row goes to "
        "tenant 2, whatever that column says"
    ) in result.stderr


def test_a_jsonl_key_in_no_object_is_told_before_any_row(tmp_path: Path) -> None:
    # A walkthrough's JSONL mapping said "Room" for the key "room": every row went out
    # without its room, valid, with no word (a CSV header check catches the same typo).
    root = Path(__file__).resolve().parent.parent
    text = (root / "config" / "demo.toml").read_text(encoding="utf-8")
    data = str(root / "samples" / "appointments.jsonl")
    typo = tmp_path / "typo.toml"
    typo.write_text(text.replace('room_id = "room_id"', 'room_id = "Room_Id"'), "utf-8")
    result = CliRunner().invoke(cli, ["validate", data, "-c", str(typo)])
    assert result.exit_code == 2, result.output
    assert (
        "mapping.room_id.column: none of the first 200 objects of "
        f"{data} has key 'Room_Id'; did you mean 'room_id'?"
    ) in result.stderr
    absent = tmp_path / "absent.toml"
    absent.write_text(text.replace('description = "notes"', 'description = "referral.code"'))
    result = CliRunner().invoke(cli, ["validate", data, "-c", str(absent)])
    assert result.exit_code == 0, result.output
    assert "warning: mapping.description.column: none of the first 200 objects" in result.stderr
    assert "has key 'referral.code': the field stays empty while it is missing" in result.stderr


def test_a_null_in_a_jsonl_list_of_treatments_is_an_item_error_not_dropped(
    tmp_path: Path,
) -> None:
    root = Path(__file__).resolve().parent.parent
    lines = (root / "samples" / "appointments.jsonl").read_text(encoding="utf-8").splitlines()
    data = tmp_path / "export.jsonl"
    data.write_text(
        "\n".join([lines[0].replace('"treatment_ids": [203]', '"treatment_ids": [203, null]'),
                   *lines[1:3]]) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    result = CliRunner().invoke(
        cli, ["validate", str(data), "-c", str(root / "config" / "demo.toml")]
    )
    assert result.exit_code == 1, result.output
    assert "3 rows, 2 valid, 1 invalid" in result.stdout
    assert "an empty item in the list (expected a treatment)" in result.stdout


def test_a_title_line_with_the_delimiter_in_it_names_the_header_line_to_set(
    tmp_path: Path,
) -> None:
    """A title such as "Rapor; 01.12.2026" splits into two cells, so it is taken for a
    header of two columns: the error said only "did you mean 'Rapor'?"."""
    code, _, err = validate(tmp_path, "", b"Randevu raporu; 01.12.2026\r\n" + EXPORT.encode())
    assert code == 2
    assert "line 2 holds those column names: set [source] header_row = 2" in err


def test_a_group_row_above_the_header_names_the_header_line_to_set(tmp_path: Path) -> None:
    """A group row ("Randevu;;Kayıt;") above the header: the error asked to name the empty
    cells of that row, the wrong line; the same layout in a workbook named row 2."""
    code, _, err = validate(tmp_path, "", b"Randevu;;Kay\xc4\xb1t;\r\n" + EXPORT.encode())
    assert code == 2
    assert "line 1: header row: empty column name in column 2; line 2 has a name in each " in err
    assert "('No', 'Şube', 'Hasta', ...): [source] header_row = 2?" in err
    # As named, it reads.
    code, out, err = validate(
        tmp_path, "header_row = 2", b"Randevu;;Kay\xc4\xb1t;\r\n" + EXPORT.encode()
    )
    assert "2 rows, 1 valid, 1 invalid" in out, (out, err)


def test_with_header_row_set_the_failures_file_reads_back_for_the_fix(tmp_path: Path) -> None:
    """The fix loop with header_row = 2: the failures file's header is its line 1."""
    data = b"Randevu raporu; 01.12.2026\r\n" + EXPORT.encode()
    (tmp_path / "run.toml").write_text(CONFIG.format(source="header_row = 2"), "utf-8")
    (tmp_path / "export.csv").write_bytes(data)
    fix = tmp_path / "fix.csv"
    first = CliRunner().invoke(
        cli,
        ["validate", str(tmp_path / "export.csv"), "-c", str(tmp_path / "run.toml"),
         "--failures", str(fix)],
    )  # fmt: skip
    assert first.exit_code == 1, first.output
    assert "2 rows, 1 valid, 1 invalid" in first.stdout
    fix.write_text(fix.read_text("utf-8").replace(";İzmir;", ";Atina;"), "utf-8")
    again = CliRunner().invoke(cli, ["validate", str(fix), "-c", str(tmp_path / "run.toml")])
    assert again.exit_code == 0, again.output
    assert "1 rows, 1 valid, 0 invalid" in again.stdout
