"""`ack` and `unack`: a person takes note of worklist items, or takes that back.

An acknowledgement records who (the OS user, or --by), when (UTC), the note and
the item's content; `import` no longer counts the item until its row changes.
"""

from __future__ import annotations

import getpass
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from worker.controls import escape_controls
from worker.errors import ConfigError
from worker.ledger import Ledger, audit
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
                            keys=None if all_open else _spellings(keys))  # fmt: skip
        if not all_open:
            typed = {_nfc(k) for k in keys}
            found = [i for i in found if _nfc(i.source_key) in typed]
        if undo:
            changed = [unacknowledge(i) for i in found]
        else:
            at = datetime.now(UTC).isoformat(timespec="seconds")
            changed = [acknowledge(i, by=who(by), at=at, note=(note or "").strip()) for i in found]
        matched = {_nfc(i.source_key) for i in changed}
        unmatched = sorted(k for k in set(keys) if _nfc(k) not in matched)
        hints: dict[str, str] = {}
        if unmatched:  # before the save: a key typed beside its typo is still a near one
            hints = await _hints(ledger, unmatched, tenant=tenant, kind=kind, wanted=wanted)
        await save(ledger, changed)
        if changed and not is_url(target):  # the shared ledger keeps no audit table yet
            detail = {
                "by": who(by),
                "items": len(changed),
                "kinds": sorted({i.kind for i in changed}),
                # Every key: a trail that kept 50 of 55 dropped five without a word.
                "keys": [f"{i.tenant}/{i.source_key}" for i in changed],
            }
            action = "unack" if undo else "ack"
            await ledger.write_op(partial(audit.record, action=action, detail=detail))
    finally:
        await ledger.close()
    if not changed:
        state = State.ACKNOWLEDGED if undo else State.OPEN
        what = ", ".join(k + hints.get(k, "") for k in unmatched) or "the filter given"
        raise ConfigError(f"ledger {describe(target)}: no {state.value} worklist item for {what}")
    return AckResult(changed, unmatched, hints)


def _nfc(key: str) -> str:
    """A key as typed and as exported compare equal when only their Unicode form differs
    (an export from macOS or Excel may write "Ş" as "S" and a combining cedilla)."""
    return unicodedata.normalize("NFC", key)


def _spellings(keys: Sequence[str]) -> list[str]:
    """Each key in its composed and decomposed forms, for the ledger's exact match."""
    return sorted({form for k in keys for form in (k, _nfc(k), unicodedata.normalize("NFD", k))})


async def _hints(
    ledger: Ledger, unmatched: Sequence[str], *, tenant: int | None, kind: str | None, wanted: str
) -> dict[str, str]:
    """Why each key matched no item: the state its items are in (resolved, acknowledged,
    fixed by hand), or, when it has none, the nearest key that has one in the state
    wanted (typed in the wrong case or with a typo). A near key is never offered for a
    key that has items: following it would take note of another patient's row."""
    # Every tenant and kind: a key whose item --tenant or --kind left out has one.
    others = [
        item
        for state in ("all", "resolved")
        for item in await items(ledger, state=state, keys=_spellings(unmatched))
    ]
    hints: dict[str, str] = {}
    for key in unmatched:
        own = [i for i in others if _nfc(i.source_key) == _nfc(key)]
        if own:
            hints[key] = "; its item is " + ", ".join(
                f"{_state_words(i, wanted)} (tenant {i.tenant}, {i.kind.value})" for i in own
            )
    rest = [k for k in unmatched if k not in hints]
    if rest:
        near = [i.source_key for i in await items(ledger, tenant=tenant, kind=kind,
                                                  state=wanted)]  # fmt: skip
        hints |= {k: hint for k in rest if (hint := did_you_mean(k, near))}
    return hints


def _state_words(item: WorkItem, wanted: str) -> str:
    if item.state.value == wanted:
        return f"{wanted}, but not of the --tenant or --kind given"
    if item.state == State.OPEN:
        return "open (not acknowledged)"
    if item.state == State.RESOLVED:
        return f"resolved in run {item.resolved_run_id}" if item.resolved_run_id else "resolved"
    if item.state == State.ACKNOWLEDGED:
        return f"acknowledged by {item.ack_by or 'someone'}"
    return item.state.value.replace("_", " ")


SHOWN_ITEMS = 20
"""Items `ack`/`unack` name, one line each; the rest are counted."""


def show_ack(result: AckResult, *, undo: bool = False) -> None:
    """How many items changed and which (tenant, key, kind); each key that matched none,
    on stderr."""
    print(f"{'reopened' if undo else 'acknowledged'} {len(result.changed)} item(s):")
    for item in result.changed[:SHOWN_ITEMS]:
        print(f"  tenant {item.tenant} {escape_controls(item.source_key)} ({item.kind.value})")
    if len(result.changed) > SHOWN_ITEMS:
        print(f"  ... and {len(result.changed) - SHOWN_ITEMS} more")
    state = "acknowledged" if undo else "open"
    for key in result.unmatched:
        print(
            f"no {state} item for {escape_controls(key)}{result.hints.get(key, '')}",
            file=sys.stderr,
        )
