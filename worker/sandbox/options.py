"""Options of the sandbox server and parsing of ``--fault KIND=PROBABILITY``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path

from worker.errors import ConfigError
from worker.rates import Rate

# Faults that create nothing, in the order they are checked.
FAULTS_BEFORE = ("reset_before", "error500", "error503", "html502", "throttle429")
# Faults that strike after the appointment is committed: the POST's outcome is unknown.
FAULTS_AFTER = (
    "drop_after_commit",
    "slow_after_commit",
    "malformed_after_commit",
    "gateway503_after_commit",
)
# A fault that commits late: validated, then committed after --late-commit-seconds
# whether or not the client is still waiting (PHP-FPM keeps running behind a proxy).
FAULTS_LATE = ("commit_after_timeout",)
FAULT_KINDS: tuple[str, ...] = FAULTS_BEFORE + FAULTS_AFTER + FAULTS_LATE
# How GET /v1/appointments/calendar wraps its items: bare `{"items"}` (what the page
# shows), inside the API's `{"success", "data"}` envelope, or in a Laravel paginator.
CALENDAR_SHAPES = ("bare", "envelope", "paginated")


@dataclass
class SandboxOptions:
    """How one sandbox server behaves. port=0 picks a free port."""

    host: str = "127.0.0.1"
    port: int = 0
    seed_path: Path | None = None
    state_path: Path | None = None
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_limit: Rate | None = None
    faults: dict[str, float] = field(default_factory=dict)
    honor_idempotency_key: bool = False
    fault_seed: int | None = None
    slow_seconds: float = 120.0
    clock: Callable[[], float] = time.time
    token_ttl: float = 3600.0
    late_commit_seconds: float = 4.0
    commit_delay_seconds: float = 0.0
    calendar_shape: str = "bare"
    calendar_broken: bool = False
    list_broken: bool = False
    """GET /v1/appointments (the list a client falls back to) answers 500 HTML always."""
    retry_after: str = "1"
    """Retry-After of the throttle429 and error503 faults: seconds, or an HTTP date."""
    rate_headers: bool = True
    """Send X-RateLimit-Limit/-Remaining on allowed requests (a proxy may strip them)."""
    tenant_timezones: dict[int, str] = field(default_factory=dict)
    """Each tenant's zone as GET /v1/account/tenants names it, over the seed's."""
    calendar_max_days: int | None = None
    """Refuse (422) a calendar range longer than this many days; None: any range, as the
    Flextell docs state no maximum."""
    # Cancel a handler when its client disconnects (aiohttp's behaviour before 3.9,
    # and some deployments'); a late commit must survive it.
    handler_cancellation: bool = False


def check_faults(faults: dict[str, float]) -> dict[str, float]:
    """Validate a fault table; raises ConfigError naming the bad entry."""
    for kind, prob in faults.items():
        if kind not in FAULT_KINDS:
            raise ConfigError(f"unknown fault {kind!r}: expected one of {', '.join(FAULT_KINDS)}")
        if isinstance(prob, bool) or not isinstance(prob, int | float) or not 0.0 <= prob <= 1.0:
            raise ConfigError(f"fault {kind}: probability {prob!r} is not a number from 0 to 1")
    return {kind: float(prob) for kind, prob in faults.items()}


def parse_faults(specs: Iterable[str]) -> dict[str, float]:
    """Parse repeated ``KIND=PROBABILITY`` options into a fault table."""
    table: dict[str, float] = {}
    for spec in specs:
        kind, sep, value = spec.partition("=")
        kind = kind.strip()
        if not sep:
            raise ConfigError(f"--fault {spec!r}: expected KIND=PROBABILITY such as error503=0.1")
        try:
            prob = float(value)
        except ValueError:
            raise ConfigError(
                f"--fault {spec!r}: probability {value.strip()!r} is not a number from 0 to 1"
            ) from None
        table[kind] = prob
    return check_faults(table)


def check_calendar_shape(shape: object) -> str:
    """A valid calendar shape, or ConfigError naming the choices."""
    if not isinstance(shape, str) or shape not in CALENDAR_SHAPES:
        raise ConfigError(f"calendar shape {shape!r}: expected one of {', '.join(CALENDAR_SHAPES)}")
    return shape


def check_seconds(name: str, value: object) -> float:
    """A non-negative number of seconds, or ConfigError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{name}: {value!r} is not a number of seconds >= 0")
    return float(value)


def retry_after_until(value: str, now: float) -> float:
    """Unix time a Retry-After value (seconds or an HTTP date) points at; ConfigError if
    it is neither."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            raise ConfigError(
                f"retry-after {value!r}: expected seconds (86400) or an HTTP date "
                "(Thu, 01 Jan 2099 00:00:00 GMT)"
            ) from None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"retry-after {value!r}: expected a number of seconds >= 0")
    return now + seconds


def check_options(opts: SandboxOptions) -> None:
    """Reject option values that make no sense, with one line each."""
    check_faults(opts.faults)
    retry_after_until(opts.retry_after, 0.0)
    check_calendar_shape(opts.calendar_shape)
    names = (
        "latency_ms",
        "jitter_ms",
        "slow_seconds",
        "late_commit_seconds",
        "commit_delay_seconds",
    )
    for name in names:
        value = getattr(opts, name)
        if not 0 <= value < math.inf:  # nan compares false: it is refused too
            raise ConfigError(
                f"{name.replace('_', '-')} {value}: expected a finite number, not negative"
            )
    if not 0 < opts.token_ttl < math.inf:
        raise ConfigError(f"token-ttl {opts.token_ttl}: expected a finite number of seconds > 0")
    if not 0 <= opts.port <= 65535:
        raise ConfigError(f"port {opts.port} is out of range 0..65535")
