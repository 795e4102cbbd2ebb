"""Encodings on real-looking exports: `auto` reads each right, a wrong declaration is named.

The corpus (tests/support/encodings.py) holds Turkish, German, French, Spanish,
Polish and Czech exports in the encodings their clinic systems write, with
native and with ASCII headers. Every run goes through `validate`: the patient
column is mapped to customer_id, so each row is invalid and the JSON report
carries the patient's name exactly as it was decoded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.encodings import (
    ASCII_HEADER,
    HEADERS,
    SINGLE_BYTE,
    Export,
    corpus,
    export_text,
)
from worker.cli import cli

EXPORTS = corpus()


def config(tmp: Path, export: Export, encoding: str) -> Path:
    head = ASCII_HEADER if export.ascii_header else HEADERS[export.language]
    path = tmp / f"{export.name}.{encoding}.toml"
    path.write_text(
        f"""
[api]
timezone = "Europe/Istanbul"
[tenants.1]
[source]
encoding = "{encoding}"
delimiter = ";"
[mapping]
tenant = {{ value = 1 }}
source_key = {{ column = "{head[0]}" }}
customer_id = "{head[2]}"
user_id = {{ value = 7 }}
scheduled_at = {{ column = "{head[4]}", formats = ["%d.%m.%Y %H:%M"] }}
status = {{ value = "pending" }}
treatments = {{ value = [201] }}
""",
        encoding="utf-8",
    )
    return path


def validate(tmp: Path, export: Export, encoding: str) -> tuple[int, str, Path]:
    data = tmp / export.name
    data.write_bytes(export.data)
    report = tmp / f"{export.name}.{encoding}.json"
    result = CliRunner().invoke(
        cli,
        ["validate", str(data), "-c", str(config(tmp, export, encoding)), "--report", str(report)],
    )
    return result.exit_code, result.stderr, report


def patients(export: Export) -> set[str]:
    return {line.split(";")[2] for line in export.text.splitlines()[1:]}


def decodes_right(data: bytes, encoding: str, text: str) -> bool:
    try:
        return data.decode(encoding).lstrip("\ufeff") == text
    except (UnicodeDecodeError, LookupError):
        return False


@pytest.mark.parametrize("export", EXPORTS, ids=[e.name for e in EXPORTS])
def test_auto_reads_every_export_right_and_says_why(tmp_path: Path, export: Export) -> None:
    code, err, report = validate(tmp_path, export, "auto")
    assert code == 1, err  # every row invalid: the patient's name is no customer id
    notes = [x for x in err.splitlines() if "encoding auto: read as" in x]
    assert len(notes) == 1, err
    picked = notes[0].split("read as ", 1)[1].split(" ", 1)[0]
    assert decodes_right(export.data, picked, export.text), notes[0]
    if export.encoding.startswith("utf-8"):
        assert picked == "utf-8"
    else:
        # Why: how many accented letters fit which language, against the runner-up.
        assert "letters" in notes[0] or "BOM" in notes[0], notes[0]
    values = {e["value"] for e in json.loads(report.read_text(encoding="utf-8"))["errors"]}
    assert values == patients(export)


WRONG = [
    (e, declared)
    for e in EXPORTS
    for declared in SINGLE_BYTE
    if not decodes_right(e.data, declared, e.text)
]


@pytest.mark.parametrize(("export", "declared"), WRONG, ids=[f"{e.name}-as-{d}" for e, d in WRONG])
def test_every_wrong_single_byte_declaration_names_the_right_one(
    tmp_path: Path, export: Export, declared: str
) -> None:
    code, err, _ = validate(tmp_path, export, declared)
    try:
        export.data.decode(declared)
    except UnicodeDecodeError:
        # Bytes the code page leaves undefined: the read stops, naming the right encoding.
        assert code == 2
        right = err.split('encoding = "', 1)[1].split('"', 1)[0]
        assert "reads right as" in err and decodes_right(export.data, right, export.text), err
        return
    warnings = [x for x in err.splitlines() if x.startswith("warning:")]
    assert len(warnings) <= 1, err
    # One warning, or (when the garbled header stops the run) the error itself, names it.
    named = [x for x in err.splitlines() if f"looks wrong as {declared};" in x]
    assert named, err
    for line in named:
        better = line.split(f"looks wrong as {declared}; ", 1)[1].split(" fits better", 1)[0]
        assert decodes_right(export.data, better, export.text), line
        assert "would be" in line  # sample lines: what the text reads as, and should


@pytest.mark.parametrize("export", EXPORTS, ids=[e.name for e in EXPORTS])
def test_a_right_declaration_gives_no_warning(tmp_path: Path, export: Export) -> None:
    code, err, _ = validate(tmp_path, export, export.encoding)
    assert code == 1, err
    assert "warning:" not in err


def test_utf8_declared_on_a_cp1254_export_names_cp1254(tmp_path: Path) -> None:
    export = next(e for e in EXPORTS if e.encoding == "cp1254" and e.ascii_header)
    code, err, _ = validate(tmp_path, export, "utf-8")
    assert code == 2
    assert 'reads right as cp1254: set [source] encoding = "cp1254" (or "auto")' in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("declared", ["auto", "latin-1", "cp1252"])
def test_the_issue_export_kadikoy_67_times_near_the_top(tmp_path: Path, declared: str) -> None:
    """The reported file: few distinct Turkish letters, one word repeated; auto read it
    as a Big5/Baltic page and latin-1 or cp1252 let it through garbled."""
    text = "id;branch;patient;doctor;date;status;treatments;notes\r\n" + "".join(
        f"{i};Kadıköy;Hasta {i};Dr;0{1 + i % 9}.12.2026 10:00;x;y;Görüşme\r\n" for i in range(67)
    )
    export = Export("tr", "cp1254", True, text)
    code, err, _ = validate(tmp_path, export, declared)
    assert code == 1, err
    if declared == "auto":
        assert "encoding auto: read as cp1254" in err
        # Why: what cp1252 would make of the letters (never a data line's words: a name).
        assert "Turkish letters" in err and "'ı' would be 'ý'" in err
        assert "Hasta" not in err
    else:
        warning = next(x for x in err.splitlines() if x.startswith("warning:"))
        assert f"looks wrong as {declared}; cp1254 fits better" in warning
        # The letters of a data line, as read and as meant; not its words.
        assert "'ý' would be 'ı'" in warning and "Kadýköy" not in warning


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_auto_reads_german_and_french_names_together_as_a_western_code_page(
    tmp_path: Path, encoding: str
) -> None:
    # Patients of several origins in one export read as no single language; charset-
    # normalizer then picked cp1250 and 'Lefèvre' became 'Lefčvre', every row still
    # valid (a new-user walkthrough). The code page whose languages explain every
    # accented letter is picked instead, and the note says what the runner-up misread.
    text = (
        ";".join(HEADERS["de"]) + "\n"
        "T1;Köln;Jürgen Müller;Dr. Groß;02.12.2026 14:00;offen;Füllung;Größe\n"
        "T2;Genève;François Lefèvre;Dr. Weiß;03.12.2026 09:30;offen;Kontrolle;\n"
        "T3;Lüneburg;Ärger Öl;Dr. Jäger;13.12.2026 09:30;offen;Röntgen;\n"
    )
    export = Export("de", encoding, False, text)
    code, err, report = validate(tmp_path, export, "auto")
    assert code == 1, err
    assert "read as cp1252" in err and "as cp1250 only" in err, err
    assert "line 3: 'è' would be 'č'" in err, err  # the letters, not the patient's name
    assert "Lefèvre" not in err and "Lefčvre" not in err
    values = {e["value"] for e in json.loads(report.read_text(encoding="utf-8"))["errors"]}
    assert values == {"Jürgen Müller", "François Lefèvre", "Ärger Öl"}


@pytest.mark.parametrize("language", ["de", "fr", "es"])
def test_auto_reads_excel_for_mac_csv_as_mac_roman(tmp_path: Path, language: str) -> None:
    # Excel for Mac's "CSV (Macintosh)": Mac Roman, lines ended by a CR alone. Read as
    # cp1250 with no warning, 'Müller' reached Flextell as 'Mźller'.
    plain = export_text(language, ascii_header=False)
    text = plain.replace("\r\n", "\n").replace("\n", "\r")
    export = Export(language, "mac_roman", False, text)
    code, err, report = validate(tmp_path, export, "auto")
    assert code == 1, err  # the patient column is no id: its values are in the report
    assert "read as mac_roman" in err and "'CSV (Macintosh)'" in err, err
    values = {e["value"] for e in json.loads(report.read_text(encoding="utf-8"))["errors"]}
    assert values == patients(Export(language, "utf-8", False, plain))


def test_a_western_export_with_cr_line_ends_is_not_taken_for_mac_roman(tmp_path: Path) -> None:
    text = export_text("de", ascii_header=False).replace("\r\n", "\n").replace("\n", "\r")
    code, err, _ = validate(tmp_path, Export("de", "cp1252", False, text), "auto")
    assert code == 1, err  # the patient column is no id
    assert "read as cp1252" in err, err


@pytest.mark.parametrize("declared", ["cp1254", "utf-8"])
def test_a_utf16_export_read_with_another_encoding_names_utf16(
    tmp_path: Path, declared: str
) -> None:
    # Read byte by byte, its header was ten columns of control characters (U+0000),
    # with advice that did not name what the byte-order mark says.
    base = next(e for e in EXPORTS if e.language == "tr" and not e.ascii_header)
    export = Export(base.language, "utf-16", base.ascii_header, base.text)
    code, err, _ = validate(tmp_path, export, declared)
    assert code == 2
    assert (
        f"starts with a UTF-16 byte-order mark, but [source] encoding is '{declared}': "
        'set encoding = "utf-16" (or "auto")'
    ) in err
    code, err, _ = validate(tmp_path, export, "utf-16")
    assert code in (0, 1) and "byte-order mark" not in err  # read right: rows, not a file error


@pytest.mark.parametrize(
    ("language", "encoding", "other"), [("tr", "cp1254", "iso-8859-9"), ("de", "cp1252", "latin-1")]
)
def test_one_byte_the_code_page_leaves_undefined_does_not_pick_its_iso_twin(
    tmp_path: Path, language: str, encoding: str, other: str
) -> None:
    # A cp1254 export with Word's quotes in a note and one stray 0x81 (undefined in
    # cp1254 and cp1252): `auto` ruled cp1254 out and read the file as ISO 8859-9, whose
    # C1 controls stand for the quotes. The stray byte is now its row's error.
    text = export_text(language, ascii_header=False)
    lines = text.split("\r\n")
    fields = lines[3].split(";")
    fields[7] = "\u201cacil\u201d \u2013 " + fields[7]
    lines[3] = ";".join(fields)
    export = Export(language, encoding, False, "\r\n".join(lines))
    data = export.data.split(b"\r\n")
    cells = data[5].split(b";")
    cells[2] += b"\x81"
    data[5] = b";".join(cells)
    path = tmp_path / export.name
    path.write_bytes(b"\r\n".join(data))
    report = tmp_path / "report.json"
    settings = config(tmp_path, export, "auto")
    args = ["validate", str(path), "-c", str(settings), "--report", str(report)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert f"read as {encoding} (" in result.stderr, result.stderr
    assert f"1 byte {encoding} leaves undefined: it is its row's error" in result.stderr
    assert other not in result.stderr.split("read as", 1)[1].split("(", 1)[0]
    errors = json.loads(report.read_text(encoding="utf-8"))["errors"]
    stray = [e for e in errors if e["line"] == 6]
    assert len(stray) == 1 and "?" in stray[0]["value"], stray
    values = {e["value"] for e in errors if e["line"] != 6}
    assert values <= patients(export)
    assert len(errors) == 40


@pytest.mark.parametrize(("encoding", "line_end"), [("mac_roman", "\r"), ("cp1252", "\r\n")])
def test_auto_judges_the_lines_after_an_ascii_start(
    tmp_path: Path, encoding: str, line_end: str
) -> None:
    # The first 64 KiB all ASCII (1,000 patients with plain names): `auto` said "ASCII,
    # read as utf-8", and every later row with an accented name was a stray byte's error
    # (the advice for a Mac Roman file then named cp1252's reading: 'RŸckruf').
    accented = export_text("de", ascii_header=False).replace("\r\n", "\n").splitlines()
    plain = [f"P{i};Berlin;Max Mustermann {i};Dr. Braun;01.12.2026 10:00;offen;Kontrolle;"
             for i in range(1_000)]  # fmt: skip
    lines = [accented[0], *plain, *accented[1:]]
    export = Export("de", encoding, False, line_end.join(lines) + line_end)
    assert export.data[: 64 * 1024].isascii()
    code, err, report = validate(tmp_path, export, "auto")
    assert code == 1, err  # every row invalid: the patient's name is no customer id
    assert f"encoding auto: read as {encoding} (" in err, err
    first = next(n for n, line in enumerate(lines, start=1) if not line.isascii())
    assert f"in the 40 lines that have any (from line {first} on; the first 64 KiB are ASCII)"
    if encoding == "mac_roman":  # cp1252's German letters read the same in cp1250
        assert f"e.g. line {first}: " in err, err  # the file's line, not the sample's
    values = {e["value"] for e in json.loads(report.read_text(encoding="utf-8"))["errors"]}
    assert patients(Export("de", "utf-8", False, "\n".join(accented))) <= values


@pytest.mark.parametrize("ascii_rows", [0, 2_000])
def test_a_utf8_export_with_one_byte_typed_in_cp1252_stays_utf8(
    tmp_path: Path, ascii_rows: int
) -> None:
    # A helper's review of the ASCII-start scan: five UTF-8 names and one cp1252 'é'
    # after 5,000 plain rows read as iso8859-10 ('ZoÃŦ', every row valid), fifty as
    # "no encoding decodes the start of the file"; read as UTF-8 they are five rows and
    # one stray byte's row error.
    accented = export_text("de", ascii_header=False).replace("\r\n", "\n").splitlines()
    plain = [f"P{i};Berlin;Max Mustermann {i};Dr. Braun;01.12.2026 10:00;offen;Kontrolle;"
             for i in range(ascii_rows)]  # fmt: skip
    data = "\n".join([accented[0], *plain, *accented[1:]]).encode("utf-8") + b"\n"
    data += "S1;Köln;Café Crème;Dr. Braun;01.12.2026 10:00;offen;Kontrolle;\n".encode("cp1252")
    path = tmp_path / "export.csv"
    path.write_bytes(data)
    export = Export("de", "utf-8", False, "")
    report = tmp_path / "report.json"
    settings = config(tmp_path, export, "auto")
    result = CliRunner().invoke(cli, ["validate", str(path), "-c", str(settings),
                                      "--report", str(report)])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "encoding auto: read as utf-8 (40 of 41 lines with non-ASCII bytes" in result.stderr
    errors = json.loads(report.read_text(encoding="utf-8"))["errors"]
    names = {e["value"] for e in errors if e["line"] != ascii_rows + 42}
    assert patients(Export("de", "utf-8", False, "\n".join(accented))) <= names, names
    [stray] = [e for e in errors if e["line"] == ascii_rows + 42]
    assert "is not utf-8 ('é' in cp1252)" in stray["message"], stray


def test_a_few_turkish_lines_and_one_undefined_byte_read_as_cp1254(tmp_path: Path) -> None:
    # Three short cp1254 lines and one 0x81: counted three times against cp1254, the
    # undefined byte left no reading at 90 %, and the export was refused as one no
    # encoding decodes (cp1252 decodes every byte) or read as ISO 8859-10.
    head = ";".join(HEADERS["tr"]) + "\n"
    lines = ["T1;Kadıköy;Ayşe Yılmaz;Dr. Esra Aslan;01.12.2026 10:00;Bekliyor;Dolgu;",
             "T2;Üsküdar;Şükrü Öztürk;Dr. Esra Aslan;01.12.2026 11:00;Bekliyor;Dolgu;",
             "T3;Şişli;Çağlar Ünal;Dr. Esra Aslan;01.12.2026 12:00;Bekliyor;Dolgu;"]  # fmt: skip
    data = (head + "\n".join(lines) + "\n").encode("cp1254")
    data += b"T4;Sisli;bad\x81byte;Dr. Esra Aslan;01.12.2026 13:00;Bekliyor;Dolgu;\n"
    export = Export("tr", "cp1254", False, "")
    path = tmp_path / export.name
    path.write_bytes(data)
    report = tmp_path / "report.json"
    settings = config(tmp_path, export, "auto")
    result = CliRunner().invoke(cli, ["validate", str(path), "-c", str(settings),
                                      "--report", str(report)])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "encoding auto: read as cp1254 (" in result.stderr, result.stderr
    values = {e["value"] for e in json.loads(report.read_text(encoding="utf-8"))["errors"]}
    assert {"Ayşe Yılmaz", "Şükrü Öztürk", "Çağlar Ünal"} <= values
