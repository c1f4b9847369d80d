"""Statistics: t quantiles and the CI of the mean against hand computations."""

import math

import pytest

from analysis.stats import intervals_overlap, summarize, t_quantile_975


@pytest.mark.parametrize(
    ("df", "expected"),
    [
        (1, 12.7062),
        (2, 4.3027),
        (4, 2.7764),
        (9, 2.2622),
        (30, 2.0423),
        (31, 2.0395),
        (40, 2.0211),
        (60, 2.0003),
        (120, 1.9799),
        (10_000, 1.9602),
    ],
)
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile_975(df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_rejects_zero_df():
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_summary_of_known_numbers():
    # 10, 12, 14: mean 12, sample std 2, t(2) = 4.302653 → half width 4.302653 * 2 / sqrt(3)
    s = summarize([10.0, 12.0, 14.0])
    half = 4.302652729749464 * 2 / math.sqrt(3)
    assert s["mean"] == 12 and s["median"] == 12 and s["n"] == 3
    assert s["std"] == pytest.approx(2.0)
    assert s["ci95_low"] == pytest.approx(12 - half)
    assert s["ci95_high"] == pytest.approx(12 + half)
    assert s["cv"] == pytest.approx(2 / 12)


def test_single_value_has_no_interval():
    s = summarize([5.0])
    assert s["mean"] == 5 and s["n"] == 1
    assert math.isnan(s["ci95_low"]) and math.isnan(s["std"])
    assert summarize([])["n"] == 0


def test_overlap():
    assert intervals_overlap(1, 2, 1.5, 3) is True
    assert intervals_overlap(1, 2, 2.5, 3) is False
    assert intervals_overlap(1, math.nan, 2.5, 3) is None
