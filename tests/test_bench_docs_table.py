"""`make bench` writes the figures table of docs/bench-and-drills.md (bench/docs_table.py):
the rows of the scenarios run are replaced, the others kept, nothing outside the markers
touched; quick figures never reach the page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.docs_table import BEGIN, DOC, END, HEADER, TableError, rewrite, rows_from_results
from bench.docs_table import main as docs_table_main
from bench.run import SCENARIOS

MACHINE = {"nproc": 2, "cpu": "AMD EPYC 7B13", "python": "3.11.7"}
OLD_RATE = "| `rate` | req/s | 57.6 | 60 | 0.96 | >= 0.95 | met | 2026-11-22, 2 cores |"
OLD_MEMORY = "| `memory` | peak RSS MB | 74.7 | | | < 150 MB | met | 2026-11-22, 2 cores |"
BEFORE = "# Benchmarks\n\nText before | with a pipe.\n\n"
AFTER = "\n\nWhy `rate` is met: prose | that stays.\n"
DOC_TEXT = BEFORE + "\n".join([BEGIN, *HEADER, OLD_RATE, OLD_MEMORY, END]) + AFTER


def entry(scenario: str, worker: float, passed: bool = True, quick: bool = False) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "metric": "rows/s",
        "worker": worker,
        "baseline": 2214.1,
        "ratio": round(worker / 2214.1, 3),
        "target": ">= 0.6x",
        "passed": passed,
        "details": {},
        "measured_at": "2026-12-06T10:01:02+0000",
        "quick": quick,
    }


def results(**entries: dict[str, Any]) -> dict[str, Any]:
    return {"machine": MACHINE, "scenarios": entries}


def table_rows(text: str) -> list[str]:
    body = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    return [line for line in body.strip().splitlines() if line not in HEADER]


def test_the_rows_run_are_replaced_the_others_kept_and_the_text_around_untouched() -> None:
    data = results(throughput=entry("throughput", 863.5, passed=False), rate=entry("rate", 59.9))
    new = rewrite(DOC_TEXT, rows_from_results(data, ["throughput", "rate"]), list(SCENARIOS))
    assert new.startswith(BEFORE + BEGIN + "\n") and new.endswith(END + AFTER)
    rows = table_rows(new)
    # In the scenarios' order: throughput, rate (new), memory (kept as it was).
    assert [r.split("|")[1].strip() for r in rows] == ["`throughput`", "`rate`", "`memory`"]
    throughput, rate, memory = rows
    assert throughput == (
        "| `throughput` | rows/s | 863.5 | 2,214 | 0.390 | >= 0.6x | **missed** | "
        "2026-12-06, 2 cores, AMD EPYC 7B13, Python 3.11.7 |"
    )
    assert "| 59.9 |" in rate and "2026-12-06" in rate and OLD_RATE not in new
    assert memory == OLD_MEMORY


def test_rewriting_twice_with_the_same_results_changes_nothing() -> None:
    rows = rows_from_results(results(rate=entry("rate", 59.9)), ["rate"])
    once = rewrite(DOC_TEXT, rows, list(SCENARIOS))
    assert rewrite(once, rows, list(SCENARIOS)) == once


def test_an_encrypted_run_gets_its_own_row_beside_the_plain_one() -> None:
    data = results(**{"rate+encrypted": entry("rate", 40.0)})
    new = rewrite(DOC_TEXT, rows_from_results(data, ["rate+encrypted"]), list(SCENARIOS))
    keys = [r.split("|")[1].strip() for r in table_rows(new)]
    assert keys == ["`rate`", "`rate+encrypted`", "`memory`"]
    assert OLD_RATE in new


def test_quick_figures_and_missing_entries_are_refused_with_the_reason() -> None:
    with pytest.raises(TableError, match=r"'rate' is from a --quick run"):
        rows_from_results(results(rate=entry("rate", 1.0, quick=True)), ["rate"])
    with pytest.raises(TableError, match=r"no entry 'latency'; run `make bench SCENARIO=latency`"):
        rows_from_results(results(rate=entry("rate", 1.0)), ["latency"])


def test_a_page_without_the_markers_is_refused() -> None:
    with pytest.raises(TableError, match="no table to rewrite"):
        rewrite(BEFORE + AFTER, {}, ())


def test_the_docs_page_has_the_table_and_every_row_names_a_scenario() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert rewrite(text, {}, list(SCENARIOS)) == text  # already in the written form
    known = set(SCENARIOS)
    for row in table_rows(text):
        assert row.split("|")[1].strip().strip("`").split("+")[0] in known, row


def test_the_command_rewrites_the_page_from_results_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc, res = tmp_path / "bench.md", tmp_path / "results.json"
    doc.write_text(DOC_TEXT, encoding="utf-8")
    res.write_text(json.dumps(results(rate=entry("rate", 59.9))), encoding="utf-8")
    paths = ["--doc", str(doc), "--results", str(res)]
    assert docs_table_main(["--scenario", "rate", *paths]) == 0
    assert "| `rate` | rows/s | 59.9 |" in doc.read_text(encoding="utf-8")
    assert docs_table_main(["--scenario", "latency", *paths]) == 1
    assert "bench: results have no entry 'latency'" in capsys.readouterr().out


def test_a_diagnosis_without_a_target_is_neither_met_nor_missed() -> None:
    diagnosis = entry("own-cost", 1089.0) | {"target": "none (a diagnosis)", "passed": None}
    new = rewrite(DOC_TEXT, rows_from_results(results(**{"own-cost": diagnosis}), ["own-cost"]),
                  list(SCENARIOS))  # fmt: skip
    (row,) = [r for r in table_rows(new) if "`own-cost`" in r]
    assert "| none (a diagnosis) | - |" in row
