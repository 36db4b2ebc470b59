"""The recommendation model versions' charts, as inline SVG (no JavaScript), and the
figures the pages print: pure functions over a version's stored metrics and the
versions' headline figures.

Every figure may be missing (None, not finite, of the wrong type), every list may be
empty or hold a single point, a version may not have been evaluated at all (no visitor
active on both sides of its split): a chart then says so in words instead of drawing
nothing. Every string that reaches the SVG is escaped here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from cdp.charts import (
    PALETTE,
    Scale,
    domain,
    legend_layout,
    message,
    number,
    polyline_points,
    short,
    svg_open,
    y_grid,
    y_title,
)

CSS_CLASS = "reco-chart"
# The baseline is the neutral grey (as the control of an experiment), the served blend
# the palette's first colour; the others keep theirs on every chart.
BASELINE = "#555555"
MARK = "#333333"
MODEL_LABELS = {
    "popularity": "popularity (baseline)",
    "trending": "trending",
    "item_item": "similar items (item-item)",
    "svd": "similar items (factorized)",
    "bought_together": "bought together",
    "next_item": "next item",
    "personal": "personal blend (served)",
}
MODEL_COLORS = {
    "popularity": BASELINE,
    "trending": PALETTE[5],
    "item_item": PALETTE[1],
    "svd": PALETTE[4],
    "bought_together": PALETTE[2],
    "next_item": PALETTE[3],
    "personal": PALETTE[0],
}
MEASURES = {"recall": "recall", "ndcg": "NDCG", "hit_rate": "hit rate"}
SHARES = ("recall", "hit_rate")  # shares of 1, shown as percentages; NDCG is a score


def share(value: Any) -> float | None:
    """A figure between 0 and 1 (every measure here is), or None: anything else is not a
    figure to draw."""
    v = number(value)
    return v if v is not None and 0.0 <= v <= 1.0 else None


def model_label(name: str) -> str:
    return MODEL_LABELS.get(name, name.replace("_", " "))


def model_color(name: str) -> str:
    return MODEL_COLORS.get(name, PALETTE[6])


def format_measure(value: Any, measure: str = "recall") -> str:
    """A share as a percentage (recall, hit rate), NDCG as a score; '—' when missing."""
    v = number(value)
    if v is None:
        return "—"
    return f"{v * 100:.1f}%" if measure in SHARES else f"{v:.3f}"


def format_points(value: Any) -> str:
    """A difference of shares in percentage points, signed ('—' when missing)."""
    v = number(value)
    return "—" if v is None else f"{v * 100:+.1f} pp"


def format_bytes(value: Any) -> str:
    v = number(value)
    if v is None or v <= 0:
        return "—"
    if v < 1024:
        return f"{v:,.0f} bytes"
    if v < 1024**2:
        return f"{v / 1024:,.1f} KB"
    return f"{v / 1024**2:,.1f} MB"


def format_ms(value: Any) -> str:
    v = number(value)
    if v is None or v <= 0:
        return "—"
    seconds = v / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


@dataclass(frozen=True)
class Evaluation:
    """A version's offline evaluation, read defensively: the cut-offs, the visitors
    evaluated, and per model and measure one figure (or None) per cut-off."""

    ks: list[int]
    users: int
    models: dict[str, dict[str, list[float | None]]]

    @property
    def measured(self) -> bool:
        return bool(self.ks and self.users and self.models)

    def value(self, model: str, measure: str = "recall", k: int = 10) -> float | None:
        if not self.measured or k not in self.ks or model not in self.models:
            return None
        return self.models[model].get(measure, [None] * len(self.ks))[self.ks.index(k)]

    def names(self) -> list[str]:
        """The models in the charts' order: the baseline first, the served blend last."""
        known = [m for m in MODEL_LABELS if m in self.models]
        return known + sorted(m for m in self.models if m not in MODEL_LABELS)


