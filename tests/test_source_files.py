"""The file layer of `open_source`: encodings, gzip, stdin, file errors, memory."""

from __future__ import annotations

import gzip
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from tests.support.importing import REPO
from tests.support.unprivileged import without_file_override
from worker.errors import SourceError
from worker.exitcodes import ExitCode
from worker.source import RowProblem, SourceOptions, SourceRow, open_source

TURKISH = "ad;soyad;şehir\nŞükrü;Çağlar;İstanbul\nAyşe;Güneş;Iğdır\n"


def read(path: Path | str, **options: object) -> list[SourceRow | RowProblem]:
    with open_source(str(path), SourceOptions(**options)) as source:  # type: ignore[arg-type]
        return list(source)


def fields(items: list[SourceRow | RowProblem]) -> list[dict[str, object]]:
    assert all(isinstance(item, SourceRow) for item in items), items
    return [dict(item.fields) for item in items if isinstance(item, SourceRow)]


EXPECTED_TURKISH = [
    {"ad": "Şükrü", "soyad": "Çağlar", "şehir": "İstanbul"},
    {"ad": "Ayşe", "soyad": "Güneş", "şehir": "Iğdır"},
]


def test_utf8_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + TURKISH.encode("utf-8"))
    with open_source(str(path)) as source:
        assert source.columns == ["ad", "soyad", "şehir"]
        assert fields(list(source)) == EXPECTED_TURKISH


def test_cp1254_with_turkish_letters(tmp_path: Path) -> None:
    path = tmp_path / "tr.csv"
    path.write_bytes(TURKISH.encode("cp1254"))
    assert fields(read(path, encoding="cp1254")) == EXPECTED_TURKISH


def test_cp1254_read_as_utf8_names_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "tr.csv"
    path.write_bytes(TURKISH.encode("cp1254"))
    with pytest.raises(SourceError) as info:
        read(path)
    message = str(info.value)
    # "ad;soyad;" is 9 bytes; "ş" is 0xFE in cp1254.
    assert "do not decode as utf-8 at byte offset 9 (0xfe)" in message
    assert "[source] encoding" in message
    assert info.value.exit_code == ExitCode.USAGE


def test_a_stray_byte_deep_in_the_file_is_its_rows_error(tmp_path: Path) -> None:
    """The file's start reads right: a byte further down that does not decode is the
    error of the row holding it (line, column, byte), and the rows after it are read."""
    path = tmp_path / "late.csv"
    head = b"a,b\n" + b"1,2\n" * 50_000
    path.write_bytes(head + b"3,\xff\n4,5\n")
    with open_source(str(path)) as source:
        items = list(source)
    assert len(items) == 50_002
    bad, last = items[-2], items[-1]
    assert isinstance(bad, RowProblem) and bad.line == 50_002 and bad.column == "b"
    assert bad.message.startswith("byte 0xff at character 1 is not utf-8")
    assert bad.raw == "3,\ufffd"
    assert isinstance(last, SourceRow) and dict(last.fields) == {"a": "4", "b": "5"}


def test_a_file_whose_start_does_not_decode_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "early.csv"
    path.write_bytes(b"a,b\n1,\xff\n" + b"1,2\n" * 10)
    with pytest.raises(SourceError, match="at byte offset 6 "), open_source(str(path)) as source:
        list(source)


