"""A byte that does not decode, far down an export whose start reads right: its row's
error, not the file's. One cp1252 `é` on line 900 of a UTF-8 export stopped every
nightly import at the same byte, with a byte offset no spreadsheet shows, and the
advice to read the whole file as cp1254 garbled every other row."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from tests.support.sandbox_process import Sandbox
from tests.support.sync import import_file, run_cli, sample_rows, write_config
from worker.cli import cli

BAD_LINE = 900  # past the 64 KiB the reader samples for the encoding


def _export(path: Path, rows: int = 1000, *, bad: bool = True) -> tuple[Path, str]:
    """A UTF-8 CSV of `rows` distinct visits; line BAD_LINE's note holds a cp1252 byte.
    Returns the path and that row's key."""
    columns, sample = sample_rows()
    base = [r for r in sample if r["clinic"] == "1" and r["status"] != "cancelled"]
    out = []
    for i in range(rows):
        row = dict(base[i % len(base)], appointment_id=f"S-{i:05d}")
        start = datetime.fromisoformat(row["start"]) + timedelta(days=7 * (i // len(base) + 1))
        row["start"] = start.isoformat(timespec="minutes")
        row["notes"] = f"Hasta {i} kontrol için geldi, ödeme alındı"
        out.append(row)
    if bad:
        out[BAD_LINE - 2]["notes"] = "kontrol CAFE"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(out)
    if not bad:
        return path, ""
    data = path.read_bytes().replace(b"kontrol CAFE", b"kontrol Caf\xe9")
    assert data.index(b"\xe9") > 64 * 1024
    path.write_bytes(data)
    return path, out[BAD_LINE - 2]["appointment_id"]


def test_validate_names_the_line_column_and_byte_and_reads_every_other_row(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    export, key = _export(tmp_path / "export.csv")
    failures = tmp_path / "failures.csv"
    result = run_cli("validate", str(export), "-c", str(config), "--failures", str(failures))
    assert result.exit_code == 1, result.output
    assert "1000 rows, 999 valid, 1 invalid" in result.output
    [line] = [x for x in result.output.splitlines() if f"export.csv:{BAD_LINE}:" in x]
    assert "(column 'notes')" in line
    assert "byte 0xe9 at character 12 is not utf-8 ('é' in cp1252)" in line
    assert "retype that character in the export" in line
    assert "Traceback" not in result.output
    with failures.open(encoding="utf-8", newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert (row["appointment_id"], row["notes"]) == (key, "kontrol Caf\ufffd")


def test_import_sends_every_other_row_and_lists_the_one_to_retype(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = write_config(tmp_path)
    export, key = _export(tmp_path / "export.csv")
    result, summary = import_file(config, sbx, export)
    assert result.exit_code == 1, result.output  # the invalid row needs a person
    assert (summary["totals"]["created"], summary["totals"]["invalid"]) == (999, 1)
    assert len(sbx.appointments()) == 999
    listed = json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout)
    [item] = listed
    assert (item["source_key"], item["kind"], item["source_line"]) == (key, "invalid", BAD_LINE)
    assert "byte 0xe9" in item["reason"] and "column 'notes'" in item["reason"]


def test_a_jsonl_line_with_a_stray_byte_is_its_rows_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    export, _ = _export(tmp_path / "export.csv")
    with export.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        rows = list(csv.DictReader(fh))
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    jsonl = tmp_path / "export.jsonl"
    jsonl.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
    result = run_cli("validate", str(jsonl), "-c", str(config))
    assert result.exit_code == 1, result.output
    assert "1000 rows, 999 valid, 1 invalid" in result.output
    [line] = [x for x in result.output.splitlines() if f"export.jsonl:{BAD_LINE - 1}:" in x]
    assert "is not utf-8 ('é' in cp1252)" in line
    # The key that holds it, and where in its value (not in the raw line).
    assert "(column 'notes'): byte 0xe9 at character 12" in line, line


def test_a_stray_byte_in_a_jsonl_row_read_ahead_for_its_keys_is_its_rows_error(
    tmp_path: Path,
) -> None:
    """The first JSONL rows are read ahead for their keys: a stray byte past the 64 KiB
    sample but among them went through as text no file or ledger can hold."""
    config = write_config(tmp_path)
    export, _ = _export(tmp_path / "export.csv", rows=100, bad=False)
    with export.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["notes"] = "x" * 900  # 100 lines of 1 KB: the sample ends near line 65
    rows[80]["notes"] = "kontrol CAFE"
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    jsonl = tmp_path / "export.jsonl"
    data = text.encode().replace(b"kontrol CAFE", b"kontrol Caf\xe9")
    assert data.index(b"\xe9") > 64 * 1024
    jsonl.write_bytes(data)
    result = run_cli("validate", str(jsonl), "-c", str(config))
    assert result.exit_code == 1, result.output
    assert "100 rows, 99 valid, 1 invalid" in result.output
    assert "export.jsonl:81:" in result.output and "byte 0xe9" in result.output


def test_a_stray_byte_in_a_column_the_mapping_does_not_read_refuses_no_row(
    tmp_path: Path,
) -> None:
    """Nothing of an unmapped column is sent: its stray byte is kept as U+FFFD in the
    row's copy, and the row is read."""
    config = write_config(tmp_path)
    export, _ = _export(tmp_path / "export.csv")
    data = export.read_bytes()
    lines = data.split(b"\r\n") if b"\r\n" in data else data.split(b"\n")
    sep = b"\r\n" if b"\r\n" in data else b"\n"
    lines[0] += b",patient_name"
    for i in range(1, len(lines)):
        if lines[i]:
            lines[i] += b",Caf\xe9" if i == BAD_LINE + 10 else b",Ayse"
    fixed = sep.join(lines).replace(b"kontrol Caf\xe9", b"kontrol Cafe")
    export.write_bytes(fixed)
    result = run_cli("validate", str(export), "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "1000 rows, 1000 valid, 0 invalid" in result.output


def test_a_cp1254_exports_undefined_byte_reaches_its_failures_file_as_a_question_mark(
    tmp_path: Path,
) -> None:
    """cp1254 cannot hold U+FFFD: the failures file (written in the export's encoding)
    refused the row and validate ended with exit 2."""
    config = write_config(tmp_path)
    config.write_text(config.read_text(encoding="utf-8") + '\n[source]\nencoding = "cp1254"\n')
    export, key = _export(tmp_path / "export.csv")
    data = export.read_bytes().decode("utf-8", "surrogateescape")
    data = data.replace("\udce9", "\udc8d")  # 0x8D: a byte cp1254 leaves undefined
    export.write_bytes(data.encode("cp1254", "surrogateescape"))
    failures = tmp_path / "failures.csv"
    result = run_cli("validate", str(export), "-c", str(config), "--failures", str(failures))
    assert result.exit_code == 1, result.output
    assert "byte 0x8d at character 12 is not cp1254" in result.output
    with failures.open(encoding="cp1254", newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert (row["appointment_id"], row["notes"]) == (key, "kontrol Caf?")


def test_standard_input_with_a_stray_byte_reads_every_other_row(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    export, _ = _export(tmp_path / "export.csv")
    result = CliRunner().invoke(
        cli, ["validate", "-", "--format", "csv", "-c", str(config)], input=export.read_bytes()
    )
    assert result.exit_code == 1, result.output
    assert "1000 rows, 999 valid, 1 invalid" in result.output
    assert f"<stdin>:{BAD_LINE}:" in result.output


def test_a_multi_line_cell_with_a_stray_byte_stays_in_its_column_in_the_failures_file(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    export, key = _export(tmp_path / "export.csv")
    data = export.read_bytes().replace(b"kontrol Caf\xe9", b'"satir bir\nsatir iki Caf\xe9"')
    export.write_bytes(data)
    failures = tmp_path / "failures.csv"
    result = run_cli("validate", str(export), "-c", str(config), "--failures", str(failures))
    assert result.exit_code == 1, result.output
    with failures.open(encoding="utf-8", newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert (row["appointment_id"], row["notes"]) == (key, "satir bir\nsatir iki Caf\ufffd")


def test_a_header_past_the_sample_with_a_stray_byte_names_the_byte(tmp_path: Path) -> None:
    """A header under 5,000 title lines (past the 64 KiB sample) with a stray byte in a
    name: called "the invisible character U+DCE9", an escape no file holds."""
    config = write_config(tmp_path)
    config.write_text(config.read_text(encoding="utf-8") + "\n[source]\nheader_row = 5001\n")
    export, _ = _export(tmp_path / "export.csv", rows=10, bad=False)
    body = export.read_bytes().replace(b"notes", b"not\xe9s", 1)
    export.write_bytes(b"Randevu listesi\n" * 5000 + body)
    assert 5000 * 16 > 64 * 1024
    result = run_cli("validate", str(export), "-c", str(config))
    assert result.exit_code == 2, result.output
    assert "line 5001: header row, column 10: byte 0xe9 at character 4 is not utf-8" in (
        result.output
    )
    assert "invisible character" not in result.output


def test_a_utf16_export_cut_at_an_odd_byte_names_its_last_row(tmp_path: Path) -> None:
    """A UTF-16 export whose last byte is missing: its last row was refused with
    pydantic's "unable to parse raw data as a unicode string" under `description`."""
    config = write_config(tmp_path)
    config.write_text(config.read_text(encoding="utf-8") + '\n[source]\nencoding = "utf-16-le"\n')
    export, _ = _export(tmp_path / "export.csv", rows=20, bad=False)
    with export.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = [c for c in rows[0] if c != "notes"] + ["notes"]  # a note last, unquoted
    for row in rows:
        row["notes"] = "Hasta kontrol odemesi alındı"
    with export.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    text = export.read_text(encoding="utf-8").rstrip("\r\n")
    assert text.endswith("alındı")
    export.write_bytes(text.encode("utf-16-le")[:-1])  # 'ı' is 0x31 0x01: half of it left
    result = run_cli("validate", str(export), "-c", str(config))
    assert "unable to parse raw data" not in result.output, result.output
    assert "export.csv:21: source" in result.output, result.output
