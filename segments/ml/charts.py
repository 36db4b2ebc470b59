"""The clustering and predictor pages' charts, as inline SVG (no JavaScript), and the
centroid table's cells: pure functions over a run's or a version's stored JSON.

Every figure may be missing (None, not finite, of the wrong type) and every list may be
empty or hold a single point: a chart then says so in words instead of drawing nothing.
Every string that reaches the SVG is escaped here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from cdp.charts import (
    Scale,
    domain,
    legend_layout,
    message,
    nice_ticks,
    number,
    palette_color,
    polyline_points,
    short,
    svg_open,
    x_axis,
    y_grid,
    y_title,
)

CSS_CLASS = "ml-chart"
LINE = "#0072B2"
SECOND = "#D55E00"
MARK = "#333333"
CHANCE = "#999999"


def cluster_color(number: int) -> str:
    """A cluster's colour: by its stable number, so it keeps it from run to run."""
    return palette_color(max(number, 1) - 1)


def _fmt(v: float) -> str:
    magnitude = abs(v)
    if magnitude >= 1000:
        return f"{v:,.0f}"
    if magnitude >= 10:
        return f"{v:,.1f}"
    if magnitude == 0:
        return "0"
    return f"{v:.3g}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.0f}%"


def _pairs(rows: Any) -> list[tuple[float, float]]:
    """[[x, y], …] with both finite."""
    out = []
    for row in rows if isinstance(rows, list | tuple) else []:
        if isinstance(row, list | tuple) and len(row) >= 2:
            x, y = number(row[0]), number(row[1])
            if x is not None and y is not None:
                out.append((x, y))
    return out


@dataclass(frozen=True)
class _Frame:
    """A plot area with its two scales (drawn axes, grid and titles in `svg`)."""

    svg: str
    x: Scale
    y: Scale
    left: float
    right: float
    top: float
    bottom: float


def _frame(
    *,
    width: int,
    height: int,
    x_domain: tuple[float, float],
    y_domain: tuple[float, float],
    x_label: str,
    y_label: str,
    x_ticks: Sequence[tuple[float, str]] | None = None,
    percent_y: bool = False,
    left: int = 60,
    right: int = 20,
    top: int = 16,
    bottom: int = 50,
) -> _Frame:
    plot_bottom = height - bottom
    x = Scale(*x_domain, start=left + 6, end=width - right - 6)
    y = Scale(*y_domain, start=plot_bottom, end=top)
    parts = [y_grid(y, left, width - right, percent=percent_y)]
    parts.append(
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{plot_bottom}" stroke="#999"/>'
        + y_title(14, (top + plot_bottom) / 2, y_label)
    )
    if x_ticks is None:
        axis = Scale(*x_domain, start=x.start, end=x.end)
        parts.append(x_axis(axis, plot_bottom, x_label))
    else:
        parts.append(
            f'<line x1="{left}" y1="{plot_bottom}" x2="{width - right}" y2="{plot_bottom}" '
            'stroke="#999"/>'
        )
        for value, text in x_ticks:
            px = x(value)
            parts.append(
                f'<line x1="{px:.1f}" y1="{plot_bottom}" x2="{px:.1f}" y2="{plot_bottom + 4}" '
                f'stroke="#999"/><text x="{px:.1f}" y="{plot_bottom + 16}" font-size="11" '
                f'fill="#555" text-anchor="middle">{escape(text)}</text>'
            )
        parts.append(
            f'<text x="{(x.start + x.end) / 2:.1f}" y="{plot_bottom + 34}" font-size="12" '
            f'fill="#333" text-anchor="middle">{escape(x_label)}</text>'
        )
    return _Frame("".join(parts), x, y, left, width - right, top, plot_bottom)


def _empty(width: int, height: int, label: str, chart: str, text: str) -> str:
    return (
        svg_open(width, height, label, chart, css_class=CSS_CLASS, description=text)
        + message(width / 2, height / 2, text)
        + "</svg>"
    )


def _polylines(runs: Sequence[Sequence[tuple[float, float]]], color: str, dash: str = "") -> str:
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return "".join(
        f'<polyline fill="none" stroke="{color}" stroke-width="2"{dashed} '
        f'points="{polyline_points(run)}"/>'
        for run in runs
        if len(run) > 1
    )


