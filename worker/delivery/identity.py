"""Identity groups: rows of one tenant that share customer, doctor, instant and treatments.

After a lost answer the only way to learn whether a POST landed is to look at the
appointments at that slot. Two rows of one slot in flight together (a cancelled
booking and its re-booking, two sessions in two rooms) could each see the other's
appointment. So a lane lets one row of a group be open at a time: from its durable
intent until its outcome is recorded (slot searches and settling included). Rows of a
busy group wait here, and the row that closes the group hands the next one on, so
no worker ever blocks on a group and other rows keep flowing.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

J = TypeVar("J")


class IdentityGroups(Generic[J]):
    """Per-identity admission: one open job per identity, the rest queued in order."""

    def __init__(self) -> None:
        self._busy: dict[str, deque[J]] = {}

    def enter(self, identity: str, job: J) -> bool:
        """True when `job` may go now; False when it was queued behind its group."""
        waiting = self._busy.get(identity)
        if waiting is None:
            self._busy[identity] = deque()
            return True
        waiting.append(job)
        return False

    def leave(self, identity: str) -> J | None:
        """Close the open job of `identity`; the next queued job of the group, now open."""
        waiting = self._busy.get(identity)
        if not waiting:
            self._busy.pop(identity, None)
            return None
        return waiting.popleft()

    def waiting(self) -> int:
        """Jobs queued behind a busy group."""
        return sum(len(q) for q in self._busy.values())

    def busy(self, identity: str) -> bool:
        """Whether a job of this identity is open."""
        return identity in self._busy