def evaluation_of(metrics: Any) -> Evaluation:
    m = metrics if isinstance(metrics, Mapping) else {}
    raw_ks = m.get("k")
    ks = [
        k
        for k in (raw_ks if isinstance(raw_ks, list | tuple) else [])
        if isinstance(k, int) and not isinstance(k, bool)
    ]
    users = m.get("users")
    users = users if isinstance(users, int) and not isinstance(users, bool) else 0
    models: dict[str, dict[str, list[float | None]]] = {}
    raw_models = m.get("models")
    for name, figures in (raw_models if isinstance(raw_models, Mapping) else {}).items():
        if not isinstance(figures, Mapping):
            continue
        by_measure: dict[str, list[float | None]] = {}
        for measure in MEASURES:
            row = figures.get(measure)
            row = list(row) if isinstance(row, list | tuple) else []
            by_measure[measure] = [share(v) for v in row[: len(ks)]] + [None] * max(
                len(ks) - len(row), 0
            )
        models[str(name)] = by_measure
    return Evaluation(ks, users, models)


def not_evaluated(evaluation: Evaluation) -> str:
    """Why there is nothing to draw, in words."""
    if evaluation.ks and not evaluation.users:
        return "Not evaluated: no visitor was active both before and after the split"
    return "No evaluation figures: the version has not been evaluated"


def _empty(width: int, height: int, label: str, chart: str, text: str) -> str:
    return (
        svg_open(width, height, label, chart, css_class=CSS_CLASS, description=text)
        + message(width / 2, height / 2, text)
        + "</svg>"
    )


def _legend(
    entries: Sequence[tuple[str, str, str]], *, x0: int, x1: int, y0: float, lines: bool
) -> str:
    """One swatch (a box, or a short line with the series' dashes) and label per
    (label, colour, dash), wrapped into rows from `y0`."""
    places, _ = legend_layout([label for label, _, _ in entries], start=x0, end=x1)
    out = []
    for (label, color, dash), (x, row) in zip(entries, places, strict=True):
        y = y0 + 16 * row
        if lines:
            dashed = f' stroke-dasharray="{dash}"' if dash else ""
            swatch = (
                f'<line x1="{x}" y1="{y - 4:.1f}" x2="{x + 14}" y2="{y - 4:.1f}" '
                f'stroke="{color}" stroke-width="2.5"{dashed}/>'
            )
        else:
            swatch = f'<rect x="{x}" y="{y - 9:.1f}" width="12" height="10" fill="{color}"/>'
        out.append(
            f'<g class="legend">{swatch}<text x="{x + 19}" y="{y:.1f}" font-size="12" '
            f'fill="#333">{escape(label)}</text></g>'
        )
    return "".join(out)


