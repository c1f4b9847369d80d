"""`compare`: the 95 % CI of the ratio B/A (Fieller's method) and `--fail-below`."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pytest
import synthetic_sweeps as synthetic

from analysis.stats import ratio_ci95
from orchestrator import cli
from orchestrator.errors import ExitCode

T_975_DF5 = 2.570581835636314  # Student's t, 0.975 quantile, 5 degrees of freedom (tables)


def test_fieller_interval_equals_a_hand_computation() -> None:
    # A: mean 100, std 10, n 4 → squared standard error v_a = 100/4 = 25.
    # B: mean 90, std 6, n 4 → v_b = 36/4 = 9. Ratio 0.9.
    # Welch–Satterthwaite df of b − 0.9a: (9 + 0.81·25)² / (9²/3 + 0.9⁴·25²/3) = 855.5625 / 163.6875 = 5.23 → 5.
    t2 = T_975_DF5**2  # 6.607890973703363
    lead = 100**2 - t2 * 25  # 9834.802725657415
    disc = 100**2 * 90**2 - lead * (90**2 - t2 * 9)  # 1922983.6596061587
    low, high = (100 * 90 - math.sqrt(disc)) / lead, (100 * 90 + math.sqrt(disc)) / lead
    assert (low, high) == pytest.approx((0.7741165073505137, 1.0561184757102955), abs=1e-12)
    got = ratio_ci95(100, 10, 4, 90, 6, 4)
    assert got == pytest.approx((low, high), rel=1e-12)
    # What the interval means: at each end, b − ρa is exactly t standard errors away from zero.
    for rho in got:
        assert (90 - rho * 100) ** 2 == pytest.approx(t2 * (9 + rho**2 * 25), rel=1e-9)
    # Fieller's interval is not symmetric around the ratio: wider above (A's mean may be smaller).
    assert high - 0.9 > 0.9 - low


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((100, 0, 3, 80, 0, 5), (0.8, 0.8)),  # no spread on either side: the point
        ((100, 10, 1, 90, 6, 4), None),  # one value has no spread to estimate
        ((100, 10, 4, 90, 6, 1), None),
        ((100, math.nan, 4, 90, 6, 4), None),
        ((0, 10, 4, 90, 6, 4), None),
        ((5, 10, 4, 90, 6, 4), None),  # A's mean not significantly above 0: the set of ratios is unbounded
    ],
)
def test_fieller_edge_cases(args: tuple[float, ...], expected: tuple[float, float] | None) -> None:
    got = ratio_ci95(*args)
    assert got == (pytest.approx(expected) if expected else None)


def test_more_repeats_narrow_the_interval() -> None:
    few = ratio_ci95(100, 10, 3, 90, 10, 3)
    many = ratio_ci95(100, 10, 30, 90, 10, 30)
    assert few and many and few[0] < many[0] < 0.9 < many[1] < few[1]


# ----------------------------------------------------------------------------- through the CLI ---
FACTORS = (1.0, 1.01, 1.03)  # repeat k's step time = base × FACTORS[k]


def sweep(root: Path, step: float, gpus: tuple[int, ...] = (1,)) -> Path:
    for n in gpus:
        for repeat, factor in enumerate(FACTORS):
            cfg = synthetic.config(gpus=n, repeat=repeat, repeats=len(FACTORS))
            synthetic.write_cell(root, cfg, step_times=[[step * factor] * 6] * n)
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def repeat_stats(step: float) -> tuple[float, float, int]:
    """Mean, std and n of a 1-process cell's training throughput over its repeats: 32 / (1.002 × step time)."""
    values = [32 / (1.002 * step * f) for f in FACTORS]
    return statistics.mean(values), statistics.stdev(values), len(values)


