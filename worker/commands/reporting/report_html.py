"""`report --html`: a `ReportPage` rendered into one self-contained HTML file.

Jinja2 with autoescape on: every ledger value (source cells, error messages)
reaches the page escaped. Styles, charts (inline SVG) and the small script are
in the file itself, and its Content-Security-Policy forbids loading anything.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from worker.commands.reporting.report_charts import history_svg, reasons_svg, timeline_svg
from worker.commands.reporting.report_masking import PHONE_DIGITS_SHOWN
from worker.commands.reporting.report_model import ReportPage
from worker.commands.reporting.report_page import duration_text, pause_gap
from worker.errors import ConfigError
from worker.fileperms import write_private_atomically

_TEMPLATES = Path(__file__).with_name("templates")
_COLUMNS = (
    ("kind", "kind", False),
    ("tenant", "tenant", True),
    ("source_key", "source key", False),
    ("local_time", "local time", False),
    ("reason", "reason", False),
    ("field", "field", False),
    ("file", "file", False),
    ("line", "line", True),
    ("patient", "patient", False),
    ("note", "note", False),
)


def _utc(text: str | None) -> str:
    """An ISO time as ``2026-12-06 06:44:48 UTC``."""
    if not text:
        return ""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(_TEMPLATES),
        autoescape=select_autoescape(["html", "j2"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["utc"] = _utc
    return env


def render_page(page: ReportPage) -> str:
    """The page as HTML text."""
    template = _environment().get_template("report.html.j2")
    run = page.run
    return template.render(
        page=page,
        duration=duration_text(run.duration_s) if run and run.duration_s is not None else "-",
        timeline_svg=timeline_svg(page.timeline) if page.timeline else None,
        reasons_svg=reasons_svg(page.reasons) if page.reasons else None,
        history_svg=history_svg(page.history) if page.history else None,
        pause_gap=f"{pause_gap(page.timeline.rate_per_s) if page.timeline else 0:g} s",
        failures_b64=(
            base64.b64encode(page.failures_file).decode("ascii") if page.failures_file else ""
        ),
        columns=_COLUMNS,
        tenants_in_worklist=sorted({i.tenant for i in page.worklist}),
        digits_shown=PHONE_DIGITS_SHOWN,
    )


def write_page(page: ReportPage, path: Path) -> int:
    """Write the page, readable by its owner only (it names rows of a clinic); its size.
    Whole or not at all: a full disk leaves the earlier page, never an empty one."""
    data = render_page(page).encode("utf-8")
    try:
        write_private_atomically(path, data)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the report: {exc.strerror}") from None
    return len(data)


def show_written(path: Path, size: int) -> None:
    """`report --html`'s line: where the page went and its size."""
    print(f"report written to {path} ({size:,} bytes)")
