"""`report --html`: one self-contained page, checked in headless Chromium over the DevTools
Protocol (charts and worklist in the DOM, a filter, no console error, no network request,
a screenshot that is not blank) and for patient data kept out of the default page."""

from __future__ import annotations

import asyncio
import base64
import html
import itertools
import json
import re
import shlex
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOKEN_T1
from tests.support.chromium import chromium_binary, chromium_page
from tests.support.report_nights import NAME_COLUMN, Nights, build_nights
from tests.support.sync import (
    import_file,
    ledger_json,
    mark_unknown,
    run_cli,
    sample_rows,
    write_config,
    write_csv,
)
from worker.commands.reporting.report_html import render_page
from worker.commands.reporting.report_page import HtmlOptions, collect_page

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

CHROMIUM = chromium_binary()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium or chromium-browser on PATH (Debian: apt-get install chromium)",
)


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> Nights:
    return build_nights(tmp_path_factory.mktemp("nights"))


def write_page(nights: Nights, out: Path, *extra: str) -> str:
    result = run_cli("report", "-c", str(nights.config), "--html", str(out), *extra)
    assert result.exit_code == 0, result.output
    assert f"report written to {out}" in result.stdout
    return out.read_text(encoding="utf-8")


@needs_chromium
def test_the_page_renders_offline_with_charts_worklist_and_a_working_filter(
    nights: Nights, tmp_path: Path
) -> None:
    page_path = tmp_path / "report.html"
    write_page(nights, page_path, "--run", "1")
    asyncio.run(check_in_chromium(nights, page_path, tmp_path / "report.png"))