def at_k_chart(*, metrics: Any, measure: str = "recall") -> str:
    """One group of bars per cut-off k (top 1, 5, 10, 20), one bar per compared model,
    the popularity baseline grey and drawn across each group as a dashed line."""
    name = MEASURES.get(measure, measure)
    chart = f"{measure}_at_k"
    label = f"{name}@k on held-out visitors, per model"
    width, left, right, top, plot_h = 680, 62, 20, 20, 230
    evaluation = evaluation_of(metrics)
    if not evaluation.measured:
        return _empty(width, 200, label, chart, not_evaluated(evaluation))
    names = evaluation.names()
    values = [v for m in names for v in evaluation.models[m][measure] if v is not None]
    if not values:
        return _empty(width, 200, label, chart, f"No {name} figures in this evaluation")
    percent = measure in SHARES
    entries = [(model_label(m), model_color(m), "") for m in names]
    _, rows = legend_layout([e[0] for e in entries], start=left, end=width - right)
    plot_bottom = top + plot_h
    height = plot_bottom + 56 + 16 * rows
    y = Scale(*domain([*values, 0.0], floor_zero=True, unit_interval=True), plot_bottom, top)
    shown_k = 10 if 10 in evaluation.ks else evaluation.ks[-1]
    description = f"{name}@{shown_k}: " + "; ".join(
        f"{model_label(m)} {format_measure(evaluation.value(m, measure, shown_k), measure)}"
        for m in names
    )
    out = [svg_open(width, height, label, chart, css_class=CSS_CLASS, description=description)]
    out.append(y_grid(y, left, width - right, percent=percent))
    out.append(
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{plot_bottom}" stroke="#999"/>'
        f'<line x1="{left}" y1="{plot_bottom}" x2="{width - right}" y2="{plot_bottom}" '
        'stroke="#999"/>' + y_title(14, (top + plot_bottom) / 2, f"{name}@k")
    )
    group_w = (width - right - left - 8) / len(evaluation.ks)
    bar_w = group_w * 0.8 / len(names)
    for g, k in enumerate(evaluation.ks):
        gx = left + 8 + g * group_w + group_w * 0.1
        out.append(f'<g class="group" data-k="{k}">')
        for i, m in enumerate(names):
            v = evaluation.models[m][measure][g]
            if v is None:
                continue
            top_y = y(v)
            tip = f"{model_label(m)}: {name}@{k} = {format_measure(v, measure)}"
            out.append(
                f'<g class="bar" data-model="{escape(m)}" data-k="{k}"><title>{escape(tip)}'
                f'</title><rect x="{gx + i * bar_w:.1f}" y="{top_y:.1f}" '
                f'width="{max(bar_w - 1.5, 1):.1f}" height="{max(plot_bottom - top_y, 0.5):.1f}" '
                f'fill="{model_color(m)}"/></g>'
            )
        baseline = evaluation.models.get("popularity", {}).get(measure, [])
        base = baseline[g] if g < len(baseline) else None
        if base is not None:
            tip = f"popularity baseline: {name}@{k} = {format_measure(base, measure)}"
            out.append(
                f'<g class="baseline"><title>{escape(tip)}</title><line x1="{gx - 3:.1f}" '
                f'y1="{y(base):.1f}" x2="{gx + bar_w * len(names) + 2:.1f}" y2="{y(base):.1f}" '
                f'stroke="{BASELINE}" stroke-width="1.5" stroke-dasharray="5 3"/></g>'
            )
        cx = gx + bar_w * len(names) / 2
        out.append(
            f'<text x="{cx:.1f}" y="{plot_bottom + 16}" font-size="12" fill="#333" '
            f'text-anchor="middle">top {k}</text></g>'
        )
    out.append(
        f'<text x="{(left + width - right) / 2:.1f}" y="{plot_bottom + 34}" font-size="12" '
        f'fill="#333" text-anchor="middle">length of the list (k); dashed: the popularity '
        "baseline</text>"
    )
    out.append(_legend(entries, x0=left, x1=width - right, y0=plot_bottom + 56, lines=False))
    out.append("</svg>")
    return "".join(out)


@dataclass(frozen=True)
class VersionPoint:
    """One finished version's recall@k (None where it was not measured)."""

    version: int
    personal: float | None
    popularity: float | None
    item_item: float | None
    outcome: str = ""  # VersionStatus value
    decision: str = ""


VERSION_SERIES = (
    ("popularity", "6 3"),
    ("item_item", "2 3"),
    ("personal", ""),
)


