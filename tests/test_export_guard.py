"""Trusting the export (issue 19, item 5): `[sync] max_missing` and `max_age`, the pure
rules in worker.sync, their config, and a stale file through the CLI."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.support.sandbox_process import Sandbox
from tests.support.sync import import_file, run_cli, sample_rows, write_config, write_csv
from worker.config import SyncSection, load_config
from worker.errors import ConfigError
from worker.sync import incomplete_export, stale_export


@pytest.mark.parametrize(
    ("setting", "known", "limit"),
    [("25%", 200, 50), ("25%", 3, 0), ("0%", 100, 0), ("100%", 7, 7), ("50", 10, 50), (12, 9, 12)],
)
def test_max_missing_is_a_share_of_the_created_rows_or_a_count(
    setting: str | int, known: int, limit: int
) -> None:
    assert SyncSection.model_validate({"max_missing": setting}).missing_limit(known) == limit


def test_an_export_lacking_more_than_the_limit_looks_incomplete() -> None:
    assert incomplete_export(50, 200, 50) is None
    why = incomplete_export(51, 200, 50)
    assert why is not None and why.startswith(
        "the export looks incomplete: it lacks 51 of the 200 rows"
    )


def test_a_file_older_than_max_age_looks_stale() -> None:
    assert stale_export(3600, None) is None
    assert stale_export(3600, 7200) is None
    why = stale_export(90_000, 86_400)
    assert why is not None and "25.0 h ago" in why and "max_age is 24.0 h" in why


@pytest.mark.parametrize("bad", ['"lots"', '"150%"', "-3"])
def test_a_bad_max_missing_is_refused_with_what_was_expected(tmp_path: Path, bad: str) -> None:
    config = write_config(tmp_path)
    with config.open("a", encoding="utf-8") as fh:
        fh.write(f"\n[sync]\nmax_missing = {bad}\n")
    with pytest.raises(ConfigError, match=r"sync\.max_missing: max_missing"):
        load_config(config)


def _six_created(
    tmp_path: Path, sbx: Sandbox, sync: str
) -> tuple[Path, list[str], list[dict[str, str]]]:
    """A config with `sync` in its [sync], and night 1: six rows created."""
    config = write_config(tmp_path)
    with config.open("a", encoding="utf-8") as fh:
        fh.write(f"\n[sync]\n{sync}\n")
    columns, rows = sample_rows()
    night = write_csv(tmp_path / "n1.csv", columns, rows[:6])
    assert import_file(config, sbx, night)[0].exit_code == 0
    return config, columns, rows


def test_a_stale_export_records_nothing_missing_and_exits_1(tmp_path: Path, sbx: Sandbox) -> None:
    config, columns, rows = _six_created(tmp_path, sbx, "max_age = 3600")
    old = write_csv(tmp_path / "n2.csv", columns, rows[:4])  # yesterday's file, two fewer
    day_ago = time.time() - 86_400
    os.utime(old, (day_ago, day_ago))
    result, summary = import_file(config, sbx, old)
    assert result.exit_code == 1
    assert summary["incomplete"]["1"].startswith("the export looks stale")
    assert summary["totals"]["missing_from_source"] == 0
    listed = run_cli("worklist", "-c", str(config), "--format", "json")
    assert listed.stdout.strip() == "[]"


def test_an_export_with_no_rows_is_not_trusted_and_the_open_items_are_counted(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A nightly export that failed after its header row lacks every row created
    before: exit 1 with why, nothing recorded missing, and the summary counts the
    items still open instead of saying 0 (a new-user walkthrough got exit 0 and
    "0 open" from a ledger with 9 open items)."""
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    bad = dict(rows[0], doctor_id="999")  # refused by the API: an open worklist item
    first, _ = import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, [bad, *rows[1:6]]))
    assert first.exit_code == 1
    result, summary = import_file(config, sbx, write_csv(tmp_path / "n2.csv", columns, []))
    assert result.exit_code == 1, result.output
    why = summary["incomplete"]["1"]
    assert why.startswith("the export has no rows") and "5 rows created before" in why
    assert summary["totals"]["missing_from_source"] == 0
    assert summary["worklist"]["open"] == 1
    listed = run_cli("worklist", "-c", str(config), "--format", "json")
    assert '"missing_from_source"' not in listed.stdout