async def check_in_chromium(nights: Nights, page_path: Path, png: Path) -> None:
    assert CHROMIUM is not None
    async with chromium_page(CHROMIUM) as page:
        await page.open(page_path.resolve().as_uri())
        charts = await page.evaluate(
            "['chart-timeline', 'chart-reasons', 'chart-history'].map("
            "id => document.querySelectorAll('#' + id + ' svg rect').length)"
        )
        assert all(n > 0 for n in charts), charts
        pauses = await page.evaluate("document.querySelectorAll('#chart-timeline .pause').length")
        assert pauses >= 1  # the sandbox's 10/2s limit made the worker wait
        want = len(nights.bad_keys) + len(nights.changed_keys) + len(nights.removed_keys)
        keys = await page.evaluate(
            "[...document.querySelectorAll('#worklist tbody tr')].map(r => r.cells[2].textContent)"
        )
        assert sorted(keys) == sorted(
            [*nights.bad_keys, *nights.changed_keys, *nights.removed_keys]
        )
        assert len(keys) == want
        heads = await page.evaluate(
            "[...document.querySelectorAll('#worklist thead th[scope=col]')].length"
        )
        assert heads == 10

        visible = (
            "[...document.querySelectorAll('#worklist tbody tr')]"
            ".filter(r => !r.hidden).map(r => r.cells[2].textContent)"
        )
        await page.evaluate(
            "(() => { const s = document.getElementById('f-kind'); s.value = 'changed';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        assert sorted(await page.evaluate(visible)) == sorted(nights.changed_keys)
        assert await page.evaluate("document.getElementById('shown').textContent") == "2 shown"
        await page.evaluate(
            "(() => { const s = document.getElementById('f-kind'); s.value = '';"
            " s.dispatchEvent(new Event('change'));"
            " const q = document.getElementById('f-search'); q.value = 'missing';"
            " q.dispatchEvent(new Event('input')); })()"
        )
        assert sorted(await page.evaluate(visible)) == sorted(nights.removed_keys)
        await page.evaluate(
            "(() => { const q = document.getElementById('f-search'); q.value = '';"
            " q.dispatchEvent(new Event('input'));"
            " document.querySelector('#worklist thead button[data-col=\"7\"]').click(); })()"
        )
        lines = await page.evaluate(
            "[...document.querySelectorAll('#worklist tbody tr')].map(r => +r.cells[7].textContent)"
        )
        assert lines == sorted(lines)

        shot = await page.screenshot(png)
        assert page.errors() == []
        requests = page.requests()
    # The page itself is the only thing fetched: no script, style, font or image from anywhere.
    assert requests == [page_path.resolve().as_uri()]
    assert not_blank(shot)


@needs_chromium
def test_the_browser_check_sees_a_request_and_a_console_error(tmp_path: Path) -> None:
    """The harness itself: a page that fetches and logs an error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<p>x</p><img src="http://127.0.0.1:9/x.png"><script>console.error("boom")</script>',
        encoding="utf-8",
    )

    async def open_bad() -> tuple[list[str], list[str]]:
        assert CHROMIUM is not None
        async with chromium_page(CHROMIUM) as page:
            await page.open(bad.resolve().as_uri())
            await asyncio.sleep(0.3)
            return page.requests(), page.errors()

    requests, errors = asyncio.run(open_bad())
    assert "http://127.0.0.1:9/x.png" in requests
    assert any("boom" in e for e in errors)
    from PIL import Image

    Image.new("RGB", (1200, 900), "white").save(tmp_path / "white.png")
    assert not not_blank(tmp_path / "white.png")


def not_blank(png: Path) -> bool:
    """More than a handful of colours, and dark pixels on the white page."""
    from PIL import Image

    with Image.open(png) as img:
        rgb = img.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        dark = sum(n for n, c in colours if isinstance(c, tuple) and sum(c) < 200)
        return rgb.size[0] > 500 and len(colours) > 20 and dark > 1000


def patient_values(nights: Nights) -> list[str]:
    """The names, phones and notes of the rows the worklist lists."""
    values = []
    for row in nights.rows_needing_a_person():
        phone = row["Hasta Tel"]
        values += [row[NAME_COLUMN], phone, re.sub(r"\D", "", phone)]
        values += [row[c] for c in ("Not", "Ek Not") if len(row[c]) > 3]
        values += row[NAME_COLUMN].split()  # first and last name alone
    return values


def test_patient_data_appears_nowhere_in_the_default_page(nights: Nights, tmp_path: Path) -> None:
    masked = write_page(nights, tmp_path / "masked.html")
    shown = write_page(nights, tmp_path / "shown.html", "--show-patient-data")
    values = patient_values(nights)
    assert values
    leaked = [v for v in values if v in masked]
    assert leaked == []
    assert "Patient data masked" in masked
    # The same page written with --show-patient-data holds them: the check above can fail.
    for row in nights.rows_needing_a_person():
        if row["Randevu No"] not in nights.removed_keys:
            assert row[NAME_COLUMN] in shown
    assert "Patient data SHOWN" in shown
    # Masked forms: initials, the phone's last two digits.
    row = nights.rows_needing_a_person()[0]
    first, last = row[NAME_COLUMN].split()
    digits = re.sub(r"\D", "", row["Hasta Tel"])
    assert f"<bdi>…{digits[-2:]}</bdi>, <bdi>{first[0]}. {last[0]}.</bdi>" in masked


def test_the_save_link_holds_the_failures_file_report_writes(
    nights: Nights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = write_page(nights, tmp_path / "shown.html", "--show-patient-data")
    found = re.search(r'download="(failures\.csv)" href="data:text/csv;base64,([^"]+)"', shown)
    assert found is not None
    failures = tmp_path / "failures.csv"
    assert run_cli("report", "-c", str(nights.config), "--failures", str(failures)).exit_code == 0
    assert base64.b64decode(found.group(2)) == failures.read_bytes()
    if CHROMIUM is not None:  # and a click in the browser saves that file, with no request
        saved = asyncio.run(click_save(tmp_path / "shown.html", tmp_path / "downloads"))
        assert saved == failures.read_bytes()
    # The masked page does not carry it, and says how to get it.
    masked = write_page(nights, tmp_path / "masked.html")
    assert "data:text/csv" not in masked
    [command] = re.findall(r"run (flextell-worker report [^,]*--failures failures\.csv)", masked)
    assert "FILE" not in command and "CONFIG" not in command  # it pastes as is
    pasted = tmp_path / "pasted"
    pasted.mkdir()
    monkeypatch.chdir(pasted)
    assert run_cli(*shlex.split(html.unescape(command))[1:]).exit_code == 0
    assert (pasted / "failures.csv").read_bytes() == failures.read_bytes()


async def click_save(page_path: Path, folder: Path) -> bytes:
    assert CHROMIUM is not None
    folder.mkdir()
    async with chromium_page(CHROMIUM) as page:
        await page.save_downloads_in(folder)
        await page.open(page_path.resolve().as_uri())
        await page.evaluate("document.getElementById('save-failures').click()")
        deadline = asyncio.get_running_loop().time() + 20
        while not (folder / "failures.csv").exists():
            assert asyncio.get_running_loop().time() < deadline, list(folder.iterdir())
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # written whole: the file appears under its name when done
        assert page.errors() == []
        assert page.requests() == [page_path.resolve().as_uri()]
    return (folder / "failures.csv").read_bytes()


def test_bad_asks_get_one_line_errors(nights: Nights, tmp_path: Path) -> None:
    page = str(tmp_path / "r.html")
    out = run_cli("report", "-c", str(nights.config), "--html", page, "--run", "9")
    assert out.exit_code == 2
    assert out.stderr.strip().splitlines() == [f"error: ledger {nights.ledger} has no run 9"]
    out = run_cli("report", "-c", str(nights.config), "--show-patient-data")
    assert out.exit_code == 2 and "--show-patient-data goes with --html" in out.output
    out = run_cli("report", "-c", str(nights.config), "--html", page, "--tenant", "1")
    assert out.exit_code == 2 and "give --tenant and --failures without --html" in out.output
    out = run_cli("report", "-c", str(nights.config), "--html", str(tmp_path / "no" / "r.html"))
    assert out.exit_code == 2
    assert "cannot write the report" in out.stderr and "Traceback" not in out.output


def test_the_page_reads_a_shared_postgresql_ledger(tmp_path: Path, sbx: Any, pg_url: str) -> None:
    config = write_config(tmp_path, ledger_url=pg_url)
    columns, rows = sample_rows()
    chosen = [dict(r) for r in rows[:6] + rows[150:156]]
    chosen[-1]["start"] = "not a date"
    result, _ = import_file(config, sbx, write_csv(tmp_path / "in.csv", columns, chosen))
    assert result.exit_code == 1, result.output
    out = tmp_path / "report.html"
    made = run_cli("report", "--ledger", pg_url, "--html", str(out))
    assert made.exit_code == 0, made.output
    html = out.read_text(encoding="utf-8")
    assert "11 of 12 rows read were made or found in Flextell" in html
    assert chosen[-1]["appointment_id"] in html and "scheduled_at" in html


def test_times_are_the_clinics_local_times(nights: Nights, tmp_path: Path) -> None:
    html = write_page(nights, tmp_path / "r.html")
    rows = {r["Randevu No"]: r for r in nights.night1}
    with_payload = [k for k, kind in nights.bad_keys.items() if kind == "failed"]
    for key in [*with_payload, *nights.changed_keys, *nights.removed_keys]:
        day, month, year = rows[key]["Tarih"].split(".")
        date, time = f"{year}-{month}-{day}", rows[key]["Saat"]
        # The ledger holds UTC (Berlin and Athens are 1-3 hours ahead): the page shows the
        # time the export had, in the row's own cell (date and time each kept whole), with
        # the clinic's offset (on the night the clocks go back, 02:30 is two moments).
        cell = (
            rf'<td class="tok"><span class="nw">{date}</span> <span class="nw">{time}</span> '
            r'<span class="nw">\+0[23]:00</span></td>'
        )
        assert re.search(rf"<th scope=\"row\"><bdi>{key}</bdi></th>{cell}", html), key


def test_the_page_holds_at_most_the_bound_and_says_so(nights: Nights, tmp_path: Path) -> None:
    page = asyncio.run(
        collect_page(HtmlOptions(out=tmp_path / "r.html", ledger_path=nights.ledger, embed_limit=3))
    )
    assert (len(page.worklist), page.worklist_total) == (3, 8)
    html = render_page(page)
    assert html.count('<tr data-kind="') == 3
    assert "This page carries the first 3 of 8 items (it holds at most 3" in html
    assert "Now 8 row(s) need a person" in html  # the verdict counts them all


def test_rows_the_export_changed_count_as_in_flextell(nights: Nights, tmp_path: Path) -> None:
    """Night 2 moved two created rows: their appointments are in Flextell, as created."""
    html = render_page(
        asyncio.run(collect_page(HtmlOptions(out=tmp_path / "r.html", ledger_path=nights.ledger)))
    )
    said = re.search(r"([\d,]+) of ([\d,]+) rows read were made or found in Flextell "
                     r"\(([\d,]+) of them as created before the export changed them\)",
                     html)  # fmt: skip
    assert said is not None
    done, read, earlier = (int(g.replace(",", "")) for g in said.groups())
    assert (read - done, earlier) == (len(nights.bad_keys), len(nights.changed_keys))


@needs_chromium
def test_the_page_tells_each_run_as_it_exited(tmp_path: Path, sbx: Any) -> None:
    # The page derived its own exit code from the run's counts: an empty export's run
    # (exit 1) read "OK ... exit code 0", an all-acknowledged night (exit 0) "Needs
    # attention ... exit code 1", a --partial run (exit 1) "exit code 0" (a nightly drill).
    config = write_config(tmp_path)
    columns, sample = sample_rows()
    rows = [dict(r) for r in sample[:5] + sample[150:155]]
    fixed = dict(rows[1])
    rows[1]["customer_id"], rows[6]["customer_id"] = "x", "y"  # tenant 1, tenant 2

    def night(name: str, chosen: list[dict[str, str]], *extra: str) -> int:
        result, _ = import_file(config, sbx, write_csv(tmp_path / name, columns, chosen), *extra)
        return result.exit_code

    assert night("n1.csv", rows) == 1
    assert night("fix.csv", [fixed], "--partial") == 1  # tenant 2's row is still open
    key = rows[6]["appointment_id"]
    assert run_cli("ack", key, "-c", str(config), "--note", "branch knows").exit_code == 0
    rows[1] = fixed
    assert night("n3.csv", rows) == 0  # all that is left is acknowledged
    assert night("empty.csv", []) == 1  # not trusted: it has no rows
    assert night("half.csv", rows[:2] + rows[5:6] + rows[7:8]) == 1  # lacks half of each
    recorded = [r["exit_code"] for r in ledger_json(config)["runs"]]
    assert recorded == [1, 1, 0, 1, 1]
    db = sqlite3.connect(tmp_path / "ledger.sqlite")  # run 1 as an older worker recorded it
    with db:
        db.execute("UPDATE runs SET exit_code = NULL, counts = json_remove(counts, "
                   "'$.worklist_open') WHERE id = 1")  # fmt: skip
    db.close()
    pages = {}
    for run in range(1, 6):
        pages[run] = tmp_path / f"run{run}.html"
        made = run_cli("report", "-c", str(config), "--run", str(run), "--html", str(pages[run]))
        assert made.exit_code == 0, made.output
    seen = asyncio.run(read_glances(list(pages.values())))
    old, partial, acked, empty, half = (seen[pages[r]] for r in range(1, 6))

    assert partial["verdict"].startswith("Needs attention: Run 2 (import, partial) finished")
    assert "exit code 1" in partial["verdict"] and "--partial" in partial["verdict"]
    assert partial["exit"].endswith("Exit code: 1 (as the run exited: needs a person).")
    assert acked["verdict"].startswith("OK: Run 3 (import) finished")
    assert "exit code 0" in acked["verdict"] and "Nothing needs a person now" in acked["verdict"]
    # Per tenant, "needs a person" is the worklist's: the acknowledged row is not in it.
    assert [t[-1] for t in acked["tenants"]] == ["none", "none"]
    for page, why in ((empty, "no rows"), (half, "incomplete, stale or cut short")):
        assert page["verdict"].startswith("Needs attention:") and "exit code 1" in page["verdict"]
        assert f"not trusted for Kadikoy Clinic ({why}), Besiktas Clinic ({why})" in page["verdict"]
        assert "No worklist item is open now" in page["verdict"]
    # The history's open items are the worklist's when each run ended, as `import` said.
    assert [r[3] for r in half["history"]] == ["not recorded", "1", "0", "0", "0"]
    assert half["history_head"][3] == "open when the run ended"
    # A run recorded before runs kept their exit code: derived, and said so.
    assert old["exit"].endswith(
        "Exit code: 1 (the run was recorded before runs kept their exit code: derived from "
        "its counts, which do not show acknowledged items)."
    )


@needs_chromium
def test_a_run_that_left_rows_unsent_says_how_many_why_and_what_helps(
    tmp_path: Path, sbx: Any
) -> None:
    """A night whose tenant 2 the API refused (403): the page said "the run stopped early:
    run the same import again to finish it", which cannot help, and no word of the rows
    left unsent or of the refusal; an outage night's rows are sent by running again."""
    config = write_config(tmp_path)
    columns, sample = sample_rows()
    rows = [dict(r) for r in sample[:3] + sample[150:153]]
    assert import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, rows))[0].exit_code == 0
    rows += [dict(r) for r in sample[153:156]]  # three new rows of tenant 2
    refused = run_cli("import", str(write_csv(tmp_path / "n2.csv", columns, rows)), "-c",
                      str(config), "--base-url", sbx.base_url, "--no-progress",
                      env={"FLEXTELL_TOKEN": TOKEN_T1})  # fmt: skip
    assert refused.exit_code == 3, refused.output
    pages = {run: tmp_path / f"run{run}.html" for run in (2, 3)}

    def page_of(run: int) -> None:  # made each night, as a nightly job does
        made = run_cli("report", "-c", str(config), "--run", str(run), "--html", str(pages[run]))
        assert made.exit_code == 0, made.output

    page_of(2)
    sbx.change("POST", "/_sandbox/faults", {"faults": {"error503": 1.0}})
    outage, _ = import_file(config, sbx, tmp_path / "n2.csv")
    sbx.change("POST", "/_sandbox/faults", {"faults": {}})
    assert outage.exit_code != 0, outage.output
    page_of(3)
    seen = asyncio.run(read_glances(list(pages.values())))
    verdict = seen[pages[2]]["verdict"]
    assert "it left 3 row(s) not sent (Besiktas Clinic: 3, tenant stopped: HTTP 403" in verdict
    assert "the API refused the credentials of Besiktas Clinic: fix the token" in verdict
    assert "run the same import again" not in verdict
    assert "it left 3 row(s) not sent (Besiktas Clinic: 3, " in seen[pages[3]]["verdict"]
    assert "run the same import again to send them" in seen[pages[3]]["verdict"]


