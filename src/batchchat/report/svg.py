"""Inline SVG chart pieces for ``report.html``: bars, axes, legends, escaped text.

Plain functions returning markup strings; no state, no I/O. The page layout and
what each chart shows live in :mod:`batchchat.report.html`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence

from batchchat.report.text import one_line

#: viewBox widths close to the drawn size, so 13px text stays about 13px on screen
WIDE, HALF, HEIGHT = 1080, 560, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 32
PALETTE = ("#4f46e5", "#0d9488", "#d97706", "#e11d48", "#7c3aed", "#0891b2", "#65a30d", "#64748b")


def bar_rows(
    chart_id: str,
    label: str,
    rows: list[tuple[str, list[float]]],
    kinds: list[tuple[str, str]],
    fmt: Callable[[float], str],
    notes: dict[str, str] | None = None,
    *,
    stacked: bool = True,
) -> str:
    """Horizontal bars, one row per name; ``kinds`` names and colours the segments, stacked
    end to end, or (``stacked=False``) one thin bar per kind under each other."""
    left, right = 170, HALF - 100
    bar_h = 18 if stacked else 12
    row_h = 28 if stacked else 10 + 14 * len(kinds)
    widest = max((sum(v) if stacked else max(v) for _, v in rows), default=0) or 1
    x = scale(0, widest, left, right)
    parts = [legend(kinds, 8)] if len(kinds) > 1 else []
    for i, (name, values) in enumerate(rows):
        y0, x0 = 34 + i * row_h, float(left)
        parts.append(text(left - 8, y0 + 13, one_line(name, 22), "end"))
        for k, ((kind, color), value) in enumerate(zip(kinds, values, strict=True)):
            width = x(value) - left
            y = y0 if stacked else y0 + k * 14
            parts.append(rect(x0, y, max(width, 0), bar_h, color, f"{name} · {kind}: {fmt(value)}"))
            if stacked:
                x0 += width
            else:
                parts.append(text(x0 + width + 6, y + 10, fmt(value), "start"))
        note = (notes or {}).get(name)
        if stacked:
            parts.append(text(x0 + 6, y0 + 13, note or fmt(sum(values)), "start"))
    height = 34 + len(rows) * row_h + 8
    return chart(chart_id, label, parts, height=height)


def step_path(
    points: list[tuple[float, float]],
    step: float,
    x: Callable[[float], float],
    y: Callable[[float], float],
    color: str,
    *,
    fill: bool,
    name: str,
) -> str:
    coords = []
    for t, value in points:
        coords += [f"{x(t):.1f},{y(value):.1f}", f"{x(t + step):.1f},{y(value):.1f}"]
    line = "M" + " L".join(coords)
    base = f"{y(0):.1f}"
    area = (
        f'<path d="{line} L{x(points[-1][0] + step):.1f},{base} L{x(points[0][0]):.1f},{base} Z" '
        f'fill="{color}" fill-opacity="0.15" stroke="none"/>'
        if fill
        else ""
    )
    peak = max(v for _, v in points)
    tip = f"{name}: peak {peak:,.2f}, mean {sum(v for _, v in points) / len(points):,.2f}"
    return (
        f'{area}<path class="series" d="{line}" fill="none" stroke="{color}" stroke-width="1.6">'
        f"<title>{escape(tip)}</title></path>"
    )


def y_axis(
    top: float, y: Callable[[float], float], label: Callable[[float], str], width: float
) -> str:
    parts = []
    for value in ticks(0, top, 4):
        parts.append(line(LEFT, y(value), width - RIGHT, y(value), None))
        parts.append(text(LEFT - 6, y(value) + 4, label(value), "end"))
    return "".join(parts)


def x_axis(
    ticks: list[float], x: Callable[[float], float], label: Callable[[float], str], width: float
) -> str:
    parts = []
    for t in ticks:  # labels at the chart's ends must not spill over its edges
        anchor = "start" if x(t) < LEFT + 20 else "end" if x(t) > width - 40 else "middle"
        parts.append(text(x(t), HEIGHT - BOTTOM + 18, label(t), anchor))
    return "".join(parts)


def legend(items: Sequence[tuple[str, str]], x0: float) -> str:
    parts = []
    for name, color in items:
        parts.append(rect(x0, 6, 10, 10, color, name) + text(x0 + 14, 15, name, "start"))
        x0 += 26 + 8 * len(name)
    return "".join(parts)


def chart(
    chart_id: str, label: str, parts: Sequence[str], width: float = HALF, height: float = HEIGHT
) -> str:
    return (
        f'<svg class="chart" id="{chart_id}" role="img" aria-label="{escape(label)}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(parts)
        + "</svg>"
    )


def rect(x: float, y: float, w: float, h: float, color: str, tip: str) -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="2" fill="{color}">'
        f"<title>{escape(tip)}</title></rect>"
    )


def line(
    x1: float, y1: float, x2: float, y2: float, color: str | None, dash: str | None = None
) -> str:
    style = f'stroke="{color}"' if color else 'class="grid-line"'
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" {style}{dashes}/>'


def text(x: float, y: float, text: str, anchor: str) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'


def scale(d0: float, d1: float, r0: float, r1: float) -> Callable[[float], float]:
    span = (d1 - d0) or 1.0
    return lambda v: r0 + (v - d0) / span * (r1 - r0)


def nice_step(raw: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at least ``raw``: steps people can read."""
    if raw <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def axis_top(value: float) -> float:
    """A round top for an axis from 0 that holds ``value``, in about four steps."""
    step = nice_step(value / 4)
    return max(math.ceil(value / step - 1e-9), 1) * step


def ticks(low: float, high: float, count: int) -> list[float]:
    """Round values between ``low`` and ``high``, about ``count`` steps apart."""
    step = nice_step((high - low) / count) if high > low else 1.0
    first = math.ceil(low / step - 1e-9) * step
    n = int((high - first) / step + 1e-9)
    return [round(first + i * step, 9) for i in range(n + 1)]


#: tick steps of a time axis, in seconds: whole seconds, minutes and hours
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def time_ticks(end: float) -> list[float]:
    step = next((s for s in _TIME_STEPS if s >= end / 6), 43200)
    return [float(t) for t in range(0, int(end) + 1, step)]


def seconds_label(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, rest = divmod(whole, 3600)
    return f"{hours}h{rest // 60:02d}m" if rest else f"{hours}h"


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)
