"""Whether each clinic's times are read in the zone Flextell says the clinic is in.

A wrong `[api] timezone` (init's ``"UTC"  # TODO: check`` left as it was, German
headers guessed as Berlin for an Istanbul clinic) shifts every appointment by hours,
and nothing after the import can see it: `verify` compares Flextell with what was
sent. ``GET /v1/account/tenants`` of each tenant's own server names its zone where
the API gives one; a configured zone that differs ends the run (exit 2) before
anything is sent, or, for a tenant no ``[tenants.N]`` names, before its first request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from worker.config import Config
from worker.delivery import TenantLane
from worker.errors import ConfigError
from worker.ledger import Ledger, meta
from worker.logs import get_logger
from worker.references.api import RefApi, RefCallError

log = get_logger("references")

_SAMPLES = [datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=15 * i) for i in range(292)]
"""Twice a month over 2020-2031: two zone names with the same offsets at each of these
instants read every time alike (Europe/Istanbul and Turkey, say)."""


def same_zone(a: str, b: str) -> bool:
    """Whether zones `a` and `b` give every instant of 2020-2031 the same UTC offset."""
    if a == b:
        return True
    try:
        za, zb = ZoneInfo(a), ZoneInfo(b)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return all(t.astimezone(za).utcoffset() == t.astimezone(zb).utcoffset() for t in _SAMPLES)


def _hours_apart(configured: str, clinic: str, now: datetime) -> str:
    try:
        theirs = now.astimezone(ZoneInfo(clinic)).utcoffset() or timedelta()
        ours = now.astimezone(ZoneInfo(configured)).utcoffset() or timedelta()
    except (ZoneInfoNotFoundError, ValueError):
        return "some hours"
    hours = abs((theirs - ours).total_seconds()) / 3600
    return f"{hours:g} hour(s)" if hours else "hours, at some dates,"


def explicit_zone(config: Config, tenant: int) -> str | None:
    """The zone the mapping names for the tenant's naive times (``scheduled_at = { ...,
    timezone = "UTC" }``, its own or the shared mapping's), or None."""
    section = config.tenants.get(tenant)
    spec = section.mapping.get("scheduled_at") if section is not None else None
    if spec is None:
        spec = config.mapping.get("scheduled_at")
    zone = spec.get("timezone") if isinstance(spec, dict) else None
    return zone if isinstance(zone, str) else None


def mismatches(
    config: Config, zones: dict[int, str], tenants: Iterable[int], now: datetime
) -> list[str]:
    """One line per tenant whose configured zone differs from the one Flextell gave. A
    tenant whose mapping names the zone of its export's times is not judged: that zone,
    not the clinic's, reads them, and it may be another on purpose."""
    out = []
    for tenant in tenants:
        clinic = zones.get(tenant)
        configured = config.timezone_for(tenant)
        if clinic is None or explicit_zone(config, tenant) or same_zone(configured, clinic):
            continue
        section = config.tenants.get(tenant)
        where = f"[tenants.{tenant}] timezone" if section and section.timezone else "[api] timezone"
        fix = where
        if where == "[api] timezone" and not _one_zone_for_all(config, zones, clinic):
            # Another tenant reading [api] timezone is elsewhere: changing it moves that
            # one's times instead, and its refusal then asks to change it back.
            fix = f"[tenants.{tenant}] timezone"
        apart = _hours_apart(configured, clinic, now)
        explicit = f'scheduled_at = {{ ..., timezone = "{configured}" }}'
        out.append(
            f"tenant {tenant}: {where} is {configured!r}, but Flextell says the clinic is in "
            f"{clinic!r}: every time of the export would land {apart} off. Set "
            f'{fix} = "{clinic}"; if the export\'s times really are in {configured}, say '
            f"so in the mapping: {explicit}"
        )
    return out


def _one_zone_for_all(config: Config, zones: dict[int, str], clinic: str) -> bool:
    """Whether every tenant that reads [api] timezone, of those whose zone Flextell gave,
    is in `clinic`'s zone: then [api] timezone is the one setting to change."""
    return all(
        same_zone(zones[t], clinic)
        for t, section in config.tenants.items()
        if not section.timezone and t in zones
    )


def other_zones(
    config: Config, zones: dict[int, str], tenants: Iterable[int], now: datetime
) -> list[str]:
    """One line per tenant whose mapping reads the export's times in a zone that is
    neither the clinic's (as Flextell gives it) nor UTC: an export written in a third
    zone is rare, a zone copied into the mapping by mistake shifts every appointment,
    and the run cannot tell the two apart, so it says so on every run."""
    out = []
    for tenant in tenants:
        clinic, explicit = zones.get(tenant), explicit_zone(config, tenant)
        if clinic is None or explicit is None:
            continue
        if same_zone(explicit, clinic) or same_zone(explicit, "UTC"):
            continue
        out.append(
            f"tenant {tenant}: the mapping reads the export's times in {explicit!r} "
            f"(scheduled_at timezone), but Flextell says the clinic is in {clinic!r}: every "
            f"appointment lands {_hours_apart(explicit, clinic, now)} off the clinic's clock "
            "unless the export really writes its times in that zone"
        )
    return out