@needs_chromium
def test_a_relink_or_reconcile_run_s_page_says_what_it_did(tmp_path: Path, sbx: Any) -> None:
    """The page of a relink run (a deleted appointment set to be booked again) read "OK:
    Run 2 (relink) finished ... No rows were read. Nothing needs a person now.": not a
    word of what it did. A reconcile run's page was the same."""
    config = write_config(tmp_path)
    columns, sample = sample_rows()
    rows = sample[:3] + sample[150:153]
    assert import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, rows))[0].exit_code == 0
    gone = rows[1]["appointment_id"]
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        [(made,)] = db.execute("SELECT appointment_id FROM entries WHERE source_key = ?", (gone,))
    sbx.change("DELETE", f"/_sandbox/appointments/{made}")
    relink = run_cli("relink", gone, "--book-again", "-c", str(config), "--base-url", sbx.base_url)
    assert relink.exit_code == 0, relink.output
    mark_unknown(tmp_path / "ledger.sqlite", [(1, rows[0]["appointment_id"])])
    reconcile = run_cli("reconcile", "-c", str(config), "--base-url", sbx.base_url)
    assert reconcile.exit_code == 0, reconcile.output
    pages = {run: tmp_path / f"run{run}.html" for run in (2, 3)}
    for run, page in pages.items():
        made = run_cli("report", "-c", str(config), "--run", str(run), "--html", str(page))
        assert made.exit_code == 0, made.output
    seen = asyncio.run(read_glances(list(pages.values())))
    relinked, reconciled = seen[pages[2]]["verdict"], seen[pages[3]]["verdict"]
    assert relinked.startswith("OK: Run 2 (relink) finished"), relinked
    assert (
        "exit code 0. It checked 1 row(s): 1 pending again: "
        "the next import books them. Nothing needs a person now."
    ) in relinked
    assert reconciled.startswith("OK: Run 3 (reconcile) finished"), reconciled
    assert (
        "exit code 0. It looked up 1 row(s) whose outcome was not known: 1 found in "
        "Flextell: created."
    ) in reconciled
    # The row relink set to be booked again is still unsent: said, not a bare "OK".
    assert (
        "1 row(s) of the ledger are not sent yet (pending): the next import sends those its "
        "export holds."
    ) in reconciled


