"""Rate strings such as ``60/minute`` or ``20/second``, shared by config and sandbox."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PERIODS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `count` requests in any window of `period` seconds."""

    count: int
    period: float

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s"


def parse_rate(text: str) -> Rate:
    """Parse ``N/PERIOD`` (``60/minute``, ``20/second``, ``100/10s``, ``1000/hour``).

    Raises ValueError with a message that says what is expected.
    """
    match = _RATE_RE.match(text.lower())
    if match is None or match.group(3) not in _PERIODS:
        bare_text = text.strip()  # a bare count lacks its period: offer the likely ones
        bare = bare_text.isascii() and bare_text.isdigit()
        lacks = f" ({bare_text}/second or {bare_text}/minute?)" if bare else ""
        raise ValueError(
            f"invalid rate {text!r}: expected N/PERIOD such as 60/minute, 20/second or "
            f"100/10s{lacks}"
        )
    count = int(match.group(1))
    multiple = int(match.group(2)) if match.group(2) else 1
    if count <= 0 or multiple <= 0:
        raise ValueError(f"invalid rate {text!r}: count and period must be positive")
    return Rate(count=count, period=multiple * _PERIODS[match.group(3)])
