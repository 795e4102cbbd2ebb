"""The worklist's rules (worker.worklist.rules), one state at a time: pure, no I/O."""

from __future__ import annotations

from dataclasses import replace

from worker.worklist.rules import (
    Finding,
    Kind,
    State,
    Tally,
    WorkItem,
    acknowledge,
    judge,
    tally,
    unacknowledge,
)


def finding(kind: Kind = Kind.INVALID, content: str = "c1", key: str = "K-1") -> Finding:
    return Finding(tenant=1, source_key=key, kind=kind, reason=f"{kind} reason",
                   content_hash=content, source_file="n.csv", source_line=7)  # fmt: skip


def one(items: list[WorkItem]) -> WorkItem:
    assert len(items) == 1, items
    return items[0]


def test_a_new_finding_opens_an_item_first_and_last_seen_in_this_run() -> None:
    item = one(judge([], [finding()], run_id=3, by_hand=False))
    assert (item.state, item.kind, item.first_run_id, item.last_run_id, item.opened_run_id) == (
        "open", "invalid", 3, 3, 3,
    )  # fmt: skip
    assert (item.source_file, item.source_line, item.content_hash) == ("n.csv", 7, "c1")


def test_an_open_item_seen_again_stays_open_and_keeps_its_first_run() -> None:
    old = one(judge([], [finding()], run_id=3, by_hand=False))
    item = one(judge([old], [finding()], run_id=4, by_hand=False))
    assert (item.state, item.first_run_id, item.last_run_id, item.opened_run_id) == (
        "open", 3, 4, 3,
    )  # fmt: skip


def test_an_item_whose_cause_went_away_is_resolved() -> None:
    old = one(judge([], [finding()], run_id=3, by_hand=False))
    item = one(judge([old], [], run_id=4, by_hand=False))
    assert (item.state, item.resolved_run_id, item.resolved_by_hand) == ("resolved", 4, False)
    assert judge([item], [], run_id=5, by_hand=False) == []  # nothing more to write


def test_a_resolved_item_whose_cause_returns_reopens() -> None:
    old = one(judge([], [finding()], run_id=3, by_hand=False))
    gone = one(judge([old], [], run_id=4, by_hand=False))
    back = one(judge([gone], [finding(content="c2")], run_id=5, by_hand=False))
    assert (back.state, back.first_run_id, back.opened_run_id, back.resolved_run_id) == (
        "open", 3, 5, None,
    )  # fmt: skip


def test_an_acknowledged_item_stays_acknowledged_while_its_content_holds() -> None:
    old = one(judge([], [finding()], run_id=3, by_hand=False))
    acked = acknowledge(old, by="ayse", at="2026-12-06T07:00:00+00:00", note="known")
    assert (acked.state, acked.ack_by, acked.ack_note, acked.ack_hash) == (
        "acknowledged", "ayse", "known", "c1",
    )  # fmt: skip
    again = one(judge([acked], [finding()], run_id=4, by_hand=False))
    assert (again.state, again.last_run_id) == ("acknowledged", 4)


def test_an_acknowledged_item_reopens_when_its_row_changes() -> None:
    old = one(judge([], [finding()], run_id=3, by_hand=False))
    acked = acknowledge(old, by="ayse", at="t", note="known")
    item = one(judge([acked], [finding(content="c2")], run_id=4, by_hand=False))
    assert (item.state, item.opened_run_id, item.content_hash) == ("open", 4, "c2")
    assert item.ack_hash == "c1"  # the old acknowledgement stays readable, it covers c1 only


def test_unack_opens_an_acknowledged_item() -> None:
    old = one(judge([], [finding()], run_id=3, by_hand=False))
    item = unacknowledge(acknowledge(old, by="a", at="t", note="n"))
    assert (item.state, item.ack_by, item.ack_hash) == ("open", None, None)


def test_an_acknowledged_item_whose_cause_goes_away_is_resolved() -> None:
    acked = acknowledge(one(judge([], [finding()], run_id=3, by_hand=False)), by="a", at="t",
                        note="n")  # fmt: skip
    assert one(judge([acked], [], run_id=4, by_hand=False)).state == "resolved"


def test_a_row_fixed_by_hand_while_the_export_keeps_the_old_invalid_version_is_quiet() -> None:
    invalid = one(judge([], [finding()], run_id=1, by_hand=False))
    fixed = one(judge([invalid], [], run_id=2, by_hand=True))  # created from the fixed file
    assert (fixed.state, fixed.resolved_by_hand) == ("resolved", True)
    night = one(judge([fixed], [finding()], run_id=3, by_hand=False))  # the same bad version
    assert (night.kind, night.state) == ("invalid", State.FIXED_BY_HAND)
    assert tally([night], 3) == Tally(0, 0, 0)
    # The export then fixes the row to the created version: the cause is gone for good.
    assert one(judge([night], [], run_id=4, by_hand=False)).state == "resolved"


def test_a_refused_row_fixed_by_hand_is_not_changed_while_the_export_keeps_the_old_version() -> (
    None
):
    failed = one(judge([], [finding(Kind.FAILED)], run_id=1, by_hand=False))
    fixed = one(judge([failed], [], run_id=2, by_hand=True))
    # Tonight's export: the old version maps to a payload unlike the created one (changed).
    out = judge([fixed], [finding(Kind.CHANGED)], run_id=3, by_hand=False)
    assert [(i.kind, i.state) for i in out] == [("failed", "fixed_by_hand")]


