"""Exactly once on data shaped like real exports: rows that share a slot, lost answers.

Every test judges by identity: each source row ends with exactly one appointment
that equals it on every field, recorded for that row alone (`assert_all_created_once`).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import SandboxFactory
from tests.support.importing import (
    DOCTORS,
    TOKEN_ALL,
    Row,
    appointments,
    assert_all_created_once,
    ledger_rows,
    matches,
    posts,
    requests_log,
    run_cli,
    setup,
    start_worker,
    stats,
    write_config,
    write_csv,
)
from tests.support.sandbox_process import sandbox_process

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow


def slot_sharing_rows() -> list[Row]:
    """Rows as a clinic's export has them: several per customer, doctor and instant."""
    at = datetime(2026, 12, 7, 10, 0)
    base = Row("S-00", 1, 1001, 101, at, "approved", (201,), 301, None, "first visit")
    rows = [
        base,
        # the very same booking twice (a double entry in the old system)
        replace(base, key="S-01"),
        # cancelled and re-booked at the same slot
        replace(base, key="S-02", status="cancelled", notes=None),
        # two sessions at one time in two rooms
        replace(base, key="S-03", room=302),
        # people who are both doctor and assistant, of each other's bookings
        replace(base, key="S-04", customer=1002, doctor=102, assistant=101),
        replace(base, key="S-05", customer=1002, doctor=101, assistant=102),
        # a note that looks like a formula
        replace(base, key="S-06", customer=1003, notes='=HYPERLINK("x")'),
        replace(base, key="S-07", customer=1003, notes='=HYPERLINK("x")', status="completed"),
    ]
    # tenant 2 has the same shapes
    rows += [
        replace(
            r,
            key=r.key.replace("S-", "T-"),
            tenant=2,
            customer=r.customer + 1000,
            doctor=r.doctor + 10,
            room=r.room + 10 if r.room else None,
            assistant=r.assistant + 10 if r.assistant else None,
            treatments=(211,),
        )
        for r in rows
    ]
    return rows