def test_the_request_charts_rate_is_the_tenants_that_send(tmp_path: Path, sbx: Any) -> None:
    # A row of no configured tenant (clinic 3) counted as a third tenant's 1000/s.
    config = write_config(tmp_path)
    columns, sample = sample_rows()
    rows = [dict(r) for r in sample[:3] + sample[150:153]]
    rows.append(dict(sample[3], clinic="3"))
    assert import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, rows))[0].exit_code
    page = tmp_path / "run.html"
    assert run_cli("report", "-c", str(config), "--html", str(page)).exit_code == 0
    text = page.read_text(encoding="utf-8")
    assert "configured rate 2000/s" in text and "configured rate 3000/s" not in text


async def read_glances(paths: list[Path]) -> dict[Path, dict[str, Any]]:
    """Each page's verdict as its text reads (with its "OK: " or "Needs attention: ": in
    the text, not drawn by CSS, so a copy, a mail or a screen reader has it), its exit
    code line, and the per-tenant and history tables' cells."""
    assert CHROMIUM is not None
    cells = "t => t ? [...t.tBodies[0].rows].map(r => [...r.cells].map(c => c.textContent)) : []"
    script = (
        "(() => { const v = document.getElementById('verdict');"
        f" const cells = {cells};"
        " const history = document.querySelector('#chart-history table');"
        " return {verdict: v.textContent,"
        " exit: v.nextElementSibling.textContent.trim(),"
        " tenants: cells(document.getElementById('tenants')), history: cells(history),"
        " history_head: history ? [...history.tHead.rows[0].cells].map(c => c.textContent) : []};"
        " })()"
    )
    seen = {}
    async with chromium_page(CHROMIUM) as page:
        for path in paths:
            await page.open(path.resolve().as_uri())
            seen[path] = await page.evaluate(script)
        assert page.errors() == []
    return seen


