"""Before a run maps rows for good: read the file once to collect every ``lookup = "api"``
reference, resolve them all (cache, lists, searches, creations), and compile the mapper
that answers from those results. After the run: forget cached ids the API refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from worker.config import Config
from worker.delivery import LaneBuilder, RetryPolicy, http_session
from worker.errors import ConfigError
from worker.ledger import Ledger, Status, api_identity
from worker.ledger.crypto import configured_key
from worker.ledger.target import LedgerTarget, open_ledger
from worker.logs import get_logger
from worker.mapping import MappedRow, Mapper
from worker.mapping.api_fields import ApiBinding, Collector, Gate, uses_api
from worker.mapping.refkeys import FIELD_KIND, RefKey
from worker.references.cache import RefCache
from worker.references.engine import Engine, Outcomes
from worker.source import SourceOptions, open_source

log = get_logger("references")


def config_uses_api(config: Config) -> bool:
    """Whether any mapping field of the config says ``lookup = "api"``."""
    return uses_api(config.mapping, [t.mapping for t in config.tenants.values()])


@dataclass(slots=True)
class Prepared:
    mapper: Mapper
    outcomes: Outcomes
    references: int


def check_readable_twice(config: Config, file: str) -> None:
    if file == "-":
        raise ConfigError(
            f'{config.path}: lookup = "api" reads the file twice (first to collect the names '
            "to look up): give a file, not standard input"
        )


def collect(config: Config, file: str, source_opts: SourceOptions, tenant: int | None) -> Collector:
    """The first pass: every (tenant, reference) the rows name."""
    check_readable_twice(config, file)
    collector = Collector()
    first = Mapper.from_config(
        config, tenant_override=tenant, api=ApiBinding(collector, config.phone_region_for)
    )
    with open_source(file, source_opts) as src:
        if src.columns is not None:
            first.check_columns(
                src.columns, src.where, src.header_hint(first.column_names), src.header_at
            )
        for item in src:
            first.map(item)
    return collector


def rows_needing(
    config: Config, file: str, source_opts: SourceOptions, tenant: int | None, outcomes: Outcomes
) -> set[tuple[int, RefKey]]:
    """The customers to create that some row needs which is otherwise valid (a third read
    of the file, made only when there is a customer to create)."""
    gate = Gate(outcomes.resolved, set(outcomes.pending))
    mapper = Mapper.from_config(
        config, tenant_override=tenant, api=ApiBinding(gate, config.phone_region_for)
    )
    needed: set[tuple[int, RefKey]] = set()
    with open_source(file, source_opts) as src:
        for item in src:
            gate.used.clear()
            if isinstance(mapper.map(item), MappedRow):
                needed |= gate.used
    return needed


async def prepare(
    config: Config,
    file: str,
    source_opts: SourceOptions,
    *,
    tenant: int | None,
    base_url: str | None,
    ledger: Ledger | None,
    create: bool,
    policy: RetryPolicy | None = None,
    lanes: LaneBuilder | None = None,
    only_tenants: frozenset[int] | None = None,
) -> Prepared:
    """Resolve every reference of `file` and compile the mapper that uses the answers.

    `lanes`: the run's own (an import shares each tenant's limiter and pause gate
    with its appointments); without them a session and lanes of their own.
    `only_tenants`: a shared ledger's pass resolves (and creates) only the tenants
    it holds the lease of; the other tenants' rows are not this pass's to map."""
    collector = collect(config, file, source_opts, tenant)
    if only_tenants is not None:
        collector.wanted = {t: r for t, r in collector.wanted.items() if t in only_tenants}
    async with contextlib.AsyncExitStack() as stack:
        if lanes is None:
            session = await stack.enter_async_context(http_session(config, base_url=base_url))
            lanes = LaneBuilder(config, session, base_url=base_url, policy=policy)
        engine = Engine(config, lanes, RefCache(ledger), create=create)
        outcomes = await engine.resolve(collector.wanted)
        if outcomes.pending:
            needed = rows_needing(config, file, source_opts, tenant, outcomes)
            await engine.create_pending(outcomes, needed)
    for tid, report in sorted(outcomes.tenants.items()):
        log.info(
            "references resolved",
            tenant=tid,
            distinct=report.wanted,
            from_cache=report.from_cache,
            resolved=report.resolved,
            not_found=report.not_found,
            ambiguous=report.ambiguous,
            customers_created=report.created,
            customers_would_create=len(report.would_create),
            calls=dict(report.calls),
        )
    mapper = Mapper.from_config(
        config, tenant_override=tenant, api=ApiBinding(outcomes.resolved, config.phone_region_for)
    )
    return Prepared(mapper, outcomes, collector.count)


@contextlib.asynccontextmanager
async def run_ledger(
    config: Config, target: LedgerTarget, *, dry_run: bool, base_url: str | None, rebind: bool
) -> AsyncIterator[Ledger | None]:
    """The ledger the references use: written by an import, only read by a dry run
    (either backend: a SQLite file or a PostgreSQL URL)."""
    if dry_run:
        if isinstance(target, Path) and not await asyncio.to_thread(target.exists):
            yield None
            return
        ledger = await open_ledger(target, lock=False, readonly=True, key=configured_key(config))
    else:
        ledger = await open_ledger(target, key=configured_key(config))
    try:
        await ledger.bind_identity(
            api_identity(config.base_urls(base_url)), config.tenants, rebind=rebind and not dry_run
        )
        yield ledger
    finally:
        await ledger.close()


_REFUSED = "The selected"


def _refused_at(message: str, field: str) -> bool:
    """Whether the API refused `field` ("customer_id = 99: The selected ...", or as
    workers before wrote it, without the id)."""
    return re.search(rf"(?:^|; ){re.escape(field)}(?: = -?\d+)?: {_REFUSED}", message) is not None


async def forget_refused(ledger: Ledger, run_id: int | None) -> int:
    """Rows of this run the API refused with "The selected ... is invalid.": forget the
    cached ids they carried, so the next run looks those references up again."""
    if run_id is None:
        return 0
    cache = RefCache(ledger)
    forgotten = 0
    for entry in await ledger.select(statuses=[Status.FAILED], run_id=run_id):
        message = entry.error_message or ""
        if _REFUSED not in message or not entry.payload_json:
            continue
        payload = json.loads(entry.payload_json)
        for name, kind in FIELD_KIND.items():
            value = payload.get(name)
            if name == "treatments" and isinstance(value, list):
                ids = [v for i, v in enumerate(value) if _refused_at(message, f"treatments.{i}")]
            elif isinstance(value, int) and _refused_at(message, name):
                ids = [value]
            else:
                continue
            forgotten += await cache.forget_ids(entry.tenant, kind, ids)
    if forgotten:
        log.warning("cached references refused by the API are forgotten", entries=forgotten)
    return forgotten
