"""JSONL reading through `open_source`: one object per line, everything else a row problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.errors import SourceError
from worker.source import RowProblem, SourceOptions, SourceRow, open_source


def read(path: Path, **options: object) -> list[SourceRow | RowProblem]:
    with open_source(str(path), SourceOptions(**options)) as source:  # type: ignore[arg-type]
        assert source.format == "jsonl"
        assert source.columns is None
        assert source.delimiter is None
        return list(source)


def write(tmp_path: Path, text: str, name: str = "in.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_objects_become_rows_with_raw_line(tmp_path: Path) -> None:
    path = write(tmp_path, '{"id": 1, "name": "Şule"}\n\n  \n{"id": 2, "tags": [1, 2]}\r\n')
    items = read(path)
    assert items == [
        SourceRow(str(path), 1, {"id": 1, "name": "Şule"}, raw='{"id": 1, "name": "Şule"}'),
        SourceRow(str(path), 4, {"id": 2, "tags": [1, 2]}, raw='{"id": 2, "tags": [1, 2]}'),
    ]


def test_ndjson_extension_and_last_line_without_newline(tmp_path: Path) -> None:
    items = read(write(tmp_path, '{"a": 1}\n{"a": 2}', "x.ndjson"))
    assert [(item.line, item.fields) for item in items if isinstance(item, SourceRow)] == [
        (1, {"a": 1}),
        (2, {"a": 2}),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "line is a JSON array, expected an object"),
        ("42", "line is a JSON number, expected an object"),
        ('"text"', "line is a JSON string, expected an object"),
        ("null", "line is JSON null, expected an object"),
        ("true", "line is a JSON boolean, expected an object"),
        ('{"a": 1 "b": 2}', "invalid JSON at column 9: Expecting ',' delimiter"),
        ('{"customer": 12, "x"}', "invalid JSON at column 21: Expecting ':' delimiter"),
        ("{", "invalid JSON at column 2"),
        ('{"a": NaN}', "invalid JSON: NaN is not valid JSON"),
    ],
)
def test_lines_that_are_not_objects_are_row_problems(
    tmp_path: Path, line: str, message: str
) -> None:
    path = write(tmp_path, '{"ok": 1}\n' + line + '\n{"ok": 2}\n')
    items = read(path)
    assert isinstance(items[1], RowProblem)
    assert items[1].line == 2
    assert items[1].message.startswith(message)
    assert items[1].raw == line
    assert [item.line for item in items if isinstance(item, SourceRow)] == [1, 3]


def test_deeply_nested_json_is_a_row_problem_not_a_crash(tmp_path: Path) -> None:
    items = read(write(tmp_path, "[" * 100_000 + "]" * 100_000 + '\n{"a": 1}\n'))
    assert isinstance(items[0], RowProblem)
    assert isinstance(items[1], SourceRow)


def test_limits(tmp_path: Path) -> None:
    text = '{"k": "' + "z" * 50 + '"}\n' + '{"k": "' + "y" * 3000 + '"}\n{"k": "ok"}\n'
    items = read(write(tmp_path, text), max_field_size=10, max_line_length=2000)
    assert isinstance(items[0], RowProblem)
    assert items[0].column == "k"
    assert "longer than 10 characters" in items[0].message
    assert isinstance(items[1], RowProblem)
    assert items[1].line == 2
    assert "line is longer than 2000 characters" in items[1].message
    assert isinstance(items[2], SourceRow)
    assert items[2].line == 3


def test_empty_and_blank_files_are_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="file is empty"):
        read(write(tmp_path, ""))
    with pytest.raises(SourceError, match="only blank lines"):
        read(write(tmp_path, "\n  \n\n", "blank.jsonl"))


def test_format_option_overrides_the_extension(tmp_path: Path) -> None:
    items = read(write(tmp_path, '{"a": 1}\n', "export.csv"), format="jsonl")
    assert isinstance(items[0], SourceRow)
    assert items[0].fields == {"a": 1}


def test_a_key_named_twice_in_one_object_is_a_row_problem(tmp_path: Path) -> None:
    # Python keeps the last value, other JSON readers the first: a guess either way
    # (a walkthrough's row was created with the second of two patient ids).
    path = write(
        tmp_path,
        '{"id": "B-1", "patient": {"id": 1016, "id": 1008}}\n'
        '{"id": "B-2", "status": "approved", "status": "pending"}\n'
        '{"id": "B-3", "patient": {"id": 1016}}\n',
    )
    items = read(path)
    problems = [i for i in items if isinstance(i, RowProblem)]
    assert [(p.line, p.column) for p in problems] == [(1, "id"), (2, "status")]
    assert "key 'status' appears twice in one object" in problems[1].message
    assert [i.line for i in items if isinstance(i, SourceRow)] == [3]
