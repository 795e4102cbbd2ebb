"""A base URL is an API's address and nothing more: one with a query or a fragment (where a
secret can hide as well as in a user part) is refused without being shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.sync import run_cli, sample_rows, write_config, write_csv


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8331/api?token=QwErTy12345", "http://127.0.0.1:8331/api#Hunter2Pass"]
)
def test_a_base_url_with_a_query_or_fragment_is_refused_unshown(tmp_path: Path, url: str) -> None:
    # Accepted before: the URL was printed in every "not sent" line and kept in the ledger.
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    export = write_csv(tmp_path / "n1.csv", columns, rows[:2])
    for args in (("import", "--base-url", url), ("validate", "--online", "--base-url", url)):
        done = run_cli(args[0], str(export), "-c", str(config), *args[1:])
        assert done.exit_code == 2, done.output
        assert "--base-url: the URL must end at the API's path, such as https://host/api" in (
            done.output
        ), done.output
        assert "QwErTy12345" not in done.output and "Hunter2Pass" not in done.output
    assert not (tmp_path / "ledger.sqlite").exists()
