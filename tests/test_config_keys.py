"""A misspelt key in any config section: one line naming the file, the section, the
bad key, the valid keys and the nearest one (issue 21)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.configs import CFG
from worker.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = str(ROOT / "samples" / "appointments.csv")

# (TOML that misspells one key, the section as reported, the bad key, the suggestion,
#  a valid key the message must list)
CASES = [
    ('[api]\ntokn = "env:X"\n', "[api]", "tokn", "token", "base_url"),
    ("[api]\nconcurency = 2\n", "[api]", "concurency", "concurrency", "rate_limit"),
    ('[tenants.1]\ntimezon = "Europe/Istanbul"\n', "[tenants.1]", "timezon", "timezone", "name"),
    ('[tenants.1]\nphone_regoin = "TR"\n', "[tenants.1]", "phone_regoin", "phone_region", "token"),
    ('[source]\ndelimeter = ";"\n', "[source]", "delimeter", "delimiter", "encoding"),
    ('[source]\nencodng = "cp1254"\n', "[source]", "encodng", "encoding", "format"),
    ('[ledger]\npth = "x.sqlite"\n', "[ledger]", "pth", "path", "lease_seconds"),
    ("[ledger]\nlease_second = 30\n", "[ledger]", "lease_second", "lease_seconds", "url"),
    ('[sorce]\nformat = "csv"\n', "the top level", "sorce", "source", "mapping"),
    ("[sync]\nmax_agee = 5\n", "[sync]", "max_agee", "max_age", "max_missing"),
    # An array of tables: its own keys, not its section's (which listed [source]'s).
    (
        '[[source.skip_rows]]\ncolumn = "notes"\nmatches = "x"\nmatchs = "y"\n',
        "[[source.skip_rows]] entry 1",
        "matchs",
        "matches",
        "column",
    ),
]


def _config(tmp_path: Path, extra: str) -> Path:
    # Sections are merged textually: the misspelt key lands in its own section.
    text = CFG.replace("[api]\n", "[api]\n" + extra.removeprefix("[api]\n"), 1)
    if not extra.startswith("[api]"):
        text = CFG.replace("[tenants.1]\n", "") if extra.startswith("[tenants.1]") else CFG
        text += "\n" + extra
    path = tmp_path / "clinic.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("extra", "section", "bad", "nearest", "listed"), CASES)
def test_every_section_names_the_valid_keys_and_the_nearest(
    tmp_path: Path, extra: str, section: str, bad: str, nearest: str, listed: str
) -> None:
    cfg = _config(tmp_path, extra)
    result = CliRunner().invoke(cli, ["validate", SAMPLE, "-c", str(cfg)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert str(cfg) in line
    assert f"{section}: unknown key {bad!r} (valid keys: " in line
    assert listed in line
    assert f"did you mean {nearest!r}?" in line
    assert "Extra inputs" not in line and "Traceback" not in line


@pytest.mark.parametrize(
    ("extra", "key", "nearest"),
    [
        ('[mapping.user_id]\ncolumn = "doctor"\nlookp = "x"\n', "mapping.user_id.lookp", "lookup"),
        ('[lookups.doc]\nfile = "d.csv"\nkye = "name"\nvalue = "id"\n', "lookups.doc.kye", "key"),
    ],
)
def test_mapping_and_lookup_options_suggest_too(
    tmp_path: Path, extra: str, key: str, nearest: str
) -> None:
    text = CFG.replace('user_id = "doctor"\n', "") if "mapping.user_id" in extra else CFG
    cfg = tmp_path / "clinic.toml"
    cfg.write_text(text + "\n" + extra, encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", SAMPLE, "-c", str(cfg)])
    assert result.exit_code == 2, result.output
    assert f"{key}: unknown option" in result.stderr
    assert f"did you mean {nearest!r}?" in result.stderr


def test_a_misspelt_mapping_field_suggests_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "clinic.toml"
    cfg.write_text(CFG.replace('user_id = "doctor"', 'usr_id = "doctor"'), encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", SAMPLE, "-c", str(cfg)])
    assert result.exit_code == 2
    assert "mapping.usr_id: unknown field" in result.stderr
    assert "did you mean 'user_id'?" in result.stderr


def test_a_config_that_is_not_utf8_says_where_and_that_toml_is_utf8(tmp_path: Path) -> None:
    # Saved by a Turkish Windows editor: cp1254, with a value and a comment in Turkish.
    text = CFG.replace("[mapping]\n", "# Açıklama: notlar\n[mapping]\n").replace(
        'description = "notes"', 'description = "notes"  # ş'
    )
    cfg = tmp_path / "clinic.toml"
    cfg.write_bytes(text.encode("cp1254"))
    line = text.splitlines().index("# Açıklama: notlar") + 1
    result = CliRunner().invoke(cli, ["validate", SAMPLE, "-c", str(cfg)])
    assert result.exit_code == 2, result.output
    offset = text.encode("cp1254").index(b"\xe7")  # the first non-ASCII byte: ç
    assert result.stderr == (
        f"error: {cfg}: not UTF-8 text: byte 0xe7 at line {line}, column 4 (byte offset "
        f"{offset}); a TOML file must be UTF-8: save it as UTF-8 (it may have been saved "
        "as cp1254, latin-1 or UTF-16)\n"
    )


@pytest.mark.parametrize(
    ("where", "value", "said"),
    [
        ("[api]\n", "20", '20 has no period: write the count and its period as a string, '
         'such as rate_limit = "20/second" or "20/minute"'),
        ("[tenants.1]\n", "5", '5 has no period: write the count and its period as a string, '
         'such as rate_limit = "5/second" or "5/minute"'),
        ("[api]\n", "true", 'expected a string N/PERIOD, such as rate_limit = "60/minute", '
         '"20/second" or "100/10s" (got bool True)'),
        ("[api]\n", "nan", 'expected a string N/PERIOD, such as rate_limit = "60/minute", '
         '"20/second" or "100/10s" (got float nan)'),
        ("[api]\n", '"20"', "invalid rate '20': expected N/PERIOD such as 60/minute, "
         "20/second or 100/10s (20/second or 20/minute?)"),
    ],
)  # fmt: skip
def test_a_rate_limit_that_is_no_rate_says_its_shape(
    tmp_path: Path, where: str, value: str, said: str
) -> None:
    # pydantic said "Input should be a dictionary or an instance of Rate".
    cfg = tmp_path / "clinic.toml"
    cfg.write_text(CFG.replace(where, f"{where}rate_limit = {value}\n", 1), encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", SAMPLE, "-c", str(cfg)])
    assert result.exit_code == 2, result.output
    key = "api" if where == "[api]\n" else "tenants.1"
    assert result.stderr == f"error: {cfg}: {key}.rate_limit: {said}\n"


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [("[api]\n", "outage_budget", "inf"), ("[api]\n", "timeout", "nan"),
     ("[api]\n", "max_pause", "inf"), ("[ledger]\n", "lease_seconds", "inf")],
)  # fmt: skip
def test_a_duration_of_inf_or_nan_is_refused(
    tmp_path: Path, where: str, key: str, value: str
) -> None:
    text = CFG if where in CFG else CFG + f"\n{where}"
    cfg = tmp_path / "clinic.toml"
    cfg.write_text(text.replace(where, f"{where}{key} = {value}\n", 1), encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", SAMPLE, "-c", str(cfg)])
    assert result.exit_code == 2, result.output
    assert f"{key}: Input should be a finite number" in result.stderr


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        # pydantic's "String should match pattern '^(csv|jsonl|xlsx|xls|ods)$'"
        ("[tenants.1]\n", '[source]\nformat = "xslx"\n[tenants.1]\n',
         "source.format: unknown format 'xslx': expected one of csv, jsonl, xlsx, xls, ods; "
         "did you mean 'xlsx'?"),
        ('timezone = "Europe/Istanbul"', 'timezone = "Europe/Berln"',
         "api.timezone: unknown time zone 'Europe/Berln' (expected an IANA name such as "
         "Europe/Istanbul; did you mean 'Europe/Berlin'?)"),
        ('scheduled_at = "start"', 'scheduled_at = { column = "start", timezone = "Europe/Berln" }',
         "mapping.scheduled_at.timezone: unknown time zone 'Europe/Berln' (expected an IANA "
         "name such as Europe/Istanbul; did you mean 'Europe/Berlin'?)"),
        ('scheduled_at = "start"', 'scheduled_at = { column = "start", formats = ["isoo"] }',
         "did you mean 'iso'?"),
        ('user_id = "doctor"', 'user_id = { column = "doctor", lookup = "doctrs" }',
         "unknown lookup table 'doctrs' (defined: doctors); did you mean 'doctors'?"),
        ('description = "notes"', 'description = { column = "notes", normalize = {} }',
         "mapping.description.normalize: description takes no normalize: it goes with a "
         "lookup of ids, which only assistant_id, customer_id, parent_appointment_id, "
         "room_id, treatments, user_id take"),
        ("[tenants.1]", "[tenants.0]",
         "[tenants.0]: tenant keys must be Flextell tenant ids (whole numbers from 1)"),
    ],
)  # fmt: skip
def test_a_wrong_value_names_what_is_expected_and_the_nearest(
    tmp_path: Path, old: str, new: str, said: str
) -> None:
    (tmp_path / "d.csv").write_text("name,id\nDr. A,101\n", encoding="utf-8")
    cfg = tmp_path / "clinic.toml"
    tables = '\n[lookups.doctors]\nfile = "d.csv"\nkey = "name"\nvalue = "id"\n'
    cfg.write_text(CFG.replace(old, new, 1) + tables, encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", SAMPLE, "-c", str(cfg)])
    assert result.exit_code == 2, result.output
    assert said in result.stderr, result.stderr
    assert "Traceback" not in result.output and "should match pattern" not in result.stderr


def test_verify_seed_without_sample_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "clinic.toml"
    cfg.write_text(CFG, encoding="utf-8")
    result = CliRunner().invoke(cli, ["verify", "-c", str(cfg), "--seed", "3"])
    assert result.exit_code == 2, result.output
    assert "--seed picks the rows of --sample N: give --sample too" in result.stderr


def test_every_problem_of_a_config_is_listed_at_once(tmp_path: Path) -> None:
    """Three problems said as one and "(and 2 more problems)": a run per fix to find them."""
    cfg = _config(tmp_path, '[source]\ndelimeter = ";"\nencodng = "cp1254"\n')
    cfg.write_text(cfg.read_text().replace("[api]\n", "[api]\nconcurency = 2\n", 1))
    result = CliRunner().invoke(cli, ["validate", SAMPLE, "-c", str(cfg)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 3, result.stderr
    for bad in ("concurency", "delimeter", "encodng"):
        assert any(f"unknown key {bad!r}" in line and str(cfg) in line for line in lines), bad
    assert "more problems" not in result.stderr
