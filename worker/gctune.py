"""The garbage collector's settings for a command's process.

A run allocates short-lived containers for every row (futures, requests, header
dicts, result objects) and frees nearly all of them by reference counting. CPython's
default first threshold (700 more allocations than frees) still starts a collection
every few rows: some 400 collections and 0.4-0.8 s of a 6,000-row import, most of
them walking the objects module loading left behind. At 10,000 the same import
collects about a dozen times (0.06 s). Cyclic garbage still goes, a little later;
memory stays bounded.

Two more costs of the same kind sit at the ends of a run. Loading the CLI's modules
made some 130 collections (0.06 s) before the threshold was raised: `tune` now runs
before they load (`worker.__main__`). And at exit CPython walks every object once
more before freeing them all, about 0.1 s after an import: by then every file, the
ledger and the logs are closed and flushed, so the process freezes what it holds
(`gc.freeze`) and skips that walk. The price: an object kept alive only by a
reference cycle is not finalized at exit, so nothing here may rely on that.
"""

from __future__ import annotations

import atexit
import gc

YOUNG_THRESHOLD = 10_000

_tuned = False


def tune() -> None:
    """Collect the youngest generation after YOUNG_THRESHOLD net allocations, not 700,
    and skip the collector's last walk at exit. Idempotent."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    # Registered before any other exit handler, so it runs after all of them (LIFO).
    atexit.register(gc.freeze)