def _legend(entries: Sequence[tuple[str, str]], *, x0: int, x1: int, y0: float) -> str:
    """One swatch and label per (label, colour), wrapped into rows from `y0`."""
    places, _ = legend_layout([label for label, _ in entries], start=x0, end=x1)
    out = []
    for (label, color), (x, row) in zip(entries, places, strict=True):
        y = y0 + 16 * row
        out.append(
            f'<g class="legend"><rect x="{x}" y="{y - 8:.1f}" width="12" height="10" '
            f'fill="{color}"/><text x="{x + 17}" y="{y:.1f}" font-size="12" '
            f'fill="#333">{escape(label)}</text></g>'
        )
    return "".join(out)


# --- clustering ----------------------------------------------------------------------------


def _by_k(scores_by_k: Any, field: str) -> list[tuple[int, float | None]]:
    out = []
    for row in scores_by_k if isinstance(scores_by_k, list | tuple) else []:
        if isinstance(row, Mapping) and isinstance(row.get("k"), int):
            out.append((int(row["k"]), number(row.get(field))))
    return sorted(out)


def _k_chart(
    scores_by_k: Any, chosen_k: Any, *, field: str, label: str, y_label: str, chart: str
) -> str:
    width, height = 460, 280
    rows = _by_k(scores_by_k, field)
    chosen = chosen_k if isinstance(chosen_k, int) else None
    if not rows:
        return _empty(width, height, label, chart, "No finished run yet")
    known = [(k, v) for k, v in rows if v is not None]
    if not known:
        return _empty(
            width, height, label, chart, f"No {y_label} for this run (fewer than two clusters)"
        )
    ks = [k for k, _ in rows]
    values = [v for _, v in known]
    low, high = domain(values, floor_zero=field == "inertia")
    if field == "silhouette":
        low, high = max(low, -1.0), min(high, 1.0)
    lo_k, hi_k = min(ks), max(ks)
    x_dom = (lo_k - 0.5, hi_k + 0.5) if lo_k == hi_k else (float(lo_k), float(hi_k))
    step = max(1, round(len(ks) / 12))
    frame = _frame(
        width=width,
        height=height,
        x_domain=x_dom,
        y_domain=(low, high),
        x_label="number of clusters (k)",
        y_label=y_label,
        x_ticks=[(k, str(k)) for k in ks[::step]],
        top=34,
    )
    description = ", ".join(f"k={k}: {'—' if v is None else f'{v:.3g}'}" for k, v in rows)
    if chosen is not None:
        description = f"Chosen k = {chosen}. " + description
    out = [svg_open(width, height, label, chart, css_class=CSS_CLASS, description=description)]
    out.append(frame.svg)
    if chosen is not None and lo_k <= chosen <= hi_k:
        cx = frame.x(chosen)
        value = dict(rows).get(chosen)
        text = f"chosen k = {chosen}" + (f" ({value:.3g})" if value is not None else "")
        anchor = "end" if cx > width * 0.6 else "start"
        shift = -5 if anchor == "end" else 5
        out.append(
            f'<g class="chosen-k" data-k="{chosen}"><line x1="{cx:.1f}" y1="{frame.top - 6}" '
            f'x2="{cx:.1f}" y2="{frame.bottom}" stroke="{MARK}" stroke-dasharray="4 3"/>'
            f'<text x="{cx + shift:.1f}" y="{frame.top - 12}" font-size="12" fill="{MARK}" '
            f'text-anchor="{anchor}">{escape(text)}</text></g>'
        )
    runs: list[list[tuple[float, float]]] = [[]]
    dots = []
    for k, v in rows:
        if v is None:
            if runs[-1]:
                runs.append([])
            continue
        xy = (frame.x(k), frame.y(v))
        runs[-1].append(xy)
        big = k == chosen
        ring = ' stroke="#000" stroke-width="1.5"' if big else ""
        dots.append(
            f'<circle cx="{xy[0]:.1f}" cy="{xy[1]:.1f}" r="{5 if big else 3}" fill="{LINE}"'
            f"{ring}><title>k = {k}: {escape(y_label)} {v:.4g}</title></circle>"
        )
    out.append(_polylines(runs, LINE) + "".join(dots))
    if len(rows) == 1:
        out.append(
            message(width / 2, frame.bottom - 12, f"Only k = {rows[0][0]} was tried: no curve")
        )
    out.append("</svg>")
    return "".join(out)


