"""The results page's presentation as pure functions over the results payload: the two
inline SVG charts (no JavaScript) — each variant's rate or mean with its interval, and
the cumulative rate or mean over time — the table cells with their tooltips, and the
CSV rows.

Every figure may be missing (None, or not finite), every list may be empty; every
string that reaches the SVG is escaped here (the tables are escaped by the template).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import partial
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
    x_axis,
    y_grid,
    y_title,
)

# The control is the neutral grey, treatments take the palette's colours in order.
CONTROL_COLOR = "#555555"


def color_of(index: int) -> str:
    """The colour of the variant at this index (0 is the control) in every chart."""
    return CONTROL_COLOR if index == 0 else PALETTE[(index - 1) % len(PALETTE)]


def interval(value: Any) -> tuple[float | None, float | None]:
    if isinstance(value, list | tuple) and len(value) == 2:
        return number(value[0]), number(value[1])
    return None, None


def format_value(value: Any, kind: str) -> str:
    """A rate as a percentage, a mean as a number; '—' when missing."""
    v = number(value)
    if v is None:
        return "—"
    if kind == "conversion":
        return f"{v * 100:.2f}%"
    return format_amount(v)


def format_amount(v: float) -> str:
    magnitude = abs(v)
    if magnitude >= 1000:
        return f"{v:,.0f}"
    if magnitude >= 10 or magnitude == 0:
        return f"{v:,.2f}".rstrip("0").rstrip(".") if magnitude else "0"
    return f"{v:.3g}"


def label_of(key: str, index: int) -> str:
    """A variant's name on the page: the first is marked as the control (unless its
    key says so already)."""
    return key if index or "control" in key.lower() else f"{key} (control)"


def _svg_open(width: int, height: int, label: str, chart: str) -> str:
    return svg_open(width, height, label, chart, css_class="experiment-chart")


def _domain(values: Sequence[float], kind: str, floor_zero: bool) -> tuple[float, float]:
    # rates and their intervals live in [0, 1]
    return domain(values, floor_zero=floor_zero, unit_interval=kind == "conversion")


def interval_chart(
    *,
    variants: Sequence[Mapping[str, Any]],
    kind: str,
    metric_label: str,
    confidence: float,
) -> str:
    """One row per variant: its rate (or mean) as a dot and its confidence interval as a
    bar, on a shared axis, with the control's value as a dashed reference line.

    `variants`: the payload's rows (`key`, `n`, `rate` or `mean`, `ci`), control first."""
    field = "rate" if kind == "conversion" else "mean"
    rows = list(variants)
    left, right, top, row_h = 170, 30, 14, 30
    width = 680
    height = top + row_h * max(len(rows), 1) + 52
    label = f"{metric_label} per variant with its {confidence:.0%} interval"
    out = [_svg_open(width, height, label, "intervals")]
    values: list[float] = []
    for r in rows:
        v = number(r.get(field))
        lo, hi = interval(r.get("ci"))
        values += [x for x in (v, lo, hi) if x is not None]
    scale = Scale(*_domain(values, kind, floor_zero=False), start=left, end=width - right)
    axis_y = top + row_h * max(len(rows), 1) + 4
    out.append(
        x_axis(
            scale,
            axis_y,
            f"{metric_label} ({confidence:.0%} interval)",
            percent=kind == "conversion",
        )
    )
    control = number(rows[0].get(field)) if rows else None
    if control is not None:
        x = scale(control)
        out.append(
            f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{axis_y:.1f}" '
            f'stroke="{CONTROL_COLOR}" stroke-dasharray="4 3" stroke-width="1">'
            f"<title>control: {escape(format_value(control, kind))}</title></line>"
        )
    if not rows:
        out.append(message(width / 2, top + row_h / 2 + 4, "No variants"))
    for i, r in enumerate(rows):
        key = str(r.get("key", ""))
        y = top + row_h * i + row_h / 2
        color = color_of(i)
        name = label_of(short(key), i)
        weight = ' font-weight="bold"' if i == 0 else ""
        v = number(r.get(field))
        lo, hi = interval(r.get("ci"))
        n = r.get("n") or 0
        tip = f"{label_of(key, i)}: {format_value(v, kind)}"
        if lo is not None and hi is not None:
            tip += f" [{format_value(lo, kind)}, {format_value(hi, kind)}]"
        tip += f", {n:,} users" if isinstance(n, int) else ""
        out.append(
            f'<g class="variant" data-variant="{escape(key)}"><title>{escape(tip)}</title>'
            f'<text x="{left - 10}" y="{y + 4:.1f}" font-size="12" fill="{color}" '
            f'text-anchor="end"{weight}>{escape(name)}</text>'
        )
        if lo is not None and hi is not None:
            x1, x2 = scale(lo), scale(hi)
            out.append(
                f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" '
                f'stroke="{color}" stroke-width="3" stroke-linecap="round"/>'
                f'<line x1="{x1:.1f}" y1="{y - 6:.1f}" x2="{x1:.1f}" y2="{y + 6:.1f}" stroke="{color}"/>'
                f'<line x1="{x2:.1f}" y1="{y - 6:.1f}" x2="{x2:.1f}" y2="{y + 6:.1f}" stroke="{color}"/>'
            )
        if v is not None:
            out.append(
                f'<circle cx="{scale(v):.1f}" cy="{y:.1f}" r="5" fill="{color}" '
                'stroke="#fff" stroke-width="1.5"/>'
            )
        else:
            out.append(
                f'<text x="{left + 6}" y="{y + 4:.1f}" font-size="12" fill="#777">'
                "no data yet</text>"
            )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _parse_day(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        return None


def series_chart(
    *,
    series: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    kind: str,
    metric_label: str,
) -> str:
    """The cumulative rate (or mean) by exposure day, one line per variant, a legend, and
    both axes labelled. Days with no value break a line; a lone point is still drawn.

    `series`: the payload's points (`day`, `variants` → key → {`n`, `value`, `ci`})."""
    width, left, right, top = 680, 70, 24, 16
    names = [label_of(short(key), i) for i, key in enumerate(keys)]
    places, rows = legend_layout(names, start=left, end=width - right)
    bottom = 66 + 16 * rows
    height = 216 + bottom
    label = f"Cumulative {metric_label.lower()} by exposure day"
    out = [_svg_open(width, height, label, "series")]
    points: list[tuple[date, Mapping[str, Any]]] = []
    for p in series:
        day = _parse_day(p.get("day")) if isinstance(p, Mapping) else None
        if day is not None:
            variants = p.get("variants")
            points.append((day, variants if isinstance(variants, Mapping) else {}))
    points.sort(key=lambda p: p[0])
    values = [
        v
        for _, by in points
        for k in keys
        if (v := number((by.get(k) or {}).get("value"))) is not None
    ]
    plot_bottom = height - bottom
    y_scale = Scale(*_domain(values, kind, floor_zero=True), start=plot_bottom, end=top)
    if points:
        first, last = points[0][0].toordinal(), points[-1][0].toordinal()
    else:
        first = last = 0
    x_scale = Scale(float(first), float(last), start=left + 10, end=width - right - 10)

    # the y axis: grid lines with their labels, and its title
    out.append(y_grid(y_scale, left, width - right, percent=kind == "conversion"))
    mid = (top + plot_bottom) / 2
    out.append(
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{plot_bottom}" stroke="#999"/>'
        f'<line x1="{left}" y1="{plot_bottom}" x2="{width - right}" y2="{plot_bottom}" stroke="#999"/>'
        + y_title(14, mid, "cumulative " + metric_label.lower())
        + f'<text x="{(left + width - right) / 2:.1f}" y="{plot_bottom + 34}" font-size="12" '
        f'fill="#333" text-anchor="middle">exposure day (users counted from the day they '
        "first saw the experiment)</text>"
    )
    # the x axis: at most 7 day labels, always the first and the last
    if points:
        shown = sorted({round(i * (len(points) - 1) / 6) for i in range(7)})
        for i in shown:
            day = points[i][0]
            x = x_scale(float(day.toordinal()))
            out.append(
                f'<line x1="{x:.1f}" y1="{plot_bottom}" x2="{x:.1f}" y2="{plot_bottom + 4}" stroke="#999"/>'
                f'<text x="{x:.1f}" y="{plot_bottom + 16}" font-size="11" fill="#555" '
                f'text-anchor="middle">{day:%b %d}</text>'
            )
    if not values:
        out.append(message((left + width - right) / 2, mid, "No data yet"))
    # one line per variant, broken where a day has no value
    for i, key in enumerate(keys):
        color = color_of(i)
        runs: list[list[tuple[float, float]]] = [[]]
        dots = []
        for day, by in points:
            cell = by.get(key) or {}
            v = number(cell.get("value"))
            if v is None:
                if runs[-1]:
                    runs.append([])
                continue
            xy = (x_scale(float(day.toordinal())), y_scale(v))
            runs[-1].append(xy)
            n = cell.get("n")
            users = f" ({n:,} users)" if isinstance(n, int) else ""
            dots.append(
                f'<circle cx="{xy[0]:.1f}" cy="{xy[1]:.1f}" r="{3.5 if len(points) == 1 else 2.5}" '
                f'fill="{color}"><title>{day:%Y-%m-%d} {escape(key)}: '
                f"{escape(format_value(v, kind))}{users}</title></circle>"
            )
        lines = "".join(
            f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{polyline_points(run)}"/>'
            for run in runs
            if len(run) > 1
        )
        out.append(f'<g class="variant" data-variant="{escape(key)}">{lines}{"".join(dots)}</g>')
    # the legend, under the axis title: a swatch and the key per variant
    for i, (key, name, (x, row)) in enumerate(zip(keys, names, places, strict=True)):
        y = plot_bottom + 58 + 16 * row
        out.append(
            f'<g class="legend"><title>{escape(key)}</title>'
            f'<rect x="{x}" y="{y - 5}" width="14" height="4" fill="{color_of(i)}"/>'
            f'<text x="{x + 19}" y="{y}" font-size="12" fill="#333">{escape(name)}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


# --- the results page's tables and CSV (also pure: the payload in, cells and rows out) -----


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, the tooltip that says what the figure means (with its
    exact value), and a CSS class (`win`, `loss`, `significant`, `muted`)."""

    text: str
    title: str = ""
    css: str = ""
    detail: str = ""  # the figure's interval, shown under it


@dataclass(frozen=True)
class GoalTable:
    anchor: str
    title: str
    description: str
    kind: str
    metric_label: str
    headers: list[Cell]
    rows: list[list[Cell]]
    notes: list[str]
    intervals_svg: str
    series_svg: str


def _pct(v: float | None, signed: bool = False, decimals: int = 1) -> str:
    if v is None:
        return "—"
    return f"{v * 100:+.{decimals}f}%" if signed else f"{v * 100:.{decimals}f}%"


def format_p(v: float | None) -> str:
    if v is None:
        return "—"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def p_equals(v: float | None) -> str:
    """'p = 0.123', or 'p < 0.001'."""
    text = format_p(v)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _diff(v: float | None, kind: str, signed: bool = True) -> str:
    """An absolute difference: percentage points for rates, the metric's unit otherwise."""
    if v is None:
        return "—"
    if kind == "conversion":
        return f"{v * 100:+.2f} pp" if signed else f"{v * 100:.2f} pp"
    text = format_amount(v)
    return f"+{text}" if signed and v > 0 else text


def _interval_text(ci: Any, fmt: Any) -> str:
    lo, hi = interval(ci)
    return "" if lo is None or hi is None else f"[{fmt(lo)}, {fmt(hi)}]"


def _exact(*values: Any) -> str:
    shown = [repr(v) for v in values if number(v) is not None]
    return f" Exact: {', '.join(shown)}." if shown else ""


def humanize_seconds(seconds: Any) -> str:
    s = number(seconds)
    if s is None:
        return "—"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= size and s % size == 0:
            count = int(s // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{s:g} seconds"


def variant_keys(payload: Mapping[str, Any], fallback: Sequence[str] = ()) -> list[str]:
    """The variants in order, control first. The payload's dicts (`exposures`, a series
    point's `variants`) lose their key order in PostgreSQL's jsonb; its lists keep it."""
    goals = payload.get("goals") or []
    if goals and goals[0].get("variants"):
        return [str(v.get("key")) for v in goals[0]["variants"]]
    keys = list(fallback)
    control = payload.get("control")
    if control and control in keys:
        keys.remove(control)
        keys.insert(0, control)
    return keys + sorted(k for k in (payload.get("exposures") or {}) if k not in keys)


WARNING_LEVELS = {"sample_ratio_mismatch": "srm", "not_enough_data": "data"}


def warning_level(code: str) -> str:
    """`srm` (red: the results cannot be trusted), `data` (amber: too early), `other`."""
    return WARNING_LEVELS.get(code, "other")


def _columns(
    kind: str, goal: Mapping[str, Any], confidence: float, several: bool, cuped: bool
) -> list[tuple[str, str, str]]:
    """(id, heading, what the figure means) of a goal's table, in order."""
    level, alpha = f"{confidence:.0%}", f"{1 - confidence:.2g}"
    event, prop = goal.get("event", ""), goal.get("property") or "value"
    window = humanize_seconds(goal.get("window_seconds"))
    rate = "rate" if kind == "conversion" else "mean"
    out = [
        ("variant", "Variant", "The first variant is the control the others are compared with."),
        (
            "users",
            "Users",
            "Profiles exposed to this variant, counted once from their first exposure.",
        ),
    ]
    if kind == "conversion":
        out += [
            (
                "outcome",
                "Conversions",
                f"Users who did {event} within {window} after their exposure.",
            ),
            (
                "value",
                "Rate",
                f"Conversions ÷ users, with its {level} confidence interval (Wilson).",
            ),
        ]
    else:
        out += [
            (
                "outcome",
                "Total",
                f"Sum of {prop} over {event} events within {window} after exposure.",
            ),
            (
                "value",
                "Mean per user",
                f"Total ÷ users (users without {event} count as 0), "
                f"with its {level} confidence interval (t).",
            ),
        ]
    out += [
        (
            "lift",
            "Relative lift",
            f"(variant − control) ÷ control, with its {level} interval: "
            "an interval that does not contain 0 means a real change at this confidence.",
        ),
        (
            "p",
            "p-value",
            ("Two-proportion z-test" if kind == "conversion" else "Welch t-test")
            + ": the chance of a difference at least this large if the variant changed nothing. "
            f"Below {alpha} is significant.",
        ),
    ]
    if several:
        out.append(
            (
                "p_adjusted",
                "Holm-adjusted p",
                "The p-value corrected (Holm) for comparing "
                "several variants with the control, so that more variants do not mean more "
                f"false winners: decide on this one (below {alpha}).",
            )
        )
    out += [
        (
            "chance",
            "Chance to beat control",
            f"Bayesian probability that this variant's true {rate} is higher than the control's.",
        ),
        (
            "loss",
            "Expected loss",
            "What you expect to give up on average if you ship this variant "
            "and it is in fact worse than the control ("
            + ("percentage points of rate" if kind == "conversion" else f"{prop} per user")
            + "): close to 0 means shipping it is a safe bet.",
        ),
        (
            "sequential",
            "Sequential p",
            "Always-valid p-value (mSPRT): unlike the classic p-value it "
            f"stays valid when you look every day; the difference is real once it is below {alpha}.",
        ),
    ]
    if cuped:
        out.append(
            (
                "cuped",
                "CUPED difference",
                "The absolute difference adjusted for what each "
                f"user did before their exposure (CUPED), with its {level} interval: the same "
                "answer with less noise.",
            )
        )
    return out


def _figures(index: int, v: Mapping[str, Any], kind: str) -> dict[str, tuple[str, str, str, str]]:
    """Column id → (text, interval, exact values, CSS class) of one variant's cells."""
    fmt = (lambda x: format_value(x, kind)) if kind == "conversion" else format_amount
    value = number(v.get("rate" if kind == "conversion" else "mean"))
    n, outcome = v.get("n"), number(v.get("conversions" if kind == "conversion" else "total"))
    if outcome is None:
        outcome_text = "—"
    else:
        outcome_text = f"{outcome:,.0f}" if kind == "conversion" else format_amount(outcome)
    ci = v.get("ci")
    out = {
        "variant": (label_of(str(v.get("key", "")), index), "", "", "variant"),
        "users": (f"{n:,}" if isinstance(n, int) else "—", "", _exact(n), ""),
        "outcome": (outcome_text, "", _exact(outcome), ""),
        "value": (
            format_value(value, kind),
            _interval_text(ci, fmt),
            _exact(value, *interval(ci)),
            "",
        ),
    }
    vs = v.get("vs_control")
    if index == 0 or not isinstance(vs, Mapping):
        out["lift"] = ("baseline" if index == 0 else "not enough data", "", "", "muted")
        return out
    significant = bool(vs.get("significant"))
    diff = number(vs.get("difference"))
    lift, lift_ci = number(vs.get("relative_lift")), vs.get("relative_lift_ci")
    signed_pct = partial(_pct, signed=True)
    signed_diff = partial(_diff, kind=kind)
    if lift is not None:
        lift_text, lift_detail = _pct(lift, signed=True), _interval_text(lift_ci, signed_pct)
    else:  # no relative lift while the control is at 0: the absolute difference instead
        lift_text = _diff(diff, kind) + (" (absolute)" if diff is not None else "")
        lift_detail = _interval_text(vs.get("difference_ci"), signed_diff)
    verdict = ("win" if (diff or 0) > 0 else "loss") if significant else ""
    p, adjusted = number(vs.get("p_value")), number(vs.get("p_value_adjusted"))
    test = dig(vs, "test")
    test_stats = "".join(
        f" {k} = {val!r}."
        for k, val in (test.items() if isinstance(test, Mapping) else ())
        if k != "name"
    )
    chance = number(vs.get("chance_to_beat_control"))
    loss = number(vs.get("expected_loss"))
    seq_p = number(dig(vs, "sequential", "p_value"))
    mark = "significant" if significant else ""
    out.update(
        lift=(lift_text, lift_detail, _exact(lift, *interval(lift_ci)), verdict),
        p=(format_p(p), "", _exact(p) + test_stats, mark),
        p_adjusted=(format_p(adjusted), "", _exact(adjusted), mark),
        chance=(_pct(chance), "", _exact(chance), ""),
        loss=(_diff(loss, kind, signed=False), "", _exact(loss), ""),
        sequential=(format_p(seq_p), "", _exact(seq_p), ""),
    )
    cuped = vs.get("cuped")
    if isinstance(cuped, Mapping):
        cd, cd_ci = number(cuped.get("difference")), cuped.get("difference_ci")
        reduction = number(cuped.get("variance_reduction"))
        out["cuped"] = (
            _diff(cd, kind),
            _interval_text(cd_ci, signed_diff),
            (f" Variance reduced by {reduction:.0%}." if reduction is not None else "")
            + _exact(cd, *interval(cd_ci)),
            "",
        )
    return out


def _table(
    columns: list[tuple[str, str, str]], variants: Sequence[Mapping[str, Any]], kind: str
) -> tuple[list[Cell], list[list[Cell]]]:
    headers = [Cell(heading, meaning) for _, heading, meaning in columns]
    rows = []
    for i, v in enumerate(variants):
        figures = _figures(i, v, kind)
        row = []
        for column, _, meaning in columns:
            text, detail, exact, css = figures.get(column, ("", "", "", "muted"))
            row.append(Cell(text, meaning + exact, css, detail))
        rows.append(row)
    return headers, rows


def goal_tables(payload: Mapping[str, Any]) -> list[GoalTable]:
    """Each goal (the primary first) as a table and its two charts."""
    confidence = number(payload.get("confidence")) or 0.95
    goals = [g for g in payload.get("goals") or [] if isinstance(g, Mapping)]
    goals.sort(key=lambda g: not (g.get("goal") or {}).get("primary"))
    out = []
    for i, g in enumerate(goals):
        goal = g.get("goal") or {}
        kind = "conversion" if goal.get("kind") != "revenue" else "revenue"
        event = str(goal.get("event", ""))
        variants = [v for v in g.get("variants") or [] if isinstance(v, Mapping)]
        keys = [str(v.get("key", "")) for v in variants]
        several = len(variants) > 2
        cuped = any(
            isinstance(v.get("vs_control"), Mapping) and v["vs_control"].get("cuped")
            for v in variants
        )
        headers, rows = _table(_columns(kind, goal, confidence, several, cuped), variants, kind)
        metric = (
            f"{event} conversion rate"
            if kind == "conversion"
            else f"mean {goal.get('property') or 'value'} per user"
        )
        title = f"{event} — " + (
            "conversion" if kind == "conversion" else f"revenue ({goal.get('property')})"
        )
        where = goal.get("where") or []
        description = f"Counted within {humanize_seconds(goal.get('window_seconds'))} of exposure"
        if where:
            description += "; only events where " + " and ".join(
                f"{w.get('property')} {w.get('op')} {w.get('value')!r}"
                for w in where
                if isinstance(w, Mapping)
            )
        notes = []
        chi = g.get("chi_square")
        if isinstance(chi, Mapping) and number(chi.get("p_value")) is not None:
            notes.append(
                f"All variants together (chi-square, {chi.get('dof')} degrees of freedom): "
                f"{p_equals(number(chi.get('p_value')))} — a low value says at least one variant "
                "differs."
            )
        needed = g.get("sample_size")
        if isinstance(needed, Mapping) and isinstance(needed.get("per_variant"), int):
            mde = number(needed.get("relative_mde"))
            plan = (
                f"To detect a {_pct(mde, decimals=0)} relative change with "
                f"{_pct(number(needed.get('power')), decimals=0)} power, each variant needs "
                f"{needed['per_variant']:,} users"
            )
            more = needed.get("more_needed")
            notes.append(
                plan
                + (
                    f": about {more:,} more users needed in all."
                    if isinstance(more, int) and more > 0
                    else ": reached."
                )
            )
        out.append(
            GoalTable(
                anchor=f"goal-{goal.get('id', i)}",
                title=title + (" (primary)" if goal.get("primary") else ""),
                description=description + ".",
                kind=kind,
                metric_label=metric,
                headers=headers,
                rows=rows,
                notes=notes,
                intervals_svg=interval_chart(
                    variants=variants, kind=kind, metric_label=metric, confidence=confidence
                ),
                series_svg=series_chart(
                    series=[p for p in g.get("series") or [] if isinstance(p, Mapping)],
                    keys=keys,
                    kind=kind,
                    metric_label=metric,
                ),
            )
        )
    return out


# (column, path in the payload: `goal.…` in the goal, `@…` at the top, else in the
# variant's row; an int indexes an interval's [low, high])
CSV_SPEC: list[tuple[str, tuple[str | int, ...]]] = [
    ("computed_at", ("@computed_at",)),
    ("experiment", ("@experiment",)),
    ("goal_event", ("goal.event",)),
    ("goal_kind", ("goal.kind",)),
    ("goal_property", ("goal.property",)),
    ("goal_primary", ("goal.primary",)),
    ("goal_window_seconds", ("goal.window_seconds",)),
    ("variant", ("key",)),
    ("is_control", ("#control",)),
    ("weight", ("weight",)),
    ("users", ("n",)),
    ("converters", ("converters",)),
    ("conversions", ("conversions",)),
    ("total", ("total",)),
    ("rate", ("rate",)),
    ("mean", ("mean",)),
    ("ci_low", ("ci", 0)),
    ("ci_high", ("ci", 1)),
    ("difference", ("vs_control", "difference")),
    ("difference_ci_low", ("vs_control", "difference_ci", 0)),
    ("difference_ci_high", ("vs_control", "difference_ci", 1)),
    ("relative_lift", ("vs_control", "relative_lift")),
    ("relative_lift_ci_low", ("vs_control", "relative_lift_ci", 0)),
    ("relative_lift_ci_high", ("vs_control", "relative_lift_ci", 1)),
    ("test", ("vs_control", "test", "name")),
    ("test_statistic", ("#statistic",)),
    ("p_value", ("vs_control", "p_value")),
    ("p_value_adjusted", ("vs_control", "p_value_adjusted")),
    ("significant", ("vs_control", "significant")),
    ("chance_to_beat_control", ("vs_control", "chance_to_beat_control")),
    ("expected_loss", ("vs_control", "expected_loss")),
    ("expected_loss_of_control", ("vs_control", "expected_loss_of_control")),
    ("sequential_p_value", ("vs_control", "sequential", "p_value")),
    ("sequential_ci_low", ("vs_control", "sequential", "difference_ci", 0)),
    ("sequential_ci_high", ("vs_control", "sequential", "difference_ci", 1)),
    ("cuped_difference", ("vs_control", "cuped", "difference")),
    ("cuped_ci_low", ("vs_control", "cuped", "difference_ci", 0)),
    ("cuped_ci_high", ("vs_control", "cuped", "difference_ci", 1)),
    ("cuped_p_value", ("vs_control", "cuped", "p_value")),
    ("cuped_variance_reduction", ("vs_control", "cuped", "variance_reduction")),
]
CSV_COLUMNS = [column for column, _ in CSV_SPEC]


def dig(value: Any, *path: str | int) -> Any:
    """value[path[0]][path[1]]…, or None where a step is missing or of the wrong type."""
    for step in path:
        if isinstance(step, int):
            ok = isinstance(value, list | tuple) and len(value) > step
            value = value[step] if ok else None
        else:
            value = value.get(step) if isinstance(value, Mapping) else None
    return value


def _csv_cell(value: Any) -> str:
    """Numbers unformatted, booleans as true/false, missing as empty; text defused for
    spreadsheets (OWASP: a cell that starts with = + - @ would run as a formula)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_rows(payload: Mapping[str, Any]) -> list[list[str]]:
    """One row per goal × variant (the primary goal first) with every figure of the
    results table, in CSV_COLUMNS order."""
    out = []
    goals = [g for g in payload.get("goals") or [] if isinstance(g, Mapping)]
    goals.sort(key=lambda g: not dig(g, "goal", "primary"))
    for g in goals:
        for i, v in enumerate(g.get("variants") or []):
            test = dig(v, "vs_control", "test")
            special = {
                "#control": i == 0,
                "#statistic": dig(test, "z") if dig(test, "z") is not None else dig(test, "t"),
            }
            row = []
            for _, (head, *rest) in CSV_SPEC:
                assert isinstance(head, str)
                if head.startswith("@"):
                    value = payload.get(head[1:])
                elif head.startswith("goal."):
                    value = dig(g, "goal", head[5:])
                elif head.startswith("#"):
                    value = special[head]
                else:
                    value = dig(v, head, *rest)
                row.append(_csv_cell(value))
            out.append(row)
    return out
