"""Statistics for experiment results: tests, intervals, lifts, Bayesian risk, planning.

Pure functions over summary numbers (counts and sums), so a report never needs raw rows:
a variant's conversions are `Conversions(n, conversions)`, a revenue-like metric is
`MetricSums(n, sum, sum_sq)`, and CUPED also needs the pre-exposure sums (`CupedSums`).
"Control" is the baseline; every difference and lift is treatment minus control.
No Django imports; numpy and scipy only.

Degenerate data (nobody converted, every value identical) gives the natural limit rather
than an error: a zero standard error yields p = 1 when the groups agree and p = 0 when they
differ, and a zero-width interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

_WEIGHT_TOLERANCE = 1e-6
# Chunk of terms summed at once in the exact Beta comparison, to bound memory.
_BETA_SUM_CHUNK = 1 << 20


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Conversions:
    """One variant's exposed units (`n`) and how many of them converted."""

    n: int
    conversions: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"a variant needs at least one unit, got n={self.n}")
        if not 0 <= self.conversions <= self.n:
            raise ValueError(
                f"conversions must be between 0 and n={self.n}, got {self.conversions}"
            )

    @property
    def rate(self) -> float:
        return self.conversions / self.n


@dataclass(frozen=True)
class MetricSums:
    """One variant's metric as summary sums: unit count, sum of values, sum of squared values."""

    n: int
    sum: float
    sum_sq: float

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"a variance needs at least two units, got n={self.n}")
        if not (math.isfinite(self.sum) and math.isfinite(self.sum_sq)) or self.sum_sq < 0:
            raise ValueError("sum must be finite and sum_sq finite and non-negative")

    @property
    def mean(self) -> float:
        return self.sum / self.n

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1); rounding can push a tiny variance below zero, so clamp."""
        return max(0.0, (self.sum_sq - self.sum * self.mean) / (self.n - 1))


@dataclass(frozen=True)
class CupedSums:
    """One variant's sums of the metric (y) and of the same metric before exposure (x)."""

    n: int
    sum_x: float
    sum_y: float
    sum_x2: float
    sum_y2: float
    sum_xy: float

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"a variance needs at least two units, got n={self.n}")


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Interval:
    """A confidence interval [low, high]."""

    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class ProportionTest:
    """Two-proportion z-test: pooled standard error for z, unpooled for the interval."""

    control_rate: float
    treatment_rate: float
    difference: float
    z: float
    p_value: float
    ci: Interval


@dataclass(frozen=True)
class ChiSquareTest:
    """A chi-square statistic, its degrees of freedom and its p-value."""

    statistic: float
    dof: int
    p_value: float


@dataclass(frozen=True)
class WelchTest:
    """Welch's unequal-variance t-test of the difference in means."""

    control_mean: float
    treatment_mean: float
    control_variance: float
    treatment_variance: float
    difference: float
    standard_error: float
    t: float
    df: float
    p_value: float
    ci: Interval


@dataclass(frozen=True)
class Lift:
    """Absolute lift (treatment − control) and relative lift (treatment / control − 1).

    The relative lift and its interval are None when the control mean is zero.
    """

    absolute: float
    absolute_ci: Interval
    relative: float | None
    relative_ci: Interval | None


@dataclass(frozen=True)
class BayesianComparison:
    """Chance the treatment beats control, and the expected loss of shipping either one.

    Expected loss is how much of the metric you give up on average, over the posterior,
    if you pick that variant and it is in fact the worse one (zero when it is better).
    """

    chance_to_beat_control: float
    expected_loss_if_treatment: float
    expected_loss_if_control: float


@dataclass(frozen=True)
class SrmCheck:
    """Sample-ratio-mismatch check: observed counts against the intended split."""

    expected: list[float]
    statistic: float
    dof: int
    p_value: float
    mismatch: bool


@dataclass(frozen=True)
class CupedGroup:
    """One variant after CUPED adjustment, with the raw figures kept for comparison."""

    n: int
    mean: float
    variance: float
    unadjusted_mean: float
    unadjusted_variance: float