def silhouette_chart(*, scores_by_k: Any, chosen_k: Any) -> str:
    """Silhouette by k (higher is better separated), the chosen k marked."""
    return _k_chart(
        scores_by_k,
        chosen_k,
        field="silhouette",
        label="Silhouette by number of clusters",
        y_label="silhouette",
        chart="silhouette",
    )


def inertia_chart(*, scores_by_k: Any, chosen_k: Any) -> str:
    """Inertia by k (the elbow: where adding a cluster stops paying), the chosen k marked."""
    return _k_chart(
        scores_by_k,
        chosen_k,
        field="inertia",
        label="Inertia by number of clusters (elbow)",
        y_label="inertia (within-cluster spread)",
        chart="inertia",
    )


def _clusters(clusters: Any) -> list[Mapping[str, Any]]:
    rows = [
        c
        for c in (clusters if isinstance(clusters, list | tuple) else [])
        if isinstance(c, Mapping) and isinstance(c.get("number"), int)
    ]
    return sorted(rows, key=lambda c: int(c["number"]))


def cluster_name(cluster: Mapping[str, Any]) -> str:
    """`3 · frequent buyers` — a cluster's number and label, as the pages show it."""
    return f"{cluster.get('number')} · {cluster.get('label') or 'cluster'}"


def projection_chart(*, projection: Any, clusters: Any) -> str:
    """The profiles of a sample on the two main directions of the model space, one colour
    per cluster, with a legend naming each cluster."""
    width, left, right, top = 640, 20, 20, 12
    label = "Profiles projected on two dimensions, coloured by cluster"
    known = _clusters(clusters)
    names = {int(c["number"]): cluster_name(c) for c in known}
    pts: list[tuple[float, float, int]] = []
    for row in projection if isinstance(projection, list | tuple) else []:
        if isinstance(row, list | tuple) and len(row) >= 3:
            x, y = number(row[0]), number(row[1])
            if x is not None and y is not None and isinstance(row[2], int):
                pts.append((x, y, int(row[2])))
    numbers = sorted({n for *_, n in pts} | set(names))
    entries = []
    for n in numbers:
        size = next((c.get("size") for c in known if c["number"] == n), None)
        text = short(names.get(n, f"{n} · cluster"), 48)
        entries.append((text + (f" ({size:,})" if isinstance(size, int) else ""), n))
    _, rows = legend_layout([t for t, _ in entries], start=left, end=width - right)
    plot_h = 330
    height = top + plot_h + 30 + 16 * rows
    if not pts:
        return _empty(width, 200, label, "projection", "No projection yet")
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    sx = Scale(*domain(xs), start=left + 8, end=width - right - 8)
    sy = Scale(*domain(ys), start=top + plot_h - 8, end=top + 8)
    counts = {n: sum(1 for *_, m in pts if m == n) for n in numbers}
    description = (
        f"{len(pts):,} sampled profiles: "
        + "; ".join(f"{names.get(n, n)}: {counts[n]:,}" for n in numbers)
        + ". The axes are the first two principal components (no unit)."
    )
    out = [
        svg_open(width, height, label, "projection", css_class=CSS_CLASS, description=description)
    ]
    out.append(
        f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{plot_h}" '
        'fill="none" stroke="#ddd"/>'
        f'<text x="{width - right - 4}" y="{top + plot_h - 6}" font-size="11" fill="#777" '
        'text-anchor="end">first principal component →</text>'
        f'<text x="{left + 4}" y="{top + 14}" font-size="11" fill="#777">'
        "↑ second principal component</text>"
    )
    for n in numbers:
        circles = "".join(
            f'<circle cx="{sx(px):.1f}" cy="{sy(py):.1f}" r="2.5"/>' for px, py, m in pts if m == n
        )
        title = f"{names.get(n, f'cluster {n}')}: {counts[n]:,} sampled profiles"
        out.append(
            f'<g class="cluster" data-cluster="{n}" fill="{cluster_color(n)}" '
            f'fill-opacity="0.7"><title>{escape(title)}</title>{circles}</g>'
        )
    out.append(
        _legend(
            [(t, cluster_color(n)) for t, n in entries],
            x0=left,
            x1=width - right,
            y0=top + plot_h + 24,
        )
    )
    out.append("</svg>")
    return "".join(out)


