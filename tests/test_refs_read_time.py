"""A customer creation whose answer was lost is judged by when the search was sent.

Issue 18, item 3 (customers): an earlier run's POST for a customer lost its
answer; this run's search finds nothing 5 s after that POST (settle 30 s), and
the creation is judged later (other searches took long). The search proves
nothing yet, whatever the time of the judging: the customer is not POSTed again.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.conftest import SandboxFactory
from tests.support.importing import TOKEN_ALL, TOKEN_ENV, requests_log, write_config
from worker.config import load_config
from worker.delivery import LaneBuilder
from worker.ledger import Ledger
from worker.mapping.api_fields import Want
from worker.mapping.refkeys import RefKey
from worker.references.cache import RefCache
from worker.references.engine import Engine

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

SENT = 1_800_000_000.0


async def test_a_search_sent_inside_settle_proves_nothing_however_late_it_is_judged(
    sandbox_factory: SandboxFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN_ALL)
    config = load_config(write_config(tmp_path / "run.toml", settle_seconds=30.0))
    ledger = await Ledger.open(tmp_path / "ledger.sqlite")
    cache = RefCache(ledger)
    ref = RefKey("customers", "phone", "+905559998877")
    body = {"first_name": "Ayse", "last_name": "Kaya", "phone_number": ref.key}
    await cache.intent(1, ref.by, ref.key, body, SENT)  # an earlier run's; its answer lost
    times = iter([SENT + 5.0])  # the search leaves 5 s after that POST ...

    def clock() -> float:
        return next(times, SENT + 100.0)  # ... and everything after it is much later

    try:
        async with sandbox_factory() as sb, aiohttp.ClientSession() as session:
            lanes = LaneBuilder(config, session, base_url=sb.url + "/api")
            engine = Engine(config, lanes, cache, create=True, clock=clock)
            out = await engine.resolve({1: {ref: Want(shown=ref.key, create=body)}})
            await engine.create_pending(out, {(1, ref)})
            log = await requests_log(sb.url)
        (creation,) = await cache.creations()
    finally:
        await ledger.close()
    answer = out.resolved.answers[(1, ref)]
    assert isinstance(answer, str) and "not sent again" in answer, answer
    assert [r["path"] for r in log if r["method"] == "POST"] == []
    assert (creation.state, creation.attempts) == ("unknown", 1)