@needs_chromium
def test_a_clean_ledger_shows_nothing_missing_after_a_partial_or_untrusted_night(
    tmp_path: Path, sbx: Any
) -> None:
    """A nightly drill: on a ledger whose worklist never held an item, the page fell back
    to 'created rows not in the latest finished import's export', and listed every row
    a --partial file or an untrusted half export did not hold as missing (30 of them,
    and 706 after an interrupted run), where `worklist` and `report` said none."""
    config = write_config(tmp_path)
    columns, sample = sample_rows()
    rows = [dict(r) for r in sample[:5] + sample[150:155]]

    def night(name: str, chosen: list[dict[str, str]], *extra: str) -> int:
        result, _ = import_file(config, sbx, write_csv(tmp_path / name, columns, chosen), *extra)
        return result.exit_code

    assert night("n1.csv", rows) == 0
    assert night("new.csv", [dict(sample[5])], "--partial") == 0
    pages = [tmp_path / "partial.html"]
    assert night("half.csv", rows[:2] + rows[5:7]) == 1  # not trusted: nothing missing
    pages.append(tmp_path / "half.html")
    for page in pages:
        run = "2" if page.name == "partial.html" else "3"
        made = run_cli("report", "-c", str(config), "--run", run, "--html", str(page))
        assert made.exit_code == 0, made.output
    seen = asyncio.run(read_glances(pages))
    for page in pages:
        glance = seen[page]
        assert [t[-1] for t in glance["tenants"]] == ["none", "none"], (page.name, glance)
        assert "need a person (" not in glance["verdict"], (page.name, glance["verdict"])
    assert seen[pages[0]]["verdict"].endswith("Nothing needs a person now.")
    assert "No worklist item is open now" in seen[pages[1]]["verdict"]