def versions_chart(
    *, points: Sequence[VersionPoint], current: int | None = None, k: int = 10
) -> str:
    """Recall@k of each finished version, oldest first: the personal blend against the
    popularity baseline (and item-item alone), the served version marked, the one on
    the page highlighted; a rejected version's dot is hollow."""
    label = f"recall@{k} by version: personal blend against the popularity baseline"
    chart = "versions"
    width, left, right, top, plot_h = 680, 62, 24, 34, 210
    rows = sorted(points, key=lambda p: p.version)
    if not rows:
        return _empty(width, 200, label, chart, "No finished version yet")
    values = [
        figure
        for p in rows
        for v in (p.personal, p.popularity, p.item_item)
        if (figure := share(v)) is not None
    ]
    if not values:
        return _empty(
            width,
            200,
            label,
            chart,
            "No version could be evaluated yet (no visitor active on both sides of a split)",
        )
    entries = [(model_label(m), model_color(m), dash) for m, dash in VERSION_SERIES]
    _, legend_rows = legend_layout([e[0] for e in entries], start=left, end=width - right)
    plot_bottom = top + plot_h
    height = plot_bottom + 56 + 16 * legend_rows
    y = Scale(*domain([*values, 0.0], floor_zero=True, unit_interval=True), plot_bottom, top)
    x = Scale(0.0, float(len(rows) - 1), left + 30, width - right - 30)
    active = next((p for p in rows if p.outcome == "active"), None)
    description = "; ".join(
        f"v{p.version}{' (served)' if p.outcome == 'active' else ''}: personal "
        f"{format_measure(p.personal)}, popularity {format_measure(p.popularity)}"
        for p in rows[-10:]
    )
    out = [svg_open(width, height, label, chart, css_class=CSS_CLASS, description=description)]
    positions = {p.version: x(float(i)) for i, p in enumerate(rows)}
    served_here = active is not None and active.version == current
    if current in positions:
        band = max(min((x.end - x.start) / max(len(rows) - 1, 1), 60.0), 24.0)
        cx = positions[current]
        x0 = min(max(cx - band / 2, left + 1), width - right - band)
        out.append(
            f'<g class="current-version" data-version="{current}"><rect x="{x0:.1f}" '
            f'y="{top}" width="{band:.1f}" height="{plot_h}" fill="#fff3c4"/>'
            f'<text x="{cx:.1f}" y="{top - 6}" font-size="11" fill="#6d4c00" '
            f'text-anchor="middle">{"this version, served" if served_here else "this version"}'
            "</text></g>"
        )
    out.append(y_grid(y, left, width - right, percent=True))
    out.append(
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{plot_bottom}" stroke="#999"/>'
        f'<line x1="{left}" y1="{plot_bottom}" x2="{width - right}" y2="{plot_bottom}" '
        'stroke="#999"/>' + y_title(14, (top + plot_bottom) / 2, f"recall@{k}")
    )
    if active is not None:
        ax = positions[active.version]
        anchor = "end" if ax > width - right - 30 else "start" if ax < left + 30 else "middle"
        text = "" if served_here else "served"
        out.append(
            f'<g class="active-version" data-version="{active.version}"><title>v'
            f"{active.version} is the version served now</title>"
            f'<line x1="{ax:.1f}" y1="{top}" x2="{ax:.1f}" y2="{plot_bottom}" stroke="{MARK}" '
            f'stroke-dasharray="4 3"/><text x="{ax:.1f}" y="{top - 6}" font-size="11" '
            f'fill="{MARK}" text-anchor="{anchor}">{text}</text></g>'
        )
    step = max(1, -(-len(rows) // 12))
    for i, p in enumerate(rows):
        if i % step and p.version not in (current, active.version if active else None):
            continue
        px = positions[p.version]
        weight = ' font-weight="bold"' if p.version == current else ""
        out.append(
            f'<line x1="{px:.1f}" y1="{plot_bottom}" x2="{px:.1f}" y2="{plot_bottom + 4}" '
            f'stroke="#999"/><text x="{px:.1f}" y="{plot_bottom + 16}" font-size="11" '
            f'fill="#555" text-anchor="middle"{weight}>v{p.version}</text>'
        )
    out.append(
        f'<text x="{(left + width - right) / 2:.1f}" y="{plot_bottom + 34}" font-size="12" '
        f'fill="#333" text-anchor="middle">version (oldest left); hollow: rejected, not '
        "served</text>"
    )
    for name, dash in VERSION_SERIES:
        color = model_color(name)
        runs: list[list[tuple[float, float]]] = [[]]
        dots = []
        for p in rows:
            v = share(getattr(p, name))
            if v is None:
                if runs[-1]:
                    runs.append([])
                continue
            xy = (positions[p.version], y(v))
            runs[-1].append(xy)
            hollow = name == "personal" and p.outcome == "rejected"
            fill = "#fff" if hollow else color
            tip = f"v{p.version}: {model_label(name)} {format_measure(v)}"
            if name == "personal" and p.decision:
                tip += f" — {short(p.decision, 160)}"
            dots.append(
                f'<circle cx="{xy[0]:.1f}" cy="{xy[1]:.1f}" '
                f'r="{4.5 if name == "personal" else 3}" fill="{fill}" stroke="{color}" '
                f'stroke-width="1.5" data-version="{p.version}"><title>{escape(tip)}</title>'
                "</circle>"
            )
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        lines = "".join(
            f'<polyline fill="none" stroke="{color}" stroke-width="2"{dashed} '
            f'points="{polyline_points(run)}"/>'
            for run in runs
            if len(run) > 1
        )
        out.append(f'<g class="series" data-series="{name}">{lines}{"".join(dots)}</g>')
    if len(rows) == 1:
        out.append(
            message(
                (left + width - right) / 2,
                plot_bottom - 14,
                "One version so far: the lines appear with the next",
            )
        )
    out.append(_legend(entries, x0=left, x1=width - right, y0=plot_bottom + 56, lines=True))
    out.append("</svg>")
    return "".join(out)
