"""Framework × environment (analysis/env_effect.py): the effects, their CIs, a flip, the confounded case."""

from __future__ import annotations

import copy
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import synthetic_sweeps as synthetic

from analysis import env_effect
from analysis.aggregate import load_any
from analysis.compare import compare
from analysis.stats import t_quantile_975
from orchestrator import cli

FACTORS = (1.0, 1.01, 1.03)  # repeat k's step time = base × FACTORS[k]
JEMALLOC = {**copy.deepcopy(synthetic.BASE_ENVIRONMENT), "variables": {"LD_PRELOAD": "libjemalloc.so.2"}}


def sweep(root: Path, steps: dict[str, float], environment: dict[str, Any] | None = None, **cfg: Any) -> Path:
    """One 1-process cell per framework (3 repeats), step time ``steps[framework]``, in ``environment``."""
    for framework, step in steps.items():
        for repeat, factor in enumerate(FACTORS):
            config = synthetic.config(**{"framework.name": framework, "repeat": repeat, "repeats": 3, **cfg})
            synthetic.write_cell(root, config, step_times=[[step * factor] * 6], environment=environment)
    return root


def stats(step: float) -> tuple[float, float, int]:
    """A training row's mean, std and n over its repeats: 32 samples / (1.002 × step time) each."""
    values = [32 / (1.002 * step * f) for f in FACTORS]
    return statistics.mean(values), statistics.stdev(values), len(values)


def fieller_by_hand(a: float, v_a: float, b: float, v_b: float, df: int) -> tuple[float, float]:
    """Every ρ with (b − ρa)² ≤ t² (v_b + ρ² v_a), solved as the quadratic it is."""
    t2 = t_quantile_975(df) ** 2
    qa, qb, qc = a * a - t2 * v_a, -2 * a * b, b * b - t2 * v_b
    root = math.sqrt(qb * qb - 4 * qa * qc)
    return (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)


def ratio_by_hand(base: float, other: float) -> tuple[float, float]:
    (m_a, s_a, n_a), (m_b, s_b, n_b) = stats(base), stats(other)
    v_a, v_b = s_a**2 / n_a, s_b**2 / n_b
    r = m_b / m_a
    df = math.floor((v_b + r * r * v_a) ** 2 / (v_b**2 / (n_b - 1) + r**4 * v_a**2 / (n_a - 1)))
    return fieller_by_hand(m_a, v_a, m_b, v_b, df)


def interaction_by_hand(b0: float, f0: float, b1: float, f1: float) -> tuple[float, float]:
    four = [stats(s) for s in (b0, f0, b1, f1)]
    w = [s * s / n / (m * m) for m, s, n in four]  # relative squared standard errors
    r0, r1 = four[1][0] / four[0][0], four[3][0] / four[2][0]
    df = math.floor(sum(w) ** 2 / sum(x * x / (n - 1) for x, (_, _, n) in zip(w, four, strict=True)))
    return fieller_by_hand(r0, r0**2 * (w[0] + w[1]), r1, r1**2 * (w[2] + w[3]), df)


def train(table: Any, kind: str, **match: str) -> Any:
    rows = table[(table["kind"] == kind) & (table["phase"] == "train")]
    for column, value in match.items():
        rows = rows[rows[column] == value]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


# ---------------------------------------------------------------------------------- labels ---
def test_the_environment_label_is_the_name_else_the_short_hash() -> None:
    import pandas as pd

    assert env_effect.environment_label("jemalloc", "3f2a1b0c9d8e") == "jemalloc"
    assert env_effect.environment_label(None, "3f2a1b0c9d8e") == "env:3f2a1b0c…"
    assert env_effect.environment_label("", "3f2a1b0c9d8e;aaaabbbbcccc") == "env:3f2a1b0c…+env:aaaabbbb…"
    rows = pd.DataFrame({"environment_hash": ["3f2a1b0c9d8e", "aaaabbbbcccc"], "env": ["plain", float("nan")]})
    assert list(env_effect.environment_labels(rows)) == ["plain", "env:aaaabbbb…"]
    rows = pd.DataFrame({"environment_hash": ["3f2a1b0c9d8e"] * 2, "cfg.env.name": ["a", "b"]})
    assert list(env_effect.environment_labels(rows)) == ["a", "b"]


