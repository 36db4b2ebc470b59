"""An experiment's results: per-variant sums read in one query over its exposures and the
goal events, then every statistic of experiments.stats on them.

A unit is a profile exposed to the experiment. For each goal, its metric is read from the
profile's events of the goal's name (bots excluded, the goal's property filters applied):
- conversion: 1 if such an event happened in [exposed_at, exposed_at + window), else 0;
- revenue: the sum of the goal's numeric property over the events in that window.
Events before the exposure never count as outcomes; the same metric over the window
*before* the exposure, [exposed_at − window, exposed_at), is the CUPED covariate.
Sums are additive, so one query grouped by (variant, exposure day) gives both the totals
and the cumulative series the chart draws.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from typing import Any

from django.db import connection, transaction
from django.db.models import Count

from experiments import stats
from experiments.models import DaySums, Experiment, Exposure, Goal, GoalKind
from profiles.models import Event
from segments.compiler import Compiler

POWER = 0.8
# A day is kept once its units' goal windows ended at least this long ago (late events).
CLOSE_GRACE = timedelta(days=1)
MAX_SERIES_DAYS = 120


@dataclass
class Sums:
    """One variant's (or one variant-day's) additive sums for one goal."""

    n: int = 0
    converters: int = 0  # units with a positive metric
    y: float = 0.0
    y2: float = 0.0
    x: float = 0.0
    x2: float = 0.0
    xy: float = 0.0

    def add(self, other: Sums) -> None:
        self.n += other.n
        self.converters += other.converters
        self.y += other.y
        self.y2 += other.y2
        self.x += other.x
        self.x2 += other.x2
        self.xy += other.xy


@dataclass
class GoalData:
    goal: Goal
    by_day: dict[str, dict[date, Sums]] = field(default_factory=dict)  # variant → day → sums

    def total(self, variant: str) -> Sums:
        out = Sums()
        for s in self.by_day.get(variant, {}).values():
            out.add(s)
        return out


# --- reading the sums -------------------------------------------------------------------


def _value_sql(goal: Goal, col: str, pg: bool) -> tuple[str, list[Any]]:
    """The event's contribution to the goal's metric (before the window test)."""
    if goal.kind != GoalKind.REVENUE:
        return "1", []
    if pg:
        return (
            f"(CASE WHEN jsonb_typeof({col} -> %s) = 'number' THEN ({col} ->> %s)::float8 END)",
            [goal.property, goal.property],
        )
    key = f'$."{goal.property}"'
    return (
        f"(CASE WHEN json_type({col}, %s) IN ('integer', 'real') THEN json_extract({col}, %s) END)",
        [key, key],
    )


def _filters_sql(goal: Goal, compiler: Compiler) -> tuple[str, list[Any]]:
    parts, params = ["e.event = %s"], [goal.event]
    for w in goal.where or []:
        sql, ps = compiler.json_compare("e.properties", w["property"], w["op"], w.get("value"))
        parts.append(sql)
        params += ps
    return " AND ".join(f"({p})" for p in parts), params


def _read_sums(
    experiment: Experiment, goals: list[Goal], now: datetime, *, full: bool = False
) -> list[GoalData]:
    """Two queries: exposures per (variant, day); and, for the exposures that have goal
    events near them, each unit's metrics summed per (variant, day). A unit without any
    goal event adds only to n (its metrics are all zero).

    Days whose every unit is past the widest goal window (and a day of grace) are kept
    as DaySums and read back instead, as long as their exposure counts still match;
    the event query then starts at the first day that is not kept. `full` ignores
    (and rewrites) what is kept: late events for long-closed days are caught that way."""
    pg = connection.vendor == "postgresql"
    compiler = Compiler(now)
    exposure_table, event_table = Exposure._meta.db_table, Event._meta.db_table
    if pg:
        day = "(x.exposed_at AT TIME ZONE 'UTC')::date"
        # date_part gives a float8 (EXTRACT gives numeric, much slower to compare).
        offset = "date_part('epoch', e.timestamp - x.exposed_at)"
        join_window = (
            "e.timestamp >= x.exposed_at - %s * INTERVAL '1 second' "
            "AND e.timestamp < x.exposed_at + %s * INTERVAL '1 second'"
        )
        false = "FALSE"
        # A fence: without it PostgreSQL inlines the per-event columns into every
        # aggregate that reads them and evaluates the JSON tests twice per event.
        fence = " OFFSET 0"
    else:
        day = "date(x.exposed_at)"
        offset = "((julianday(e.timestamp) - julianday(x.exposed_at)) * 86400.0)"
        join_window = f"{offset} >= -%s AND {offset} < %s"
        false = "0"
        fence = ""
    widest = max(g.window_seconds for g in goals)
    # Per event: does it count for goal i (conversion), or what it adds (revenue)?
    event_cols: list[str] = []
    event_params: list[Any] = []
    # Per unit: the metric after the exposure (y) and in the window before it (x).
    unit_cols: list[str] = []
    unit_params: list[Any] = []
    # Per (variant, day): the sums.
    sum_cols: list[str] = []
    for i, goal in enumerate(goals):
        filters, filter_params = _filters_sql(goal, compiler)
        w = goal.window_seconds
        if goal.kind == GoalKind.REVENUE:
            value, value_params = _value_sql(goal, "e.properties", pg)
            event_cols.append(f"(CASE WHEN {filters} THEN {value} END) AS m{i}")
            event_params += [*filter_params, *value_params]
            unit_cols += [
                f"COALESCE(SUM(CASE WHEN j.dt >= 0 AND j.dt < %s THEN j.m{i} END), 0) AS y{i}",
                f"COALESCE(SUM(CASE WHEN j.dt < 0 AND j.dt >= -%s THEN j.m{i} END), 0) AS x{i}",
            ]
            sum_cols += [
                f"SUM(CASE WHEN y{i} > 0 THEN 1 ELSE 0 END)",
                f"SUM(y{i})",
                f"SUM(y{i} * y{i})",
                f"SUM(x{i})",
                f"SUM(x{i} * x{i})",
                f"SUM(x{i} * y{i})",
            ]
        else:
            event_cols.append(f"(CASE WHEN {filters} THEN 1 ELSE 0 END) AS m{i}")
            event_params += filter_params
            unit_cols += [
                f"MAX(CASE WHEN j.dt >= 0 AND j.dt < %s AND j.m{i} = 1 THEN 1 ELSE 0 END) AS y{i}",
                f"MAX(CASE WHEN j.dt < 0 AND j.dt >= -%s AND j.m{i} = 1 THEN 1 ELSE 0 END) AS x{i}",
            ]
            # 0/1 metrics: y² = y, x² = x, and every converter has y = 1
            sum_cols += [f"SUM(y{i})", f"SUM(x{i})", f"SUM(x{i} * y{i})"]
        unit_params += [w, w]
    names = sorted({g.event for g in goals})
    near = (
        f"SELECT x.id AS xid, x.variant, {day} AS day, {offset} AS dt, {', '.join(event_cols)} "
        f"FROM {exposure_table} x JOIN {event_table} e "
        f"ON e.profile_id = x.profile_id AND e.type = 'track' AND e.is_bot = {false} "
        f"AND e.event IN ({', '.join(['%s'] * len(names))}) AND {join_window} "
        # The same bounds for every exposure, so the (event, timestamp) index skips the
        # history before the experiment.
        "AND e.timestamp >= %s AND e.timestamp <= %s "
        f"WHERE x.experiment_id = %s AND x.exposed_at >= %s{fence}"
    )
    units = f"SELECT j.variant, j.day, {', '.join(unit_cols)} FROM ({near}) j GROUP BY j.xid, j.variant, j.day"
    sql = f"SELECT variant, day, {', '.join(sum_cols)} FROM ({units}) u GROUP BY variant, day"
    params = [*unit_params, *event_params, *names, widest, widest]
    counts_sql = (
        f"SELECT x.variant, {day} AS day, COUNT(*) FROM {exposure_table} x "
        "WHERE x.experiment_id = %s GROUP BY x.variant, day"
    )

    def as_date(value: Any) -> date:
        return value if isinstance(value, date) else date.fromisoformat(value)

    out = [GoalData(goal) for goal in goals]
    # The two queries must see the same exposures: one snapshot for both (when this
    # is its own transaction; a caller's transaction keeps its own isolation).
    own_transaction = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if pg and own_transaction:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if pg:
            # One hash aggregate per unit with goal events: let it stay in memory.
            cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute(counts_sql, [experiment.pk])
        days = set()
        for variant, day_value, n in cursor.fetchall():
            days.add(as_date(day_value))
            for data in out:
                data.by_day.setdefault(variant, {})[as_date(day_value)] = Sums(n=int(n))
        if not days:
            return out
        closed_before = (now - timedelta(seconds=widest) - CLOSE_GRACE).astimezone(UTC).date()
        kept = set() if full else _kept_days(out, closed_before)
        open_days = sorted(d for d in days if d not in kept)
        if not open_days:
            return out
        start = datetime.combine(open_days[0], dt_time.min, tzinfo=UTC)
        bounds: list[Any] = [start - timedelta(seconds=widest), now, start]
        if not pg:
            bounds = [connection.ops.adapt_datetimefield_value(t) for t in bounds]
        for data in out:  # recomputed from `start` on: drop what was read back
            for by in data.by_day.values():
                for d, s in by.items():
                    if d >= open_days[0]:
                        s.converters, s.y, s.y2, s.x, s.x2, s.xy = 0, 0.0, 0.0, 0.0, 0.0, 0.0
        cursor.execute(sql, [*params, bounds[0], bounds[1], experiment.pk, bounds[2]])
        for row in cursor.fetchall():
            variant, the_day = row[0], as_date(row[1])
            at = 2
            for data in out:
                # (an exposure newer than the counts, seen only under a caller's
                # read-committed transaction: counted with n = 0 rather than lost)
                s = data.by_day.setdefault(variant, {}).setdefault(the_day, Sums())
                if data.goal.kind == GoalKind.REVENUE:
                    c = row[at : at + 6]
                    at += 6
                    s.converters = int(c[0] or 0)
                    s.y, s.y2 = float(c[1] or 0), float(c[2] or 0)
                    s.x, s.x2, s.xy = float(c[3] or 0), float(c[4] or 0), float(c[5] or 0)
                else:
                    y, x, xy = (float(v or 0) for v in row[at : at + 3])
                    at += 3
                    s.converters, s.y, s.y2, s.x, s.x2, s.xy = round(y), y, y, x, x, xy
        _keep_days(out, open_days[0], closed_before)
    return out


def _kept_days(out: list[GoalData], closed_before: date) -> set[date]:
    """Closed days whose kept sums exist for every goal and variant with exposures that
    day, with the same exposure counts; their sums are filled into `out`."""
    goals = {data.goal.pk: data for data in out}
    rows = DaySums.objects.filter(goal_id__in=goals, day__lt=closed_before)
    kept: dict[tuple[int, str, date], DaySums] = {(r.goal_id, r.variant, r.day): r for r in rows}
    good: set[date] = set()
    candidates = {d for data in out for by in data.by_day.values() for d in by if d < closed_before}
    for d in candidates:
        if all(
            (r := kept.get((data.goal.pk, variant, d))) is not None and r.n == by[d].n
            for data in out
            for variant, by in data.by_day.items()
            if d in by
        ):
            good.add(d)
    for data in out:
        for variant, by in data.by_day.items():
            for d in good & set(by):
                r = kept[(data.goal.pk, variant, d)]
                s = by[d]
                s.converters, s.y, s.y2, s.x, s.x2, s.xy = r.converters, r.y, r.y2, r.x, r.x2, r.xy
    return good


def _keep_days(out: list[GoalData], first: date, closed_before: date) -> None:
    """Keep the sums of the closed days just computed (from `first` on)."""
    rows = [
        DaySums(
            goal_id=data.goal.pk,
            variant=variant,
            day=d,
            n=s.n,
            converters=s.converters,
            y=s.y,
            y2=s.y2,
            x=s.x,
            x2=s.x2,
            xy=s.xy,
        )
        for data in out
        for variant, by in data.by_day.items()
        for d, s in by.items()
        if first <= d < closed_before
    ]
    if not rows:
        return
    DaySums.objects.filter(
        goal_id__in=[data.goal.pk for data in out], day__gte=first, day__lt=closed_before
    ).delete()
    DaySums.objects.bulk_create(rows, batch_size=1000)


# --- statistics ----------------------------------------------------------------------------


def _interval(ci: stats.Interval | None) -> list[float | None] | None:
    return None if ci is None else [ci.low, ci.high]


def _tau_squared(mde: float, baseline: float) -> float | None:
    tau = mde * baseline
    return tau * tau if tau != 0 and math.isfinite(tau) else None


def _variant_row(key: str, weight: float, s: Sums, kind: str, confidence: float) -> dict[str, Any]:
    row: dict[str, Any] = {"key": key, "weight": weight, "n": s.n, "converters": s.converters}
    if kind == GoalKind.CONVERSION:
        row["conversions"] = round(s.y)
        row["rate"] = s.y / s.n if s.n else None
        row["ci"] = (
            _interval(
                stats.wilson_interval(
                    conversions=stats.Conversions(s.n, min(s.n, round(s.y))), confidence=confidence
                )
            )
            if s.n
            else None
        )
    else:
        row["total"] = s.y
        row["mean"] = s.y / s.n if s.n else None
        row["ci"] = (
            _interval(
                stats.mean_interval(sums=stats.MetricSums(s.n, s.y, s.y2), confidence=confidence)
            )
            if s.n >= 2
            else None
        )
    return row


def _compare(
    control: Sums,
    treatment: Sums,
    kind: str,
    confidence: float,
    mde: float,
    before: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Treatment against control for one goal; None when either side is too small.
    `before` is the last look's sequential figures: its mixture scale is kept (fixed at
    the first look that could set it), its p-value only goes down and its interval only
    narrows, as always-valid inference requires."""
    alpha = 1.0 - confidence
    before = before or {}
    kept_tau2 = before.get("tau_squared")
    if kind == GoalKind.CONVERSION:
        if control.n < 1 or treatment.n < 1:
            return None
        c = stats.Conversions(control.n, min(control.n, round(control.y)))
        t = stats.Conversions(treatment.n, min(treatment.n, round(treatment.y)))
        z = stats.proportions_z_test(control=c, treatment=t, confidence=confidence)
        lift = stats.lift_proportions(control=c, treatment=t, confidence=confidence)
        bayes = stats.chance_to_beat_control_proportions(control=c, treatment=t)
        pooled = (c.conversions + t.conversions) / (c.n + t.n)
        tau2 = kept_tau2 or _tau_squared(mde, c.rate or pooled)
        seq = (
            stats.sequential_test_proportions(
                control=c,
                treatment=t,
                tau_squared=tau2,
                alpha=alpha,
                previous_p_value=before.get("p_value"),
            )
            if tau2
            else None
        )
        p_value, test = z.p_value, {"name": "two-proportion z-test", "z": z.z}
        cuped = None
        if control.x > 0 or treatment.x > 0:
            cuped = _cuped(control, treatment, confidence)
    else:
        if control.n < 2 or treatment.n < 2:
            return None
        cm = stats.MetricSums(control.n, control.y, control.y2)
        tm = stats.MetricSums(treatment.n, treatment.y, treatment.y2)
        welch = stats.welch_t_test(control=cm, treatment=tm, confidence=confidence)
        lift = stats.lift_means(control=cm, treatment=tm, confidence=confidence)
        bayes = stats.chance_to_beat_control_means(control=cm, treatment=tm)
        tau2 = kept_tau2 or _tau_squared(mde, cm.mean or (cm.sum + tm.sum) / (cm.n + tm.n))
        seq = (
            stats.sequential_test_means(
                control=cm,
                treatment=tm,
                tau_squared=tau2,
                alpha=alpha,
                previous_p_value=before.get("p_value"),
            )
            if tau2
            else None
        )
        p_value = welch.p_value
        test = {"name": "Welch t-test", "t": welch.t, "df": welch.df}
        cuped = _cuped(control, treatment, confidence) if (control.x or treatment.x) else None
    return {
        "test": test,
        "p_value": p_value,
        "difference": lift.absolute,
        "difference_ci": _interval(lift.absolute_ci),
        "relative_lift": lift.relative,
        "relative_lift_ci": _interval(lift.relative_ci),
        "chance_to_beat_control": bayes.chance_to_beat_control,
        "expected_loss": bayes.expected_loss_if_treatment,
        "expected_loss_of_control": bayes.expected_loss_if_control,
        "sequential": None
        if seq is None
        else {
            "p_value": seq.p_value,
            "difference_ci": _narrowed(_interval(seq.ci), before.get("difference_ci")),
            "tau_squared": seq.tau_squared,
        },
        "cuped": cuped,
    }


