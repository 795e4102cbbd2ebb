"""A path given with its ``~`` unexpanded (quoted, a systemd ExecStart=, a crontab
variable) means the home directory, as it would in a shell: never a directory named
``~`` in the working directory. Real processes, HOME set to a temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.sandbox_process import ROOT

MESSY_CSV = ROOT / "samples" / "messy-export.csv"
MESSY_CFG = ROOT / "config" / "messy-export.toml"


def _worker(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    home, work = tmp / "home", tmp / "work"
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=work,
        env={**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, home, work


def test_output_paths_with_a_tilde_are_written_in_the_home_directory(tmp_path: Path) -> None:
    proc, home, work = _worker(
        tmp_path, "validate", str(MESSY_CSV), "--config", str(MESSY_CFG),
        "--failures", "~/fixes.csv", "--report", "~/validate.json",
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    assert (home / "fixes.csv").is_file(), proc.stdout + proc.stderr
    assert (home / "validate.json").is_file()
    assert not (work / "~").exists()


def test_a_source_and_a_draft_given_with_a_tilde(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    shutil.copy(MESSY_CSV, tmp_path / "home" / "export.csv")
    proc, home, work = _worker(tmp_path, "init", "~/export.csv", "--out", "~/draft.toml")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # its impossible dates: a TODO
    assert (home / "draft.toml").is_file()
    proc, _, _ = _worker(tmp_path, "validate", "~/export.csv", "--config", str(MESSY_CFG))
    assert "not found" not in proc.stderr
    assert proc.returncode in (0, 1), proc.stderr
    assert not (work / "~").exists()


def _validate_piped(tmp_path: Path, path: str) -> subprocess.CompletedProcess[str]:
    """`validate PATH` with the messy sample piped to its standard input."""
    return subprocess.run(
        [sys.executable, "-m", "worker", "validate", path, "--config", str(MESSY_CFG)],
        cwd=tmp_path,
        input=MESSY_CSV.read_text(encoding="utf-8"),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_dash_still_reads_standard_input(tmp_path: Path) -> None:
    proc = _validate_piped(tmp_path, "-")
    assert proc.returncode in (0, 1), proc.stderr
    assert "<stdin>" in proc.stdout + proc.stderr


def test_a_pipe_given_by_its_path_is_refused_with_what_to_give_instead(tmp_path: Path) -> None:
    # `... | validate /dev/stdin` and `validate <(zcat export.csv.gz)` said "file is
    # empty": the reader read the pipe once for its encoding, and found nothing after.
    piped = _validate_piped(tmp_path, "/dev/stdin")
    assert piped.returncode == 2, piped.stderr
    assert "/dev/stdin: a pipe or device, which can be read only once: give `-`" in piped.stderr
    assert "file is empty" not in piped.stderr
    fifo = tmp_path / "export.csv"
    os.mkfifo(fifo)
    named = subprocess.run(
        [sys.executable, "-m", "worker", "init", str(fifo), "--format", "csv"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert named.returncode == 2 and "a pipe or device" in named.stderr, named.stderr
    # Standard input redirected from a file is a file: read as one.
    with MESSY_CSV.open("rb") as fh:
        redirected = subprocess.run(
            [sys.executable, "-m", "worker", "validate", "/dev/stdin", "--config", str(MESSY_CFG)],
            cwd=tmp_path, stdin=fh, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert redirected.returncode == 1 and "52 rows" in redirected.stdout, redirected.stderr
