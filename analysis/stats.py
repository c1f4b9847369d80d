"""Summary statistics with a t-based 95 % confidence interval of the mean.

Pure standard library (no scipy): Student's t quantiles come from a table for
small degrees of freedom and a Cornish-Fisher expansion beyond it (error < 1e-6).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

# t_{0.975, df} for df = 1..30 (two-sided 95 %).
_T975 = (
    12.706204736174707,
    4.302652729749464,
    3.182446305284263,
    2.7764451051977934,
    2.570581835636314,
    2.4469118511449692,
    2.3646242515927844,
    2.3060041352041662,
    2.2621571627982053,
    2.2281388519862744,
    2.2009851600916384,
    2.178812829663418,
    2.1603686564610127,
    2.1447866879178044,
    2.131449545559774,
    2.1199052992212533,
    2.1098155778333156,
    2.10092204024096,
    2.093024054408307,
    2.0859634472658626,
    2.079613844727662,
    2.0738730679040147,
    2.068657610419041,
    2.0638985616280205,
    2.059538552753294,
    2.055529438642871,
    2.0518305164802833,
    2.048407141795244,
    2.0452296421327034,
    2.042272456301236,
)
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z, n = _Z975, float(df)
    return (
        z
        + (z**3 + z) / (4 * n)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * n**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * n**4)
    )


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """mean, median, std (sample, n-1), n, 95 % CI of the mean (t-based) and CV.

    Only finite values count, and ``n`` says how many there were: a NaN or an infinity is
    neither averaged in nor counted. With fewer than two values the spread, CI and CV are
    NaN: one number has no interval.
    """
    values = [v for v in values if math.isfinite(v)]
    n = len(values)
    nan = math.nan
    if n == 0:
        return {"mean": nan, "median": nan, "std": nan, "n": 0, "ci95_low": nan, "ci95_high": nan, "cv": nan}
    mean = math.fsum(values) / n
    median = statistics.median(values)
    if n < 2:
        return {"mean": mean, "median": median, "std": nan, "n": 1, "ci95_low": nan, "ci95_high": nan, "cv": nan}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return {
        "mean": mean,
        "median": median,
        "std": std,
        "n": n,
        "ci95_low": mean - half,
        "ci95_high": mean + half,
        "cv": std / mean if mean else nan,
    }


def intervals_overlap(a_low: float, a_high: float, b_low: float, b_high: float) -> bool | None:
    """Whether two intervals overlap; None when either is unknown (NaN)."""
    if any(math.isnan(x) for x in (a_low, a_high, b_low, b_high)):
        return None
    return a_low <= b_high and b_low <= a_high


def ratio_ci95(
    mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int
) -> tuple[float, float] | None:
    """95 % confidence interval of ``mean_b / mean_a`` for two independent samples (Fieller).

    The interval is every ρ for which ``mean_b − ρ·mean_a`` is not significantly different from
    zero: ``(b − ρa)² ≤ t² (v_b + ρ² v_a)`` with ``v = std² / n`` (the squared standard errors).
    ``t`` is Student's 0.975 quantile at the Welch–Satterthwaite degrees of freedom of
    ``b − ρa`` taken at ρ = b/a, rounded down (never optimistic). Dividing the ends of the two
    CIs would overstate the spread; this accounts for both in one interval. None when either
    side has fewer than two values, a non-finite input, or when A's mean is not significantly
    above zero: then the set of ρ is unbounded and no interval says anything.
    """
    inputs = (mean_a, std_a, mean_b, std_b)
    if n_a < 2 or n_b < 2 or not all(math.isfinite(x) for x in inputs) or mean_a <= 0:
        return None
    v_a, v_b = std_a**2 / n_a, std_b**2 / n_b
    r = mean_b / mean_a
    if v_a == 0 and v_b == 0:
        return r, r
    # Welch–Satterthwaite for var(b − r·a) = v_b + r² v_a.
    df_num = (v_b + r**2 * v_a) ** 2
    df_den = v_b**2 / (n_b - 1) + r**4 * v_a**2 / (n_a - 1)
    df = max(1, math.floor(df_num / df_den)) if df_den > 0 else n_a + n_b - 2
    return fieller_ci95(mean_a, v_a, mean_b, v_b, df)


def fieller_ci95(mean_a: float, v_a: float, mean_b: float, v_b: float, df: int) -> tuple[float, float] | None:
    """Fieller's 95 % interval of ``mean_b / mean_a`` from the two squared standard errors and the
    degrees of freedom: the one method behind :func:`ratio_ci95` and the ratios of ratios
    (analysis/env_effect.py) that have no per-sample values of their own. None when A's mean is
    not significantly above zero (the set of ratios is unbounded)."""
    if mean_a <= 0 or not all(math.isfinite(x) for x in (mean_a, v_a, mean_b, v_b)):
        return None
    if v_a == 0 and v_b == 0:
        return mean_b / mean_a, mean_b / mean_a
    t2 = t_quantile_975(df) ** 2
    lead = mean_a**2 - t2 * v_a
    if lead <= 0:
        return None
    half = math.sqrt(max(mean_a**2 * mean_b**2 - lead * (mean_b**2 - t2 * v_b), 0.0))
    return (mean_a * mean_b - half) / lead, (mean_a * mean_b + half) / lead