def test_rows_a_crash_left_in_flight_are_said_not_called_nothing_to_do(
    tmp_path: Path, sbx: Any
) -> None:
    # A run killed mid-import: the page said "No row needs a person" while verify, on
    # the same ledger, exited 1 for the rows in flight.
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    assert (
        import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, rows[:6]))[0].exit_code
        == 0
    )
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        db.execute(
            "UPDATE entries SET status = 'in_flight', appointment_id = NULL WHERE source_key IN"
            " (SELECT source_key FROM entries ORDER BY source_line LIMIT 2)"
        )
    page = tmp_path / "page.html"
    done = run_cli("report", "-c", str(config), "--html", str(page))
    assert done.exit_code == 0, done.output
    html = page.read_text(encoding="utf-8")
    assert "No row needs a person" not in html
    assert "2 row(s) were in flight when a run stopped" in html
    assert '<span class="word">Needs attention:</span>' in html


@needs_chromium
def test_the_worklist_fits_a_narrow_window_and_prints_without_its_controls(
    nights: Nights, tmp_path: Path
) -> None:
    """At 720 px (about an A4 page) the worklist ran off the right edge, its reason,
    patient and file columns cut; the filter controls printed, doing nothing on paper."""
    page_path = tmp_path / "report.html"
    write_page(nights, page_path, "--run", "1")

    async def check() -> None:
        assert CHROMIUM is not None
        async with chromium_page(CHROMIUM, width=720) as page:
            await page.open(page_path.resolve().as_uri())
            width = await page.evaluate("document.documentElement.clientWidth")
            table = await page.evaluate(
                "document.getElementById('worklist').getBoundingClientRect().right"
            )
            assert table <= width, (table, width)
            await page.send("Emulation.setEmulatedMedia", media="print")
            # Kind, local time and field are read whole: "chan|ged", "13:3|0" were split
            # (a cell's words, each on a line at most, fit its width: no word broken).
            split = await page.evaluate(
                "[...document.querySelectorAll('#worklist tbody tr')].flatMap(r =>"
                " [0, 3, 5].map(i => r.cells[i])).filter(c => { const t = document"
                ".createRange(); t.selectNodeContents(c); const lines = new Set([...t"
                ".getClientRects()].map(q => Math.round(q.top))).size; return"
                " c.textContent.trim() && lines > c.textContent.trim().split(/\\s+/).length; })"
                ".map(c => c.textContent)"
            )
            assert split == [], split
            table = await page.evaluate(
                "document.getElementById('worklist').getBoundingClientRect().right"
            )
            assert table <= width, (table, width)
            shown = await page.evaluate(
                "getComputedStyle(document.querySelector('.controls')).display"
            )
            assert shown == "none"

    asyncio.run(check())


