"""What a command's process loads: a CSV run leaves the workbook readers unloaded.

python-calamine and xlrd, and the modules that read error cells out of a
workbook, cost every start some 10-15 ms (import time) that a CSV or JSONL run
never uses; `worker.source.reader` loads them when a sheet is opened. Seen from a
real process running the CLI.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support.sandbox_process import ROOT

_WORKBOOK_MODULES = ("python_calamine", "xlrd", "worker.source.sheet", "worker.source.xls_errors")


def _validate(path: str, config: str) -> list[str]:
    """Run `validate PATH --config CONFIG` in a fresh process (with the import command's
    modules loaded as well); the workbook modules it loaded."""
    code = f"""
        import sys
        sys.argv = ["flextell-worker", "validate", {path!r}, "--config", {config!r}]
        from worker.__main__ import main
        import worker.commands.import_  # what `import` loads before it reads a row
        try:
            main()
        except SystemExit as exc:
            code = exc.code
        print("exit", code)
        print("loaded", *[m for m in {_WORKBOOK_MODULES!r} if m in sys.modules])
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stdout.splitlines()
    assert lines[-2] == "exit 0", proc.stdout + proc.stderr
    return lines[-1].split()[1:]


def test_a_csv_run_does_not_load_the_workbook_readers() -> None:
    assert _validate("samples/appointments.csv", "config/demo.toml") == []


def test_a_workbook_run_loads_them_when_the_sheet_is_opened() -> None:
    loaded = _validate("samples/appointments.xlsx", "config/appointments-xlsx.toml")
    assert set(loaded) == set(_WORKBOOK_MODULES)
