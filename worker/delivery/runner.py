"""Running a lane's rows: workers, identity groups, and the re-check queue of settling rows.

Jobs come in through `put` (the caller reads them from the ledger). A worker
takes a job only when its identity group is free, otherwise the job waits in the
group and the worker moves on. A row whose answer may still show (`Settling`)
leaves its worker: a re-check task holds its group, sleeps until the row has
settled and looks again. `close` lets the workers drain, then waits for settling
rows up to `settle_wait` seconds; rows still settling then stay `unknown` for the
next run or `reconcile`, and rows queued behind them stay pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace

from worker.delivery.identity import IdentityGroups
from worker.delivery.lane import TenantLane
from worker.delivery.row import Job, RowDelivery, Settling
from worker.errors import WorkerError
from worker.logs import get_logger

log = get_logger("delivery")


class LaneRunner:
    """Delivers one lane's jobs with `workers` concurrent workers."""

    def __init__(
        self,
        lane: TenantLane,
        delivery: RowDelivery,
        *,
        workers: int,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.lane = lane
        self.delivery = delivery
        self.groups: IdentityGroups[Job] = IdentityGroups()
        self.queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=workers * 2)
        self._should_stop = should_stop
        self._clock = lane.clock
        self._workers = [asyncio.create_task(self._work()) for _ in range(workers)]
        for task in self._workers:
            task.add_done_callback(self._worker_done)
        self._settling: dict[asyncio.Task[None], Job] = {}

    def stopped(self) -> bool:
        """The run is stopping or the lane no longer sends."""
        return self._should_stop() or self.lane.stop_reason is not None

    async def put(self, job: Job) -> None:
        """Queue a job (waits while the workers are busy: the ledger holds the backlog)."""
        self.delivery.ahead(job)
        await self.queue.put(job)

    async def _work(self) -> None:
        while (job := await self.queue.get()) is not None:
            if self.stopped():
                continue  # left pending in the ledger: the next run sends it
            if self.groups.enter(job.identity, job):
                await self._chain(job)

    async def _chain(self, job: Job | None) -> None:
        """Deliver `job`, then each job that waited behind it in its group."""
        while job is not None:
            if self.stopped():
                return
            result = await self.delivery.run(job)
            if isinstance(result, Settling):
                task = asyncio.create_task(self._settle(job, result))
                self._settling[task] = job
                task.add_done_callback(self._settling_done)
                return
            job = self.groups.leave(job.identity)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        """A worker that ended on an exception stops the lane (the run exits 3) and lets
        the feeder go: with its workers gone, nobody would take the next job, the feeder
        would wait for room in the queue for ever and the run would hang."""
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if isinstance(exc, WorkerError):
            reason = str(exc)
        else:
            reason = f"internal error in its delivery ({exc!r}): its rows not sent stay pending"
            log.error("delivery worker failed", tenant=self.lane.id, error=repr(exc))
        self.lane.stop(reason, abort=True)
        while not self.queue.empty():  # left pending in the ledger: the next run sends them
            self.queue.get_nowait()

    def _settling_done(self, task: asyncio.Task[None]) -> None:
        self._settling.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("settling row failed", tenant=self.lane.id, error=repr(task.exception()))

    async def _settle(self, job: Job, settling: Settling) -> None:
        self.lane.stats.settling += 1
        try:
            while True:
                try:
                    await self._clock.sleep(max(0.0, settling.at - self._clock.time()) + 0.05)
                except asyncio.CancelledError:
                    # The ledger's message reaches the front desk through the worklist,
                    # which adds the advice and shows the time in the clinic's zone;
                    # what the row was waiting for goes to the log.
                    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(settling.at))
                    log.info("run ended before the row settled", tenant=self.lane.id,
                             source_key=job.source_key, waiting=settling.reason)  # fmt: skip
                    await self.delivery.give_up(
                        job,
                        settling.unknown_reason
                        or f"the API's answer was lost, and the run ended before {when}, "
                        "from when a lookup can tell",
                    )
                    raise
                result = await self.delivery.run(_resumed(job, settling))
                if not isinstance(result, Settling):
                    break
                settling = result
        finally:
            self.lane.stats.settling -= 1
        await self._chain(self.groups.leave(job.identity))

    async def close(self, settle_wait: float) -> None:
        """Let the workers drain the queue, then give settling rows `settle_wait` seconds."""
        for _ in self._workers:
            await self.queue.put(None)
        await asyncio.gather(*self._workers, return_exceptions=True)
        deadline = self._clock.monotonic() + settle_wait
        while self._settling and not self._should_stop():
            left = deadline - self._clock.monotonic()
            if left <= 0:
                break
            await asyncio.wait(list(self._settling), timeout=min(left, 0.5))
        await self.cancel()

    async def cancel(self) -> None:
        """Stop every worker and settling row now (cancelled rows are recorded unknown)."""
        self.delivery.close()
        tasks = [*self._workers, *self._settling]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def settling(self) -> int:
        """Rows waiting to settle now."""
        return len(self._settling)


def _resumed(job: Job, settling: Settling) -> Job:
    """The job looked at again after settling: from a slot search, and never taken for
    a row this run did not send (an attempt of this run may have landed); its resends
    so far and the answer that made it look go with it."""
    return replace(job, resume=True, again=True, resends=settling.resends, cause=settling.cause,
                   failed_lookups=settling.failed_lookups)  # fmt: skip