def test_an_export_of_a_header_and_a_line_of_no_tenant_has_no_rows(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A failed export's header and its totals line (no skip rule): the line, a row of no
    tenant, made it an export with rows, and under max_missing = "100%" every created
    row was recorded missing."""
    config, columns, _ = _six_created(tmp_path, sbx, 'max_missing = "100%"')
    night = write_csv(tmp_path / "n2.csv", columns, [])
    night.write_text(night.read_text(encoding="utf-8") + "TOPLAM,0 randevu\n", encoding="utf-8")
    for dry in (("--dry-run",), ()):
        result, summary = import_file(config, sbx, night, *dry)
        assert result.exit_code == 1, result.output
        assert summary["incomplete"]["1"].startswith("the export has no rows"), summary
        assert summary["totals"]["missing_from_source"] == 0


def test_an_export_that_ends_mid_row_is_trusted_for_no_tenant(tmp_path: Path, sbx: Sandbox) -> None:
    """A copy that stopped in the last row of a tenant: the row after the cut lacked from
    an export trusted all the same (one of eight, under max_missing), and the front desk
    was asked whether a real visit had been cancelled."""
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    ours = [r for r in rows if r["clinic"] == "1"][:8]
    assert import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, ours))[0].exit_code == 0
    full = write_csv(tmp_path / "full.csv", columns, ours).read_text(encoding="utf-8")
    cut = tmp_path / "n2.csv"
    cut.write_text(full[: full.rindex(ours[-1]["appointment_id"]) + 5], encoding="utf-8")
    for dry in (("--dry-run",), ()):
        result, summary = import_file(config, sbx, cut, *dry)
        assert result.exit_code == 1, result.output
        assert summary["incomplete"]["1"].startswith("the export looks cut short: its last line")
        assert "0" not in summary["incomplete"], summary["incomplete"]  # no "tenant 0"
        assert summary["totals"]["missing_from_source"] == 0
    assert [i["kind"] for i in json.loads(run_cli("worklist", "-c", str(config), "--format",
                                                  "json").stdout)] == ["invalid"]  # fmt: skip
    # A totals line a skip rule takes, with no line break after it (as a spreadsheet
    # saves it): a whole, known row, no cut; the export was distrusted every night.
    with config.open("a", encoding="utf-8") as fh:
        fh.write('\n[[source.skip_rows]]\ncolumn = "appointment_id"\nmatches = "^TOPLAM$"\n')
    totals = tmp_path / "n3.csv"
    totals.write_text(full + "TOPLAM,8 randevu", encoding="utf-8")
    result, summary = import_file(config, sbx, totals)
    assert result.exit_code == 0, result.output
    assert (summary["incomplete"], summary["skipped_rows"]) == ({}, 1)


def _two_tenants(
    tmp_path: Path, sbx: Sandbox, config: Path
) -> tuple[list[str], list[dict[str, str]]]:
    """Night 1: four rows of each tenant created; returns the columns and tenant 1's rows."""
    columns, rows = sample_rows()
    kad = [r for r in rows if r["clinic"] == "1"][:4]
    bes = [r for r in rows if r["clinic"] == "2"][:4]
    first, _ = import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, kad + bes))
    assert first.exit_code == 0, first.output
    return columns, kad