async def test_every_answer_lost_rows_sharing_slots_each_get_their_own(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    rows = slot_sharing_rows()
    async with sandbox_factory(faults={"drop_after_commit": 1.0}, fault_seed=3) as sb:
        s = setup(tmp_path, sb.url, rows=rows, concurrency=4)
        result = await run_cli(s.args("--settle-wait", "20"))
        assert result.exit_code == 0, result.output
        await assert_all_created_once(s)
        assert len(posts(await requests_log(sb.url))) == len(rows)  # found, never resent


async def test_mixed_faults_on_slot_sharing_rows_stay_exactly_once(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    rows = slot_sharing_rows()
    faults = {"drop_after_commit": 0.3, "error500": 0.2, "html502": 0.1, "reset_before": 0.1}
    async with sandbox_factory(faults=faults, fault_seed=11) as sb:
        # Settle 1 s (not the helpers' 2): a row's first lookup comes 1 s after its POST,
        # and none of these faults commits late, so a longer settle only adds waiting.
        s = setup(tmp_path, sb.url, rows=rows, concurrency=4, max_attempts=10,
                  settle_seconds=1.0)  # fmt: skip
        result = await run_cli(s.args("--settle-wait", "30"))
        assert result.exit_code == 0, result.output
        await assert_all_created_once(s)


async def test_wrong_base_path_stops_the_tenant_and_leaves_rows_pending(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    async with sandbox_factory() as sb:
        s = setup(tmp_path, sb.url, n=10)
        args = s.args()
        args[args.index("--base-url") + 1] = sb.url + "/apii"
        result = await run_cli(args)
        assert result.exit_code == 3, result.output
        assert "is base_url right?" in result.output
        assert {e["status"] for e in ledger_rows(s.ledger).values()} == {"pending"}
        assert len(posts(await requests_log(sb.url))) <= 2  # one per tenant, then stopped
        again = await run_cli(s.args())
        assert again.exit_code == 0, again.output
        await assert_all_created_once(s)


async def test_retry_failed_with_a_refused_token_keeps_the_real_reason(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    async with sandbox_factory() as sb:
        rows = [Row("F-1", 1, 99999, 101, datetime(2026, 12, 8, 9), "approved", (201,),
                    None, None, None)]  # fmt: skip
        s = setup(tmp_path, sb.url, rows=rows)
        first = await run_cli(s.args())
        assert first.exit_code == 1, first.output
        before = ledger_rows(s.ledger)["F-1"]
        assert before["status"] == "failed" and before["http_status"] == 422
        refused = await run_cli(s.args("--retry-failed"), env={"FLEXTELL_TOKEN": "wrong"})
        assert refused.exit_code == 3, refused.output
        after = ledger_rows(s.ledger)["F-1"]
        assert after["status"] == "failed"
        assert after["error_message"] == before["error_message"]
        assert after["http_status"] == 422


async def test_far_off_year_is_invalid_and_later_runs_keep_working(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    async with sandbox_factory(faults={"drop_after_commit": 1.0}) as sb:
        s = setup(tmp_path, sb.url, n=4)
        text = s.data.read_text(encoding="utf-8").replace(
            "2026-12-01T09:00:00", "9999-12-31T09:00:00"
        )
        s.data.write_text(text, encoding="utf-8")
        result = await run_cli(s.args())
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        statuses = {k: e["status"] for k, e in ledger_rows(s.ledger).items()}
        assert statuses["R-0000"] == "invalid", statuses
        assert sorted(statuses.values()).count("created") == 3
        again = await run_cli(s.args())
        assert again.exit_code == 1 and "Traceback" not in again.output
        validate = await run_cli(["validate", str(s.data), "-c", str(s.config), "--no-progress"])
        assert validate.exit_code == 1 and "year 9999 is outside 1900-2199" in validate.output


async def _create_by_hand(
    url: str, row: Row, *, made_at: str | None = None, **changes: object
) -> int:
    """An appointment made by clinic staff through the API, before the worker runs
    (`made_at`: staff made it then, through the sandbox's own door)."""
    body = {
        "customer_id": row.customer,
        "user_id": row.doctor,
        "scheduled_at": row.utc,
        "status": row.status,
        "treatments": list(row.treatments),
        **({"room_id": row.room} if row.room else {}),
        **({"assistant_id": row.assistant} if row.assistant else {}),
        **({"description": row.notes} if row.notes else {}),
        **({"cancellation_reason": "changed plans"} if row.status == "cancelled" else {}),
        **changes,
    }
    headers = {"Authorization": f"Bearer {TOKEN_ALL}", "X-Tenant": str(row.tenant)}
    target = f"{url}/api/v1/appointments"
    if made_at is not None:
        target, body = (
            f"{url}/_sandbox/appointments",
            body
            | {
                "tenant": row.tenant,
                "created_at": made_at,
            },
        )
    async with (
        aiohttp.ClientSession() as session,
        session.post(target, json=body, headers=headers) as resp,
    ):
        assert resp.status == 201, await resp.text()
        data = await resp.json()
        return int(data["data"]["id"])


async def test_a_new_ledger_adopts_equal_appointments_made_by_hand(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    async with sandbox_factory() as sb:
        s = setup(tmp_path, sb.url, n=6)
        equal_id = await _create_by_hand(sb.url, s.rows[0])
        # the same slot, but in another status: a look-alike, not the row's own
        decoy_id = await _create_by_hand(sb.url, s.rows[1], status="rejected")
        result = await run_cli(s.args())
        assert result.exit_code == 0, result.output
        ledger = ledger_rows(s.ledger)
        assert ledger["R-0000"]["status"] == "created"
        assert ledger["R-0000"]["appointment_id"] == equal_id
        assert ledger["R-0000"]["origin"] == "adopted"
        assert ledger["R-0001"]["status"] == "created"
        assert ledger["R-0001"]["appointment_id"] != decoy_id
        assert ledger["R-0001"]["origin"] == "posted"
        assert len(posts(await requests_log(sb.url))) == 2 + 5  # by hand + all but R-0000
        assert "adopted" in result.output


async def test_after_a_500_a_cancelled_look_alike_made_by_hand_is_never_taken(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Staff cancelled a booking at the row's slot yesterday; the row's POST answers 500
    (it may have landed). The lookup sees only the cancelled one: never the row's own."""
    async with sandbox_factory(faults={"error500": 1.0}) as sb:
        # Settle 1.5 s, longer than the 1 s before a row's first lookup: the first run
        # leaves the row settling after one POST; the second waits out what is left of
        # it (well under 1 s) and sends. The rule itself: tests/test_delivery_row_clock.py.
        s = setup(tmp_path, sb.url, n=1, settle_seconds=1.5)
        [row] = s.rows
        row = replace(row, status="approved")
        s.rows = [row]
        write_csv(s.data, s.rows)
        yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        cancelled = await _create_by_hand(sb.url, row, made_at=yesterday, status="cancelled",
                                          cancellation_reason="changed plans")  # fmt: skip
        first = await run_cli(s.args("--settle-wait", "0"))
        assert first.exit_code == 1, first.output  # the answer is open: unknown, reported
        assert ledger_rows(s.ledger)[row.key]["status"] == "unknown"
        await _set_runtime(sb.url, faults={})
        second = await run_cli(s.args("--settle-wait", "20"))  # looks, waits to settle, sends
        assert second.exit_code == 0, second.output
        entry = ledger_rows(s.ledger)[row.key]
        assert entry["status"] == "created" and entry["appointment_id"] != cancelled
        found = {a["id"]: a for a in await appointments(sb.url, row.tenant)}
        assert matches(row, found[entry["appointment_id"]]) == []
        assert found[cancelled]["status"] == "cancelled"  # untouched, owned by no row
        assert len(found) == 2


async def test_a_lost_answer_beside_a_booking_by_hand_with_another_doctor_is_claimed(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Staff booked the patient with another doctor at the row's time a minute before the
    run (within the clock-skew window); the row's answer is lost. The hand booking was
    taken for a staff edit of the row's own appointment: the row stayed unknown for good
    and its own, equal appointment an orphan. A hand booking is never a POST of ours."""
    async with sandbox_factory(faults={"drop_after_commit": 1.0}) as sb:
        s = setup(tmp_path, sb.url, n=1, settle_seconds=1)
        [row] = s.rows
        other = DOCTORS[row.tenant][(DOCTORS[row.tenant].index(row.doctor) + 1) % 5]
        minute_ago = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        by_hand = await _create_by_hand(sb.url, row, made_at=minute_ago, user_id=other)
        result = await run_cli(s.args("--settle-wait", "10"))
        assert result.exit_code == 0, result.output
        entry = ledger_rows(s.ledger)[row.key]
        assert entry["status"] == "created" and entry["appointment_id"] != by_hand
        found = {a["id"]: a for a in await appointments(sb.url, row.tenant)}
        assert matches(row, found[entry["appointment_id"]]) == []
        assert len(found) == 2  # the row's own and the hand booking, untouched


async def test_renamed_config_with_a_new_ledger_creates_nothing_twice(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    async with sandbox_factory() as sb:
        s = setup(tmp_path, sb.url, rows=slot_sharing_rows())
        assert (await run_cli(s.args())).exit_code == 0
        before = (await stats(sb.url))["appointments_total"]
        s.ledger = tmp_path / "renamed.db"
        result = await run_cli(s.args())
        assert result.exit_code == 0, result.output
        assert (await stats(sb.url))["appointments_total"] == before
        origins = {e["origin"] for e in ledger_rows(s.ledger).values()}
        assert origins == {"adopted"}
        await assert_all_created_once(s)


async def test_no_source_key_on_a_used_ledger_is_refused(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    async with sandbox_factory() as sb:
        s = setup(tmp_path, sb.url, n=6)
        text = s.config.read_text(encoding="utf-8")
        s.config.write_text(
            text.replace('source_key = { column = "appointment_id" }\n', ""), encoding="utf-8"
        )
        first = await run_cli(s.args())
        assert first.exit_code == 0, first.output
        # Said on the first night, not only when the second is refused.
        assert "the mapping has no source_key: this import is this ledger's first" in " ".join(
            first.output.split()
        )
        changed = [replace(r, notes="changed") if i < 3 else r for i, r in enumerate(s.rows)]
        write_csv(s.data, changed)
        refused = await run_cli(s.args())
        assert refused.exit_code == 2, refused.output
        assert "--allow-hash-keys" in refused.output
        assert (await stats(sb.url))["appointments_total"] == 6
        allowed = await run_cli(s.args("--allow-hash-keys"))
        # The old versions' keys are gone from the export: rows that need a person
        # (missing, or for a small branch, an export that looks incomplete).
        assert allowed.exit_code == 1, allowed.output
        assert "needs a person: " in allowed.output
        assert (await stats(sb.url))["appointments_total"] == 9


async def test_calendar_in_the_envelope_shape_is_read(tmp_path: Path) -> None:
    from worker.contract import CalendarResponse

    item = {"appointment_id": 5, "start_at": "2026-12-07T07:00:00Z"}
    bare = CalendarResponse.model_validate_json(json.dumps({"items": [item]}))
    envelope = CalendarResponse.model_validate_json(
        json.dumps({"success": "ok", "data": {"items": [item]}})
    )
    paginated = CalendarResponse.model_validate_json(
        json.dumps({"data": [item], "meta": {"current_page": 1, "last_page": 2}})
    )
    assert [i.appointment_id for i in bare.all_items()] == [5]
    assert [i.appointment_id for i in envelope.all_items()] == [5]
    assert [i.appointment_id for i in paginated.all_items()] == [5]
    assert paginated.last_page() == 2 and bare.last_page() is None


async def test_every_appointment_in_the_sandbox_is_owned_by_the_row_it_equals(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Half the answers lost on slot-sharing rows: judged by identity, not by counts.

    As many appointments as rows, each row on its own appointment that equals it:
    so no appointment is without an owner or owned twice (counting appointments per
    tenant, the earlier form of this test, passed on the pre-#9 worker)."""
    rows = slot_sharing_rows()
    async with sandbox_factory(faults={"drop_after_commit": 0.5}, fault_seed=3) as sb:
        s = setup(tmp_path, sb.url, rows=rows)
        assert (await run_cli(s.args("--settle-wait", "20"))).exit_code == 0
        await assert_all_created_once(s)


async def test_a_crash_while_rows_wait_for_a_slot_sends_each_of_them_on_resume(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """SIGKILL while some POSTs are on the server and slot-sharing rows wait behind them
    (for the rate limit and their identity group): the waiting rows were never sent, so
    on resume each is sent and gets its own appointment, none takes another's."""
    rows = slot_sharing_rows()
    async with sandbox_factory(commit_delay_seconds=1.5) as sb:
        s = setup(tmp_path, sb.url, rows=rows, rate="2/second", settle_seconds=1.0)
        await kill_with_posts_held(await start_worker(s.args()), sb.url, held=2)
        made = (await stats(sb.url))["appointments_total"]
        assert 0 < made < len(rows), f"{made} of {len(rows)} sent before the kill"
        await _set_runtime(sb.url, commit_delay_seconds=0.0)
        write_config(s.config, rate="50/second", settle_seconds=1.0)  # resume quickly
        result = await run_cli(s.args("--settle-wait", "20"))
        assert result.exit_code == 0, result.output
        await assert_all_created_once(s)


async def test_lookups_read_an_enveloped_calendar_and_fall_back_to_the_list(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    rows = slot_sharing_rows()
    shapes: tuple[dict[str, Any], ...] = ({"calendar_shape": "envelope"}, {"calendar_broken": True})
    for n, options in enumerate(shapes):
        work = tmp_path / str(n)
        work.mkdir()
        async with sandbox_factory(faults={"drop_after_commit": 1.0}, **options) as sb:
            s = setup(work, sb.url, rows=rows)
            result = await run_cli(s.args("--settle-wait", "20"))
            assert result.exit_code == 0, (options, result.output)
            await assert_all_created_once(s)
            assert len(posts(await requests_log(sb.url))) == len(rows)


async def _staff_change(
    url: str, method: str, appointment_id: int, body: dict[str, object]
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{url}/_sandbox/appointments/{appointment_id}", json=body) as r,
    ):
        assert r.status < 300, await r.text()


async def test_staff_edits_after_a_crash_with_answers_pending_are_never_recreated(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """SIGKILL while answers are pending; staff then delete, move or re-assign those
    appointments in Flextell; the resumed run must not create them again."""
    rows = slot_sharing_rows()[:6]
    horizon = 0.8
    async with sandbox_factory(commit_delay_seconds=2.0) as sb:
        s = setup(tmp_path, sb.url, rows=rows, timeout=10.0, settle_seconds=0.4)
        text = s.config.read_text(encoding="utf-8")
        s.config.write_text(
            text.replace("[api]\n", f"[api]\nabsent_horizon = {horizon}\n", 1), encoding="utf-8"
        )
        await kill_with_posts_held(await start_worker(s.args()), sb.url, held=3)
        made = {a["id"]: a for a in await appointments(sb.url, 1)}
        assert len(made) == 3  # S-00 (its group waits behind it), S-04, S-05
        ids = sorted(a["id"] for a in made.values())
        await _staff_change(sb.url, "DELETE", ids[0], {})
        await _staff_change(sb.url, "PATCH", ids[1], {"scheduled_at": "2026-12-07T12:30:00Z"})
        await _staff_change(sb.url, "PATCH", ids[2], {"user_id": 104})
        # Past the absent horizon of the lost attempts: the commit delay (2 s) has mostly
        # taken them there already (the rule itself: tests/test_delivery_row_clock.py).
        sent = [e["sent_at"] for e in ledger_rows(s.ledger).values() if e["sent_at"]]
        await asyncio.sleep(max(0.0, max(sent) + horizon + 0.05 - time.time()))
        await _set_runtime(sb.url, commit_delay_seconds=0.0)
        before = (await stats(sb.url))["appointments_total"]
        result = await run_cli(s.args())
        assert result.exit_code == 1, result.output
        ledger = ledger_rows(s.ledger)
        unknown = [e for e in ledger.values() if e["status"] == "unknown"]
        assert len(unknown) >= 3, ledger
        created_now = (await stats(sb.url))["appointments_total"] - before
        never_posted = len(rows) - len(made)
        assert created_now == never_posted, (created_now, never_posted)
        owned = [e["appointment_id"] for e in ledger.values() if e["appointment_id"]]
        assert len(owned) == len(set(owned))
        assert all(
            "absent horizon" in e["error_message"] or "differs" in e["error_message"]
            for e in unknown
        ), [e["error_message"] for e in unknown]


async def _set_runtime(url: str, **settings: object) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/_sandbox/faults", json=settings) as resp,
    ):
        assert resp.status == 200, await resp.text()


async def kill_with_posts_held(proc: asyncio.subprocess.Process, url: str, held: int) -> None:
    """SIGKILL the worker once `held` POSTs are on the server, none answered yet (the
    sandbox's commit delay holds them); return once the server has committed them."""
    for _ in range(400):
        if (await stats(url)).get("pending_commits", 0) >= held or proc.returncode is not None:
            break
        await asyncio.sleep(0.05)
    assert proc.returncode is None, await proc.communicate()
    proc.kill()
    await proc.wait()
    await wait_for_commits(url)


async def wait_for_commits(url: str, within: float = 10.0) -> None:
    """Poll until the sandbox has committed every POST it holds back (commit delay)."""
    deadline = asyncio.get_running_loop().time() + within
    while (await stats(url)).get("pending_commits", 0):
        assert asyncio.get_running_loop().time() < deadline, f"commits pending after {within} s"
        await asyncio.sleep(0.05)


async def wait_for_posts(url: str, *, tenants: tuple[int, ...], within: float) -> None:
    """Poll the sandbox's request log until each tenant's POST was answered."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        log = await requests_log(url)
        if all(posts(log, t) for t in tenants):
            return
        assert asyncio.get_running_loop().time() < deadline, f"no POST of {tenants} in {within} s"
        await asyncio.sleep(0.05)


async def test_a_server_down_mid_run_is_waited_for_past_max_attempts(tmp_path: Path) -> None:
    """The outage budget: a row's 3 attempts are spent within the outage (a second down,
    plus the sandbox's stop and start), yet every row lands. The rule on a fake clock:
    tests/test_pacing.py (the lane's outage budget, retries past max_attempts)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state = tmp_path / "sandbox-state.sqlite"
    options = ("--port", str(port), "--state", str(state))
    rows = slot_sharing_rows()
    rows += [replace(r, key=r.key + "b", local=r.local.replace(hour=14)) for r in rows]
    with sandbox_process(tmp_path, *options) as sandbox:
        url = sandbox.root
        # One request in flight and backoff of at most 0.1 s: a row's 3 attempts are
        # spent well within the outage, which only the outage budget outlasts.
        s = setup(tmp_path, url, rows=rows, rate="4/second", max_attempts=3, max_backoff=0.1,
                  concurrency=1)  # fmt: skip
        proc = await start_worker(s.args())
        # Down once both tenants were answered: a server that never answered a tenant
        # is a wrong host, given up after unreachable_seconds (a slow start on a busy
        # machine made a fixed 2 s land there once). 16 rows a tenant at 4/second
        # leave seconds of sending after that.
        await wait_for_posts(url, tenants=(1, 2), within=30.0)
    await asyncio.sleep(1.0)  # down: every connection refused
    with sandbox_process(tmp_path, *options) as sandbox:
        url = sandbox.root
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()[-3000:]
        assert posts(await requests_log(url)), "the outage did not fall mid-run"
        await assert_all_created_once(s)
