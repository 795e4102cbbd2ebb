"""The collector's settings of a command's process (worker.gctune), seen from real processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support.sandbox_process import ROOT


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_entry_point_raises_the_threshold_before_the_cli_loads() -> None:
    # Loading the CLI's modules at CPython's threshold of 700 ran some 130 collections.
    proc = _python(
        """
        import gc, sys
        collections = []
        gc.callbacks.append(lambda phase, info: phase == "stop" and collections.append(1))
        sys.argv = ["flextell-worker", "--version"]
        from worker.__main__ import main
        try:
            main()
        except SystemExit:
            pass
        print("loaded", "worker.cli" in sys.modules, "threshold", gc.get_threshold()[0],
              "collections", len(collections))
        """
    )
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert words[words.index("loaded") + 1] == "True"
    assert int(words[words.index("threshold") + 1]) == 10_000
    assert int(words[words.index("collections") + 1]) <= 5


def test_at_exit_the_process_skips_the_last_collection() -> None:
    # What the freeze at exit costs: a finalizer that only a reference cycle keeps from
    # running does not run. Nothing of the worker's may depend on one (files, the ledger
    # and the logs are closed explicitly); this pins the trade so it is not lost.
    code = """
        import sys
        class Cycle:
            def __del__(self):
                sys.stdout.write("finalized\\n")
                sys.stdout.flush()
        {tune}
        a = Cycle(); a.me = a; del a
        print("exiting", flush=True)
        """
    tuned = _python(code.format(tune="from worker.gctune import tune; tune()"))
    plain = _python(code.format(tune=""))
    assert tuned.returncode == plain.returncode == 0, tuned.stderr + plain.stderr
    assert plain.stdout.split() == ["exiting", "finalized"]
    assert tuned.stdout.split() == ["exiting"]


def test_tuning_twice_registers_one_exit_freeze() -> None:
    proc = _python(
        """
        import atexit, gc
        from worker import gctune
        gctune.tune(); gctune.tune()
        print(atexit._ncallbacks())
        """
    )
    assert proc.returncode == 0, proc.stderr
    baseline = _python("import atexit, worker.gctune; print(atexit._ncallbacks())")
    assert int(proc.stdout) == int(baseline.stdout) + 1