def test_a_full_export_that_left_a_clinic_out_is_not_trusted_for_it(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """An operator's walkthrough: an export with only tenant 1's rows said "0 open" and
    exit 0, though tenant 2 lacked every row created before. A configured tenant the
    full export has no row of lacks all of them: not trusted, named, exit 1."""
    config = write_config(tmp_path)
    columns, kad = _two_tenants(tmp_path, sbx, config)
    only_kad = write_csv(tmp_path / "n2.csv", columns, kad)
    result, summary = import_file(config, sbx, only_kad)
    assert result.exit_code == 1, result.output
    assert set(summary["incomplete"]) == {"2"}
    assert summary["incomplete"]["2"].startswith(
        "the export looks incomplete: it lacks 4 of the 4 rows created before"
    )
    assert summary["totals"]["missing_from_source"] == 0
    shown = run_cli("import", str(only_kad), "-c", str(config), "--base-url", sbx.base_url)
    assert shown.exit_code == 1
    assert shown.stdout.startswith(
        "needs a person: the export was not trusted for tenant 2 (no rows); 0 new tonight"
    )
    listed = run_cli("worklist", "-c", str(config), "--format", "json")
    assert listed.stdout.strip() == "[]"
    assert "did not trust the export for tenant 2 (no rows)" in listed.stderr
    # A run not meant to read tenant 2 says nothing of it.
    for scoped in (["--tenant", "1"], ["--partial"]):
        result, summary = import_file(config, sbx, only_kad, *scoped)
        assert result.exit_code == 0, (scoped, result.output)
        assert summary["incomplete"] == {}


def test_a_clinic_left_out_counts_as_lacking_all_its_rows_for_max_missing(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """`max_missing = "100%"` trusts any export: the left-out clinic's rows are missing,
    and the worklist no longer warns that an earlier run did not trust its export."""
    config = write_config(tmp_path)
    columns, kad = _two_tenants(tmp_path, sbx, config)
    only_kad = write_csv(tmp_path / "n2.csv", columns, kad)
    assert import_file(config, sbx, only_kad)[0].exit_code == 1
    with config.open("a", encoding="utf-8") as fh:
        fh.write('\n[sync]\nmax_missing = "100%"\n')
    result, summary = import_file(config, sbx, only_kad)
    assert result.exit_code == 1, result.output
    assert summary["incomplete"] == {}
    assert summary["tenants"]["2"]["missing_from_source"] == 4
    assert summary["worklist"]["open"] == 4
    listed = run_cli("worklist", "-c", str(config), "--format", "json")
    assert "did not trust" not in listed.stderr
    assert [item["kind"] for item in json.loads(listed.stdout)] == ["missing"] * 4


def test_max_missing_is_a_share_of_the_rows_created_before_this_run(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A new user's night 2: two of night 1's four rows gone and four new rows. 25% of
    the four created before allows 1 missing: not trusted, as the dry run said. The real
    run counted the four it had just created too (25% of 8 = 2) and trusted it."""
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    kad = [r for r in rows if r["clinic"] == "1"]
    first, _ = import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, kad[:4]))
    assert first.exit_code == 0, first.output
    night2 = write_csv(tmp_path / "n2.csv", columns, kad[:2] + kad[4:8])
    _, dry_summary = import_file(config, sbx, night2, "--dry-run")
    result, summary = import_file(config, sbx, night2)
    for why in (dry_summary["incomplete"]["1"], summary["incomplete"]["1"]):
        assert why.startswith("the export looks incomplete: it lacks 2 of the 4 rows created")
    assert result.exit_code == 1, result.output
    assert summary["totals"]["created"] == 4
    assert summary["totals"]["missing_from_source"] == 0


def test_a_full_export_judged_by_a_run_that_then_stopped_ends_the_untrusted_note(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A night that left a clinic out (not trusted), then a full export whose run
    stopped when the API refused tenant 2's new row (exit 3) after it had judged both
    tenants' exports: the worklist kept saying 'run 2 did not trust the export ... this
    list can lack rows' until a run finished."""
    from tests.conftest import TOKEN_T1

    config = write_config(tmp_path)
    columns, kad = _two_tenants(tmp_path, sbx, config)
    assert import_file(config, sbx, write_csv(tmp_path / "n2.csv", columns, kad))[0].exit_code
    _, rows = sample_rows()
    everything = kad + [r for r in rows if r["clinic"] == "2"][:5]  # one new row of tenant 2
    refused = run_cli(
        "import", str(write_csv(tmp_path / "n3.csv", columns, everything)), "-c", str(config),
        "--base-url", sbx.base_url, "--no-progress", env={"FLEXTELL_TOKEN": TOKEN_T1},
    )  # fmt: skip
    assert refused.exit_code == 3, refused.output
    listed = run_cli("worklist", "-c", str(config), "--format", "json")
    assert "did not trust the export" not in listed.stderr, listed.stderr


def test_a_missing_row_of_a_file_not_trusted_for_another_branch_says_so(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """One file for two branches, cut at half: tenant 2 lacked more than max_missing and
    was not trusted, but tenant 1 lacked 1 of 10, under the limit, and its last row was
    recorded missing with "cancel appointment N" and nothing else beside that verdict."""
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    one = [r for r in rows if r["clinic"] == "1"][:10]
    two = [r for r in rows if r["clinic"] == "2"][:10]
    first = write_csv(tmp_path / "n1.csv", columns, one + two)
    assert import_file(config, sbx, first)[0].exit_code == 0
    cut = write_csv(tmp_path / "n2.csv", columns, one[:9] + two[:4])
    result, summary = import_file(config, sbx, cut)
    assert result.exit_code == 1, result.output
    assert summary["incomplete"]["2"].startswith("the export looks incomplete")
    [item] = json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout)
    assert item["source_key"] == one[9]["appointment_id"] and item["kind"] == "missing"
    assert "this export was not trusted for tenant(s) 2" in item["reason"]
    assert "if the file was cut short, this visit is not gone" in item["reason"]
    # The night's summary says so beside the missing row too (what cron mails).
    told = run_cli("import", str(cut), "-c", str(config), "--base-url", sbx.base_url,
                   "--no-progress").output  # fmt: skip
    [line] = [x for x in told.splitlines() if "created row(s) missing" in x]
    assert "but this export was not trusted for tenant(s) 2" in line, line


def test_an_exports_own_keys_shaped_like_a_kept_aside_row_count_for_trust(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """Keys such as `BES-0001~reused1` from the export itself were taken for rows relink
    had kept aside: a cut export lacking three of four was trusted, and their items told
    of a relink that never ran."""
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    four = [dict(r) for r in rows if r["clinic"] == "1"][:4]
    for n, row in enumerate(four[:3], 1):
        row["appointment_id"] = f"BES-000{n}~reused{n}"
    assert import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, four))[0].exit_code == 0
    result, summary = import_file(config, sbx, write_csv(tmp_path / "n2.csv", columns, four[3:]))
    assert result.exit_code == 1, result.output
    assert summary["incomplete"]["1"].startswith("the export looks incomplete: it lacks 3 of")
