"""Server-side SVG line plots for the status page (no scripts, nothing fetched)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

Point = tuple[float, float]


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    points: Sequence[Point]
    step: bool = False  # a value holds until the next point (stake over time)


def _ticks(lo: float, hi: float, n: int = 5, min_step: float = 0.0) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = max(min_step, next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw))
    first = math.ceil(lo / step) * step
    out, v = [], first
    while v <= hi + step * 1e-9:
        out.append(round(v, 10))
        v += step
    return out


def _fmt(v: float) -> str:
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.3g}"


def line_plot(
    series: Sequence[Series],
    *,
    element_id: str,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 560,
    height: int = 240,
    y_range: tuple[float, float] | None = None,
    x_format: Callable[[float], str] = _fmt,
    integer_x: bool = False,
) -> str:
    """An ``<svg>`` element with axes, ticks, one polyline and markers per series."""
    pts = [p for s in series for p in s.points]
    left, right, top, bottom = 56, 16, 28, 40
    pw, ph = width - left - right, height - top - bottom
    parts = [
        f'<svg id="{escape(element_id)}" class="plot" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" class="plot-title">{escape(title)}</text>',
    ]
    if not pts:
        parts.append(
            f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" '
            f'class="empty">no data yet</text></svg>'
        )
        return "".join(parts)
    xs = [p[0] for p in pts]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y_range is not None:
        y0, y1 = y_range
    else:
        ys = [p[1] for p in pts]
        y0, y1 = min(ys), max(ys)
        pad = (y1 - y0) * 0.1 or max(abs(y1) * 0.1, 1.0)
        y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    parts.append(
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>'
    )
    for t in _ticks(y0, y1):
        y = sy(t)
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{escape(_fmt(t))}</text>"
        )
    for t in _ticks(x0, x1, 6, 1.0 if integer_x else 0.0):
        x = sx(t)
        parts.append(
            f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">'
            f"{escape(x_format(t))}</text>"
        )
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" class="axis">'
        f"{escape(x_label)}</text>"
        f'<text transform="translate(12 {top + ph / 2}) rotate(-90)" text-anchor="middle" '
        f'class="axis">{escape(y_label)}</text>'
    )
    for i, s in enumerate(series):
        coords: list[Point] = []
        for j, (x, y) in enumerate(s.points):
            if s.step and j:
                coords.append((sx(x), coords[-1][1]))
            coords.append((sx(x), sy(y)))
        poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(
            f'<polyline class="series" data-series="{escape(s.label)}" points="{poly}" '
            f'fill="none" stroke="{escape(s.color)}" stroke-width="2"/>'
        )
        for x, y in s.points:
            parts.append(
                f'<circle class="point" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" '
                f'fill="{escape(s.color)}"><title>{escape(s.label)}: {escape(x_format(x))}, '
                f"{escape(_fmt(y))}</title></circle>"
            )
        lx = left + pw - 150
        ly = top + 14 + 14 * i
        parts.append(
            f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{escape(s.color)}"/>'
            f'<text x="{lx + 14}" y="{ly}" class="legend">{escape(s.label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