@needs_chromium
def test_pause_labels_do_not_overlap_or_leave_the_chart(tmp_path: Path) -> None:
    """An outage night's 42 pauses printed "pause 17 s pau pa pa | | pau p..." over each
    other, some past the chart's right edge at 720 px. Every pause keeps its band."""
    from worker.commands.reporting.report_charts import timeline_svg
    from worker.commands.reporting.report_model import Timeline

    pauses = [(float(s), float(s) + 1.0 + (s % 7)) for s in range(0, 420, 10)]
    line = Timeline(start=0.0, bucket_s=5.0, first=[3] * 90, later=[0] * 90, rate_per_s=20.0,
                    pauses=pauses, retried_rows=0, http_statuses={})  # fmt: skip
    page = tmp_path / "chart.html"
    page.write_text(f"<!DOCTYPE html><html><body>{timeline_svg(line)}</body></html>", "utf-8")

    async def boxes() -> dict[str, Any]:
        assert CHROMIUM is not None
        async with chromium_page(CHROMIUM, width=720) as browser:
            await browser.open(page.resolve().as_uri())
            found: dict[str, Any] = await browser.evaluate(
                "(() => { const svg = document.querySelector('svg');"
                " const labels = [...svg.querySelectorAll('text')]"
                ".filter(t => t.textContent.startsWith('pause')).map(t => t.getBBox());"
                " return {bands: svg.querySelectorAll('.pause').length,"
                " right: svg.viewBox.baseVal.width,"
                " labels: labels.map(b => [b.x, b.x + b.width])}; })()"
            )
            return found

    seen = asyncio.run(boxes())
    assert seen["bands"] == len(pauses)
    spans = sorted(seen["labels"])
    assert spans, seen  # the longest pauses are named
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
    assert all(end <= seen["right"] for _, end in spans), (spans, seen["right"])


@needs_chromium
def test_a_phone_beside_a_right_to_left_name_keeps_its_order_and_controls_show(
    tmp_path: Path, sbx: Any
) -> None:
    """The patient cell was one run of text: beside a Hebrew name, Chromium drew the phone
    +90 532 105 15 05 as "05 15 105 532 90+", a wrong number to dial; a U+202E in a
    name, written raw, reversed what followed it ("Ali live Veli")."""
    config = write_config(tmp_path)
    columns, sample = sample_rows()
    rows = [dict(r, patient_name="", patient_phone="") for r in sample[:3]]
    rows[0].update(status="maybe", patient_name="שרה כהן", patient_phone="+90 532 105 15 05")
    rows[1].update(status="maybe", patient_name="Ali\u202eevil\u202c Veli")
    export = write_csv(tmp_path / "n1.csv", [*columns, "patient_name", "patient_phone"], rows)
    assert import_file(config, sbx, export)[0].exit_code == 1
    page_path = tmp_path / "shown.html"
    run_cli("report", "-c", str(config), "--html", str(page_path), "--show-patient-data")
    text = page_path.read_text(encoding="utf-8")
    assert "\u202e" not in text and "Ali\\u202eevil\\u202c Veli" in text

    async def check() -> list[list[float]]:
        assert CHROMIUM is not None
        async with chromium_page(CHROMIUM) as page:
            await page.open(page_path.resolve().as_uri())
            # Where each group of the phone's digits is drawn: line, then left to right.
            lefts: list[list[float]] = await page.evaluate(
                "(() => { const row = [...document.querySelectorAll('#worklist tbody tr')]"
                ".find(r => r.textContent.includes('+90 532'));"
                " const cell = [...row.cells].find(c => c.textContent.includes('+90 532'));"
                " const walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);"
                " const out = [];"
                " for (let n = walk.nextNode(); n; n = walk.nextNode()) {"
                "  for (const g of ['+90', '532', '105', '15 ', ' 05']) {"
                "   const i = n.data.indexOf(g); if (i < 0) continue;"
                "   const r = document.createRange(); r.setStart(n, i);"
                "   r.setEnd(n, i + g.length); const b = r.getBoundingClientRect();"
                "   out.push([Math.round(b.top), b.left]); } }"
                " return out; })()"
            )
            assert page.errors() == []
            return lefts

    lefts = asyncio.run(check())
    assert len(lefts) == 5 and lefts == sorted(lefts), lefts