@dataclass(frozen=True)
class CentroidCell:
    text: str
    z: float | None
    style: str
    title: str


@dataclass(frozen=True)
class CentroidRow:
    feature: str
    description: str
    cells: list[CentroidCell]


@dataclass(frozen=True)
class CentroidTable:
    """Feature rows × cluster columns: each centroid's value, shaded by how far it is
    from the population's mean (z: blue above, orange below)."""

    clusters: list[Mapping[str, Any]]
    rows: list[CentroidRow]


def _shade(z: float | None) -> str:
    if z is None:
        return ""
    strength = min(abs(z), 2.5) / 2.5 * 0.55
    rgb = "0,114,178" if z > 0 else "230,159,0"
    return f"background: rgba({rgb},{strength:.2f})"


def centroid_table(
    *, clusters: Any, descriptions: Mapping[str, str] | None = None
) -> CentroidTable:
    """The centroid table, the features that set clusters apart most first."""
    known = _clusters(clusters)
    features: list[str] = []
    for c in known:
        for name in c.get("centroid") or {}:
            if name not in features:
                features.append(str(name))

    def z_of(c: Mapping[str, Any], feature: str) -> float | None:
        z = c.get("z")
        return number(z.get(feature)) if isinstance(z, Mapping) else None

    def spread(feature: str) -> float:
        return max((abs(z) for c in known if (z := z_of(c, feature)) is not None), default=0.0)

    rows = []
    for feature in sorted(features, key=lambda f: -spread(f)):
        cells = []
        for c in known:
            centroid = c.get("centroid")
            v = number(centroid.get(feature)) if isinstance(centroid, Mapping) else None
            z = z_of(c, feature)
            if z is None:
                title = ""
            else:
                side = "above" if z > 0 else "below"
                title = f"{abs(z):.2f} standard deviations {side} the average profile"
            cells.append(CentroidCell(_fmt(v) if v is not None else "—", z, _shade(z), title))
        rows.append(CentroidRow(feature, (descriptions or {}).get(feature, ""), cells))
    return CentroidTable(clusters=known, rows=rows)


# --- predictors ---------------------------------------------------------------------------


def _unit_frame(width: int, height: int, x_label: str, y_label: str) -> _Frame:
    ticks = [(t, f"{t:.1f}") for t in nice_ticks(0.0, 1.0)]
    return _frame(
        width=width,
        height=height,
        x_domain=(0.0, 1.0),
        y_domain=(0.0, 1.0),
        x_label=x_label,
        y_label=y_label,
        x_ticks=ticks,
    )


def _diagonal(frame: _Frame, text: str) -> str:
    return (
        f'<g class="diagonal"><title>{escape(text)}</title><line x1="{frame.x(0):.1f}" '
        f'y1="{frame.y(0):.1f}" x2="{frame.x(1):.1f}" y2="{frame.y(1):.1f}" '
        f'stroke="{CHANCE}" stroke-dasharray="5 4"/></g>'
    )


