"""Whether a recorded send time can be compared with this process's clock, and the
offset of our clock from the API's `Date` header. Pure: tests drive it on a fake clock.

A row's intent records, beside `sent_at` (wall time), a *clock mark*: the boot id
and wall minus monotonic time at that moment. In the same boot, with no wall-clock
step since, the mark is unchanged and `sent_at` is comparable with the wall clock
now. After a step (NTP, an operator, a suspended machine) the mark moved by the
step; after a reboot monotonic time is another clock. Either way the send time is
not trusted: settling then counts a full settle from this process's start (`resumed_at`),
which is later than any send made before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

STEP_TOLERANCE = 2.0
"""Seconds wall minus monotonic time may drift (NTP slewing) before it counts as a step."""

WARN_OFFSET = 5.0
"""Seconds of offset to the API's clock that are logged as a warning."""

DEFAULT_MAX_OFFSET = 60.0
"""`[api] max_clock_offset` default: half the 120 s window in which created_at is trusted."""


API_TOLERANCE = 2.0
"""Seconds two processes' offsets to the API's clock may differ before they count: the
`Date` header has whole seconds."""


def clock_mark(boot: str, wall: float, monotonic: float, api_offset: float | None = None) -> str:
    """The mark recorded with a send time (and this process's offset to the API's clock,
    when measured)."""
    mark = f"{boot}|{wall - monotonic:.3f}"
    return mark if api_offset is None else f"{mark}|{api_offset:.3f}"


def _api_correction(then: str | None, now: float | None) -> float:
    """Seconds to move a send time by so it reads on this process's clock, from the two
    processes' offsets to the API's clock; never earlier (0 when not known)."""
    if then is None or now is None:
        return 0.0
    try:
        moved = float(then) - now
    except ValueError:
        return 0.0
    # Only later: an earlier send time is the one answer that could settle too soon.
    return moved + 1.0 if math.isfinite(moved) and moved > API_TOLERANCE else 0.0


def effective_sent_at(
    sent_at: float,
    mark: str | None,
    *,
    boot: str,
    wall: float,
    monotonic: float,
    resumed_at: float,
    api_offset: float | None = None,
) -> tuple[float, bool]:
    """The send time to settle from, and whether it was trusted as recorded.

    No mark (a row written before marks existed): as recorded. A mark of this boot
    and no step: as recorded, unless the sender's offset to the API's clock and this
    process's (`api_offset`) say its clock was behind this one's: then moved by the
    difference. Otherwise the later of `resumed_at` and, in the same boot, the send
    time moved by the step (monotonic time does not step); a send time the step would
    put after now counts from `resumed_at`, as another boot's.
    """
    if mark is None:
        return sent_at, True
    then_boot, _, text = mark.partition("|")
    text, _, api = text.partition("|")
    try:
        then_offset = float(text)
    except ValueError:
        return max(sent_at, resumed_at), False
    if not math.isfinite(then_offset):
        return max(sent_at, resumed_at), False
    step = (wall - monotonic) - then_offset
    if then_boot == boot and boot and abs(step) <= STEP_TOLERANCE:
        # No step by this machine's clocks. libfaketime shifts the monotonic clock with
        # the wall clock, so a run at -55 s and one at +55 s see none: the API's clock,
        # read by both, says how far apart they were.
        moved = _api_correction(api or None, api_offset)
        if not moved:
            return sent_at, True
        # Never before the send as recorded, never after now: an offset in the mark can be
        # stale (every POST after a clock step timed out, no Date since), and falling
        # back to the run's start (before the send) took a row sent 32 s earlier for long
        # settled: it was sent again while its first POST was committing.
        return min(sent_at + moved, max(sent_at, wall)), False
    if then_boot == boot and boot:
        moved = sent_at + step
        if moved > wall:
            # A send after now cannot be: the mark itself is wrong (libfaketime fakes the
            # monotonic clock as its wall clock, and one "moved" a send to 2083). Counted
            # as another boot's, from this process's start: a fixed moment (now, which
            # moves, had every run wait a full settle again, for ever).
            return resumed_at, False
        return max(moved, resumed_at), False
    return resumed_at, False


def date_offset(date_header: str | None, sent: float, received: float) -> float | None:
    """Seconds the server's clock is ahead (+) or behind (-) ours; None without a Date.

    `Date` has whole seconds: a server in step stamped it within [sent - 1, received].
    Only the distance outside that interval counts, so latency is never taken as skew.
    """
    if not date_header:
        return None
    try:
        stamp = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if stamp > received:
        return stamp - received
    if stamp + 1.0 < sent:
        return stamp + 1.0 - sent
    return 0.0


@dataclass(slots=True)
class ClockWatch:
    """The latest offset to the API's clock and what it allows: warn, or refuse to send."""

    max_offset: float = DEFAULT_MAX_OFFSET
    offset: float | None = None
    warned: bool = False
    _last: tuple[str, float] | None = field(default=None, repr=False)

    @property
    def measured(self) -> bool:
        return self.offset is not None

    def see(self, date_header: str | None, sent: float, received: float) -> str | None:
        """Note one answer's Date; a reason to stop sending when the offset is beyond bounds."""
        if not date_header:
            return None
        if self._last is not None and self._last[0] == date_header and self.offset == 0.0:
            return None  # the same second as the last in-step answer: nothing new
        offset = date_offset(date_header, sent, received)
        if offset is None:
            return None
        self._last = (date_header, offset)
        self.offset = offset
        if abs(offset) > self.max_offset:
            return (
                f"this machine's clock is {abs(offset):.0f}s "
                f"{'behind' if offset > 0 else 'ahead of'} the API's (Date header); more than "
                f"[api] max_clock_offset = {self.max_offset:g}s: nothing is sent (settling and "
                "created_at checks compare the two clocks); fix the clock (NTP) and run again"
            )
        return None

    def should_warn(self) -> bool:
        """True once, the first time the offset is above WARN_OFFSET."""
        if self.offset is None or abs(self.offset) <= WARN_OFFSET or self.warned:
            return False
        self.warned = True
        return True