def test_an_api_refusal_names_the_column_and_lookup_its_id_came_from(
    nights: Nights, tmp_path: Path
) -> None:
    """A 422 named only the id sent ("user_id = 99999: The selected user id is
    invalid."), which the export never holds: it had a doctor's name, and the lookup
    table's row gave the id. The item names where the field comes from."""
    listed = run_cli("worklist", "-c", str(nights.config), "--format", "json")
    failed = [i for i in json.loads(listed.stdout) if i["kind"] == "failed"]
    assert failed, listed.output
    assert all(
        "(user_id is mapped from column 'Doktor' through lookup table 'staff': fix it there)"
        in i["reason"]
        for i in failed
    ), failed


def test_a_patient_at_a_dotted_path_of_a_jsonl_export_is_masked_and_shown(
    tmp_path: Path, sbx: Any
) -> None:
    """The patient's cell was empty for a JSONL export whose mapping reads the patient at
    `patient.name`: the page read top-level keys only, and the front desk could not tell
    whose row it was (masked or shown)."""
    _, sample = sample_rows()
    rows = [r for r in sample if r["clinic"] == "1"][:2]
    (tmp_path / "patients.csv").write_text(
        "name,flextell_id\n" + "".join(f"Emine Çelik {n},{r['customer_id']}\n"
                                       for n, r in enumerate(rows)),
        encoding="utf-8",
    )  # fmt: skip
    config = tmp_path / "run.toml"
    config.write_text(
        '[api]\nbase_url = "http://127.0.0.1:1/api"\ntoken = "env:FLEXTELL_TOKEN"\n'
        'rate_limit = "1000/second"\ntimezone = "Europe/Istanbul"\n\n[tenants.1]\n\n'
        '[lookups.patients]\nfile = "patients.csv"\nkey = "name"\nvalue = "flextell_id"\n\n'
        '[mapping]\ntenant = { value = 1 }\nsource_key = "id"\n'
        'customer_id = { column = "patient.name", lookup = "patients" }\n'
        'user_id = "doctor"\nscheduled_at = { column = "start", formats = ["iso"] }\n'
        'status = { column = "status", default = "pending" }\ntreatments = "treatments"\n'
        'description = "visit.note"\n\n[ledger]\npath = "ledger.sqlite"\n',
        encoding="utf-8",
    )
    export = tmp_path / "in.jsonl"
    export.write_text(
        "".join(
            json.dumps({
                "id": r["appointment_id"], "doctor": int(r["doctor_id"]), "start": r["start"],
                "status": "maybe" if n == 0 else r["status"],
                "treatments": [int(t) for t in r["treatment_ids"].split("|")],
                "patient": {"name": f"Emine Çelik {n}"}, "visit": {"note": "penisilin alerjisi"},
            }, ensure_ascii=False) + "\n"
            for n, r in enumerate(rows)
        ),
        encoding="utf-8",
    )  # fmt: skip
    assert import_file(config, sbx, export)[0].exit_code == 1  # the invalid status
    masked, shown = tmp_path / "masked.html", tmp_path / "shown.html"
    assert run_cli("report", "-c", str(config), "--html", str(masked)).exit_code == 0
    assert run_cli("report", "-c", str(config), "--html", str(shown),
                   "--show-patient-data").exit_code == 0  # fmt: skip
    text = masked.read_text(encoding="utf-8")
    assert "Çelik" not in text and "penisilin" not in text
    assert "<bdi>E. Ç.</bdi>" in text  # initials, as a top-level name column gives them
    text = shown.read_text(encoding="utf-8")
    assert "Emine Çelik 0" in text and "penisilin alerjisi" in text
