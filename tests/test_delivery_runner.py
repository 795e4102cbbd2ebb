"""LaneRunner when a delivery worker fails on an exception nobody expected.

A worker task that ended on an exception went unnoticed: with the lane's workers gone
nobody took the next job, the feeder waited for room in the queue for ever, and the
run hung (found with a lost lease connection, whose error killed them). Now the lane
stops with exit 3 and the feeder is let go.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest

from tests.conftest import FakeClock
from tests.support.sandbox_process import Sandbox
from tests.support.sync import run_cli, sample_rows, write_config, write_csv
from worker.commands.import_ import ImportRun
from worker.delivery.lane import TenantLane
from worker.delivery.row import Job, RowDelivery
from worker.delivery.runner import LaneRunner


class _Lane:
    """What LaneRunner reads of a lane."""

    id = 1

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.stop_reason: str | None = None
        self.aborted = False

    def stop(self, reason: str, *, abort: bool = False) -> None:
        if self.stop_reason is None:
            self.stop_reason, self.aborted = reason, abort


class _FailingDelivery:
    """A delivery whose every row fails with an error of the code's own."""

    def __init__(self) -> None:
        self.runs = 0

    def ahead(self, job: Job) -> None:
        del job

    async def run(self, job: Job) -> None:
        del job
        self.runs += 1
        raise RuntimeError("a bug")

    def close(self) -> None:
        pass


async def test_a_worker_that_fails_stops_the_lane_and_lets_the_feeder_go() -> None:
    lane, delivery = _Lane(), _FailingDelivery()
    runner = LaneRunner(cast(TenantLane, lane), cast(RowDelivery, delivery), workers=2)
    jobs = [Job(1, f"K-{n}", "{}", "h", n, f"identity {n}") for n in range(40)]

    async def feed() -> int:
        fed = 0
        for job in jobs:
            if runner.stopped():
                break
            await runner.put(job)
            fed += 1
        return fed

    fed = await asyncio.wait_for(feed(), timeout=5)
    await asyncio.wait_for(runner.close(0.0), timeout=5)
    assert fed < len(jobs)  # the feeder stopped at the lane's stop, not at the last job
    assert lane.aborted
    assert lane.stop_reason is not None
    assert "internal error in its delivery (RuntimeError('a bug'))" in lane.stop_reason
    assert delivery.runs <= 2  # one job a worker, then nothing more was taken


def test_a_lane_that_fails_on_an_error_of_its_own_ends_the_run_with_exit_3(
    tmp_path: Path, sbx: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its rows stay pending: the run said so in the log only, and ended as if none
    were left to send."""

    async def failing(self: ImportRun, lane: TenantLane, runner: LaneRunner) -> None:
        del self, lane, runner
        raise RuntimeError("a bug")

    monkeypatch.setattr(ImportRun, "_feed_lane", failing)
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    file = write_csv(tmp_path / "n1.csv", columns, rows[:3])
    result = run_cli("import", str(file), "-c", str(config), "--base-url", sbx.base_url,
                     "--no-progress")  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "a tenant's delivery failed (RuntimeError('a bug'))" in result.output
