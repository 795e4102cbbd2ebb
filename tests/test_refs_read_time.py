"""A customer creation whose answer was lost is judged by when the search was sent.

Issue 18, item 3 (customers): an earlier run's POST for a customer lost its
answer; this run's search finds nothing 5 s after that POST (settle 30 s), and
the creation is judged later (other searches took long). The search proves
nothing yet, whatever the time of the judging: the customer is not POSTed again.
A search made past settle does prove it absent: the customer is POSTed once more.
On a fake clock, in-process: the fast tier's test of the settle rule for customers
(the real-time run of it is in tests/test_api_lookups.py).
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

SENT = 1_800_000_000.0
SETTLE = 30.0


@pytest.mark.parametrize(
    ("search_after", "posts", "state", "attempts"),
    [
        pytest.param(5.0, 0, "unknown", 1, id="inside-settle-proves-nothing"),
        pytest.param(SETTLE + 1, 1, "created", 2, id="after-settle-sent-again"),
    ],
)
async def test_a_lost_creation_is_sent_again_only_after_a_search_made_past_settle(
    sandbox_factory: SandboxFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    search_after: float,
    posts: int,
    state: str,
    attempts: int,
) -> None:
    """On an injected clock: the search leaves `search_after` s after the lost POST, and
    the creation is judged much later (other searches took long). Only a search made past
    settle_seconds proves the customer absent; the judging time never does."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN_ALL)
    config = load_config(write_config(tmp_path / "run.toml", settle_seconds=SETTLE))
    ledger = await Ledger.open(tmp_path / "ledger.sqlite")
    cache = RefCache(ledger)
    ref = RefKey("customers", "phone", "+905559998877")
    body = {"first_name": "Ayse", "last_name": "Kaya", "phone_number": ref.key}
    await cache.intent(1, ref.by, ref.key, body, SENT)  # an earlier run's; its answer lost
    times = iter([SENT + search_after])  # the search leaves then ...

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
    assert len([r for r in log if r["method"] == "POST"]) == posts
    assert (creation.state, creation.attempts) == (state, attempts)
    if posts == 0:
        assert isinstance(answer, str) and "not sent again" in answer, answer
    else:
        assert answer == creation.customer_id, answer