# ------------------------------------------------------------------------- the full factorial ---
def test_effects_and_interaction_equal_hand_computed_fieller(tmp_path: Path) -> None:
    steps_a, steps_b = {"ddp": 0.25, "horovod": 0.30}, {"ddp": 0.3125, "horovod": 0.33}
    a = load_any(str(sweep(tmp_path / "a", steps_a))).results
    b = load_any(str(sweep(tmp_path / "b", steps_b, JEMALLOC))).results
    both_sweeps = __import__("pandas").concat([a, b], ignore_index=True)
    table = env_effect.effect_table(both_sweeps)
    labels = env_effect.environment_labels(both_sweeps)
    plain, jemalloc = labels.iloc[0], labels.iloc[len(a)]
    assert plain != jemalloc and a["environment_hash"][0][:8] in plain  # one name (current) or none: the hash tells

    ddp = train(table, "env_effect", framework="ddp")
    assert (ddp["env"], ddp["env_base"]) == (jemalloc, plain)
    assert ddp["ratio"] == pytest.approx(0.8)  # 0.25 / 0.3125
    assert (ddp["ratio_ci95_low"], ddp["ratio_ci95_high"]) == pytest.approx(ratio_by_hand(0.25, 0.3125), rel=1e-9)
    # The same interval compare gives for the same two rows: one method, not two.
    same = compare(a[a["framework"] == "ddp"], b[b["framework"] == "ddp"])
    same = same[same["phase"] == "train"].iloc[0]
    assert (ddp["ratio_ci95_low"], ddp["ratio_ci95_high"]) == pytest.approx(
        (same["ratio_ci95_low"], same["ratio_ci95_high"]), rel=1e-12
    )

    in_plain = train(table, "framework_effect", env=plain)
    assert (in_plain["framework"], in_plain["framework_base"]) == ("horovod", "ddp")
    assert in_plain["ratio"] == pytest.approx(0.25 / 0.30)
    assert (in_plain["ratio_ci95_low"], in_plain["ratio_ci95_high"]) == pytest.approx(
        ratio_by_hand(0.25, 0.30), rel=1e-9
    )

    both = train(table, "interaction")
    assert both["ratio"] == pytest.approx((0.3125 / 0.33) / (0.25 / 0.30))  # 1.136…: B hurts ddp more
    low, high = interaction_by_hand(0.25, 0.30, 0.3125, 0.33)
    assert (both["ratio_ci95_low"], both["ratio_ci95_high"]) == pytest.approx((low, high), rel=1e-9)
    assert 1 < low < both["ratio"] < high  # the environment's effect differs between the frameworks
    assert not both["ranking_flips"] and not both["flip_significant"]  # ddp is faster in both
    assert table[table["kind"] == "missing"].empty
    assert env_effect.confounded_groups(table) == []


def test_a_ranking_flip_between_environments_is_detected(tmp_path: Path) -> None:
    import pandas as pd

    a = load_any(str(sweep(tmp_path / "a", {"ddp": 0.25, "horovod": 0.30}))).results
    b = load_any(str(sweep(tmp_path / "b", {"ddp": 0.3125, "horovod": 0.28}, JEMALLOC))).results
    table = env_effect.effect_table(pd.concat([a, b], ignore_index=True))
    both = train(table, "interaction")
    assert both["ratio"] == pytest.approx((0.3125 / 0.28) / (0.25 / 0.30))
    assert both["ranking_flips"] and both["flip_significant"]  # ddp faster in A, horovod in B: CIs say so
    assert "flips (significant)" in env_effect.markdown(table)


