"""Line charts drawn on the server as SVG: no script, no external reference, no style attribute.

The page's Content-Security-Policy forbids scripts that are not files and inline styles, so the
chart uses presentation attributes (``stroke``, ``fill``) only, and is readable without them too:
``<title>`` and ``<desc>`` name it and say its latest values for screen readers.
"""

from __future__ import annotations

import hashlib
from datetime import date
from xml.sax.saxutils import escape

# Colours that stay apart for the common colour-vision deficiencies (Okabe-Ito), then repeat.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")
MAX_DATE_LABELS = 6
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 28, 62  # margins: y labels, -, title, x labels and legend
LEGEND_ROW = 18


def _text(value: str) -> str:
    return escape(value)


def _attr(value: str) -> str:
    return escape(value, {'"': "&quot;"})


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _percent(share: float) -> str:
    return f"{share * 100:.1f} %"


def line_chart_svg(series: dict[str, list[tuple[date, float]]], *, title: str, width: int = 720,
                   height: int = 280) -> str:
    """An SVG line chart of shares over time: one line (and one marker per point) per series.

    ``series`` maps a label to its points, (day, share from 0 to 1), drawn on a 0-100 % axis
    (values outside are clamped). Days on the x axis are to scale. With no point at all the
    chart says "no snapshots yet"; a single point is drawn as its marker.
    """
    points = {name: sorted(values) for name, values in series.items()}
    days = sorted({day for values in points.values() for day, _ in values})
    ident = "chart-" + hashlib.sha256(title.encode()).hexdigest()[:10]
    plot_left, plot_right = LEFT, width - RIGHT
    plot_top, plot_bottom = TOP, height - BOTTOM
    plot_width, plot_height = plot_right - plot_left, plot_bottom - plot_top
    legend = _legend_positions(list(points), plot_width)
    full_height = height + (legend[-1][1] if legend else 0)  # extra legend rows grow the chart

    def x_of(day: date) -> float:
        if len(days) < 2:
            return plot_left + plot_width / 2
        span = (days[-1] - days[0]).days
        return plot_left + plot_width * (day - days[0]).days / span

    def y_of(share: float) -> float:
        return plot_bottom - plot_height * min(max(share, 0.0), 1.0)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{full_height}" '
        f'viewBox="0 0 {width} {full_height}" role="img" aria-labelledby="{ident}-title {ident}-desc" '
        'font-family="system-ui, -apple-system, Segoe UI, sans-serif">',
        f'<title id="{ident}-title">{_text(title)}</title>',
        f'<desc id="{ident}-desc">{_text(_description(points))}</desc>',
        f'<text x="{plot_left}" y="{TOP - 10}" font-size="14" font-weight="bold" fill="#1b1f24">'
        f"{_text(title)}</text>",
        '<g class="grid" stroke="#d0d7de" stroke-width="1">',
    ]
    for percent in (0, 25, 50, 75, 100):
        y = _num(y_of(percent / 100))
        out.append(f'<line x1="{plot_left}" y1="{y}" x2="{plot_right}" y2="{y}"/>')
    out.append("</g>")
    out.append('<g class="y-labels" font-size="11" fill="#57606a" text-anchor="end">')
    for percent in (0, 25, 50, 75, 100):
        out.append(f'<text x="{plot_left - 6}" y="{_num(y_of(percent / 100) + 4)}">{percent} %</text>')
    out.append("</g>")
    out.append(
        f'<g class="axes" stroke="#57606a" stroke-width="1">'
        f'<line x1="{plot_left}" y1="{plot_top}" x2="{plot_left}" y2="{plot_bottom}"/>'
        f'<line x1="{plot_left}" y1="{plot_bottom}" x2="{plot_right}" y2="{plot_bottom}"/></g>'
    )
    if not days:
        out.append(
            f'<text x="{_num(plot_left + plot_width / 2)}" y="{_num(plot_top + plot_height / 2)}" '
            f'font-size="13" fill="#57606a" text-anchor="middle">no snapshots yet</text>'
        )
    else:
        out.append('<g class="x-labels" font-size="11" fill="#57606a" text-anchor="middle">')
        labelled = _label_days(days)
        for day in labelled:
            x = _num(x_of(day))
            # The last label of several ends at its tick, so that it stays inside the chart.
            anchor = ' text-anchor="end"' if len(labelled) > 1 and day == labelled[-1] else ""
            out.append(
                f'<line x1="{x}" y1="{plot_bottom}" x2="{x}" y2="{plot_bottom + 4}" stroke="#57606a"/>'
                f'<text x="{x}" y="{plot_bottom + 17}"{anchor}>{day.isoformat()}</text>'
            )
        out.append("</g>")
        for index, (name, values) in enumerate(points.items()):
            if not values:
                continue
            colour = PALETTE[index % len(PALETTE)]
            coordinates = " ".join(f"{_num(x_of(day))},{_num(y_of(share))}" for day, share in values)
            out.append(f'<g class="series" stroke="{colour}" fill="{colour}">')
            out.append(f'<polyline points="{coordinates}" fill="none" stroke-width="2"/>')
            for day, share in values:
                out.append(
                    f'<circle cx="{_num(x_of(day))}" cy="{_num(y_of(share))}" r="3">'
                    f"<title>{_text(name)}: {_percent(share)} on {day.isoformat()}</title></circle>"
                )
            out.append("</g>")
    out.append(f'<g class="legend" font-size="12" fill="#1b1f24" transform="translate({plot_left} {height - 18})">')
    for index, (name, (left, row)) in enumerate(zip(points, legend)):
        colour = PALETTE[index % len(PALETTE)]
        out.append(f'<rect x="{left}" y="{row - 9}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{left + 16}" y="{row + 1}">{_text(name)}</text>')
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def _legend_positions(names: list[str], width: int) -> list[tuple[int, int]]:
    """Where each legend entry starts (relative to the legend's origin), wrapping into rows of
    ``LEGEND_ROW`` pixels when a row is full (the text width is estimated: no font metrics here)."""
    positions = []
    x = y = 0
    for name in names:
        entry = 16 + round(6.5 * len(name))
        if x and x + entry > width:
            x, y = 0, y + LEGEND_ROW
        positions.append((x, y))
        x += entry + 20
    return positions


def _label_days(days: list[date]) -> list[date]:
    """At most ``MAX_DATE_LABELS`` days, evenly spread, the first and the last among them."""
    if len(days) <= MAX_DATE_LABELS:
        return days
    step = (len(days) - 1) / (MAX_DATE_LABELS - 1)
    return [days[round(i * step)] for i in range(MAX_DATE_LABELS)]


def _description(points: dict[str, list[tuple[date, float]]]) -> str:
    if not any(points.values()):
        return "No snapshots yet."
    parts = []
    for name, values in points.items():
        if not values:
            parts.append(f"{name}: no data.")
            continue
        first_day, first = values[0]
        last_day, last = values[-1]
        if len(values) == 1:
            parts.append(f"{name}: {_percent(last)} on {last_day.isoformat()}.")
        else:
            parts.append(
                f"{name}: {_percent(last)} on {last_day.isoformat()}, from {_percent(first)} on "
                f"{first_day.isoformat()} ({len(values)} snapshots)."
            )
    return " ".join(parts)
