"""Server-side SVG primitives shared by the admin's charts (experiments' results,
segments' models): the opening tag with its accessible name, scales, round ticks, axes,
a legend layout. Pure functions, no Django: every figure may be missing (see `number`),
and every string that reaches the SVG is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442")
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif"'
MAX_LABEL = 22


def palette_color(index: int) -> str:
    """The index-th colour of the palette (wrapping)."""
    return PALETTE[index % len(PALETTE)]


def number(value: Any) -> float | None:
    """A finite float, or None for anything else (null, NaN, ±inf, a string…)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def short(label: str, limit: int = MAX_LABEL) -> str:
    """The label cut to `limit` characters (with an ellipsis)."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (steps of 1, 2 or 5 × 10^k)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    tick = first
    while tick <= high + step * 1e-9:
        ticks.append(0.0 if abs(tick) < step * 1e-9 else tick)
        tick += step
    return ticks


def tick_label(value: float, step: float, *, percent: bool = False) -> str:
    """A tick's text with as many decimals as its step needs (as a percentage of 1
    when `percent`)."""
    if percent:
        pct = value * 100
        decimals = max(0, -math.floor(math.log10(step * 100))) if step > 0 else 0
        return f"{pct:.{min(decimals, 3)}f}%"
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{value:,.{min(decimals, 4)}f}"


def svg_open(
    width: int,
    height: int,
    label: str,
    chart: str,
    *,
    css_class: str = "cdp-chart",
    description: str = "",
) -> str:
    """The opening tag of an accessible chart: role="img", its name as aria-label and
    <title>, and an optional <desc> that says in words what it shows."""
    desc = f"<desc>{escape(description)}</desc>" if description else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{escape(css_class)}" '
        f'data-chart="{escape(chart)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" {FONT} '
        f'style="background:#fff;border:1px solid #ddd;max-width:100%;height:auto">'
        f"<title>{escape(label)}</title>{desc}"
    )


def message(x: float, y: float, text: str) -> str:
    """A grey, centred sentence where a chart has nothing to draw."""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="13" fill="#777" '
        f'text-anchor="middle">{escape(text)}</text>'
    )


@dataclass(frozen=True)
class Scale:
    """A linear map from data values [low, high] to pixels [start, end]."""

    low: float
    high: float
    start: float  # pixels
    end: float

    def __call__(self, value: float) -> float:
        span = self.high - self.low
        share = (value - self.low) / span if span else 0.5
        return self.start + share * (self.end - self.start)


def domain(
    values: Sequence[float], *, floor_zero: bool = False, unit_interval: bool = False
) -> tuple[float, float]:
    """[low, high] covering the values with a little room (from 0 when `floor_zero` and
    none is negative; inside [0, 1] when `unit_interval`, for rates)."""
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    if floor_zero and low >= 0:
        low = 0.0
    if high - low < 1e-12:
        pad = abs(high) * 0.1 or (0.01 if unit_interval else 1.0)
        low, high = low - pad, high + pad
        if floor_zero and low < 0 <= min(values):
            low = 0.0
    else:
        pad = (high - low) * 0.05
        low = low if floor_zero and low == 0 else low - pad
        high += pad
    if unit_interval:
        low, high = max(low, 0.0), min(high, 1.0)
    return low, high


def x_axis(scale: Scale, y: float, label: str, *, percent: bool = False) -> str:
    """A horizontal axis at `y`: its line, round ticks with their labels, its title."""
    ticks = nice_ticks(scale.low, scale.high)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else abs(scale.high - scale.low) or 1.0
    parts = [
        f'<line x1="{scale.start:.1f}" y1="{y:.1f}" x2="{scale.end:.1f}" y2="{y:.1f}" '
        'stroke="#999"/>'
    ]
    for t in ticks:
        x = scale(t)
        parts.append(
            f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x:.1f}" y2="{y + 4:.1f}" stroke="#999"/>'
            f'<text x="{x:.1f}" y="{y + 16:.1f}" font-size="11" fill="#555" '
            f'text-anchor="middle">{escape(tick_label(t, step, percent=percent))}</text>'
        )
    parts.append(
        f'<text x="{(scale.start + scale.end) / 2:.1f}" y="{y + 34:.1f}" font-size="12" '
        f'fill="#333" text-anchor="middle">{escape(label)}</text>'
    )
    return "".join(parts)


def y_grid(scale: Scale, left: float, right: float, *, percent: bool = False) -> str:
    """Horizontal grid lines at round values of a vertical scale, labelled on the left."""
    ticks = nice_ticks(scale.low, scale.high)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    return "".join(
        f'<line x1="{left}" y1="{scale(t):.1f}" x2="{right}" y2="{scale(t):.1f}" stroke="#eee"/>'
        f'<text x="{left - 6}" y="{scale(t) + 4:.1f}" font-size="11" fill="#555" '
        f'text-anchor="end">{escape(tick_label(t, step, percent=percent))}</text>'
        for t in ticks
    )


def y_title(x: float, mid: float, label: str) -> str:
    """A vertical axis title, turned to read bottom-up, centred at `mid`."""
    return (
        f'<text x="{x:g}" y="{mid:.1f}" font-size="12" fill="#333" text-anchor="middle" '
        f'transform="rotate(-90 {x:g} {mid:.1f})">{escape(label)}</text>'
    )


def polyline_points(run: Sequence[tuple[float, float]]) -> str:
    """A polyline's `points` attribute."""
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in run)


def legend_layout(
    names: Sequence[str], *, start: int, end: int
) -> tuple[list[tuple[int, int]], int]:
    """(x, row) of each legend entry, wrapping so no entry passes `end` (an entry is a
    swatch and its label at about 7 px a character); and the number of rows."""
    out, x, row = [], start, 0
    for name in names:
        wide = 30 + 7 * len(name)
        if x > start and x + wide > end:
            x, row = start, row + 1
        out.append((x, row))
        x += wide
    return out, row + 1
