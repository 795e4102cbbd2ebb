"""What a server says is kept as text a person can read and nothing more: a server that
quotes the request's Authorization header back in its error leaves the token in no file
and no output of the worker (security.md: tokens never appear in ledgers or reports)."""

from __future__ import annotations

from pathlib import Path

from tests.support.recording_proxy import recording_proxy
from tests.support.sandbox_process import Sandbox
from tests.support.sync import TOKEN_ENV, run_cli, sample_rows, write_config, write_csv


def test_a_token_a_server_quotes_back_is_kept_nowhere(tmp_path: Path, sbx: Sandbox) -> None:
    token = TOKEN_ENV["FLEXTELL_TOKEN"]
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    night = write_csv(tmp_path / "n1.csv", columns, rows[:2])
    with recording_proxy(sbx.root, echo="/v1/appointments") as (proxy, _):
        done = run_cli("import", str(night), "-c", str(config), "--base-url", proxy + "/api")
    assert done.exit_code == 1, done.output  # both rows refused (422): failed
    outputs = [done.output]
    for args in (
        ("worklist", "--format", "json"),
        ("report", "--failures", str(tmp_path / "failures.csv")),
        ("report", "--html", str(tmp_path / "page.html")),
    ):
        listed = run_cli(*args, "-c", str(config))
        outputs.append(listed.output)
    assert "rejected for Bearer [redacted]" in outputs[1]  # the rest of what it said stays
    for text in outputs:
        assert token not in text
    for path in tmp_path.iterdir():
        if path.is_file() and path.suffix in ("", ".csv", ".html", ".sqlite", ".sqlite-wal"):
            assert token.encode() not in path.read_bytes(), path
