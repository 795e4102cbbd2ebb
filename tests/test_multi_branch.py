"""The multi-branch sample: one config, one run, two tenants; every body the sandbox
receives is checked against samples/multi-branch.expected.jsonl."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.recording_proxy import recording_proxy
from tests.support.sandbox_process import BRANCH_ZONES, Sandbox, sandbox_process
from tests.support.sync import import_file, run_cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "multi-branch.csv"
EXPECTED = ROOT / "samples" / "multi-branch.expected.jsonl"


def setup(tmp_path: Path, encoding: str = "cp1254") -> Path:
    """config/multi-branch.toml beside a copy of its lookups, fast and with its own ledger."""
    shutil.copytree(ROOT / "config" / "lookups", tmp_path / "lookups")
    text = (ROOT / "config" / "multi-branch.toml").read_text(encoding="utf-8")
    text = text.replace('rate_limit = "20/second"', 'rate_limit = "1000/second"\ntimeout = 5')
    text = text.replace('encoding = "cp1254"', f'encoding = "{encoding}"')
    cfg = tmp_path / "multi-branch.toml"
    cfg.write_text(text + '\n[ledger]\npath = "ledger.sqlite"\n', encoding="utf-8")
    return cfg


@pytest.fixture
def sbx(tmp_path: Path) -> Iterator[Sandbox]:
    """A sandbox whose tenants are in the branches' zones, as Flextell would name them
    (the worker refuses to read a clinic's times in another zone)."""
    with sandbox_process(tmp_path, *BRANCH_ZONES) as sb:
        yield sb


def expected() -> list[dict[str, Any]]:
    return [json.loads(x) for x in EXPECTED.read_text(encoding="utf-8").splitlines()]


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def test_one_run_imports_both_branches_with_every_body_as_expected(
    tmp_path: Path, sbx: Any
) -> None:
    cfg = setup(tmp_path)
    want = expected()
    # The preview names each row's key and tenant; its bodies are the expected bytes.
    preview = tmp_path / "preview.jsonl"
    out = run_cli("validate", str(SAMPLE), "-c", str(cfg), "--payloads", str(preview))
    assert out.exit_code == 0, out.output
    got = [json.loads(x) for x in preview.read_text(encoding="utf-8").splitlines()]
    assert [(g["key"], g["tenant"], g["body"]) for g in got] == [
        (w["key"], w["tenant"], w["body"]) for w in want
    ]
    assert {g["line"] for g in got} == set(range(2, len(want) + 2))

    with recording_proxy(sbx.root) as (proxy_root, recorded):
        result, event = import_file(cfg, sbx, SAMPLE, "--base-url", proxy_root + "/api")
    assert result.exit_code == 0, result.output
    assert event["totals"]["created"] == len(want)
    assert event["totals"]["invalid"] == event["totals"]["failed"] == 0
    assert sorted(recorded.bodies("POST", "/v1/appointments")) == sorted(
        canonical(w["body"]) for w in want
    )
    per_tenant = {t: sum(1 for w in want if w["tenant"] == t) for t in (1, 2)}
    stored = sbx.appointments()
    assert {t: sum(1 for a in stored if a["tenant_id"] == t) for t in (1, 2)} == per_tenant


def write_subset(tmp_path: Path, name: str, keep: Any) -> Path:
    with SAMPLE.open(encoding="cp1254", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=";")
        header, rows = list(reader.fieldnames or []), [r for r in reader if keep(r)]
    path = tmp_path / name
    with path.open("w", encoding="cp1254", newline="") as fh:
        writer = csv.DictWriter(fh, header, delimiter=";")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_missing_from_source_counts_only_the_tenants_the_file_covers(
    tmp_path: Path, sbx: Any
) -> None:
    cfg = setup(tmp_path)
    result, _ = import_file(cfg, sbx, SAMPLE)
    assert result.exit_code == 0, result.output
    berlin = [w["key"] for w in expected() if w["tenant"] == 1]
    # Berlin's export of tonight lacks two of its rows: only those are missing.
    dropped = set(berlin[:2])
    part = write_subset(
        tmp_path,
        "berlin.csv",
        lambda r: r["Şube"].lower() == "berlin" and r["Randevu No"] not in dropped,
    )
    _, event = import_file(cfg, sbx, part)
    assert {m["source_key"] for m in event["missing_from_source"]} == dropped
    assert event["totals"]["missing_from_source"] == 2
    # With --tenant, only that tenant's keys can be missing.
    athens = write_subset(tmp_path, "athens.csv", lambda r: r["Şube"].lower() == "atina")
    _, event = import_file(cfg, sbx, athens, "--tenant", "2")
    assert event["totals"]["missing_from_source"] == 0, event["missing_from_source"]


def test_latin1_on_the_cp1254_sample_warns_once_and_auto_picks_cp1254(tmp_path: Path) -> None:
    cfg = setup(tmp_path, encoding="latin-1")
    out = run_cli("validate", str(SAMPLE), "-c", str(cfg))
    assert out.exit_code == 2  # the mapped column names do not match the garbled header
    warnings = [x for x in out.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1, out.stderr
    assert "looks wrong as latin-1; cp1254 fits better" in warnings[0]
    assert "'No;Þube;Hasta' would be 'No;Şube;Hasta'" in warnings[0]
    (tmp_path / "auto").mkdir()
    auto = setup(tmp_path / "auto", encoding="auto")
    out = run_cli("validate", str(SAMPLE), "-c", str(auto))
    assert out.exit_code == 0, out.output
    assert "encoding auto: read as cp1254" in out.stderr
