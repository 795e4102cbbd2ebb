"""The CLI declared once: shared options read the same everywhere, and each command's
result leaves through one path (`worker.commands.output`)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.importing import run_cli, setup
from worker.sandbox import RunningSandbox

# The keys of `import --json-logs`' summary (stdout's last line, stderr's last event)
# as schedulers have read them: a new key is an addition to this list, never a rename.
SUMMARY_KEYS = {
    "run_id",
    "mode",
    "exit_code",
    "ledger",
    "elapsed_s",
    "interrupted",
    "stopped_tenants",
    "totals",
    "tenants",
    "worklist",
    "incomplete",
    "would_adopt",
    "changed",
    "missing_from_source",
}


async def test_import_json_summary_parses_with_the_same_keys(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    s = setup(tmp_path, sandbox.url, n=4)
    for extra, mode in ((["--dry-run"], "dry-run"), ([], "import")):
        result = await run_cli(s.args("--json-logs", *extra))
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert set(summary) == SUMMARY_KEYS
        assert summary["mode"] == mode and summary["totals"]["read"] == 4
        assert set(summary["tenants"]) == {"1", "2"}
        event = json.loads(result.stderr.strip().splitlines()[-1])
        assert event["event"] == "run summary"
        assert {k: event[k] for k in SUMMARY_KEYS} == summary
