"""`make demo`: the main job end to end on embedded defaults.

Starts the sandbox on a free port, imports samples/appointments.csv for two
tenants into a fresh SQLite ledger, prints the summary, runs the same command
again to show that a re-run creates nothing twice, writes the HTML report of
the first import (.state/demo-report.html), then stops the sandbox. Each
step runs the real CLI in a subprocess and prints the command first.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".state"


def _say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def _run(args: list[str], env: dict[str, str]) -> int:
    shown = " ".join(shlex.quote(a) for a in ["flextell-worker", *args])
    print(f"$ {shown}", flush=True)
    return subprocess.call([sys.executable, "-m", "worker", *args], cwd=ROOT, env=env)  # noqa: S603


def _start_sandbox(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port_file = Path(tempfile.mkdtemp()) / "port"
    print("$ flextell-worker sandbox --port 0", flush=True)
    proc = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "worker", "sandbox", "--port", "0", "--port-file", str(port_file)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return proc, f"http://127.0.0.1:{port_file.read_text().strip()}/api"
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("demo: the sandbox did not start")


def main() -> int:
    """Run the demo; 0 when the import, its re-run, verify and both reports exit 0.

    (The validate step's exit 1 is the point: the messy export has bad rows.)
    """
    # The sandbox's public demo token, not a secret.
    env = dict(os.environ, FLEXTELL_TOKEN="sandbox-token-all")  # noqa: S106
    STATE.mkdir(exist_ok=True)
    ledger = STATE / "demo-ledger.sqlite"
    page = STATE / "demo-report.html"
    for stale in STATE.glob("demo-ledger.sqlite*"):
        stale.unlink()
    _say("1. Start the Flextell sandbox (tenants 1 and 2, in memory)")
    sandbox, api = _start_sandbox(env)
    print(f"sandbox listening on {api}")
    try:
        _say("2. Check a messy export from another clinic system (sends nothing)")
        _run(
            [
                "validate",
                "samples/messy-export.csv",
                "--config",
                "config/messy-export.toml",
                "--max-errors",
                "5",
                "--no-progress",
            ],
            env,
        )
        common = ["--config", "config/demo.toml", "--base-url", api, "--ledger", str(ledger)]
        _say("3. Import samples/appointments.csv into both tenants")
        codes = [_run(["import", "samples/appointments.csv", *common], env)]
        _say("4. Run it again: everything is already created, nothing is sent twice")
        codes.append(_run(["import", "samples/appointments.csv", *common], env))
        _say("5. Verify every created appointment against the API")
        codes.append(
            _run(
                [
                    "verify",
                    "--config",
                    "config/demo.toml",
                    "--base-url",
                    api,
                    "--ledger",
                    str(ledger),
                    "--sample",
                    "20",
                ],
                env,
            )
        )
        _say("6. The ledger's runs and counts")
        codes.append(_run(["report", "--ledger", str(ledger)], env))
        _say("7. The first import as a page to send (open it in a browser; works offline)")
        codes.append(
            _run(
                [
                    *("report", "--ledger", str(ledger), "-c", "config/demo.toml"),
                    *("--run", "1", "--html", str(page)),
                ],
                env,
            )
        )
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    failed = [c for c in codes if c != 0]
    _say("Done" if not failed else f"A step failed (exit codes {codes})")
    print(f"ledger: {ledger}")
    print(f"report: {page}")
    return failed[0] if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
