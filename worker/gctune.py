"""The garbage collector's threshold for a command's process.

A run allocates short-lived containers for every row (futures, requests, header
dicts, result objects) and frees nearly all of them by reference counting. CPython's
default first threshold (700 more allocations than frees) still starts a collection
every few rows: some 400 collections and 0.4-0.8 s of a 6,000-row import, most of
them walking the objects module loading left behind. At 10,000 the same import
collects about a dozen times (0.06 s). Cyclic garbage still goes, a little later;
memory stays bounded.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def tune() -> None:
    """Collect the youngest generation after YOUNG_THRESHOLD net allocations, not 700."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