@dataclass(frozen=True)
class CupedAdjustment:
    """The pooled CUPED coefficient and every variant's adjusted mean and variance."""

    theta: float
    overall_mean_x: float
    groups: list[CupedGroup]


@dataclass(frozen=True)
class CupedTest:
    """Welch's test on CUPED-adjusted figures, next to the same test without adjustment."""

    theta: float
    control: CupedGroup
    treatment: CupedGroup
    test: WelchTest
    unadjusted: WelchTest


@dataclass(frozen=True)
class SequentialTest:
    """Always-valid (peeking-safe) p-value and interval from the normal-mixture mSPRT."""

    difference: float
    variance: float
    tau_squared: float
    log_likelihood_ratio: float
    p_value: float
    ci: Interval


# ---------------------------------------------------------------------------- helpers


def _check_level(name: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")


def _normal_critical(confidence: float) -> float:
    _check_level("confidence", confidence)
    return float(sps.norm.isf((1.0 - confidence) / 2.0))


def _two_sided_normal_p(z: float) -> float:
    return float(2.0 * sps.norm.sf(abs(z)))


def _ratio_or_limit(difference: float, se: float) -> float:
    """difference / se, with the limit 0 or ±inf when se is zero."""
    if se > 0:
        return difference / se
    return 0.0 if difference == 0 else math.copysign(math.inf, difference)


def _welch(
    *,
    control_mean: float,
    control_variance: float,
    control_n: int,
    treatment_mean: float,
    treatment_variance: float,
    treatment_n: int,
    confidence: float,
) -> WelchTest:
    _check_level("confidence", confidence)
    va = control_variance / control_n
    vb = treatment_variance / treatment_n
    se = math.sqrt(va + vb)
    difference = treatment_mean - control_mean
    if va + vb > 0:
        df = (va + vb) ** 2 / (va**2 / (control_n - 1) + vb**2 / (treatment_n - 1))
    else:
        df = float(control_n + treatment_n - 2)
    t = _ratio_or_limit(difference, se)
    p_value = float(2.0 * sps.t.sf(abs(t), df))
    half = float(sps.t.isf((1.0 - confidence) / 2.0, df)) * se
    return WelchTest(
        control_mean=control_mean,
        treatment_mean=treatment_mean,
        control_variance=control_variance,
        treatment_variance=treatment_variance,
        difference=difference,
        standard_error=se,
        t=t,
        df=df,
        p_value=p_value,
        ci=Interval(difference - half, difference + half),
    )


def _relative_lift(
    *,
    control_mean: float,
    control_var_of_mean: float,
    treatment_mean: float,
    treatment_var_of_mean: float,
    critical: float,
) -> tuple[float | None, Interval | None]:
    if control_mean == 0:
        return None, None
    relative = treatment_mean / control_mean - 1.0
    # Delta method for g(a, b) = b / a: Var ≈ Var(b)/a² + b²·Var(a)/a⁴ (the means are independent).
    variance = (
        treatment_var_of_mean / control_mean**2
        + treatment_mean**2 * control_var_of_mean / control_mean**4
    )
    half = critical * math.sqrt(variance)
    return relative, Interval(relative - half, relative + half)


# ------------------------------------------------------------- one variant's interval


def wilson_interval(*, conversions: Conversions, confidence: float = 0.95) -> Interval:
    """Wilson score interval of one variant's conversion rate.

    Unlike the normal (Wald) interval it stays inside [0, 1] and does not collapse to a
    point when nobody (or everybody) converted, so small variants get honest bars.
    """
    z = _normal_critical(confidence)
    n, p = conversions.n, conversions.rate
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denominator
    # At 0% and 100% the bound is exactly 0 or 1; rounding would leave it a hair inside.
    low = 0.0 if conversions.conversions == 0 else max(0.0, centre - half)
    high = 1.0 if conversions.conversions == n else min(1.0, centre + half)
    return Interval(low, high)


def mean_interval(*, sums: MetricSums, confidence: float = 0.95) -> Interval:
    """Student-t interval of one variant's mean (n − 1 degrees of freedom)."""
    _check_level("confidence", confidence)
    half = float(sps.t.isf((1.0 - confidence) / 2.0, sums.n - 1)) * math.sqrt(
        sums.variance / sums.n
    )
    return Interval(sums.mean - half, sums.mean + half)


# ------------------------------------------------------------------ frequentist tests


def proportions_z_test(
    *, control: Conversions, treatment: Conversions, confidence: float = 0.95
) -> ProportionTest:
    """Two-sided two-proportion z-test of treatment vs control conversion rates.

    z uses the pooled standard error (the null says both rates are equal); the interval of
    the difference uses the unpooled one (each group keeps its own rate).
    """
    critical = _normal_critical(confidence)
    pa, pb = control.rate, treatment.rate
    pooled = (control.conversions + treatment.conversions) / (control.n + treatment.n)
    se_pooled = math.sqrt(pooled * (1.0 - pooled) * (1.0 / control.n + 1.0 / treatment.n))
    difference = pb - pa
    z = _ratio_or_limit(difference, se_pooled)
    se = math.sqrt(pa * (1.0 - pa) / control.n + pb * (1.0 - pb) / treatment.n)
    half = critical * se
    return ProportionTest(
        control_rate=pa,
        treatment_rate=pb,
        difference=difference,
        z=z,
        p_value=_two_sided_normal_p(z),
        ci=Interval(difference - half, difference + half),
    )


def proportions_chi_square(*, groups: Sequence[Conversions]) -> ChiSquareTest:
    """Chi-square test of independence (no Yates correction) on the 2×k converted/not table.

    When nobody or everybody converted there is nothing to compare: statistic 0, p = 1.
    """
    if len(groups) < 2:
        raise ValueError("the chi-square test needs at least two variants")
    observed = np.array(
        [[g.conversions for g in groups], [g.n - g.conversions for g in groups]], dtype=float
    )
    dof = len(groups) - 1
    row_totals = observed.sum(axis=1)
    if np.any(row_totals == 0):
        return ChiSquareTest(statistic=0.0, dof=dof, p_value=1.0)
    expected = np.outer(row_totals, observed.sum(axis=0)) / observed.sum()
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return ChiSquareTest(statistic=statistic, dof=dof, p_value=float(sps.chi2.sf(statistic, dof)))


def welch_t_test(
    *, control: MetricSums, treatment: MetricSums, confidence: float = 0.95
) -> WelchTest:
    """Welch's two-sided t-test of the difference in means, from summary sums only.

    Sample variances use ddof=1; degrees of freedom are Welch–Satterthwaite; the interval
    of the difference uses the t quantile at those degrees of freedom.
    """
    return _welch(
        control_mean=control.mean,
        control_variance=control.variance,
        control_n=control.n,
        treatment_mean=treatment.mean,
        treatment_variance=treatment.variance,
        treatment_n=treatment.n,
        confidence=confidence,
    )


# -------------------------------------------------------------------------------- lifts


def lift_proportions(
    *, control: Conversions, treatment: Conversions, confidence: float = 0.95
) -> Lift:
    """Absolute and relative lift of the conversion rate, with normal-approximation intervals.

    The absolute interval is the z-test's unpooled interval; the relative interval is the
    delta-method interval of rate_t / rate_c − 1.
    """
    critical = _normal_critical(confidence)
    pa, pb = control.rate, treatment.rate
    var_a = pa * (1.0 - pa) / control.n
    var_b = pb * (1.0 - pb) / treatment.n
    half = critical * math.sqrt(var_a + var_b)
    relative, relative_ci = _relative_lift(
        control_mean=pa,
        control_var_of_mean=var_a,
        treatment_mean=pb,
        treatment_var_of_mean=var_b,
        critical=critical,
    )
    return Lift(
        absolute=pb - pa,
        absolute_ci=Interval(pb - pa - half, pb - pa + half),
        relative=relative,
        relative_ci=relative_ci,
    )


def lift_means(*, control: MetricSums, treatment: MetricSums, confidence: float = 0.95) -> Lift:
    """Absolute and relative lift of a mean, both with t quantiles at Welch's degrees of freedom.

    The absolute interval is Welch's; the relative one is the delta-method interval of
    mean_t / mean_c − 1 (as GrowthBook's frequentist engine does).
    """
    welch = welch_t_test(control=control, treatment=treatment, confidence=confidence)
    relative, relative_ci = _relative_lift(
        control_mean=control.mean,
        control_var_of_mean=control.variance / control.n,
        treatment_mean=treatment.mean,
        treatment_var_of_mean=treatment.variance / treatment.n,
        critical=float(sps.t.isf((1.0 - confidence) / 2.0, welch.df)),
    )
    return Lift(
        absolute=welch.difference,
        absolute_ci=welch.ci,
        relative=relative,
        relative_ci=relative_ci,
    )


# ----------------------------------------------------------------------------- Bayesian


def _log_beta_terms(b: int, c: int, d: int, start: int, stop: int) -> np.ndarray:
    i = np.arange(start, stop, dtype=float)
    return np.asarray(
        special.betaln(c + i, b + d)
        - np.log(b + i)
        - special.betaln(1.0 + i, b)
        - special.betaln(c, d),
        dtype=float,
    )


def _prob_x_beats_y_sum_over_a(a: int, b: int, c: int, d: int) -> float:
    # Closed form for integer a (Evan Miller, "Formulas for Bayesian A/B Testing"):
    #   P(X > Y) = Σ_{i=0}^{a-1} B(c+i, b+d) / ((b+i)·B(1+i, b)·B(c, d)),
    # X ~ Beta(a, b), Y ~ Beta(c, d). Every term is positive, so the sum is stable.
    total = 0.0
    for start in range(0, a, _BETA_SUM_CHUNK):
        terms = np.exp(_log_beta_terms(b, c, d, start, min(a, start + _BETA_SUM_CHUNK)))
        total += float(np.sum(terms))
    return min(1.0, total)


def _prob_x_beats_y(a: int, b: int, c: int, d: int) -> float:
    """P(X > Y) for X ~ Beta(a, b), Y ~ Beta(c, d) with integer parameters, exactly.

    The closed form sums a terms; by symmetry (P(X>Y) = 1 − P(Y>X), and X>Y ⇔ 1−Y > 1−X)
    it can instead sum b, c or d terms, so sum over the smallest one.
    """
    smallest = min(a, b, c, d)
    if smallest == a:
        return _prob_x_beats_y_sum_over_a(a, b, c, d)
    if smallest == d:
        return _prob_x_beats_y_sum_over_a(d, c, b, a)
    if smallest == c:
        return 1.0 - _prob_x_beats_y_sum_over_a(c, d, a, b)
    return 1.0 - _prob_x_beats_y_sum_over_a(b, a, d, c)


def chance_to_beat_control_proportions(
    *, control: Conversions, treatment: Conversions
) -> BayesianComparison:
    """Bayesian comparison of conversion rates with uniform priors: Beta(1+conv, 1+non-conv).

    Exact, not simulated: the chance to win is the closed-form sum for integer Beta
    parameters (Evan Miller), and the expected loss reduces to the same sums through
    E[p·1{p>q}] = E[p]·P(p' > q) with p' ~ Beta(α+1, β).
    """
    aa, ba = 1 + control.conversions, 1 + control.n - control.conversions
    ab, bb = 1 + treatment.conversions, 1 + treatment.n - treatment.conversions
    mean_a, mean_b = aa / (aa + ba), ab / (ab + bb)
    chance = _prob_x_beats_y(ab, bb, aa, ba)
    # E[max(pa − pb, 0)] = E[pa·1{pa>pb}] − E[pb·1{pa>pb}].
    loss_treatment = mean_a * _prob_x_beats_y(aa + 1, ba, ab, bb) - mean_b * _prob_x_beats_y(
        aa, ba, ab + 1, bb
    )
    loss_control = mean_b * _prob_x_beats_y(ab + 1, bb, aa, ba) - mean_a * _prob_x_beats_y(
        ab, bb, aa + 1, ba
    )
    return BayesianComparison(
        chance_to_beat_control=chance,
        expected_loss_if_treatment=max(0.0, loss_treatment),
        expected_loss_if_control=max(0.0, loss_control),
    )


def chance_to_beat_control_means(
    *, control: MetricSums, treatment: MetricSums
) -> BayesianComparison:
    """Bayesian comparison of means with a normal approximation (GrowthBook-style, flat prior).

    The difference D is taken as Normal(d, s²), d = mean_t − mean_c, s² = var_c/n_c + var_t/n_t:
    chance to win Φ(d/s); expected loss of shipping treatment E[max(−D, 0)] = s·φ(d/s) − d·Φ(−d/s),
    of keeping control E[max(D, 0)] = s·φ(d/s) + d·Φ(d/s).
    """
    d = treatment.mean - control.mean
    s = math.sqrt(control.variance / control.n + treatment.variance / treatment.n)
    if s == 0:
        chance = 0.5 if d == 0 else float(d > 0)
        return BayesianComparison(chance, max(0.0, -d), max(0.0, d))
    z = d / s
    density = float(sps.norm.pdf(z))
    return BayesianComparison(
        chance_to_beat_control=float(sps.norm.cdf(z)),
        expected_loss_if_treatment=max(0.0, s * density - d * float(sps.norm.cdf(-z))),
        expected_loss_if_control=max(0.0, s * density + d * float(sps.norm.cdf(z))),
    )


# ------------------------------------------------------------------ checks and corrections


def sample_ratio_mismatch(
    *, observed: Sequence[int], weights: Sequence[float], threshold: float = 0.001
) -> SrmCheck:
    """Chi-square goodness of fit of the units each variant received against the intended split.

    Flags a mismatch when p < threshold (0.001 by default, strict because the check runs on
    every look). A variant with weight 0 that received units is a certain mismatch.
    """
    if len(observed) != len(weights) or len(observed) < 1:
        raise ValueError("observed and weights must have the same, non-zero length")
    if any(o < 0 for o in observed):
        raise ValueError(f"observed counts must be non-negative, got {list(observed)}")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be finite and non-negative, got {list(weights)}")
    weight_total = math.fsum(weights)
    if abs(weight_total - 1.0) > _WEIGHT_TOLERANCE:
        raise ValueError(f"weights must sum to 1, got {list(weights)} summing to {weight_total}")
    _check_level("threshold", threshold)
    total = sum(observed)
    expected = [total * w / weight_total for w in weights]
    live = [(o, e) for o, e, w in zip(observed, expected, weights, strict=True) if w > 0]
    dof = len(live) - 1
    if any(o > 0 and w == 0 for o, w in zip(observed, weights, strict=True)):
        return SrmCheck(expected, math.inf, dof, 0.0, True)
    if total == 0 or dof == 0:
        return SrmCheck(expected, 0.0, dof, 1.0, False)
    statistic = math.fsum((o - e) ** 2 / e for o, e in live)
    p_value = float(sps.chi2.sf(statistic, dof))
    return SrmCheck(expected, statistic, dof, p_value, p_value < threshold)


def holm_bonferroni(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order.

    Sorted ascending, the i-th smallest (0-based) is multiplied by (m − i); a running maximum
    keeps the adjusted values in the same order as the raw ones; each is capped at 1.
    Reject every hypothesis whose adjusted p-value is below alpha.
    """
    if any(not (0.0 <= p <= 1.0) for p in p_values):  # also rejects NaN
        raise ValueError(f"p-values must be between 0 and 1, got {list(p_values)}")
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# --------------------------------------------------------------------------------- CUPED


def cuped_adjust(*, groups: Sequence[CupedSums]) -> CupedAdjustment:
    """CUPED: subtract the part of each variant's metric predicted by its pre-exposure value.

    theta = cov(x, y) / var(x) over all units of all variants together (as GrowthBook does;
    theta = 0 when x does not vary). Each variant's adjusted mean is ȳ − θ(x̄ − overall x̄)
    and adjusted variance var(y) + θ²var(x) − 2θ·cov(x, y), ddof=1 throughout.
    """
    if not groups:
        raise ValueError("CUPED needs at least one variant")
    n = sum(g.n for g in groups)
    sx = math.fsum(g.sum_x for g in groups)
    sy = math.fsum(g.sum_y for g in groups)
    sxx = math.fsum(g.sum_x2 for g in groups)
    sxy = math.fsum(g.sum_xy for g in groups)
    var_x = (sxx - sx * sx / n) / (n - 1)
    cov_xy = (sxy - sx * sy / n) / (n - 1)
    theta = cov_xy / var_x if var_x > 0 else 0.0
    overall_mean_x = sx / n
    adjusted = []
    for g in groups:
        mean_x, mean_y = g.sum_x / g.n, g.sum_y / g.n
        gvar_x = max(0.0, (g.sum_x2 - g.sum_x * mean_x) / (g.n - 1))
        gvar_y = max(0.0, (g.sum_y2 - g.sum_y * mean_y) / (g.n - 1))
        gcov = (g.sum_xy - g.sum_x * mean_y) / (g.n - 1)
        adjusted.append(
            CupedGroup(
                n=g.n,
                mean=mean_y - theta * (mean_x - overall_mean_x),
                variance=max(0.0, gvar_y + theta**2 * gvar_x - 2.0 * theta * gcov),
                unadjusted_mean=mean_y,
                unadjusted_variance=gvar_y,
            )
        )
    return CupedAdjustment(theta=theta, overall_mean_x=overall_mean_x, groups=adjusted)


def cuped_welch_t_test(
    *, control: CupedSums, treatment: CupedSums, confidence: float = 0.95
) -> CupedTest:
    """Welch's test on CUPED-adjusted means and variances (theta pooled over both variants).

    The uncertainty in theta itself is ignored, as is usual; it is negligible at experiment
    sizes.
    """
    adjustment = cuped_adjust(groups=[control, treatment])
    a, b = adjustment.groups

    def welch(adjusted: bool) -> WelchTest:
        return _welch(
            control_mean=a.mean if adjusted else a.unadjusted_mean,
            control_variance=a.variance if adjusted else a.unadjusted_variance,
            control_n=a.n,
            treatment_mean=b.mean if adjusted else b.unadjusted_mean,
            treatment_variance=b.variance if adjusted else b.unadjusted_variance,
            treatment_n=b.n,
            confidence=confidence,
        )

    return CupedTest(
        theta=adjustment.theta,
        control=a,
        treatment=b,
        test=welch(adjusted=True),
        unadjusted=welch(adjusted=False),
    )


# ---------------------------------------------------------------------------- sequential


def sequential_test(
    *,
    difference: float,
    variance: float,
    tau_squared: float,
    alpha: float = 0.05,
    previous_p_value: float | None = None,
) -> SequentialTest:
    """Always-valid p-value and interval for an estimated difference, safe to check at any look.

    The mixture sequential probability ratio test of Johari, Koomen, Pekelis & Walsh
    ("Always Valid Inference", 2017; Optimizely's Stats Engine) with a Normal(0, τ²) mixture
    over the true difference, applied to a normal estimate `difference` whose variance is
    `variance` (var_c/n_c + var_t/n_t):

        Λ = sqrt(V / (V + τ²)) · exp(τ²·Δ² / (2·V·(V + τ²)))

    p = min(1, 1/Λ), and never above `previous_p_value` (pass the last look's p to keep the
    sequence non-increasing). The interval is every null difference the test would not reject
    at `alpha`: Δ ± sqrt(V(V + τ²)/τ² · (ln((V + τ²)/V) − 2·ln α)).

    τ² is the variance of the effect sizes you expect, on the scale of the difference (e.g.
    (expected absolute lift)²). Power is best for effects near τ; the guarantee holds for any τ²
    chosen before looking at the data.
    """
    _check_level("alpha", alpha)
    if not (math.isfinite(tau_squared) and tau_squared > 0):
        raise ValueError(f"tau_squared must be positive, got {tau_squared}")
    if not (math.isfinite(variance) and variance >= 0):
        raise ValueError(f"variance must be non-negative, got {variance}")
    if previous_p_value is not None and not 0.0 <= previous_p_value <= 1.0:
        raise ValueError(f"previous_p_value must be between 0 and 1, got {previous_p_value}")
    if variance == 0:
        # The limit as V → 0: certainty about the difference.
        log_lr = -math.inf if difference == 0 else math.inf
        ci = Interval(difference, difference)
    else:
        total = variance + tau_squared
        log_lr = 0.5 * math.log(variance / total) + tau_squared * difference**2 / (
            2.0 * variance * total
        )
        half = math.sqrt(
            variance * total / tau_squared * (math.log(total / variance) - 2.0 * math.log(alpha))
        )
        ci = Interval(difference - half, difference + half)
    p_value = math.exp(min(0.0, -log_lr))
    if previous_p_value is not None:
        p_value = min(p_value, previous_p_value)
    return SequentialTest(
        difference=difference,
        variance=variance,
        tau_squared=tau_squared,
        log_likelihood_ratio=log_lr,
        p_value=p_value,
        ci=ci,
    )


def sequential_test_proportions(
    *,
    control: Conversions,
    treatment: Conversions,
    tau_squared: float,
    alpha: float = 0.05,
    previous_p_value: float | None = None,
) -> SequentialTest:
    """`sequential_test` on the difference of conversion rates (unpooled variance)."""
    pa, pb = control.rate, treatment.rate
    return sequential_test(
        difference=pb - pa,
        variance=pa * (1.0 - pa) / control.n + pb * (1.0 - pb) / treatment.n,
        tau_squared=tau_squared,
        alpha=alpha,
        previous_p_value=previous_p_value,
    )


def sequential_test_means(
    *,
    control: MetricSums,
    treatment: MetricSums,
    tau_squared: float,
    alpha: float = 0.05,
    previous_p_value: float | None = None,
) -> SequentialTest:
    """`sequential_test` on the difference of means (Welch's variance of the difference)."""
    return sequential_test(
        difference=treatment.mean - control.mean,
        variance=control.variance / control.n + treatment.variance / treatment.n,
        tau_squared=tau_squared,
        alpha=alpha,
        previous_p_value=previous_p_value,
    )


# ------------------------------------------------------------------------------ planning


def _required_n(baseline_rate: float, relative_mde: float, power: float, alpha: float) -> float:
    # Two-sided two-proportion z-test, normal approximation without continuity correction
    # (Fleiss): the test's standard error is pooled under the null, the power is computed
    # under the alternative with each group's own rate:
    #   n = (z_{1−α/2}·sqrt(2·p̄·(1−p̄)) + z_{power}·sqrt(p1(1−p1) + p2(1−p2)))² / (p2 − p1)²
    # with p2 = p1·(1 + mde) and p̄ = (p1 + p2) / 2. The far rejection tail is ignored.
    p1 = baseline_rate
    p2 = p1 * (1.0 + relative_mde)
    mean = (p1 + p2) / 2.0
    z_alpha = float(sps.norm.isf(alpha / 2.0))
    z_power = float(sps.norm.ppf(power))
    # max(0, ·): at p2 = 1 rounding can make p2·(1 − p2) a hair below zero.
    spread = z_alpha * math.sqrt(2.0 * mean * (1.0 - mean)) + z_power * math.sqrt(
        max(0.0, p1 * (1.0 - p1) + p2 * (1.0 - p2))
    )
    return spread**2 / (p2 - p1) ** 2


def _check_plan(baseline_rate: float, power: float, alpha: float) -> None:
    _check_level("baseline_rate", baseline_rate)
    _check_level("alpha", alpha)
    _check_level("power", power)
    if power <= alpha / 2:
        raise ValueError("power must exceed alpha / 2")


def sample_size_per_variant(
    *, baseline_rate: float, relative_mde: float, power: float = 0.8, alpha: float = 0.05
) -> int:
    """Units needed in each of two equal variants to detect a relative change in conversion.

    Two-sided two-proportion z-test at level alpha, normal approximation without continuity
    correction (Fleiss), the null's variance pooled and the alternative's unpooled:

        n = (z_{1−α/2}·√(2·p̄(1−p̄)) + z_{power}·√(p1(1−p1) + p2(1−p2)))² / (p2 − p1)²

    with p1 the baseline, p2 = p1·(1 + relative_mde), p̄ = (p1 + p2)/2; the far rejection tail
    is ignored. Rounded up, ignoring rounding noise of 1e-9 relative, so that this and
    `minimum_detectable_effect` are exact inverses.
    """
    _check_plan(baseline_rate, power, alpha)
    treatment_rate = baseline_rate * (1.0 + relative_mde)
    if relative_mde == 0 or not 0.0 < treatment_rate < 1.0:
        raise ValueError(
            f"relative_mde must be non-zero and keep the rate in (0, 1), got {relative_mde}"
        )
    n = _required_n(baseline_rate, relative_mde, power, alpha)
    return max(1, math.ceil(n * (1.0 - 1e-9)))


def sample_size_means_per_variant(
    *,
    mean: float,
    variance: float,
    relative_mde: float,
    power: float = 0.8,
    alpha: float = 0.05,
) -> int:
    """Units needed in each of two equal variants to detect a relative change in a mean.

    Two-sided test on the difference of means with the control's variance in both
    variants, normal approximation, the far rejection tail ignored:

        n = 2·σ²·(z_{1−α/2} + z_{power})² / (relative_mde·mean)²
    """
    _check_level("alpha", alpha)
    _check_level("power", power)
    if power <= alpha / 2:
        raise ValueError("power must exceed alpha / 2")
    delta = relative_mde * mean
    if not (math.isfinite(delta) and delta != 0):
        raise ValueError("relative_mde and mean must be finite and non-zero")
    if not (math.isfinite(variance) and variance >= 0):
        raise ValueError(f"variance must be non-negative, got {variance}")
    spread = float(sps.norm.isf(alpha / 2.0)) + float(sps.norm.ppf(power))
    n = 2.0 * variance * spread**2 / delta**2
    return max(2, math.ceil(n * (1.0 - 1e-9)))


def minimum_detectable_effect(
    *, baseline_rate: float, n_per_variant: int, power: float = 0.8, alpha: float = 0.05
) -> float:
    """Smallest relative increase in conversion detectable with `n_per_variant` units per variant.

    Solves `sample_size_per_variant`'s formula for the relative MDE (positive direction) by
    root finding; raises ValueError when even a rate of 100% could not be detected.
    """
    _check_plan(baseline_rate, power, alpha)
    if n_per_variant < 1:
        raise ValueError(f"n_per_variant must be at least 1, got {n_per_variant}")
    largest = 1.0 / baseline_rate - 1.0  # treatment rate of 100%
    if _required_n(baseline_rate, largest, power, alpha) > n_per_variant:
        raise ValueError(f"{n_per_variant} units per variant cannot detect any increase")
    root = optimize.brentq(
        lambda m: _required_n(baseline_rate, m, power, alpha) - n_per_variant,
        largest * 1e-12,
        largest,
        xtol=1e-15,
        rtol=1e-14,
        maxiter=500,
    )
    return float(root)