def test_latin1_and_utf16(tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes("name,city\nJosé,Zürich\n".encode("latin-1"))
    assert fields(read(latin, encoding="latin-1")) == [{"name": "José", "city": "Zürich"}]
    utf16 = tmp_path / "u16.txt"
    utf16.write_bytes(TURKISH.replace("\n", "\r\n").encode("utf-16"))
    with open_source(str(utf16), SourceOptions(encoding="utf-16")) as source:
        assert source.delimiter == ";"
        items = list(source)
    assert fields(items) == EXPECTED_TURKISH
    assert [item.line for item in items] == [2, 3]


def test_unknown_encoding(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a\n1\n")
    with pytest.raises(SourceError, match="unknown encoding 'klingon'"):
        read(path, encoding="klingon")


def test_gzip_is_read_transparently(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv.gz"
    body = "id,v\n" + "".join(f"{i},{i * i}\n" for i in range(5000))
    path.write_bytes(gzip.compress(body.encode()))
    with open_source(str(path)) as source:
        assert source.format == "csv"
        items = list(source)
        assert source.bytes_read() == source.total_bytes == path.stat().st_size
    assert len(items) == 5000
    assert items[-1] == SourceRow(str(path), 5001, {"id": "4999", "v": str(4999 * 4999)})

    jsonl = tmp_path / "rows.jsonl.gz"
    jsonl.write_bytes(gzip.compress(b'{"a": 1}\n{"a": 2}\n'))
    assert [item.line for item in read(jsonl)] == [1, 2]


def test_not_gzip_and_truncated_gzip(tmp_path: Path) -> None:
    fake = tmp_path / "fake.csv.gz"
    fake.write_bytes(b"a,b\n1,2\n")
    with pytest.raises(SourceError, match="not a gzip file"):
        read(fake)
    cut = tmp_path / "cut.csv.gz"
    data = gzip.compress(b"a,b\n" + b"1,2\n" * 100_000)
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="broken or truncated gzip"):
        read(cut)


def test_file_errors_are_one_line(tmp_path: Path) -> None:
    cases = {
        str(tmp_path / "missing.csv"): "file not found",
        str(tmp_path): "is a directory",
        str(tmp_path / "data.xml"): "unknown format (extension '.xml')",
        str(tmp_path / "data.xlsx"): "cannot read it as an xlsx workbook",
    }
    (tmp_path / "data.xml").write_bytes(b"<x/>")
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    for path, expected in cases.items():
        with pytest.raises(SourceError) as info:
            read(path)
        assert expected in str(info.value)
        assert "\n" not in str(info.value)
    with pytest.raises(SourceError, match="unknown format 'xml'"):
        read(tmp_path / "data.xml", format="xml")


def test_unreadable_file(tmp_path: Path) -> None:
    # Root reads every file: the reader runs without that power (tests/support/unprivileged).
    script = (
        "import sys\n"
        "from worker.errors import SourceError\n"
        "from worker.source import open_source\n"
        "try:\n"
        "    with open_source(sys.argv[1]) as s: list(s)\n"
        "except SourceError as exc:\n"
        "    print(exc)\n"
    )
    path = tmp_path / "secret.csv"
    path.write_text("a\n1\n")
    path.chmod(0)
    done = subprocess.run(
        without_file_override([sys.executable, "-c", script, str(path)]),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "not readable" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr


def test_binary_garbage_never_raises_a_traceback(tmp_path: Path) -> None:
    noise = random.Random(7)
    for encoding in ("utf-8", "latin-1", "cp1254", "utf-16"):
        for n in range(5):
            path = tmp_path / f"garbage{n}.csv"
            path.write_bytes(bytes(noise.randrange(256) for _ in range(20_000)))
            try:
                items = read(path, encoding=encoding)
            except SourceError as exc:
                assert "\n" not in str(exc)
            else:
                assert all(isinstance(item, SourceRow | RowProblem) for item in items)


def test_stdin_with_a_format(tmp_path: Path) -> None:
    script = (
        "from worker.source import open_source, SourceOptions\n"
        "with open_source('-', SourceOptions(format='csv')) as s:\n"
        "    print(s.name, s.total_bytes, s.columns)\n"
        "    for r in s: print(r.line, dict(r.fields))\n"
        "    print(s.bytes_read())\n"
    )
    data = gzip.compress("a;b\n1;ç\n\n2;3\n".encode())
    done = subprocess.run(
        [sys.executable, "-c", script], input=data, capture_output=True, check=True, timeout=60
    )
    assert done.stdout.decode().splitlines() == [
        "<stdin> None ['a', 'b']",
        "2 {'a': '1', 'b': 'ç'}",
        "4 {'a': '2', 'b': '3'}",
        str(len(data)),
    ]


def test_stdin_needs_a_format() -> None:
    with pytest.raises(SourceError, match="--format"):
        open_source("-")


def test_memory_stays_flat_on_a_large_file(tmp_path: Path) -> None:
    path = tmp_path / "large.csv"
    with path.open("w") as out:
        out.write("id,name,note\n")
        for i in range(60_000):
            out.write(f'{i},name {i},"a note, with a comma"\n')
    tracemalloc.start()
    try:
        count = 0
        with open_source(str(path)) as source:
            for item in source:
                count += isinstance(item, SourceRow)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 60_000
    # The file is ~2.5 MB; the reader holds a sample and a few buffers, not the file.
    assert path.stat().st_size > 2_000_000
    assert peak < 1_000_000
