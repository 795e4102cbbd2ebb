"""The HTML report's charts as inline SVG, drawn here in Python.

Server-side SVG keeps the page one small file that draws without script, prints
and scales; each chart is also given as a table on the page. Series differ by
pattern and by label, not by colour alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

from markupsafe import Markup

from worker.commands.reporting.report_model import RunBar, Timeline

_W, _H = 720, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 16, 44
_DEFS = (
    "<defs>"
    '<pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/>'
    '<line x1="0" y1="0" x2="0" y2="6" stroke="#b45309" stroke-width="3"/></pattern>'
    '<pattern id="dots" width="6" height="6" patternUnits="userSpaceOnUse">'
    '<rect width="6" height="6" fill="#fff"/><circle cx="3" cy="3" r="1.6" fill="#7c2d12"/>'
    "</pattern>"
    '<pattern id="pause" width="8" height="8" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(-45)"><rect width="8" height="8" fill="#fee2e2"/>'
    '<line x1="0" y1="0" x2="0" y2="8" stroke="#dc2626" stroke-width="1.5"/></pattern>'
    "</defs>"
)


def _t(text: object) -> str:
    return escape(str(text), quote=True)


def _svg(label: str, body: str, height: int = _H) -> Markup:
    return Markup(  # noqa: S704 - every text part went through _t()
        f'<svg class="chart" viewBox="0 0 {_W} {height}" role="img" '
        f'aria-label="{_t(label)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{_t(label)}</title>{_DEFS}{body}</svg>"
    )


def _nice_max(value: float) -> float:
    """The next round number at or above value (1, 2, 5 x 10^n)."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    while step > value * 10:
        step /= 10
    for m in (1, 2, 5, 10):
        if m * step >= value:
            return m * step
    return 10 * step


def timeline_svg(tl: Timeline) -> Markup:
    """Requests per second over the run, the configured rate and the pauses."""
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    n = len(tl.first)
    per_s = [(a + b) / tl.bucket_s for a, b in zip(tl.first, tl.later, strict=True)]
    top = _nice_max(max([*per_s, tl.rate_per_s or 0.0]) * 1.1)
    span = n * tl.bucket_s
    bw = plot_w / n

    def y(v: float) -> float:
        return _TOP + plot_h - v / top * plot_h

    def x(seconds: float) -> float:
        return _LEFT + seconds / span * plot_w

    parts: list[str] = []
    for a, b in tl.pauses:
        parts.append(
            f'<rect class="pause" x="{x(a):.1f}" y="{_TOP}" width="{max(x(b) - x(a), 2):.1f}" '
            f'height="{plot_h}" fill="url(#pause)"><title>{_t(_pause_text(a, b))}</title></rect>'
        )
    # Labels where they have room, the longest pauses first: forty pauses of an outage
    # printed their labels over each other ("pau pa pa"), some past the chart's edge.
    # Every pause keeps its band and its tooltip, and the table under the chart.
    placed: list[tuple[float, float]] = []
    for a, b in sorted(tl.pauses, key=lambda p: p[0] - p[1]):
        text = f"pause {b - a:.0f} s"
        left = x(a) + 3
        right = left + _LABEL_CHAR_W * len(text) + 4
        if right > _W - _RIGHT or any(left < end and start < right for start, end in placed):
            continue
        placed.append((left, right))
        parts.append(f'<text x="{left:.1f}" y="{_TOP + 12}" font-size="11">{text}</text>')
    for i, (f, later) in enumerate(zip(tl.first, tl.later, strict=True)):
        x0 = _LEFT + i * bw
        fy = y(f / tl.bucket_s)
        parts.append(
            f'<rect x="{x0:.1f}" y="{fy:.1f}" width="{max(bw - 0.5, 0.5):.1f}" '
            f'height="{_TOP + plot_h - fy:.1f}" fill="#1d4ed8"/>'
        )
        if later:
            ly = y((f + later) / tl.bucket_s)
            parts.append(
                f'<rect x="{x0:.1f}" y="{ly:.1f}" width="{max(bw - 0.5, 0.5):.1f}" '
                f'height="{fy - ly:.1f}" fill="url(#hatch)" stroke="#b45309" stroke-width="0.5"/>'
            )
    if tl.rate_per_s:
        ry = y(tl.rate_per_s)
        parts.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{ry:.1f}" y2="{ry:.1f}" '
            'stroke="#111" stroke-width="1.5" stroke-dasharray="6 4"/>'
            f'<text x="{_W - _RIGHT - 4}" y="{ry - 4:.1f}" font-size="11" text-anchor="end">'
            f"configured rate {tl.rate_per_s:g}/s</text>"
        )
    parts.append(_axes(top, span, "seconds since the run started", "requests per second"))
    return _svg(
        f"Requests per second over the run; configured rate "
        f"{tl.rate_per_s:g}/s; {len(tl.pauses)} pause(s)"
        if tl.rate_per_s
        else f"Requests per second over the run; {len(tl.pauses)} pause(s)",
        "".join(parts),
    )


_LABEL_CHAR_W = 6.5
"""A character's width at font-size 11 (system sans-serif), rounded up."""


def _pause_text(a: float, b: float) -> str:
    return f"no request from {a:.0f} s to {b:.0f} s"


