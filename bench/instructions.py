"""Instructions per row of an import, the durable floor and the bare loop (callgrind).

    python -m bench.instructions [--rows 1500 3000]

Each client (the worker's `import`, `bench.baselines durable`, `bench.baselines post`)
imports the first N rows of the throughput scenario's export into a fresh sandbox
under `valgrind --tool=callgrind`, at two sizes; the fit of the two counts gives the
client's fixed instructions (start-up and end) and its instructions per row. Every
thread of the client counts; the sandbox runs natively. On this VM the counts repeat
within 0.2 % run to run, where times drift by more than the changes worth judging
(docs/bench-and-drills.md, "Start-up or the rows?"). Needs valgrind; some ten minutes.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.generate import OUT, ROOT
from bench.measure import worker_cmd
from bench.run import TENANTS, Bench

CLIENTS = ("worker", "floor", "bare")
_COLLECTED = re.compile(r"Collected : (\d+)")


@dataclass(frozen=True, slots=True)
class Fit:
    """A client's instructions as fixed + per_row * rows."""

    fixed: float
    per_row: float


def collected(stderr: str) -> int:
    """The instruction count callgrind printed at the end of `stderr`."""
    found = _COLLECTED.findall(stderr)
    if not found:
        raise ValueError("callgrind printed no 'Collected' count (did the client start?)")
    return int(found[-1])


def fit(counts: dict[int, int]) -> Fit:
    """The line through two (rows, instructions) points."""
    if len(counts) != 2:
        raise ValueError("two sizes are needed to part fixed from per-row instructions")
    (r1, n1), (r2, n2) = sorted(counts.items())
    per_row = (n2 - n1) / (r2 - r1)
    return Fit(fixed=n1 - per_row * r1, per_row=per_row)


def _head(csv: Path, rows: int, out: Path) -> Path:
    with csv.open(encoding="utf-8") as src, out.open("w", encoding="utf-8") as dst:
        for n, line in enumerate(src):
            if n > rows:
                break
            dst.write(line)
    return out


def _count(b: Bench, client: str, csv: Path, wd: Path) -> int:
    cfg = b.config(wd, concurrency=8)
    with b.sandbox(wd) as sb:
        if client == "worker":
            ledger = str(wd / "ledger.sqlite")
            args = worker_cmd("import", str(csv), "--config", str(cfg), "--base-url",
                              sb.api_url, "--ledger", ledger, "--no-progress")  # fmt: skip
        else:
            kind = "durable" if client == "floor" else "post"
            args = [sys.executable, "-m", "bench.baselines", kind, str(csv),
                    "--url", sb.api_url, "--concurrency", str(3 * 8)]  # fmt: skip
            if kind == "durable":
                args += ["--ledger", str(wd / "floor.sqlite")]
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *args]
        done = subprocess.run(cmd, cwd=ROOT, env=b.env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench.instructions: {client} exited {done.returncode}\n"
                         f"{done.stderr[-2000:]}")  # fmt: skip
    return collected(done.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, nargs=2, default=[1500, 3000])
    parser.add_argument("--clients", default=",".join(CLIENTS))
    args = parser.parse_args(argv)
    if len(set(args.rows)) != 2 or min(args.rows) < 1:
        raise SystemExit("bench.instructions: --rows takes two different sizes of 1 or more")
    if shutil.which("valgrind") is None:
        raise SystemExit("bench.instructions: valgrind is not installed (apt install valgrind)")
    clients = [c for c in args.clients.split(",") if c]
    unknown = sorted(set(clients) - set(CLIENTS))
    if unknown:
        names = ", ".join(CLIENTS)
        raise SystemExit(f"bench.instructions: unknown client {unknown[0]!r} ({names})")
    b = Bench(quick=False)
    source = b.data(6_000)
    fits: dict[str, Fit] = {}
    for client in clients:
        counts: dict[int, int] = {}
        for rows in args.rows:
            wd = b.workdir(f"instructions-{client}-{rows}")
            counts[rows] = _count(b, client, _head(source, rows, wd / "rows.csv"), wd)
            print(f"{client:7} {rows:6} rows  {counts[rows]:>15,} instructions", flush=True)
        fits[client] = fit(counts)
    print(f"\n{'client':7} {'fixed':>10} {'per row':>10}   ({len(TENANTS)} tenants)")
    for client, f in fits.items():
        print(f"{client:7} {f.fixed / 1e6:9,.0f}M {f.per_row / 1e6:9.3f}M")
    summary = {c: {"fixed": round(f.fixed), "per_row": round(f.per_row)} for c, f in fits.items()}
    (OUT / "instructions.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