async def zone_notes(
    config: Config, tenants: list[int], base_url: str | None, now: datetime
) -> tuple[list[str], list[str]]:
    """`validate --online`'s zone check: (mismatches to refuse, lines to warn), with a
    session and lanes of its own; asks nothing of a config that names no tenant."""
    from worker.delivery import LaneBuilder, http_session

    if not tenants:
        return [], []
    async with http_session(config, base_url=base_url) as session:
        builder = LaneBuilder(config, session, base_url=base_url)
        zones = await clinic_zones([await builder.lane(t) for t in tenants])
    return mismatches(config, zones, tenants, now), other_zones(config, zones, tenants, now)


def _source(lane: TenantLane) -> tuple[str, str]:
    return lane.tenant.base_url, lane.tenant.token


async def clinic_zones(lanes: Iterable[TenantLane]) -> dict[int, str]:
    """Each lane's tenant's zone as its own server's ``GET /v1/account/tenants`` names it
    (one listing per base URL and token: another server's tenant of the same number is
    another clinic); a tenant its answer leaves without one is not in it. A listing that
    fails is logged and checks nothing: the run's own requests say what is wrong."""
    listings: dict[tuple[str, str], dict[int, str] | None] = {}
    zones: dict[int, str] = {}
    for lane in lanes:
        source = _source(lane)
        if source not in listings:
            listings[source] = await _listing(lane)
        zone = (listings[source] or {}).get(lane.id)
        if zone is not None:
            zones[lane.id] = zone
    return zones


async def _listing(lane: TenantLane) -> dict[int, str] | None:
    """The zones one server's listing names; None when it fails (a 404: a server
    without the listing is no wrong base URL, the POSTs say what is wrong). Sent
    outside the lane (`RefApi.pages(paced=False)`): through it, the answer's rate
    headers (a window counted apart) paced the asking tenant's POSTs to the wrong
    window, 0.80 of the rate bench's limit."""
    try:
        listed = await RefApi(lane).pages("tenants", what="list tenants", paced=False)
    except RefCallError as exc:
        log.warning("clinic time zones not checked", tenant=lane.id, error=str(exc))
        return None
    return {
        item["id"]: item["timezone"]
        for item in listed
        if isinstance(item.get("id"), int) and isinstance(item.get("timezone"), str)
        and item["timezone"]
    }  # fmt: skip


CONFIRMED = "clinic_zones"
"""The ledger's meta key: {"tenant|API": the configured zone that server confirmed (the API
named as the ledger names it, meta.api_identity)}.
A later run with the same zone and server asks nothing of the listing (a nightly run
with nothing to send makes one request a tenant, the clock probe); another server
(--base-url, a ledger rebound) is asked again."""


def _confirmation(lane: TenantLane) -> str:
    # The server as the ledger names its API: a loopback port is no identity (a
    # sandbox picks a new one each time).
    return f"{lane.id}|{meta.api_identity([lane.tenant.base_url])}"


async def check_clinic_zones(
    config: Config, lanes: list[TenantLane], now: datetime, ledger: Ledger
) -> list[str]:
    """ConfigError (exit 2) naming every tenant whose zone differs from Flextell's; the
    tenants' zones confirmed before (same zone, same server) are not asked again. Returns
    the lines to warn of (other_zones), for the caller to say where a person reads."""
    raw = await ledger.read_op(lambda conn, _now: meta.get(conn, CONFIRMED))
    confirmed: dict[str, str] = json.loads(raw) if isinstance(raw, str) else {}
    # A mapping that names a zone other than UTC is looked at every run (other_zones).
    third = {lane.id for lane in lanes if explicit_zone(config, lane.id) not in (None, "UTC")}
    todo = [
        lane
        for lane in lanes
        if lane.id in third or confirmed.get(_confirmation(lane)) != config.timezone_for(lane.id)
    ]
    if not todo:
        return []
    zones = await clinic_zones(todo)
    problems = mismatches(config, zones, [lane.id for lane in todo], now)
    if problems:
        raise ConfigError(f"{config.path}: " + "\n".join(problems))
    warnings = other_zones(config, zones, [lane.id for lane in todo], now)
    for line in warnings:
        log.warning("times read in another zone than the clinic's", detail=line)
    confirmed |= {
        _confirmation(lane): config.timezone_for(lane.id)
        for lane in todo
        if lane.id in zones and lane.id not in third
    }
    value = json.dumps(confirmed, sort_keys=True)
    await ledger.write_op(lambda conn, _now: meta.put(conn, CONFIRMED, value))
    return warnings