def test_aggregate_writes_the_table_figure_and_report_section(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = sweep(tmp_path / "a", {"ddp": 0.25, "horovod": 0.30})
    b = sweep(tmp_path / "b", {"ddp": 0.3125, "horovod": 0.28}, JEMALLOC)
    out = tmp_path / "results"
    code, said = run(capsys, "aggregate", str(a), str(b), "--out", str(out))
    assert code == 0, said
    written = __import__("pandas").read_csv(out / env_effect.FILE)
    assert set(written["kind"]) == {"throughput", "env_effect", "framework_effect", "interaction"}
    assert len(written[written["kind"] == "throughput"]) == 8  # 2 frameworks × 2 environments × 2 phases
    assert (out / "env_effect_resnet18.png").stat().st_size > 10_000
    page = (out / "report.html").read_text()
    assert "<h2>Framework × environment</h2>" in page and 'alt="env_effect_resnet18"' in page
    assert "flips (significant)" in page
    # `report` on the results folder renders the same section from env_effect.csv.
    code, said = run(capsys, "report", str(out))
    assert code == 0, said
    assert "<h2>Framework × environment</h2>" in (out / "report.html").read_text()
    read_back = env_effect.read(out, None)
    assert (read_back["partition"] == "").all()  # the default partition, not the text "nan"
    assert read_back["ranking_flips"].sum() == 2  # train and val, as computed


# ---------------------------------------------------------------------------- the confound ---
def _with_overrides(root: Path, overrides: list[str]) -> None:
    """Give each cell.json the point overrides `dnnbench sweep` records for it."""
    for cell_file in root.glob("cells/*/cell.json"):
        doc = json.loads(cell_file.read_text())
        framework = doc["config"]["framework"]["name"]
        cell_file.write_text(json.dumps({**doc, "overrides": [*overrides, f"framework={framework}"]}))


def test_each_framework_in_its_own_environment_is_said_with_the_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = sweep(tmp_path / "a", {"ddp": 0.25}, env={"name": "plain"})
    b = sweep(tmp_path / "b", {"horovod": 0.20}, JEMALLOC, env={"name": "jemalloc"})
    _with_overrides(a, ["model=resnet18", "gpus=1", "repeats=3", "env=plain"])
    _with_overrides(b, ["model=resnet18", "gpus=1", "repeats=3", "env=jemalloc"])
    code, said = run(capsys, "compare", str(a), str(b))
    assert code == 0, said
    assert "## Framework × environment" in said
    assert "The framework and the environment are confounded" in said
    assert "(ddp in plain; horovod in jemalloc)" in said
    # Each framework in the other's environment, from the cell's own overrides, into that environment's sweep.
    assert f"  dnnbench sweep model=resnet18 gpus=1 repeats=3 framework=ddp env=jemalloc --sweep-dir {b}\n" in said
    assert f"  dnnbench sweep model=resnet18 gpus=1 repeats=3 framework=horovod env=plain --sweep-dir {a}\n" in said
    # The report of the two aggregated together says the same, from env_effect.csv.
    code, said = run(capsys, "aggregate", str(a), str(b), "--out", str(tmp_path / "results"))
    assert code == 0, said
    page = (tmp_path / "results" / "report.html").read_text()
    assert "The framework and the environment are confounded" in page
    assert f"dnnbench sweep model=resnet18 gpus=1 repeats=3 framework=ddp env=jemalloc --sweep-dir {b}" in page


def test_one_name_over_two_fingerprints_is_two_environments(tmp_path: Path) -> None:
    import pandas as pd

    rows = pd.DataFrame({"environment_hash": ["8cfb7b520467", "8668cc42100f", "8cfb7b520467"], "env": ["current"] * 3})
    labels = list(env_effect.environment_labels(rows))
    assert labels == ["current (env:8cfb7b52…)", "current (env:8668cc42…)", "current (env:8cfb7b52…)"]
    assert not env_effect.is_named(labels[0]) and env_effect.name_of(labels[0]) == "current"
    # A command for such a cell names the environment and says that env=current alone is not it.
    a = load_any(str(sweep(tmp_path / "a", {"ddp": 0.25}))).results.assign(env="current")
    b = load_any(str(sweep(tmp_path / "b", {"horovod": 0.20}, JEMALLOC))).results.assign(env="current")
    table = env_effect.effect_table(pd.concat([a, b], ignore_index=True))
    command = table[(table["kind"] == "missing") & (table["framework"] == "ddp")]["command"].iloc[0]
    assert " framework=ddp env=current  # run where env=current gives the fingerprint of current (env:" in command


def test_named_environments_give_env_in_the_command(tmp_path: Path) -> None:
    import pandas as pd

    a = load_any(str(sweep(tmp_path / "a", {"ddp": 0.25}))).results.assign(env="current")
    b = load_any(str(sweep(tmp_path / "b", {"horovod": 0.20}, JEMALLOC))).results.assign(env="jemalloc")
    table = env_effect.effect_table(pd.concat([a, b], ignore_index=True), {a["sweep"][0]: str(tmp_path / "a")})
    missing = table[(table["kind"] == "missing") & (table["phase"] == "train")].set_index("framework")["command"]
    # No cell.json overrides here (written before they were recorded): the row's own columns give them.
    point = "model=resnet18 dataset=synthetic batch_size=32 gpus=1 nodes=1 precision=fp32"
    assert missing["ddp"] == f"dnnbench sweep {point} framework=ddp env=jemalloc"
    assert missing["horovod"] == f"dnnbench sweep {point} framework=horovod env=current --sweep-dir {tmp_path / 'a'}"
    assert table[table["kind"].isin(["env_effect", "framework_effect", "interaction"])].empty


def test_one_environment_adds_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = sweep(tmp_path / "a", {"ddp": 0.25, "horovod": 0.30})
    b = sweep(tmp_path / "b", {"ddp": 0.26, "horovod": 0.31})
    out = tmp_path / "results"
    code, said = run(capsys, "aggregate", str(a), str(b), "--out", str(out))
    assert code == 0, said
    assert not (out / env_effect.FILE).exists() and not list(out.glob("env_effect_*"))
    assert "Framework × environment" not in (out / "report.html").read_text()
    code, said = run(capsys, "compare", str(a), str(b))
    assert code == 0 and "Framework × environment" not in said


def test_two_sweeps_of_one_environment_pair_are_not_silently_picked(tmp_path: Path) -> None:
    import pandas as pd

    a = load_any(str(sweep(tmp_path / "a", {"ddp": 0.25}))).results
    again = load_any(str(sweep(tmp_path / "again", {"ddp": 0.26}))).results
    b = load_any(str(sweep(tmp_path / "b", {"ddp": 0.3125}, JEMALLOC))).results
    table = env_effect.effect_table(pd.concat([a, again, b], ignore_index=True))
    assert set(table["kind"]) == {"ambiguous"}
    assert any("measured by more than one row" in s for s in env_effect.confounded_groups(table))


# ------------------------------------------------------------------------- real cells, end to end ---
JEMALLOC_SO = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
TINY = ["framework=ddp,zero", "model=resnet18", "gpus=1", "steps=3", "dataset=synthetic", "batch_size=4", "val_steps=2"]


@pytest.mark.slow
def test_real_cells_plain_and_under_jemalloc_give_the_section(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    pytest.importorskip("torch")
    if not JEMALLOC_SO.exists():
        pytest.skip(f"{JEMALLOC_SO} is not installed (apt install libjemalloc2)")
    dnnbench = str(Path(sys.executable).parent / "dnnbench")
    preload = {**os.environ, "LD_PRELOAD": str(JEMALLOC_SO)}
    for name, environ in (("plain", dict(os.environ)), ("jemalloc", preload)):
        done = subprocess.run(
            [dnnbench, "sweep", *TINY, "--sweep-dir", str(tmp_path / name)],
            env=environ, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    compared = subprocess.run(
        [dnnbench, "compare", str(tmp_path / "plain"), str(tmp_path / "jemalloc")], capture_output=True, text=True
    )
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert "## Framework × environment" in compared.stdout
    assert "LD_PRELOAD: – → " in compared.stdout  # the fingerprint tells the two apart
    out = tmp_path / "results"
    aggregated = subprocess.run(
        [dnnbench, "aggregate", str(tmp_path / "plain"), str(tmp_path / "jemalloc"), "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert aggregated.returncode == 0, aggregated.stderr[-2000:]
    table = __import__("pandas").read_csv(out / env_effect.FILE)
    train = table[table["phase"] == "train"]
    assert sorted(train.loc[train["kind"] == "env_effect", "framework"]) == ["ddp", "zero"]
    interaction = train[train["kind"] == "interaction"].iloc[0]
    assert math.isfinite(interaction["ratio"])
    # Three timed steps may leave a framework ratio's Fieller set unbounded (no interval): then none is shown.
    low, high = interaction["ratio_ci95_low"], interaction["ratio_ci95_high"]
    assert (math.isnan(low) and math.isnan(high)) or low < interaction["ratio"] < high
    assert (out / "env_effect_resnet18.png").exists()
    assert "<h2>Framework × environment</h2>" in (out / "report.html").read_text()