def _narrowed(now: list[float | None] | None, before: Any) -> list[float | None] | None:
    """The intersection of this look's interval with the last one's (a running
    intersection of always-valid intervals is still valid); this look's when they do not
    meet or the last one is unknown."""
    if now is None or not isinstance(before, list) or len(before) != 2 or None in before:
        return now
    if None in now:
        return now
    low, high = max(now[0], before[0]), min(now[1], before[1])
    return [low, high] if low <= high else now


def _cuped(control: Sums, treatment: Sums, confidence: float) -> dict[str, Any] | None:
    if control.n < 2 or treatment.n < 2:
        return None
    groups = [stats.CupedSums(s.n, s.x, s.y, s.x2, s.y2, s.xy) for s in (control, treatment)]
    result = stats.cuped_welch_t_test(control=groups[0], treatment=groups[1], confidence=confidence)
    if result.theta == 0:
        return None
    before = result.unadjusted.standard_error
    after = result.test.standard_error
    return {
        "theta": result.theta,
        "control_mean": result.control.mean,
        "treatment_mean": result.treatment.mean,
        "difference": result.test.difference,
        "difference_ci": _interval(result.test.ci),
        "p_value": result.test.p_value,
        "variance_reduction": (1.0 - (after / before) ** 2) if before > 0 else None,
    }