def test_a_hand_fixed_row_that_changes_upstream_again_is_a_new_changed_item() -> None:
    failed = one(judge([], [finding(Kind.FAILED)], run_id=1, by_hand=False))
    fixed = one(judge([failed], [], run_id=2, by_hand=True))
    out = {i.kind: i for i in judge([fixed], [finding(Kind.CHANGED, "c9")], run_id=3,
                                    by_hand=False)}  # fmt: skip
    assert out[Kind.CHANGED].state == "open"
    assert "failed" not in out  # still resolved: nothing to write


def test_a_cause_resolved_by_a_full_run_is_not_taken_as_fixed_by_hand() -> None:
    invalid = one(judge([], [finding()], run_id=1, by_hand=False))
    gone = one(judge([invalid], [], run_id=2, by_hand=False))  # left the export
    assert one(judge([gone], [finding()], run_id=3, by_hand=False)).state == "open"


def test_kinds_of_one_key_are_judged_apart() -> None:
    items = judge([], [finding(Kind.CHANGED), finding(Kind.DUPLICATE_KEY)], run_id=1,
                  by_hand=False)  # fmt: skip
    assert sorted(i.kind for i in items) == ["changed", "duplicate_key"]
    changed = next(i for i in items if i.kind == "changed")
    dup = next(i for i in items if i.kind == "duplicate_key")
    out = judge([changed, dup], [finding(Kind.DUPLICATE_KEY)], run_id=2, by_hand=False)
    assert {i.kind: i.state for i in out} == {"changed": "resolved", "duplicate_key": "open"}


def test_the_tally_counts_open_items_new_in_this_run_and_acknowledged_ones() -> None:
    a = one(judge([], [finding(key="A")], run_id=1, by_hand=False))
    b = one(judge([], [finding(key="B")], run_id=2, by_hand=False))
    c = acknowledge(one(judge([], [finding(key="C")], run_id=2, by_hand=False)), by="x", at="t",
                    note="n")  # fmt: skip
    d = replace(a, source_key="D", state=State.RESOLVED)
    assert tally([a, b, c, d], 2) == Tally(new=1, open=2, acknowledged=1)
    assert Tally(1, 2, 3).line() == "needs a person: 1 new tonight, 2 open, 3 acknowledged"


def test_an_acknowledged_change_undone_by_the_export_reopens_until_acknowledged() -> None:
    changed = one(judge([], [finding(Kind.CHANGED)], run_id=3, by_hand=False))
    acked = acknowledge(changed, by="ayse", at="t", note="moved in Flextell by hand")
    back = one(judge([acked], [], run_id=4, by_hand=False))  # the export went back
    assert (back.state, back.kind, back.opened_run_id) == ("open", "changed", 4)
    assert back.reason.startswith("the export went back to the version first sent after ayse")
    assert back.ack_note == "moved in Flextell by hand"  # still readable
    assert tally([back], 4) == Tally(new=1, open=1, acknowledged=0)
    still = one(judge([back], [], run_id=5, by_hand=False))
    assert (still.state, still.last_run_id) == ("open", 5)  # not resolved by silence
    done = acknowledge(still, by="ayse", at="t2", note="moved back")
    assert one(judge([done], [], run_id=6, by_hand=False)).state == "resolved"


def test_an_acknowledged_missing_row_that_comes_back_reopens() -> None:
    missing = one(judge([], [finding(Kind.MISSING)], run_id=3, by_hand=False))
    acked = acknowledge(missing, by="ali", at="t", note="cancelled by phone")
    back = one(judge([acked], [], run_id=4, by_hand=False))
    assert back.state == "open"
    assert back.reason.startswith("back in the export after ali acknowledged it missing")
    # Gone again: an ordinary missing finding, the item open as usual.
    again = one(judge([back], [finding(Kind.MISSING)], run_id=5, by_hand=False))
    assert (again.state, again.reason, again.content_hash) == ("open", "missing reason", "c1")


def test_a_hand_fixed_run_resolves_an_acknowledged_change_as_before() -> None:
    changed = one(judge([], [finding(Kind.CHANGED)], run_id=3, by_hand=False))
    acked = acknowledge(changed, by="a", at="t", note="n")
    assert one(judge([acked], [], run_id=4, by_hand=True)).state == "resolved"


def test_a_change_acknowledged_then_changed_again_then_undone_reopens_not_resolves() -> None:
    """A -> B acknowledged (Flextell changed to B by hand), the export then says C (the
    item reopens), then A again: the item resolved silently while Flextell held B
    (verify: a mismatch). It reopens saying what to check, as a direct undo does."""
    changed = one(judge([], [finding(Kind.CHANGED, "B")], run_id=3, by_hand=False))
    acked = acknowledge(changed, by="ayse", at="t", note="moved in Flextell by hand")
    again = one(judge([acked], [finding(Kind.CHANGED, "C")], run_id=4, by_hand=False))
    assert again.state == "open"
    back = one(judge([again], [], run_id=5, by_hand=False))  # the export went back to A
    assert (back.state, back.opened_run_id) == ("open", 5)
    assert back.reason.startswith("the export went back to the version first sent after ayse")
    # Taken back by `unack`, no acknowledgement stands: the undo resolves it as usual.
    plain = one(judge([unacknowledge(acked)], [], run_id=5, by_hand=False))
    assert plain.state == "resolved"
