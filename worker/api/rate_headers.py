"""Server rate hints: ``Retry-After`` and the ``X-RateLimit-*`` headers.

Pure functions over header values and an explicit ``now`` (unix seconds), so the
engine and the tests can use any clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

# An X-RateLimit-Reset below this is a delta in seconds, not a unix time:
# some gateways send the delta, Laravel and GitHub send the epoch.
_EPOCH_THRESHOLD = 1_000_000_000.0


@dataclass(frozen=True, slots=True)
class RateInfo:
    """Rate-limit hints from one response; every field is None when absent or unreadable."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None  # unix seconds
    retry_after: float | None = None  # seconds from now
    date: str | None = None  # the Date header as sent: the server's clock (see clockcheck)

    @property
    def exhausted(self) -> bool:
        """True when the server said the window is used up (remaining 0)."""
        return self.remaining is not None and self.remaining <= 0


NO_RATE_INFO = RateInfo()


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date).

    A negative delta or a date in the past gives 0; anything unreadable gives None.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds = _number(text)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime form carries no zone; HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _int_header(value: str | None) -> int | None:
    if value is None:
        return None
    number = _number(value.strip())
    return None if number is None else int(number)


def rate_info_from_headers(headers: Mapping[str, str], *, now: float) -> RateInfo:
    """Parse ``Retry-After`` and ``X-RateLimit-{Limit,Remaining,Reset}``.

    `headers` must be case-insensitive (aiohttp's ``CIMultiDictProxy``) or use the
    canonical capitalisation. ``retry_after`` comes from Retry-After, or else from
    the reset time when the window is exhausted.
    """
    retry_header = headers.get("Retry-After")
    limit_header = headers.get("X-RateLimit-Limit")
    remaining_header = headers.get("X-RateLimit-Remaining")
    reset_header = headers.get("X-RateLimit-Reset")
    date_header = headers.get("Date")
    if (
        retry_header is None
        and limit_header is None
        and remaining_header is None
        and reset_header is None
    ):
        # the hot path: most responses carry none of these
        return NO_RATE_INFO if date_header is None else RateInfo(date=date_header)

    remaining = _int_header(remaining_header)
    reset_at: float | None = None
    if reset_header is not None:
        reset = _number(reset_header.strip())
        if reset is not None and reset >= 0:
            reset_at = reset if reset >= _EPOCH_THRESHOLD else now + reset
    retry_after = parse_retry_after(retry_header, now=now)
    if retry_after is None and reset_at is not None and (remaining is None or remaining <= 0):
        retry_after = max(0.0, reset_at - now)
    return RateInfo(
        limit=_int_header(limit_header),
        remaining=remaining,
        reset_at=reset_at,
        retry_after=retry_after,
        date=date_header,
    )