def _axes(top: float, span: float, x_label: str, y_label: str) -> str:
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    base = _TOP + plot_h
    out = [
        f'<line x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{base}" stroke="#333"/>',
        f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{base}" y2="{base}" stroke="#333"/>',
    ]
    for i in range(5):
        v = top * i / 4
        yy = base - plot_h * i / 4
        out.append(
            f'<text x="{_LEFT - 6}" y="{yy + 4:.1f}" font-size="11" text-anchor="end">{v:g}</text>'
        )
    step = _nice_max(span / 5)  # round seconds: 0, 5, 10 ... or 0, 200, 400 ...
    i = 0
    while i * step <= span:
        xx = _LEFT + plot_w * i * step / span
        out.append(
            f'<text x="{xx:.1f}" y="{base + 16}" font-size="11" text-anchor="middle">'
            f"{i * step:g}</text>"
        )
        i += 1
    out.append(
        f'<text x="{_LEFT + plot_w / 2:.1f}" y="{_H - 8}" font-size="12" '
        f'text-anchor="middle">{_t(x_label)}</text>'
        f'<text x="14" y="{_TOP + plot_h / 2:.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {_TOP + plot_h / 2:.1f})">{_t(y_label)}</text>'
    )
    return "".join(out)


def reasons_svg(reasons: Sequence[tuple[str, int]], limit: int = 12) -> Markup:
    """Outcomes by reason as labelled horizontal bars (the largest `limit`)."""
    shown = list(reasons[:limit])
    row, label_w = 22, 300
    height = max(row * len(shown) + 12, 40)
    top = max((n for _, n in shown), default=1)
    parts = []
    for i, (label, n) in enumerate(shown):
        yy = 6 + i * row
        w = (_W - label_w - 70) * n / top
        fill = "#15803d" if label.startswith("created") else "url(#hatch)"
        parts.append(
            f'<text x="{label_w - 6}" y="{yy + 14}" font-size="12" text-anchor="end">'
            f"{_t(_short(label, 44))}</text>"
            f'<rect x="{label_w}" y="{yy + 2}" width="{max(w, 1):.1f}" height="{row - 6}" '
            f'fill="{fill}" stroke="#333" stroke-width="0.5"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{yy + 14}" font-size="12">{n:,}</text>'
        )
    label = "Outcomes by reason: " + ", ".join(f"{k} {v}" for k, v in shown)
    return _svg(label, "".join(parts), height)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def history_svg(bars: Sequence[RunBar]) -> Markup:
    """The latest import runs side by side: created, open items, missing; one panel
    each with its own scale, so a night's 5 open items are not flattened by 300 created.
    A value the run did not record (a crashed run records none) has no bar, and "?" in
    its place."""
    panels: tuple[tuple[str, str, Callable[[RunBar], int | None]], ...] = (
        ("created", "#15803d", lambda b: b.created),
        ("open when the run ended", "url(#hatch)", lambda b: b.open_items),
        ("missing from the export", "url(#dots)", lambda b: b.missing),
    )
    pw = (_W - 20) / 3
    ph = 150
    height = ph + 60
    parts = []
    for p, (title, fill, value) in enumerate(panels):
        x0 = 10 + p * pw
        values = [value(b) for b in bars]
        top = _nice_max(max([*(v for v in values if v is not None), 1]))
        bw = min((pw - 30) / max(len(bars), 1), 40.0)
        parts.append(
            f'<text x="{x0 + pw / 2:.1f}" y="14" font-size="12" font-weight="bold" '
            f'text-anchor="middle">{_t(title)}</text>'
            f'<line x1="{x0 + 10:.1f}" x2="{x0 + pw - 10:.1f}" y1="{ph + 24}" y2="{ph + 24}" '
            'stroke="#333"/>'
        )
        for i, (b, v) in enumerate(zip(bars, values, strict=True)):
            bx = x0 + 15 + i * bw
            parts.append(
                f'<text x="{bx + bw / 2:.1f}" y="{ph + 38}" font-size="10" '
                f'text-anchor="middle">{b.run_id}</text>'
            )
            if v is None:
                parts.append(
                    f'<text x="{bx + bw / 2:.1f}" y="{ph + 20}" font-size="10" '
                    f'text-anchor="middle"><title>run {b.run_id}: not recorded</title>?</text>'
                )
                continue
            h = (ph - 20) * v / top
            parts.append(
                f'<rect x="{bx:.1f}" y="{ph + 24 - h:.1f}" width="{max(bw - 3, 1):.1f}" '
                f'height="{h:.1f}" fill="{fill}" stroke="#333" stroke-width="0.5">'
                f"<title>run {b.run_id}: {v:,} {_t(title)}</title></rect>"
                f'<text x="{bx + bw / 2:.1f}" y="{ph + 20 - h:.1f}" font-size="10" '
                f'text-anchor="middle">{v:,}</text>'
            )
        parts.append(
            f'<text x="{x0 + pw / 2:.1f}" y="{ph + 54}" font-size="11" '
            'text-anchor="middle">run</text>'
        )
    label = "The latest import runs: created, open when the run ended, and missing per run"
    return _svg(label, "".join(parts), height)
