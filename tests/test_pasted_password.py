"""A short password pasted after ``file:`` (too short to be refused by its shape as a
secret) was shown back in "token file ...: not found"; a path is still named."""

from __future__ import annotations

from pathlib import Path

from tests.support.sync import run_cli, sample_rows, write_config, write_csv


def test_a_missing_token_file_is_named_only_when_it_looks_like_a_path(tmp_path: Path) -> None:
    columns, rows = sample_rows()
    export = write_csv(tmp_path / "n1.csv", columns, rows[:2])
    config = write_config(tmp_path)
    text = config.read_text(encoding="utf-8")
    for spec, shown in (("MySecretPassw0rd!", False), ("secrets/tok.txt", True)):
        config.write_text(text.replace('"env:FLEXTELL_TOKEN"', f'"file:{spec}"'), encoding="utf-8")
        done = run_cli("import", str(export), "-c", str(config))
        assert done.exit_code == 2, done.output
        assert (spec in done.output) is shown, done.output
        if not shown:
            assert "no file named by what follows 'file:' (17 characters, not shown" in done.output