def _sample_size(
    control: Sums, kind: str, confidence: float, mde: float, n_variants: int
) -> dict[str, Any] | None:
    """Units each variant needs to detect the experiment's MDE (Bonferroni-adjusted alpha
    when several treatments are compared), or None while the baseline is unknown."""
    alpha = (1.0 - confidence) / max(1, n_variants - 1)
    try:
        if kind == GoalKind.CONVERSION:
            rate = control.y / control.n if control.n else 0.0
            if not 0.0 < rate < 1.0 or rate * (1 + mde) >= 1.0:
                return None
            needed = stats.sample_size_per_variant(
                baseline_rate=rate, relative_mde=mde, power=POWER, alpha=alpha
            )
        else:
            if control.n < 2 or control.y == 0:
                return None
            sums = stats.MetricSums(control.n, control.y, control.y2)
            needed = stats.sample_size_means_per_variant(
                mean=sums.mean, variance=sums.variance, relative_mde=mde, power=POWER, alpha=alpha
            )
    except ValueError:
        return None
    return {"per_variant": needed, "power": POWER, "alpha": round(alpha, 12), "relative_mde": mde}


def _series(data: GoalData, keys: list[str], kind: str, confidence: float) -> list[dict[str, Any]]:
    """Cumulative, by exposure day: each variant's n, rate (or mean) and interval."""
    days = sorted({d for by in data.by_day.values() for d in by})[-MAX_SERIES_DAYS:]
    running = {k: Sums() for k in keys}
    # Days cut off the front still count in the running totals.
    first = days[0] if days else None
    for k in keys:
        for d, s in data.by_day.get(k, {}).items():
            if first is not None and d < first:
                running[k].add(s)
    out = []
    for d in days:
        point: dict[str, Any] = {"day": d.isoformat(), "variants": {}}
        for k in keys:
            today = data.by_day.get(k, {}).get(d)
            if today is not None:
                running[k].add(today)
            r = running[k]
            row = _variant_row(k, 0.0, r, kind, confidence)
            point["variants"][k] = {
                "n": r.n,
                "value": row.get("rate") if kind == GoalKind.CONVERSION else row.get("mean"),
                "ci": row["ci"],
            }
        out.append(point)
    return out


