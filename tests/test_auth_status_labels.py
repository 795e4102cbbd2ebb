"""`auth status` words (issue 19, item 9): a server that gives no answer has not refused
anything, so the line says "not checked", never "NOT accepted"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.sandbox_process import ROOT
from tests.support.sync import write_config


def test_an_unreachable_server_is_not_reported_as_refusing_the_token(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "worker", "auth", "status", "-c", str(config),
         "--base-url", "http://127.0.0.1:1/api"],
        cwd=ROOT,
        env=dict(os.environ, FLEXTELL_TOKEN="a-static-token"),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert all("not checked, the server gave no answer" in line for line in lines)
    assert "NOT accepted" not in done.stdout and "a-static-token" not in done.stdout


def test_an_unset_token_variable_is_a_config_problem_not_a_refusal(tmp_path: Path) -> None:
    # "NOT accepted", exit 3, as if Flextell had refused it; import says exit 2.
    config = write_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "FLEXTELL_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "worker", "auth", "status", "-c", str(config),
         "--base-url", "http://127.0.0.1:1/api"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "NOT accepted" not in done.stdout
    assert "no credential to offer (fix the config): token: environment variable " in done.stdout
