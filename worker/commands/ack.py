"""`ack` and `unack`: a person takes note of worklist items, or takes that back.

An acknowledgement records who (the OS user, or --by), when (UTC), the note and
the item's content; `import` no longer counts the item until its row changes.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from worker.errors import ConfigError
from worker.ledger import audit
from worker.ledger.crypto import LedgerKey
from worker.ledger.target import LedgerTarget, describe, is_url, open_ledger
from worker.suggest import did_you_mean
from worker.worklist import State, WorkItem, items, save
from worker.worklist.rules import acknowledge, unacknowledge


@dataclass(slots=True)
class AckResult:
    changed: list[WorkItem]
    unmatched: list[str]
    """Keys asked for that had no item in the state wanted."""
    hints: dict[str, str]
    """For an unmatched key: "; did you mean 'R009'?" (a key of such an item), or none."""


def who(by: str | None) -> str:
    """--by, else the OS user running the command."""
    if by:
        return by
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown user"


def _require_existing(target: LedgerTarget) -> None:
    """Opening would create an empty ledger at a mistyped path, and the next worklist
    or report would read that one and say nothing is open."""
    if not is_url(target) and not Path(target).exists():
        raise ConfigError(f"ledger {target} does not exist (run an import first)")


async def run_ack(
    target: LedgerTarget,
    keys: Sequence[str],
    *,
    all_open: bool,
    note: str | None,
    by: str | None,
    tenant: int | None,
    kind: str | None,
    undo: bool = False,
    key: LedgerKey | None = None,
) -> AckResult:
    """Acknowledge (or, with `undo`, reopen) the matching items; exit 2 when none match.

    ``key``: an encrypted ledger's, to open its items and seal the note."""
    if bool(keys) == all_open:
        raise ConfigError("give the KEYs to acknowledge, or --all-open (not both)")
    if not undo and not (note or "").strip():
        raise ConfigError("--note is required: say why the items need nothing more")
    _require_existing(target)
    ledger = await open_ledger(target, key=key)
    try:
        wanted = "acknowledged" if undo else "open"
        found = await items(ledger, tenant=tenant, kind=kind, state=wanted,
                            keys=None if all_open else keys)  # fmt: skip
        if undo:
            changed = [unacknowledge(i) for i in found]
        else:
            at = datetime.now(UTC).isoformat(timespec="seconds")
            changed = [acknowledge(i, by=who(by), at=at, note=(note or "").strip()) for i in found]
        await save(ledger, changed)
        if changed and not is_url(target):  # the shared ledger keeps no audit table yet
            detail = {
                "by": who(by),
                "items": len(changed),
                "kinds": sorted({i.kind for i in changed}),
                "keys": [f"{i.tenant}/{i.source_key}" for i in changed[:50]],
            }
            action = "unack" if undo else "ack"
            await ledger.write_op(partial(audit.record, action=action, detail=detail))
        unmatched = sorted(set(keys) - {i.source_key for i in changed})
        hints: dict[str, str] = {}
        if unmatched:  # a key typed in the wrong case or with a typo: name the near one
            near = [i.source_key for i in await items(ledger, tenant=tenant, kind=kind,
                                                      state=wanted)]  # fmt: skip
            hints = {k: hint for k in unmatched if (hint := did_you_mean(k, near))}
    finally:
        await ledger.close()
    if not changed:
        state = State.ACKNOWLEDGED if undo else State.OPEN
        what = ", ".join(k + hints.get(k, "") for k in unmatched) or "the filter given"
        raise ConfigError(f"ledger {describe(target)}: no {state.value} worklist item for {what}")
    return AckResult(changed, unmatched, hints)


def show_ack(result: AckResult, *, undo: bool = False) -> None:
    """How many items changed; each key that matched none, on stderr."""
    print(f"{'reopened' if undo else 'acknowledged'} {len(result.changed)} item(s)")
    if not undo:
        for key in result.unmatched:
            print(f"no open item for {key}{result.hints.get(key, '')}", file=sys.stderr)
