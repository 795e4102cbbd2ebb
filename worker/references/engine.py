"""Resolve what a file names (customers, users, treatments, rooms) into ids, per tenant.

Small lists (users, treatments, rooms) are fetched whole, once per run, unless
every key the file needs is in the cache and fresh. Customers are searched once
per distinct key, concurrently within the tenant's lane, and matched exactly
(the search is a substring: a candidate counts only when its own field gives the
same key). One match is an id; none or several are messages the rows carry.

With ``create_missing``, a customer nobody has is created once: the intent goes
to the ledger before the POST, and an answer that is lost is followed by the
same search instead of a second POST; what the search cannot find
stays ``unknown`` until a later run finds it or the settle time has passed.
Lists, searches and creations share one tenant report and cache.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from worker.api.client import Outcome
from worker.config import Config
from worker.delivery import LaneBuilder
from worker.logs import get_logger
from worker.mapping.api_fields import NOT_CREATED, WOULD_CREATE, Resolved, Want
from worker.mapping.names import NameRule
from worker.mapping.refkeys import BY, RefKey, object_keys, object_label, search_term
from worker.mapping.text import norm_key
from worker.references.api import RefApi, RefCallError
from worker.references.cache import Cached, RefCache
from worker.suggest import names_hint

log = get_logger("references")

_SINGULAR = {"customers": "customer", "users": "user", "treatments": "treatment", "rooms": "room"}
_BY_LABEL = {"phone": "phone", "email": "e-mail", "identity_number": "identity number"}
_GENDERS = {
    "female": "female",
    "f": "female",
    "k": "female",
    "kadin": "female",
    "woman": "female",
    "male": "male",
    "m": "male",
    "e": "male",
    "erkek": "male",
    "man": "male",
    "other": "other",
    "diger": "other",
}
_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%d-%m-%Y")
_FOLD = str.maketrans({"ğ": "g", "ü": "u", "ş": "s", "ö": "o", "ç": "c"})
MAX_SHOWN_IDS = 10


# Messages never carry the value itself (a patient's phone is patient data): the row
# error's value does, and the outputs show or withhold it by their own rules.


def _about(ref: RefKey) -> str:
    return f"{_SINGULAR[ref.kind]} with this {_BY_LABEL.get(ref.by, ref.by)}"


def not_found(ref: RefKey, tenant: int) -> str:
    return f"no {_about(ref)} in tenant {tenant} (resolved through the API)"


def ambiguous(ref: RefKey, tenant: int, ids: tuple[int, ...]) -> str:
    shown = ", ".join(map(str, ids[:MAX_SHOWN_IDS])) + (", ..." if len(ids) > MAX_SHOWN_IDS else "")
    return (
        f"{len(ids)} {ref.kind} of tenant {tenant} have this {_BY_LABEL.get(ref.by, ref.by)} "
        f"(ids {shown}); nothing is guessed: make it unique in Flextell or map it with a "
        "lookup table"
    )


@dataclass(slots=True)
class TenantReport:
    """What resolving one tenant's references did."""

    wanted: int = 0
    from_cache: int = 0
    resolved: int = 0
    not_found: int = 0
    ambiguous: int = 0
    created: int = 0
    adopted_after_lost_answer: int = 0
    would_create: list[dict[str, Any]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Outcomes:
    resolved: Resolved = field(default_factory=Resolved)
    tenants: dict[int, TenantReport] = field(default_factory=dict)
    pending: dict[tuple[int, RefKey], Want] = field(default_factory=dict)
    """Customers nobody has, with create_missing: see `Engine.create_pending`."""

    def calls(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for report in self.tenants.values():
            total.update(report.calls)
        return total


class Engine:
    """Resolves wanted references; `create` False (dry run, validate) creates nothing."""

    def __init__(
        self,
        config: Config,
        lanes: LaneBuilder,
        cache: RefCache,
        *,
        create: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.lanes = lanes
        self.cache = cache
        self.create = create
        self.clock = clock
        self.max_age = config.api.reference_max_age
        self.settle = config.api.settle
        self._apis: dict[int, tuple[RefApi, str | None]] = {}
        # When each customer search was sent (the ledger's clock): an earlier creation is
        # judged absent by what that search read, never by when the judging happens.
        self._searched: dict[tuple[int, RefKey], float] = {}

    def fresh(self, cached: Cached | None) -> bool:
        return (
            cached is not None
            and self.max_age > 0
            and self.clock() - cached.fetched_at < self.max_age
        )

    async def resolve(self, wanted: dict[int, dict[RefKey, Want]]) -> Outcomes:
        out = Outcomes()
        await asyncio.gather(*(self._tenant(t, refs, out) for t, refs in sorted(wanted.items())))
        return out

    async def _tenant(self, tenant: int, refs: dict[RefKey, Want], out: Outcomes) -> None:
        report = out.tenants[tenant] = TenantReport(wanted=len(refs))
        answers = out.resolved.answers
        lane = await self.lanes.lane(tenant)
        api = RefApi(lane)
        cached = await self.cache.load(tenant)
        region = self.config.phone_region_for(tenant)
        by_kind: dict[str, list[RefKey]] = {}
        for ref in refs:
            by_kind.setdefault(ref.kind, []).append(ref)

        def answer(ref: RefKey, ids: tuple[int, ...]) -> None:
            if len(ids) == 1:
                answers[(tenant, ref)] = ids[0]
                report.resolved += 1
            elif ids:
                answers[(tenant, ref)] = ambiguous(ref, tenant, ids)
                report.ambiguous += 1
            else:
                answers[(tenant, ref)] = not_found(ref, tenant)
                report.not_found += 1

        try:
            for kind in ("users", "treatments", "rooms"):
                needed = by_kind.get(kind, [])
                if not needed:
                    continue
                if all(self.fresh(cached.get(r)) for r in needed):
                    report.from_cache += len(needed)
                    for ref in needed:
                        answer(ref, cached[ref].ids)
                    continue
                index, names = await self._list(api, tenant, kind, region, {r.rule for r in needed})
                for ref in needed:
                    answer(ref, index.get(ref, ()))
                    if not index.get(ref) and kind != "customers":
                        answers[(tenant, ref)] = str(answers[(tenant, ref)]) + names_hint(
                            refs[ref].shown, names
                        )
            customers = by_kind.get("customers", [])
            todo: list[RefKey] = []
            for ref in customers:
                hit = cached.get(ref)
                if self.fresh(hit) and hit is not None and len(hit.ids) == 1:
                    report.from_cache += 1
                    answer(ref, hit.ids)
                else:
                    todo.append(ref)
            found = await asyncio.gather(*(self._search(api, r, region) for r in todo))
            now = self.clock()
            await self.cache.store(
                tenant,
                [(r, ids, None) for r, ids in zip(todo, found, strict=True) if len(ids) == 1],
                now,
            )
            for ref, ids in zip(todo, found, strict=True):
                if not ids and refs[ref].create is not None:
                    out.pending[(tenant, ref)] = refs[ref]  # created later, if a row needs it
                else:
                    answer(ref, ids)
        except RefCallError as exc:
            self._failed(tenant, refs, exc, report, answers)
        finally:
            report.calls = api.calls
            self._apis[tenant] = (api, region)

    def _failed(
        self,
        tenant: int,
        refs: Iterable[RefKey],
        exc: RefCallError,
        report: TenantReport,
        answers: dict[tuple[int, RefKey], int | str],
    ) -> None:
        message = f"tenant {tenant}: resolving references failed: {exc}"
        report.errors.append(message)
        log.error("resolving references failed", tenant=tenant, error=str(exc))
        for ref in refs:
            answers.setdefault((tenant, ref), f"could not be resolved: {exc}")

    async def create_pending(self, out: Outcomes, needed: set[tuple[int, RefKey]]) -> None:
        """Create (or, without `create`, report) the missing customers some valid row needs;
        the others get a message: their rows fail for other reasons already."""
        answers = out.resolved.answers
        jobs = []
        for (tenant, ref), want in sorted(out.pending.items(), key=lambda kv: kv[0][0]):
            report = out.tenants[tenant]
            if (tenant, ref) not in needed:
                answers[(tenant, ref)] = f"no {_about(ref)} in tenant {tenant}; {NOT_CREATED}"
            elif not self.create:
                answers[(tenant, ref)] = (
                    f"no {_about(ref)} in tenant {tenant}: {WOULD_CREATE}; this run creates nothing"
                )
                report.would_create.append(
                    {"tenant": tenant, "by": ref.by, "key": ref.key, **(want.create or {})}
                )
            else:
                api, region = self._apis[tenant]
                creation = self._create(api, tenant, ref, want, region, report, answers)
                jobs.append(self._guarded(creation, tenant, ref, report, answers))
        # Every creation ends before one's failure (a lost lease, a broken ledger) is raised.
        failures = [r for r in await asyncio.gather(*jobs, return_exceptions=True) if r]
        out.pending.clear()
        if failures:
            raise failures[0]

    async def _guarded(
        self,
        creation: Coroutine[Any, Any, None],
        tenant: int,
        ref: RefKey,
        report: TenantReport,
        answers: dict[tuple[int, RefKey], int | str],
    ) -> None:
        """A creation whose API error is the row's failure, not the run's."""
        try:
            await creation
        except RefCallError as exc:
            self._failed(tenant, [ref], exc, report, answers)

    async def _list(
        self, api: RefApi, tenant: int, kind: str, region: str | None, rules: set[NameRule | None]
    ) -> tuple[dict[RefKey, tuple[int, ...]], list[str]]:
        """Every object of `kind` by each key it answers to (under each name rule a field
        uses), and every object's label (the names a not-found error suggests from)."""
        items = await api.list_all(kind)
        index: dict[RefKey, list[int]] = {}
        labels: dict[RefKey, str] = {}
        names: list[str] = []
        for obj in items:
            oid = obj.get("id")
            if not isinstance(oid, int) or isinstance(oid, bool):
                continue
            names.append(object_label(kind, obj))
            for by in BY[kind]:
                for rule in rules | {None}:
                    if rule is not None and by != "name":
                        continue
                    for key in object_keys(kind, by, obj, region, rule):
                        ref = RefKey(kind, by, key, rule)
                        if oid not in index.setdefault(ref, []):
                            index[ref].append(oid)
                        labels.setdefault(ref, object_label(kind, obj))
        result = {r: tuple(ids) for r, ids in index.items()}
        await self.cache.store(
            tenant,
            # A field's own rule is not part of the cache's key: only default keys are kept.
            [(r, ids, labels.get(r)) for r, ids in result.items() if r.rule is None],
            self.clock(),
            replace_kind=kind,
        )
        return result, [n for n in names if n]

    async def _search(self, api: RefApi, ref: RefKey, region: str | None) -> tuple[int, ...]:
        self._searched[(api.lane.id, ref)] = self.cache.shared_time(self.clock())
        candidates = await api.search_customers(search_term(ref))
        ids: list[int] = []
        for obj in candidates:
            oid = obj.get("id")
            keys = object_keys("customers", ref.by, obj, region)
            if isinstance(oid, int) and ref.key in keys and oid not in ids:
                ids.append(oid)
        return tuple(sorted(ids))

    async def _create(
        self,
        api: RefApi,
        tenant: int,
        ref: RefKey,
        want: Want,
        region: str | None,
        report: TenantReport,
        answers: dict[tuple[int, RefKey], int | str],
    ) -> None:
        key = (tenant, ref)
        prior = await self.cache.creation(tenant, ref.by, ref.key)
        if prior is not None and prior.state == "created":
            answers[key] = (
                f"customer {prior.customer_id} was created for this {_BY_LABEL[ref.by]} by an "
                "earlier run, but the API no longer finds it by it: check it in Flextell "
                "(nothing is created twice)"
            )
            return
        if prior is not None and prior.state in ("sending", "unknown"):
            sent_at = prior.sent_at or 0.0
            read_at = self._searched.get(key, sent_at)  # the search that found nothing
            if read_at - sent_at < self.settle:
                await self.cache.outcome(tenant, ref.by, ref.key, "unknown")
                answers[key] = (
                    f"creating {_about(ref)} was sent {read_at - sent_at:.0f}s before the search "
                    "that does not find it, and its answer was lost; it is not sent again "
                    f"before a search {self.settle:g}s after it: the next run looks again"
                )
                return
        body, problem = customer_body(want.create or {})
        if problem is not None:
            answers[key] = f"cannot create {_about(ref)}: {problem}"
            return

        async def intent() -> None:  # in the lane's slot, right before the POST leaves
            sent_at = self.cache.shared_time(self.clock())
            await self.cache.intent(tenant, ref.by, ref.key, body, sent_at)
            await self.cache.before_send(tenant)

        result = await api.create_customer(body, before=intent)
        data = result.data.get("data") if isinstance(result.data, dict) else None
        new_id = data.get("id") if isinstance(data, dict) else None
        if result.outcome is Outcome.CREATED and isinstance(new_id, int):
            await self._created(tenant, ref, new_id, report, answers)
            report.created += 1
            log.info("customer created", tenant=tenant, customer_id=new_id)
            return
        if result.outcome in (Outcome.REJECTED, Outcome.AUTH, Outcome.MISROUTED, Outcome.RETRY):
            # Refused, or never processed (RETRY after every attempt): nothing was made.
            detail = "; ".join(f"{k}: {' '.join(v)}" for k, v in result.field_errors.items())
            error = f"HTTP {result.status or '-'}: {detail or result.error_message}"
            await self.cache.outcome(tenant, ref.by, ref.key, "failed", error=error)
            answers[key] = f"creating {_about(ref)} was refused: {error}"
            return
        # The answer was lost (or unreadable): the customer may exist. Look, never resend.
        await asyncio.sleep(api.lane.policy.search_delay)
        try:
            ids = await self._search(api, ref, region)
        except RefCallError:
            ids = ()
        if len(ids) == 1:
            await self._created(tenant, ref, ids[0], report, answers)
            report.adopted_after_lost_answer += 1
            log.warning(
                "customer creation answer lost; found it by search",
                tenant=tenant,
                customer_id=ids[0],
            )
            return
        await self.cache.outcome(tenant, ref.by, ref.key, "unknown", error=result.error_message)
        if ids:
            answers[key] = ambiguous(ref, tenant, ids)
            return
        answers[key] = (
            f"creating {_about(ref)}: the answer was lost ({result.error_message}) and a search "
            "does not find it yet; it is not sent again: the next run looks again"
        )

    async def _created(
        self,
        tenant: int,
        ref: RefKey,
        customer_id: int,
        report: TenantReport,
        answers: dict[tuple[int, RefKey], int | str],
    ) -> None:
        await self.cache.outcome(tenant, ref.by, ref.key, "created", customer_id=customer_id)
        await self.cache.store(tenant, [(ref, (customer_id,), None)], self.clock())
        answers[(tenant, ref)] = customer_id
        report.resolved += 1


def customer_body(data: dict[str, str]) -> tuple[dict[str, Any], str | None]:
    """The ``POST /v1/customers`` body from the mapped columns, or what is wrong with them."""
    body: dict[str, Any] = {}
    for name in ("first_name", "last_name"):
        if not data.get(name):
            return {}, f"column for {name} is empty"
        body[name] = data[name]
    for name in ("phone_number", "email", "identity_number"):
        if data.get(name):
            body[name] = data[name]
    raw_date = data.get("birth_date")
    if raw_date:
        parsed: date | None = None
        for fmt in _DATE_FORMATS:
            try:
                parsed = datetime.strptime(raw_date[:10], fmt).date()
                break
            except ValueError:
                continue
        if parsed is None:
            return {}, "the birth date is not a date (expected YYYY-MM-DD or DD.MM.YYYY)"
        body["date_of_birth"] = parsed.isoformat()
    raw_gender = data.get("gender")
    if raw_gender:
        gender = _GENDERS.get(norm_key(raw_gender).translate(_FOLD))
        if gender is None:
            return {}, "the gender is not one of female, male, other (or K/E, F/M)"
        body["gender"] = gender
    return body, None
