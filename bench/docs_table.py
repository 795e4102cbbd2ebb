"""The figures table of docs/bench-and-drills.md, rewritten from bench/results.json.

`make bench` calls `write_docs` after a full-size run: the rows of the scenarios it
ran are replaced, each stamped with the date and machine it was measured on; the
rows of every other scenario stay as the table had them. Only the text between
`BEGIN` and `END` changes.

    python -m bench.docs_table --scenario rate     (rewrite a row from results.json)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.generate import ROOT

DOC = ROOT / "docs" / "bench-and-drills.md"
RESULTS = ROOT / "bench" / "results.json"
BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
HEADER = (
    "| scenario | metric | worker | baseline | ratio | target | met | measured |",
    "|---|---|---|---|---|---|---|---|",
)


class TableError(ValueError):
    """The doc has no table to rewrite, or the results cannot fill a row."""


def _figure(value: Any) -> str:
    number = float(value)
    return f"{number:,.0f}" if abs(number) >= 1000 else f"{number:,.4g}"


def _cell(text: str) -> str:
    """Text safe inside one table cell."""
    return " ".join(str(text).replace("|", "\\|").split())


def row_of(key: str, entry: Mapping[str, Any], machine: Mapping[str, Any]) -> str:
    """One table row for results.json's entry `key` (a scenario, maybe `+encrypted`)."""
    try:
        date = str(entry["measured_at"])[:10]
        where = f"{machine.get('nproc', '?')} cores, {machine.get('cpu') or '?'}"
        cells = [
            f"`{key}`",
            _cell(entry["metric"]),
            _figure(entry["worker"]),
            _figure(entry["baseline"]),
            f"{float(entry['ratio']):.3f}",
            _cell(entry["target"]),
            "-" if entry["passed"] is None else "met" if entry["passed"] else "**missed**",
            _cell(f"{date}, {where}, Python {machine.get('python', '?')}"),
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise TableError(f"results entry {key!r}: missing or bad field {exc}") from exc
    return "| " + " | ".join(cells) + " |"


def _key_of(line: str) -> str | None:
    """The scenario a table row is for: its first cell, without the backticks."""
    cells = line.strip().strip("|").split("|")
    first = cells[0].strip().strip("`") if cells else ""
    return first or None


def rewrite(doc: str, rows: Mapping[str, str], order: Sequence[str] = ()) -> str:
    """`doc` with the table between the markers holding `rows` (scenario -> row line)
    in place of those scenarios' old rows; other scenarios' rows are kept.

    Rows come in `order` (scenarios not named there last, in the order the table had
    them, then new ones); text outside the markers is returned unchanged.
    """
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < 0 or end < start:
        raise TableError(f"no table to rewrite: expected the lines {BEGIN!r} and {END!r}")
    body = doc[start + len(BEGIN) : end]
    kept: dict[str, str] = {}
    for line in body.splitlines():
        if not line.startswith("|") or line.strip() in HEADER:
            continue
        key = _key_of(line)
        if key is not None:
            kept[key] = line.rstrip()
    merged = kept | dict(rows)
    rank = {name: i for i, name in enumerate(order)}
    keys = sorted(merged, key=lambda k: (rank.get(k.split("+")[0], len(rank)),))
    table = "\n".join([*HEADER, *(merged[k] for k in keys)])
    return doc[: start + len(BEGIN)] + "\n" + table + "\n" + doc[end:]


def rows_from_results(results: Mapping[str, Any], keys: Iterable[str]) -> dict[str, str]:
    """Table rows for `keys` of results.json; quick (smoke-test) entries are refused."""
    scenarios = results.get("scenarios")
    if not isinstance(scenarios, Mapping):
        raise TableError("results have no 'scenarios' object")
    machine = results.get("machine") if isinstance(results.get("machine"), Mapping) else {}
    rows: dict[str, str] = {}
    for key in keys:
        entry = scenarios.get(key)
        if not isinstance(entry, Mapping):
            raise TableError(f"results have no entry {key!r}; run `make bench SCENARIO={key}`")
        if entry.get("quick"):
            raise TableError(f"results entry {key!r} is from a --quick run: not a real figure")
        rows[key] = row_of(key, entry, machine or {})
    return rows


def write_docs(keys: Iterable[str], order: Sequence[str] = (), *,
               results: Path = RESULTS, doc: Path = DOC) -> None:  # fmt: skip
    """Rewrite `doc`'s table rows for `keys` from the results file."""
    data = json.loads(results.read_text(encoding="utf-8"))
    rows = rows_from_results(data, keys)
    text = doc.read_text(encoding="utf-8")
    new = rewrite(text, rows, order)
    if new != text:
        doc.write_text(new, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    from bench.run import SCENARIOS

    parser = argparse.ArgumentParser(description="rewrite the benchmarks table from results.json")
    parser.add_argument("--scenario", action="append", required=True,
                        help="a key of the results file (repeatable)")  # fmt: skip
    parser.add_argument("--results", type=Path, default=RESULTS, help="default: %(default)s")
    parser.add_argument("--doc", type=Path, default=DOC, help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        write_docs(args.scenario, list(SCENARIOS), results=args.results, doc=args.doc)
    except (OSError, ValueError) as exc:  # TableError and bad JSON are ValueErrors
        print(f"bench: {exc}")
        return 1
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