def roc_chart(*, roc: Any, auc: Any) -> str:
    """The ROC curve on held-out profiles with the diagonal of a random guess."""
    width, height = 380, 340
    value = number(auc)
    label = "ROC curve on held-out profiles" + (f" (AUC {value:.3f})" if value is not None else "")
    pts = sorted(_pairs(roc))
    if len(pts) < 2:
        return _empty(width, height, label, "roc", "No ROC curve: the model has not been trained")
    frame = _unit_frame(width, height, "false positive rate", "true positive rate (recall)")
    description = (
        f"Area under the curve {value:.3f} (0.5 is a random guess, 1 is perfect)."
        if value is not None
        else "The curve of true against false positive rates."
    )
    out = [svg_open(width, height, label, "roc", css_class=CSS_CLASS, description=description)]
    out.append(frame.svg + _diagonal(frame, "random guess (AUC 0.5)"))
    out.append(_polylines([[(frame.x(a), frame.y(b)) for a, b in pts]], LINE))
    if value is not None:
        out.append(
            f'<text x="{frame.x(0.95):.1f}" y="{frame.y(0.08):.1f}" font-size="13" '
            f'fill="{LINE}" text-anchor="end" class="auc">AUC {value:.3f}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def threshold_row(by_threshold: Any, threshold: float) -> Mapping[str, Any] | None:
    """The held-out figures at this threshold (the nearest row at or above it)."""
    rows = [
        r
        for r in (by_threshold if isinstance(by_threshold, list | tuple) else [])
        if isinstance(r, Mapping) and number(r.get("threshold")) is not None
    ]
    rows.sort(key=lambda r: float(r["threshold"]))
    return next((r for r in rows if float(r["threshold"]) >= round(threshold, 2) - 1e-9), None)


def threshold_chart(*, by_threshold: Any, threshold: Any) -> str:
    """Precision and recall on held-out profiles by threshold, the chosen one marked."""
    width, height = 480, 340
    label = "Precision and recall by threshold (held-out profiles)"
    rows = [
        (t, number(r.get("precision")), number(r.get("recall")))
        for r in (by_threshold if isinstance(by_threshold, list | tuple) else [])
        if isinstance(r, Mapping) and (t := number(r.get("threshold"))) is not None
    ]
    rows.sort()
    if len(rows) < 2:
        return _empty(width, height, label, "thresholds", "No figures by threshold yet")
    frame = _frame(
        width=width,
        height=height + 18,
        x_domain=(0.0, 1.0),
        y_domain=(0.0, 1.0),
        x_label="threshold (score at or above it is selected)",
        y_label="share",
        x_ticks=[(t, f"{t:.1f}") for t in nice_ticks(0.0, 1.0)],
        percent_y=True,
        top=34,
        bottom=68,
    )
    t = number(threshold)
    at = threshold_row(by_threshold, t) if t is not None else None
    description = "Precision: the share of selected profiles that do the outcome. Recall: the share of those who do it that are selected."
    if at is not None and t is not None:
        description += (
            f" At {t:.2f}: precision {_pct(number(at.get('precision')))}, "
            f"recall {_pct(number(at.get('recall')))}."
        )
    out = [
        svg_open(
            width, height + 18, label, "thresholds", css_class=CSS_CLASS, description=description
        )
    ]
    out.append(frame.svg)
    for index, color, dash, name in ((1, LINE, "", "precision"), (2, SECOND, "6 3", "recall")):
        runs: list[list[tuple[float, float]]] = [[]]
        for row in rows:
            v = row[index]
            if v is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append((frame.x(row[0]), frame.y(v)))
        out.append(f'<g class="series" data-series="{name}">{_polylines(runs, color, dash)}</g>')
    if t is not None and 0 <= t <= 1:
        cx = frame.x(t)
        text = f"threshold {t:.2f}"
        if at is not None:
            text += (
                f": precision {_pct(number(at.get('precision')))}, "
                f"recall {_pct(number(at.get('recall')))}"
            )
        anchor = "end" if cx > width * 0.55 else "start"
        shift = -5 if anchor == "end" else 5
        out.append(
            f'<g class="chosen-threshold" data-threshold="{t:.2f}"><line x1="{cx:.1f}" '
            f'y1="{frame.top - 6}" x2="{cx:.1f}" y2="{frame.bottom}" stroke="{MARK}" '
            f'stroke-dasharray="4 3"/><text x="{cx + shift:.1f}" y="{frame.top - 12}" '
            f'font-size="12" fill="{MARK}" text-anchor="{anchor}">{escape(text)}</text></g>'
        )
    out.append(
        _legend(
            [("precision", LINE), ("recall", SECOND)],
            x0=int(frame.left),
            x1=int(frame.right),
            y0=frame.bottom + 56,
        )
    )
    out.append("</svg>")
    return "".join(out)


def calibration_chart(*, calibration: Any, brier: Any) -> str:
    """Predicted probability against the observed share of positives, by group of
    profiles, with the diagonal of a perfectly calibrated model."""
    width, height = 380, 340
    value = number(brier)
    label = "Calibration on held-out profiles" + (
        f" (Brier score {value:.3f})" if value is not None else ""
    )
    pts = sorted(_pairs(calibration))
    if not pts:
        return _empty(width, height, label, "calibration", "No calibration figures yet")
    frame = _unit_frame(width, height, "mean predicted probability", "observed share of positives")
    description = (
        "Each dot is a tenth of the held-out profiles: on the diagonal, the predicted "
        "probability is what happens."
    )
    out = [
        svg_open(width, height, label, "calibration", css_class=CSS_CLASS, description=description)
    ]
    out.append(frame.svg + _diagonal(frame, "perfectly calibrated"))
    xy = [(frame.x(a), frame.y(b)) for a, b in pts]
    out.append(_polylines([xy], LINE))
    out.append(
        "".join(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{LINE}"><title>predicted '
            f"{_pct(a)}, observed {_pct(b)}</title></circle>"
            for (px, py), (a, b) in zip(xy, pts, strict=True)
        )
    )
    out.append("</svg>")
    return "".join(out)


def importance_chart(*, importances: Any, limit: int = 12) -> str:
    """The features that matter most: the drop in held-out AUC when a feature's values
    are shuffled, as bars with ± one standard deviation whiskers."""
    rows = [
        (str(r.get("feature", "")), v, number(r.get("std")) or 0.0)
        for r in (importances if isinstance(importances, list | tuple) else [])
        if isinstance(r, Mapping) and (v := number(r.get("importance"))) is not None
    ]
    rows.sort(key=lambda r: -r[1])
    rows = rows[:limit]
    left, right, top, row_h, width = 170, 24, 10, 22, 560
    height = top + row_h * max(len(rows), 1) + 52
    label = "Feature importance (drop in held-out AUC when shuffled)"
    if not rows:
        return _empty(width, 140, label, "importances", "No feature importances yet")
    values = [0.0] + [v - s for _, v, s in rows] + [v + s for _, v, s in rows]
    scale = Scale(*domain(values, floor_zero=True), start=left, end=width - right)
    axis_y = top + row_h * len(rows) + 4
    description = "; ".join(f"{f}: {v:.3f}" for f, v, _ in rows)
    out = [
        svg_open(width, height, label, "importances", css_class=CSS_CLASS, description=description)
    ]
    out.append(x_axis(scale, axis_y, "drop in AUC"))
    zero = scale(0.0)
    out.append(
        f'<line x1="{zero:.1f}" y1="{top - 4}" x2="{zero:.1f}" y2="{axis_y:.1f}" stroke="#999"/>'
    )
    for i, (feature, v, s) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        x0, x1 = sorted((zero, scale(v)))
        lo, hi = scale(v - s), scale(v + s)
        out.append(
            f'<g class="importance" data-feature="{escape(feature)}"><title>{escape(feature)}: '
            f"{v:.4f} ± {s:.4f}</title>"
            f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="12" fill="#333" '
            f'text-anchor="end">{escape(short(feature))}</text>'
            f'<rect x="{x0:.1f}" y="{y - 7:.1f}" width="{max(x1 - x0, 0.5):.1f}" height="14" '
            f'fill="{LINE}" fill-opacity="0.8"/>'
            f'<line x1="{lo:.1f}" y1="{y:.1f}" x2="{hi:.1f}" y2="{y:.1f}" stroke="#000"/>'
            f'<line x1="{lo:.1f}" y1="{y - 4:.1f}" x2="{lo:.1f}" y2="{y + 4:.1f}" stroke="#000"/>'
            f'<line x1="{hi:.1f}" y1="{y - 4:.1f}" x2="{hi:.1f}" y2="{y + 4:.1f}" stroke="#000"/>'
            "</g>"
        )
    out.append("</svg>")
    return "".join(out)
