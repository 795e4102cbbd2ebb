"""CSV reading through `open_source`: delimiters, quoting, line numbers, row problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.errors import SourceError
from worker.exitcodes import ExitCode
from worker.source import RowProblem, SourceOptions, SourceRow, open_source


def read(path: Path, **options: object) -> tuple[list[str] | None, list[SourceRow | RowProblem]]:
    with open_source(str(path), SourceOptions(**options)) as source:  # type: ignore[arg-type]
        return source.columns, list(source)


def write(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def rows_only(items: list[SourceRow | RowProblem]) -> list[SourceRow]:
    assert all(isinstance(item, SourceRow) for item in items), items
    return [item for item in items if isinstance(item, SourceRow)]


def test_rows_carry_source_line_and_fields_in_header_order(tmp_path: Path) -> None:
    path = write(tmp_path, "id,name,city\n1,Ayşe,İzmir\n2,Mehmet,Ankara\n")
    with open_source(str(path)) as source:
        assert source.format == "csv"
        assert source.columns == ["id", "name", "city"]
        assert source.delimiter == ","
        assert source.name == str(path)
        items = list(source)
    assert items == [
        SourceRow(str(path), 2, {"id": "1", "name": "Ayşe", "city": "İzmir"}),
        SourceRow(str(path), 3, {"id": "2", "name": "Mehmet", "city": "Ankara"}),
    ]
    assert list(rows_only(items)[0].fields) == ["id", "name", "city"]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_detected(tmp_path: Path, delimiter: str) -> None:
    # Each other candidate appears in the data, so only the real one splits evenly.
    others = "".join(d for d in ",;\t|" if d != delimiter)
    lines = [delimiter.join(["a", "b", "c"])]
    lines += [delimiter.join([f"x{others}{i}", f'"{delimiter}"', "z"]) for i in range(5)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    with open_source(str(path)) as source:
        assert source.delimiter == delimiter
        assert source.columns == ["a", "b", "c"]
        rows = rows_only(list(source))
    assert [row.fields["b"] for row in rows] == [delimiter] * 5
    assert rows[0].fields["a"] == f"x{others}0"


def test_configured_delimiter_wins_and_tab_can_be_spelled(tmp_path: Path) -> None:
    path = write(tmp_path, "a;b\tc\n1;2\t3\n")
    assert read(path, delimiter=";")[0] == ["a", "b\tc"]
    assert read(path, delimiter="tab")[0] == ["a;b", "c"]
    with pytest.raises(SourceError, match="delimiter"):
        read(path, delimiter=";;")


def test_crlf_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path, 'a,b\r\n1,"x\r\ny"\r\n\r\n3,4\r\n')
    columns, items = read(path)
    assert columns == ["a", "b"]
    assert [(row.line, dict(row.fields)) for row in rows_only(items)] == [
        (2, {"a": "1", "b": "x\r\ny"}),
        (5, {"a": "3", "b": "4"}),
    ]


def test_quoted_multiline_fields_count_their_lines(tmp_path: Path) -> None:
    text = 'id,note\n1,"one\ntwo\nthree"\n2,plain\n3,"a ""quoted"" word"\n4,"x\n\ny"\n5,end\n'
    _, items = read(write(tmp_path, text))
    rows = rows_only(items)
    assert [row.line for row in rows] == [2, 5, 6, 7, 10]
    assert rows[0].fields["note"] == "one\ntwo\nthree"
    assert rows[2].fields["note"] == 'a "quoted" word'
    assert rows[3].fields["note"] == "x\n\ny"


def test_blank_lines_and_rows_of_empty_cells_are_skipped(tmp_path: Path) -> None:
    _, items = read(write(tmp_path, "\n\na,b\n\n1,2\n   \n,\n ,  \n3,4\n\n"))
    assert [(row.line, row.fields["a"]) for row in rows_only(items)] == [(5, "1"), (9, "3")]


def test_header_names_are_trimmed(tmp_path: Path) -> None:
    assert read(write(tmp_path, " a , b\n1,2\n"))[0] == ["a", "b"]


def test_wrong_cell_count_is_a_row_problem_with_rejoined_raw(tmp_path: Path) -> None:
    path = write(tmp_path, 'a,b,c\n1,2\n"x,y",2,3,"q""uote"\n7,8,9\n')
    _, items = read(path)
    assert items[0] == RowProblem(
        str(path),
        2,
        "row has 2 cells, header has 3 (expected one cell per column)",
        raw="1,2",
        fields={"a": "1", "b": "2"},  # a short row's cells, for skip rules
    )
    assert isinstance(items[1], RowProblem)
    assert items[1].line == 3
    assert items[1].message.startswith("row has 4 cells, header has 3")
    assert items[1].raw == '"x,y",2,3,"q""uote"'
    assert items[1].fields == {"a": "x,y", "b": "2", "c": "3"}  # the first, under the columns
    assert isinstance(items[2], SourceRow)
    assert items[2].line == 4


def test_duplicate_and_empty_header_names_are_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        read(write(tmp_path, "id,name,id,,x, \n1,2,3,4,5,6\n"))
    message = str(info.value)
    assert "duplicate column name 'id' in columns 1, 3" in message
    assert "empty column name in column 4" in message  # the trailing one names nothing
    assert "\n" not in message
    assert info.value.exit_code == ExitCode.USAGE


def test_a_delimiter_ending_every_line_names_no_column(tmp_path: Path) -> None:
    # "Randevu No;...;Not;" with ";" at the end of every line: a common export's shape,
    # refused as a whole before (a new-user walkthrough). The empty last columns are
    # dropped; text in them is a row error, not a lost cell.
    path = write(tmp_path, "id;name;note;\nA1;Ada;x;\nA2;Bo;;\nA3;Cy;z\nA4;Di;w;surprise\n")
    columns, items = read(path, delimiter=";")
    assert columns == ["id", "name", "note"]
    a1, a2, a3, a4 = items
    assert isinstance(a1, SourceRow) and a1.fields == {"id": "A1", "name": "Ada", "note": "x"}
    assert isinstance(a2, SourceRow) and a2.fields["note"] == ""
    assert isinstance(a3, SourceRow) and a3.fields["note"] == "z"  # this line has none
    assert isinstance(a4, RowProblem) and a4.message.startswith("row has 4 cells, header has 3")


def test_empty_file_and_file_without_header(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="file is empty"):
        read(write(tmp_path, ""))
    with pytest.raises(SourceError, match="no header row"):
        read(write(tmp_path, "\n\n\r\n", "blank.csv"))


def test_unterminated_quote_is_reported_where_it_starts_and_later_rows_survive(
    tmp_path: Path,
) -> None:
    text = 'a,b,c\n1,2,3\n4,5,"never closed\n7,8,9\n10,11,"12"\n13,14,15\n'
    _, items = read(write(tmp_path, text))
    problems = [item for item in items if isinstance(item, RowProblem)]
    assert len(problems) == 1
    assert problems[0].line == 3
    assert "quoted field opened on line 3" in problems[0].message
    assert problems[0].raw is not None and problems[0].raw.startswith('4,5,"never closed')
    rows = [item for item in items if isinstance(item, SourceRow)]
    assert [row.line for row in rows] == [2, 4, 5, 6]
    assert rows[1].fields == {"a": "7", "b": "8", "c": "9"}


def test_unterminated_quote_at_the_end_of_the_file(tmp_path: Path) -> None:
    _, items = read(write(tmp_path, 'a,b\n1,2\n3,"open\n5,6\n'))
    problem = items[1]
    assert isinstance(problem, RowProblem)
    assert problem.line == 3
    assert "never closed" in problem.message
    # The line after the broken record is read again as a row of its own.
    assert isinstance(items[2], SourceRow)
    assert (items[2].line, items[2].fields["a"]) == (4, "5")


def test_text_after_a_closing_quote_is_a_row_problem(tmp_path: Path) -> None:
    _, items = read(write(tmp_path, 'a,b\n1,"x"y\n2,3\n'))
    assert isinstance(items[0], RowProblem)
    assert items[0].line == 2
    assert 'must be doubled: ""' in items[0].message
    assert items[0].raw == '1,"x"y'
    assert isinstance(items[1], SourceRow)
    assert items[1].line == 3


def test_field_longer_than_max_field_size(tmp_path: Path) -> None:
    _, items = read(write(tmp_path, "a,b\n1," + "x" * 500 + "\n2,3\n"), max_field_size=100)
    assert isinstance(items[0], RowProblem)
    assert items[0].line == 2
    assert "longer than 100 characters" in items[0].message
    assert "max_field_size" in items[0].message
    assert isinstance(items[1], SourceRow)
    assert items[1].line == 3


def test_unterminated_quote_stops_at_max_field_size(tmp_path: Path) -> None:
    body = "".join(f"{i},row {i}\n" for i in range(3, 400))
    _, items = read(write(tmp_path, 'a,b\n1,"open\n' + body), max_field_size=200)
    problems = [item for item in items if isinstance(item, RowProblem)]
    assert problems[0].line == 2
    assert "still open after 200 characters" in problems[0].message
    # Every line after the broken one is read again: one stray quote costs one row.
    rows = [item for item in items if isinstance(item, SourceRow)]
    assert [row.line for row in rows] == list(range(3, 400))
    assert len(problems) == 1


def test_over_long_line_is_skipped_without_losing_its_neighbours(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b\n1,2\n" + "x," * 3000 + "\n3,4\n")
    _, items = read(path, max_line_length=1000)
    assert isinstance(items[1], RowProblem)
    assert items[1].line == 3
    assert "longer than 1000 characters" in items[1].message
    assert [(row.line, row.fields["a"]) for row in items if isinstance(row, SourceRow)] == [
        (2, "1"),
        (4, "3"),
    ]


def test_over_long_line_inside_a_quoted_field(tmp_path: Path) -> None:
    path = write(tmp_path, 'a,b\n1,"2\n' + "y" * 5000 + "\n3,4\n")
    _, items = read(path, max_line_length=1000)
    assert [(type(item).__name__, item.line) for item in items] == [
        ("RowProblem", 2),
        ("RowProblem", 3),
        ("SourceRow", 4),
    ]
    assert isinstance(items[0], RowProblem)
    assert "cut off by over-long line 3" in items[0].message


def test_multi_line_record_longer_than_max_line_length(tmp_path: Path) -> None:
    # Each line is short, but the quoted field never closes: the record is bounded.
    path = write(tmp_path, 'a,b\n1,"open\n' + "z,z\n" * 400)
    _, items = read(path, max_line_length=300, max_field_size=100_000)
    assert isinstance(items[0], RowProblem)
    assert items[0].line == 2
    assert "longer than 300 characters" in items[0].message
    assert all(isinstance(item, SourceRow) for item in items[1:])
    assert [item.line for item in items[1:]] == list(range(3, 403))


def test_over_long_header_is_a_file_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="line 1: cannot read the header row"):
        read(write(tmp_path, "a," * 1000 + "\n1\n"), max_line_length=100)


def test_a_50_mb_single_field_gives_a_clear_row_problem(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("wb") as out:
        out.write(b"id,note\n1,ok\n2,")
        chunk = b"x" * (1 << 20)
        for _ in range(50):
            out.write(chunk)
        out.write(b"\n3,ok\n")
    with open_source(str(path)) as source:
        items = list(source)
        assert source.bytes_read() == source.total_bytes == path.stat().st_size
    assert [(type(item).__name__, item.line) for item in items] == [
        ("SourceRow", 2),
        ("RowProblem", 3),
        ("SourceRow", 4),
    ]
    assert isinstance(items[1], RowProblem)
    assert "longer than 4000000 characters" in items[1].message


def test_the_64_kib_sample_boundary_is_invisible(tmp_path: Path) -> None:
    # Lines of varying length so one of them (and a CRLF) straddles the boundary.
    lines = ["a,b"] + [f"{i},{'v' * (i % 97)}" for i in range(1, 3000)]
    for offset in range(3):
        text = "x" * offset + "\r\n".join(lines) + "\r\n"
        path = write(tmp_path, text, f"b{offset}.csv")
        _, items = read(path)
        rows = rows_only(items)
        assert [row.line for row in rows] == list(range(2, 3001))
        assert [row.fields["b"] for row in rows] == [line.split(",")[1] for line in lines[1:]]


def test_over_long_lines_at_and_after_the_sample_boundary(tmp_path: Path) -> None:
    long = "3," + "w" * 200_000 + "\n"
    # The first long line straddles the 64 KiB sample; the second comes long after it.
    text = "a,b\n" + "1,2\n" * 16000 + long + "4,5\n" * 20000 + long + "6,7\n"
    _, items = read(write(tmp_path, text), max_line_length=100_000)
    assert len(items) == 36003
    problems = [(i, item.line) for i, item in enumerate(items) if isinstance(item, RowProblem)]
    assert problems == [(16000, 16002), (36001, 36003)]
    assert isinstance(items[-1], SourceRow)
    assert (items[-1].line, items[-1].fields["a"]) == (36004, "6")


def test_the_header_repeated_further_down_is_not_a_row(tmp_path: Path) -> None:
    # Exports joined end to end repeat their header: it became an invalid row keyed
    # "Randevu No" with a field error in every column, and fed init's guesses (a walkthrough).
    path = write(tmp_path, "id;name\nA1;Ada\nid;name\nA2;Bo\n")
    _, items = read(path, delimiter=";")
    rows = rows_only(items)
    assert [(r.line, r.fields["id"]) for r in rows] == [(2, "A1"), (4, "A2")]


@pytest.mark.parametrize("sep", [";", "\t", ","])
def test_excels_sep_line_names_the_delimiter_and_is_no_header(tmp_path: Path, sep: str) -> None:
    # Excel writes "sep=;" first for a CSV meant to open in another locale; it was taken
    # for the header ("columns: sep=") and every mapped column was missing.
    text = f"sep={sep}\r\nNo{sep}Hasta\r\n1{sep}Ayşe, Y.\r\n".replace(", Y.", " Y.")
    columns, items = read(write(tmp_path, text))
    assert columns == ["No", "Hasta"]
    assert [(i.line, i.fields) for i in items if isinstance(i, SourceRow)] == [
        (3, {"No": "1", "Hasta": "Ayşe Y."})
    ]


def test_title_lines_above_the_header_are_skipped_and_said(tmp_path: Path) -> None:
    # A clinic system's export with its report title on line 1 (with and without the
    # delimiter run a spreadsheet leaves), a blank line, then the table.
    for title in ("KADIKÖY KLİNİĞİ - RANDEVU LİSTESİ;;;", "Randevu Listesi 01.03.2027\n"):
        path = write(tmp_path, f"{title}\nNo;Hasta;Doktor;Tarih\n7;1001;101;01.03.2027\n")
        with open_source(str(path), SourceOptions()) as src:
            items = list(src)
            notes = src.notes
        assert src.columns == ["No", "Hasta", "Doktor", "Tarih"]
        header = 2 if title.endswith(";") else 3
        row = rows_only(items)[0]
        assert (row.line, row.fields["No"]) == (header + 1, "7")
        assert any(f"the header is line {header}" in n for n in notes), notes


def test_header_row_names_the_csv_header_line(tmp_path: Path) -> None:
    path = write(tmp_path, "Randevu listesi\nMart 2027\nNo,Hasta\n7,1001\n")
    columns, items = read(path, header_row=3)
    assert columns == ["No", "Hasta"]
    assert [(r.line, r.fields["Hasta"]) for r in rows_only(items)] == [(4, "1001")]
    with pytest.raises(SourceError, match=r"\[source\] header_row = 9, but the file ends"):
        read(path, header_row=9)
    spaced = write(tmp_path, "Randevu listesi\n\nNo,Hasta\n7,1001\n", "spaced.csv")
    with pytest.raises(SourceError, match="header_row = 2, but line 2 is blank"):
        read(spaced, header_row=2)


def test_header_row_on_a_jsonl_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, '{"a": 1}\n', "in.jsonl")
    with pytest.raises(SourceError, match="a JSONL file has no header row"):
        read(path, header_row=2)


def test_a_skip_rule_matches_rows_of_another_cell_count_too(tmp_path: Path) -> None:
    """A totals line with a cell more than the header (a trailing amount) was a cell-count
    error every night that no rule could take; so was a short one."""
    path = write(tmp_path, "id,n,note\n1,2,a\nTOPLAM,2,,225.50\nGenel,2\n3,4,b\n")
    _, items = read(path, skip_rows=(("id", "^(TOPLAM|Genel)$"),))
    assert [r.fields["id"] for r in rows_only(items)] == ["1", "3"]


def test_a_record_cut_in_the_failures_file_says_to_fix_it_in_the_export(tmp_path: Path) -> None:
    """A field over max_field_size: the record's text is kept to 2,000 characters, and the
    failures file said nothing of it; fixed there and read back, the cut note was sent."""
    path = tmp_path / "long.csv"
    long_note = "x" * 1_000_100
    path.write_text(f"id,note\nA1,short\nA2,{long_note}\nA3,short\n", encoding="utf-8")
    with open_source(str(path)) as source:
        items = list(source)
    [bad] = [i for i in items if isinstance(i, RowProblem)]
    assert bad.line == 3 and bad.raw is not None and bad.raw.endswith("…")
    assert "its text is cut at 2,000 characters in the failures file" in bad.message
    assert [i.line for i in items if isinstance(i, SourceRow)] == [2, 4]
