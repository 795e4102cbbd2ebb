"""`init --online`: value maps for doctors, treatments and rooms proposed from the API.

Each distinct value of the column is normalised as ``lookup = "api"`` would
(titles, case, accents) and compared with the API's names: an equal name is
proposed with score 100, a close one (rapidfuzz) with its score, anything
else is left commented out for a person. Patients are never listed.
"""

from __future__ import annotations

import asyncio

from rapidfuzz import fuzz, process

from worker.commands.drafting.init_guess import ColumnGuess, Proposal, Proposals, splitter
from worker.config import Config, load_config
from worker.delivery import LaneBuilder, http_session
from worker.errors import AbortError, ConfigError
from worker.mapping.names import DEFAULT_RULE
from worker.mapping.refkeys import FIELD_KIND, object_label
from worker.references.api import RefApi, RefCallError

PROPOSE_CUTOFF = 80.0
"""A close name below this score is shown as the nearest, not proposed."""
FIELDS = ("user_id", "assistant_id", "room_id", "treatments")
Names = dict[str, tuple[str, int]]
"""A kind's objects: normal name -> (name as the API writes it, id)."""


def propose(
    values: dict[str, list[str]],
    delimiter: str | None,
    guesses: dict[str, ColumnGuess],
    base: str,
    tenant: int | None,
) -> tuple[int, Proposals]:
    """The tenant asked, and proposals for every name-valued field of the sampled
    `values`, from that tenant's lists."""
    cfg = load_config(base)
    tid = tenant if tenant is not None else min(cfg.tenants, default=1)
    if not cfg.is_known_tenant(tid):
        raise ConfigError(f"--tenant {tid}: not a tenant of {base}")
    wanted = {f: guesses[f] for f in FIELDS if f in guesses}
    kinds = sorted({FIELD_KIND[f] for f in wanted})
    lists = asyncio.run(_lists(cfg, tid, kinds))
    out: Proposals = {}
    for name, g in wanted.items():
        kind = FIELD_KIND[name]
        cells = values.get(g.column, [])
        items = [p.strip() for v in cells for p in _items(name, v, delimiter)]
        distinct = list(dict.fromkeys(i for i in items if i))
        out[name] = (f"{kind} of tenant {tid}", [_one(v, lists[kind]) for v in distinct])
    return tid, out


def _items(name: str, value: str, delimiter: str | None) -> list[str]:
    if name != "treatments":
        return [value]
    sep = splitter([value], delimiter)
    return value.split(sep) if sep else [value]


def _one(value: str, names: Names) -> Proposal:
    """The API object `value` names: an equal normal form, else the closest one."""
    normal = DEFAULT_RULE(value)
    exact = names.get(normal)
    if exact is not None:
        return (value, exact[1], exact[0], 100)
    found = process.extractOne(normal, list(names), scorer=fuzz.token_sort_ratio)
    if found is None:
        return (value, None, "", 0)
    label, oid = names[found[0]]
    score = round(found[1])
    return (value, oid if score >= PROPOSE_CUTOFF else None, label, score)


async def _lists(cfg: Config, tenant: int, kinds: list[str]) -> dict[str, Names]:
    """Each kind's objects: normal name -> (name as the API writes it, id)."""
    out: dict[str, Names] = {}
    async with http_session(cfg) as session:
        api = RefApi(await LaneBuilder(cfg, session).lane(tenant))
        for kind in kinds:
            try:
                items = await api.list_all(kind)
            except RefCallError as exc:
                raise AbortError(f"tenant {tenant}: {exc}") from None
            table = out[kind] = {}
            for obj in items:
                oid, label = obj.get("id"), object_label(kind, obj)
                if isinstance(oid, int) and label:
                    table.setdefault(DEFAULT_RULE(label), (label, oid))
    return out