def test_compare_prints_the_ratio_ci_and_fail_below_gates_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = sweep(tmp_path / "a", step=0.25)
    b = sweep(tmp_path / "b", step=0.25 / 0.8)  # 20 % fewer samples per second
    out_csv = tmp_path / "cmp.csv"
    code, out, err = run(capsys, "compare", str(a), str(b), "--out", str(out_csv))
    assert code == 0, err
    expected = ratio_ci95(*repeat_stats(0.25), *repeat_stats(0.25 / 0.8))
    assert expected is not None and expected[0] < 0.8 < expected[1] < 0.95
    with open(out_csv, newline="") as handle:
        train = next(r for r in csv.DictReader(handle) if r["phase"] == "train")
    assert float(train["ratio"]) == pytest.approx(0.8)
    assert (float(train["ratio_ci95_low"]), float(train["ratio_ci95_high"])) == pytest.approx(expected)
    assert train["ratio_ci_basis"] == "repeats"
    assert f"| 0.800 | {expected[0]:.3f} – {expected[1]:.3f} | yes |" in out

    code, out, _ = run(capsys, "compare", str(a), str(b), "--fail-below", "0.95")
    assert code == ExitCode.CHECK_FAILED
    assert f"ddp resnet18 batch 32 × 1 train: {expected[0]:.3f} – {expected[1]:.3f}" in out
    code, out, _ = run(capsys, "compare", str(a), str(b), "--fail-below", f"{expected[1] - 1e-3:.4f}")
    assert code == 0 and "No row's B/A 95% CI lies below" in out


def test_fail_below_does_not_fail_on_noise_or_one_sided_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = sweep(tmp_path / "a", step=0.25, gpus=(1,))
    b = sweep(tmp_path / "b", step=0.25, gpus=(1, 2))
    out_csv = tmp_path / "cmp.csv"
    code, out, _ = run(capsys, "compare", str(a), str(b), "--fail-below", "0.99", "--out", str(out_csv))
    assert code == 0, out
    with open(out_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    one_sided = [r for r in rows if r["significant"] == "only in B"]
    assert len(one_sided) == 2  # train and val of the 2-process configuration
    # A row on one side only says so and nothing else: no ratio, no interval.
    assert all(
        r["ratio"] == r["ratio_ci95_low"] == r["ratio_ci95_high"] == r["ratio_ci_basis"] == "" for r in one_sided
    )
    same = [r for r in rows if r["significant"] != "only in B"]
    assert all(float(r["ratio_ci95_low"]) < 1 < float(r["ratio_ci95_high"]) for r in same)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_bad_fail_below_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str) -> None:
    a = sweep(tmp_path / "a", step=0.25)
    code, _, err = run(capsys, "compare", str(a), str(a), f"--fail-below={value}")
    assert code == ExitCode.ERROR and err.startswith("Error: --fail-below"), err


# ------------------------------------------------------------------ which part of the step changed ---
def _with_parts(results: object, **seconds: float) -> object:
    from analysis.breakdown import PART_COLUMNS

    parts = {column: 0.01 for column in PART_COLUMNS}
    parts.update({f"{name}_s": value for name, value in seconds.items()})
    return results.assign(**parts)  # type: ignore[attr-defined]


def test_compare_names_the_part_of_the_step_that_changed(tmp_path: Path) -> None:
    from analysis.aggregate import load_any
    from analysis.compare import compare, markdown

    a = load_any(str(sweep(tmp_path / "a", step=0.25))).results
    b = load_any(str(sweep(tmp_path / "b", step=0.3))).results
    table = compare(_with_parts(a, forward=0.1, exposed_comm=0.02), _with_parts(b, forward=0.105, exposed_comm=0.05))
    train = table[table["phase"] == "train"].iloc[0]
    assert train["changed_part"] == "exposed_comm"
    assert train["changed_part_s"] == pytest.approx(0.03)
    assert train["step_change_s"] == pytest.approx(0.035)  # every part's change, summed
    assert train["changed_part_share"] == pytest.approx(0.03 / 0.035)
    assert "| exposed_comm +30.0 ms of +35.0 ms |" in markdown(table)
    # A part that shrank while the step grew is still the one that moved most.
    table = compare(_with_parts(a, backward=0.2), _with_parts(b, backward=0.1, wait=0.12))
    train = table[table["phase"] == "train"].iloc[0]
    assert (train["changed_part"], train["changed_part_s"]) == ("wait", pytest.approx(0.11))


def test_tables_without_the_breakdown_compare_as_before(tmp_path: Path) -> None:
    from analysis.aggregate import load_any
    from analysis.breakdown import PART_COLUMNS
    from analysis.compare import compare, markdown

    a = load_any(str(sweep(tmp_path / "a", step=0.25))).results.drop(columns=list(PART_COLUMNS), errors="ignore")
    b = _with_parts(load_any(str(sweep(tmp_path / "b", step=0.3))).results, forward=0.2)
    table = compare(a, b)  # one side from before the breakdown: nothing to say about parts
    assert "changed_part" not in table.columns
    assert "what changed" not in markdown(table)