def _sequential_before(previous: dict[str, Any] | None) -> dict[tuple[Any, str], Any]:
    """(goal id, variant) → the sequential figures of the last computed results."""
    out: dict[tuple[Any, str], Any] = {}
    for g in (previous or {}).get("goals") or []:
        for row in g.get("variants") or []:
            seq = (row.get("vs_control") or {}).get("sequential")
            if seq:
                out[(g.get("goal", {}).get("id"), row.get("key"))] = seq
    return out


def results_compute(
    *,
    experiment: Experiment,
    now: datetime,
    previous: dict[str, Any] | None = None,
    full: bool = False,
) -> dict[str, Any]:
    """Every goal's per-variant figures, comparisons with control (Holm-adjusted across
    treatments), the sample-ratio check and the sample still needed, as JSON. `previous`
    is the last computed payload (the sequential test carries on from it)."""
    variants = list(experiment.variants.order_by("index"))
    goals = list(experiment.goals.all())
    keys = [v.key for v in variants]
    weights = [v.weight for v in variants]
    confidence, mde = experiment.confidence, experiment.minimum_detectable_effect
    data = _read_sums(experiment, goals, now, full=full) if goals else []
    sequential_before = _sequential_before(previous)
    exposures: dict[str, int] = defaultdict(int)
    if data:
        for k in keys:
            exposures[k] = data[0].total(k).n
    else:
        for k, n in (
            Exposure.objects.filter(experiment=experiment)
            .values_list("variant")
            .annotate(n=Count("id"))
            .values_list("variant", "n")
        ):
            exposures[k] = n
    observed = [exposures[k] for k in keys]
    warnings: list[dict[str, str]] = []

    def warn(code: str, message: str) -> None:
        warnings.append({"code": code, "message": message})

    srm = None
    if sum(observed) > 0:
        check = stats.sample_ratio_mismatch(observed=observed, weights=weights)
        srm = {
            "p_value": check.p_value,
            "mismatch": check.mismatch,
            "expected": check.expected,
            "observed": observed,
            "statistic": check.statistic,
        }
        if check.mismatch:
            warn(
                "sample_ratio_mismatch",
                "Sample ratio mismatch: the variants received "
                + ", ".join(f"{k} {o:,}" for k, o in zip(keys, observed, strict=True))
                + " units where the weights expect "
                + ", ".join(f"{e:,.0f}" for e in check.expected)
                + f" (p = {check.p_value:.2g}). Assignment or exposure logging is broken: "
                "do not trust these results until the cause is found.",
            )
    goal_results = []
    for g in data:
        goal = g.goal
        totals = {k: g.total(k) for k in keys}
        rows = [
            _variant_row(k, w, totals[k], goal.kind, confidence)
            for k, w in zip(keys, weights, strict=True)
        ]
        comparisons = [
            _compare(
                totals[keys[0]],
                totals[k],
                goal.kind,
                confidence,
                mde,
                sequential_before.get((goal.pk, k)),
            )
            for k in keys[1:]
        ]
        # Holm across the treatments compared with control, so that several variants do
        # not multiply the chance of a false winner.
        present = [c for c in comparisons if c is not None]
        adjusted = stats.holm_bonferroni([c["p_value"] for c in present])
        for c, p_adj in zip(present, adjusted, strict=True):
            c["p_value_adjusted"] = p_adj
            c["significant"] = p_adj < 1.0 - confidence
        for row, comparison in zip(rows[1:], comparisons, strict=True):
            row["vs_control"] = comparison
        chi = None
        if goal.kind == GoalKind.CONVERSION and len(keys) > 2 and all(totals[k].n for k in keys):
            test = stats.proportions_chi_square(
                groups=[
                    stats.Conversions(totals[k].n, min(totals[k].n, round(totals[k].y)))
                    for k in keys
                ]
            )
            chi = {"statistic": test.statistic, "dof": test.dof, "p_value": test.p_value}
        needed = _sample_size(totals[keys[0]], goal.kind, confidence, mde, len(keys))
        if needed is not None:
            more = sum(max(0, needed["per_variant"] - totals[k].n) for k in keys)
            needed["more_needed"] = more
            needed["enough"] = more == 0
            if goal.primary and more > 0:
                warn(
                    "not_enough_data",
                    f"Not enough data yet: about {more:,} more users are needed "
                    f"({needed['per_variant']:,} per variant) to detect a "
                    f"{mde:.0%} relative change in {goal.event} with {POWER:.0%} power.",
                )
        elif goal.primary:
            control = totals[keys[0]]
            if goal.kind == GoalKind.CONVERSION and control.n and control.y >= control.n:
                why = f"every control user did {goal.event}: there is no room to detect a lift"
            elif control.n and control.y > 0 and goal.kind == GoalKind.CONVERSION:
                why = f"a {mde:.0%} lift would take the control's {goal.event} rate past 100%"
            else:
                what = "conversions" if goal.kind == GoalKind.CONVERSION else "revenue"
                why = f"the control has no {goal.event} {what} to plan from"
            warn("not_enough_data", f"Not enough data yet: {why}.")
        goal_results.append(
            {
                "goal": {
                    "id": goal.pk,
                    "event": goal.event,
                    "kind": goal.kind,
                    "property": goal.property,
                    "where": goal.where,
                    "window_seconds": goal.window_seconds,
                    "primary": goal.primary,
                },
                "variants": rows,
                "chi_square": chi,
                "sample_size": needed,
                "series": _series(g, keys, goal.kind, confidence),
            }
        )
    return _json_safe(
        {
            "experiment": experiment.key,
            "status": experiment.status,
            "computed_at": now.isoformat(),
            "confidence": confidence,
            "minimum_detectable_effect": mde,
            "control": keys[0] if keys else None,
            "exposures": {k: exposures[k] for k in keys},
            "exposures_total": sum(observed),
            "srm": srm,
            "warnings": warnings,
            "goals": goal_results,
        }
    )


def _json_safe(value: Any) -> Any:
    """JSON (and PostgreSQL's jsonb) has no inf or NaN: any figure that came out
    infinite or undefined is reported as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
