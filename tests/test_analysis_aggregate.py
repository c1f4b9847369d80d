"""Aggregation: attempt selection, global throughput, repeats, speedup, problems, confounds."""

import copy
import json
import math
from pathlib import Path

import pytest
import synthetic_sweeps as synthetic

from analysis.aggregate import aggregate, collect
from analysis.errors import AnalysisError
from analysis.load import load_sweeps
from jobs import schema
from orchestrator.cell_identity import identity


def _row(results, **match):
    frame = results
    for key, value in match.items():
        frame = frame[frame[key] == value]
    assert len(frame) == 1, f"{len(frame)} rows match {match}"
    return frame.iloc[0]


def test_repeats_ci_equals_hand_computation(tmp_path):
    # Three repeats of a 2-rank cell with constant step times: global throughput of repeat k
    # = 2 ranks × 32 samples × 4 steps / (max rank seconds) with seconds = 1.002 × sum(steps).
    step = [0.40, 0.50, 0.60]
    for repeat, t in enumerate(step):
        cfg = synthetic.config(gpus=2, repeat=repeat, repeats=3)
        synthetic.write_cell(tmp_path, cfg, step_times=[[t] * 4, [t * 0.9] * 4])
    results = collect([tmp_path], progress=False).results
    train = _row(results, phase="train")
    values = [2 * 32 * 4 / (1.002 * 4 * t) for t in step]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    half = 4.302652729749464 * std / math.sqrt(3)
    assert train["ci_basis"] == "repeats" and train["n"] == 3 and train["repeats"] == 3
    assert train["throughput"] == pytest.approx(mean)
    assert train["median"] == pytest.approx(values[1])
    assert train["ci95_low"] == pytest.approx(mean - half)
    assert train["ci95_high"] == pytest.approx(mean + half)
    assert train["cv"] == pytest.approx(std / mean)


def test_single_repeat_uses_timed_steps(tmp_path):
    cfg = synthetic.config(gpus=2)
    synthetic.write_cell(tmp_path, cfg, step_times=[[0.5, 0.25, 0.5], [0.4, 0.5, 0.25]])
    train = _row(collect([tmp_path], progress=False).results, phase="train")
    # per step: 64 samples / slowest rank's step time → 128, 128, 128
    assert train["ci_basis"] == "timed_steps" and train["n"] == 3
    assert train["mean"] == pytest.approx(128.0)
    assert train["std"] == pytest.approx(0.0)
    # headline: 2 × 96 samples / max(1.002 × 1.25, 1.002 × 1.15)
    assert train["throughput"] == pytest.approx(192 / (1.002 * 1.25))


def test_pipeline_counts_only_counting_ranks(tmp_path):
    cfg = synthetic.config(**{"gpus": 4, "framework.name": "pipeline", "pipeline.stages": 4})
    folder = synthetic.write_cell(tmp_path, cfg, step_times=[[0.5] * 4] * 4)
    done = collect([tmp_path], progress=False)
    train = _row(done.results, phase="train")
    assert train["samples"] == 32 * 4  # last stage only
    assert train["throughput"] == pytest.approx(128 / (1.002 * 2.0))
    assert (train["pp_stages"], train["pp_replicas"]) == (4, 1)
    per_stage = json.loads((folder / "rank_0.json").read_text())["pipeline"]["per_stage"]
    assert list(done.stages["measured_s"]) == [s["measured_stage_s"] for s in per_stage]


def test_speedup_and_efficiency_against_one_process(tmp_path):
    synthetic.scaling_sweep(tmp_path, frameworks=("ddp", "horovod"), gpus=(1, 2, 4), repeats=2)
    results = collect([tmp_path], progress=False).results
    for framework in ("ddp", "horovod"):
        one = _row(results, framework=framework, world_size=1, phase="train")
        four = _row(results, framework=framework, world_size=4, phase="train")
        assert one["speedup"] == pytest.approx(1.0)
        assert four["speedup"] == pytest.approx(four["throughput"] / one["throughput"])
        assert four["efficiency"] == pytest.approx(four["speedup"] / 4)
        assert four["baseline_config_key"] == one["config_key"]
    assert (results["confound"] == "").all()


def test_memory_is_max_over_ranks_and_per_rank(tmp_path):
    cfg = synthetic.config(gpus=2)
    folder = synthetic.write_cell(tmp_path, cfg, step_times=[[0.5] * 3] * 2)
    doc = json.loads((folder / "rank_1.json").read_text())
    doc["phases"]["train"]["memory"]["peak_rss_bytes"] = 5 * 2**30
    (folder / "rank_1.json").write_text(json.dumps(doc))
    loaded = load_sweeps([tmp_path], progress=False)
    cell = loaded.cells[loaded.cells["phase"] == "train"].iloc[0]
    assert cell["peak_rss_bytes"] == 5 * 2**30
    per_rank = loaded.ranks[loaded.ranks["phase"] == "train"].set_index("rank")["peak_rss_bytes"]
    assert per_rank[1] == 5 * 2**30 and per_rank[0] < per_rank[1]


def _seed_problems(root: Path) -> dict[str, str]:
    """A valid baseline sweep plus one cell per problem; returns problem → cell id."""
    synthetic.scaling_sweep(root, frameworks=("ddp",), gpus=(1, 2), repeats=2)
    cells = {}
    # truncated JSON
    cfg = synthetic.config(**{"gpus": 2, "model.name": "truncated"})
    folder = synthetic.write_cell(root, cfg, step_times=[[0.5] * 3] * 2)
    text = (folder / "rank_1.json").read_text()
    (folder / "rank_1.json").write_text(text[: len(text) // 2])
    cells["truncated"] = folder.parent.name
    # another schema version
    cfg = synthetic.config(**{"gpus": 2, "model.name": "version"})
    folder = synthetic.write_cell(root, cfg, step_times=[[0.5] * 3] * 2)
    doc = json.loads((folder / "rank_0.json").read_text())
    doc["schema_version"] = schema.SCHEMA_VERSION + 1
    (folder / "rank_0.json").write_text(json.dumps(doc))
    cells["version"] = folder.parent.name
    # missing rank, no outcome.json (a crashed node)
    cfg = synthetic.config(**{"gpus": 4, "model.name": "missing"})
    folder = synthetic.write_cell(root, cfg, step_times=[[0.5] * 3] * 4, outcome=None)
    (folder / "rank_2.json").unlink()
    cells["missing"] = folder.parent.name
    # duplicated attempt: attempt 0 and 1 both completed; only attempt 1 counts
    cfg = synthetic.config(**{"gpus": 2, "model.name": "duplicated"})
    synthetic.write_cell(root, cfg, step_times=[[100.0] * 3] * 2, attempt=0)
    folder = synthetic.write_cell(root, cfg, step_times=[[0.5] * 3] * 2, attempt=1)
    cells["duplicated"] = folder.parent.name
    # failed newest attempt after a completed one → the completed one counts
    cfg = synthetic.config(**{"gpus": 2, "model.name": "failed_retry"})
    synthetic.write_cell(root, cfg, step_times=[[0.5] * 3] * 2, attempt=0)
    synthetic.write_cell(root, cfg, step_times=[[9.0] * 3] * 2, attempt=1, outcome="failed")
    # a failed cell only
    cfg = synthetic.config(**{"gpus": 2, "model.name": "failed"})
    synthetic.write_cell(root, cfg, step_times=[[0.5] * 3] * 2, outcome="failed")
    cells["failed"] = synthetic.cell_id_of(cfg)
    # a rank file holding another rank's dump (duplicated rank)
    cfg = synthetic.config(**{"gpus": 2, "model.name": "duprank"})
    folder = synthetic.write_cell(root, cfg, step_times=[[0.5] * 3] * 2)
    (folder / "rank_1.json").write_text((folder / "rank_0.json").read_text())
    cells["duprank"] = folder.parent.name
    # binary garbage, an empty attempt folder and a stray file
    cfg = synthetic.config(**{"gpus": 1, "model.name": "garbage"})
    folder = synthetic.write_cell(root, cfg, step_times=[[0.5] * 3])
    (folder / "rank_0.json").write_bytes(b"\xff\xfe\x00garbage")
    cells["garbage"] = folder.parent.name
    (root / "cells" / "empty" / "attempt_0").mkdir(parents=True)
    cells["empty"] = "empty"
    (root / "cells" / "README").write_text("not a cell")
    return cells


def test_corrupt_inputs_are_reported_and_valid_cells_unchanged(tmp_path):
    clean, dirty = tmp_path / "clean", tmp_path / "dirty"
    synthetic.scaling_sweep(clean, frameworks=("ddp",), gpus=(1, 2), repeats=2)
    cells = _seed_problems(dirty)
    before = collect([clean], progress=False).results
    done = collect([dirty], progress=False)
    excluded = done.problems[done.problems["status"] == "excluded"]
    reasons = dict(zip(excluded["cell_id"], excluded["reason"], strict=True))
    assert "unreadable" in reasons[cells["truncated"]]
    assert "schema_version" in reasons[cells["version"]]
    assert "rank 2: no dump" in reasons[cells["missing"]]
    assert "launcher_error" in reasons[cells["failed"]] or "failed" in reasons[cells["failed"]]
    assert "duplicated rank" in reasons[cells["duprank"]]
    assert "unreadable" in reasons[cells["garbage"]]
    assert "no rank dumps" in reasons["empty"]
    notes = done.problems[done.problems["status"] == "note"]
    assert any("also completed" in r for r in notes["reason"])
    assert any("ignored (failed" in r for r in notes["reason"])
    # duplicated attempt: attempt 1 (0.5 s steps), never a mix with attempt 0 (100 s steps)
    dup = _row(done.results, model="duplicated", phase="train")
    assert dup["cells"] == f"{cells['duplicated']}:1"
    assert dup["throughput"] == pytest.approx(64 * 3 / (1.002 * 1.5))
    retry = _row(done.results, model="failed_retry", phase="train")
    assert retry["cells"].endswith(":0")
    # the valid cells' numbers are unchanged
    after = done.results[done.results["model"] == "resnet18"].reset_index(drop=True)
    cols = ["throughput", "ci95_low", "ci95_high", "speedup", "n", "peak_rss_bytes"]
    assert after[cols].equals(before[cols])


def test_aggregate_writes_problem_list(tmp_path):
    cells = _seed_problems(tmp_path)
    aggregate([str(tmp_path)], figures=False, progress=False)
    md = (tmp_path / "results" / "results.md").read_text()
    for cell in ("truncated", "version", "missing", "failed", "duprank"):
        assert cells[cell] in md


def test_two_sweeps_at_once(tmp_path):
    synthetic.scaling_sweep(tmp_path / "s1", gpus=(1, 2), repeats=1)
    synthetic.scaling_sweep(tmp_path / "s2", gpus=(1, 2), repeats=1, seed=1)
    results = collect([tmp_path / "s1", tmp_path / "s2"], progress=False).results
    assert set(results["sweep"]) == {"s1", "s2"}
    assert len(results) == 2 * 2 * 2 * 2  # sweeps × frameworks × gpus × phases
    # a folder of sweeps works too
    assert len(collect([tmp_path], progress=False).results) == len(results)


def test_not_a_sweep_is_a_user_error(tmp_path):
    with pytest.raises(AnalysisError, match="not a sweep folder"):
        collect([tmp_path], progress=False)


def test_torch_version_confound_flagged(tmp_path):
    cfg1 = synthetic.config(gpus=1)
    cfg2 = synthetic.config(gpus=2)
    env = copy.deepcopy(synthetic.BASE_ENVIRONMENT)
    env["torch"] = "2.5.1"
    synthetic.write_cell(tmp_path, cfg1, step_times=[[0.5] * 3])
    synthetic.write_cell(tmp_path, synthetic.config(gpus=4), step_times=[[0.5] * 3] * 4)
    synthetic.write_cell(tmp_path, cfg2, step_times=[[0.5] * 3] * 2, environment=env)
    done = aggregate([str(tmp_path)], figures=True, progress=False)
    flagged = _row(done.results, world_size=2, phase="train")
    assert "torch: 2.5.1 vs 2.14.1" in flagged["confound"]
    clean = _row(done.results, world_size=4, phase="train")
    assert clean["confound"] == ""
    assert any("torch differs" in w for w in done.warnings)
    out = tmp_path / "results"
    assert "torch: 2.5.1 vs 2.14.1" in (out / "results.csv").read_text()
    assert "torch: 2.5.1 vs 2.14.1" in (out / "results.md").read_text()
    html = (out / "report.html").read_text()
    assert "torch differs between compared cells" in html
    assert "torch: 2.5.1 vs 2.14.1" in html


def test_same_environment_no_confound(tmp_path):
    synthetic.scaling_sweep(tmp_path, gpus=(1, 2), repeats=1)
    done = collect([tmp_path], progress=False)
    assert done.warnings == []


def test_parallel_reading_equals_serial(tmp_path):
    synthetic.scaling_sweep(tmp_path, gpus=(1, 2), repeats=2)
    serial = collect([tmp_path], progress=False, workers=1).results
    import analysis.load as load

    old = load._PARALLEL_MIN_CELLS
    load._PARALLEL_MIN_CELLS = 1
    try:
        parallel = collect([tmp_path], progress=False, workers=2).results
    finally:
        load._PARALLEL_MIN_CELLS = old
    assert parallel.equals(serial)


def test_stage_balance_reads_the_pipeline_strategy_shape(tmp_path):
    # jobs/pipeline/section.py writes synthetic and real sections alike: "stages" a count, "per_stage" the list
    cfg = synthetic.config(**{"gpus": 2, "framework.name": "pipeline", "pipeline.replicas": 1})
    folder = synthetic.write_cell(tmp_path, cfg, step_times=[[0.5] * 3] * 2)
    section = json.loads((folder / "rank_1.json").read_text())["pipeline"]
    stages = collect([tmp_path], progress=False).stages
    assert list(stages["stage"]) == [0, 1]
    assert list(stages["predicted_s"]) == [s["predicted_stage_s"] for s in section["per_stage"]]
    assert list(stages["measured_s"]) == [s["measured_stage_s"] for s in section["per_stage"]]


def test_a_dump_from_before_a_key_existed_is_the_same_configuration(tmp_path):
    # Written before the added keys but with the breakdown knob: the fixture's dumps are of the bare loop
    # (a dump from before the knob ran the instrumented one, another configuration).
    old = synthetic.legacy_config(gpus=2, repeat=0, repeats=2, breakdown=False)
    assert "cudnn_benchmark" not in old  # written before the key was added
    # pipeline.bandwidth is read as "config" in an old dump; a cell composed today defaults to "measured".
    as_old = {"pipeline.bandwidth": "config"}
    new = synthetic.config(gpus=2, repeat=1, repeats=2, cudnn_benchmark=False, **as_old)
    tuned = synthetic.config(gpus=2, repeat=0, repeats=1, cudnn_benchmark=True, **as_old)
    for cfg in (old, new, tuned):
        synthetic.write_cell(tmp_path, cfg, step_times=[[0.5] * 4] * 2)
    results = collect([tmp_path], progress=False).results
    train = results[results["phase"] == "train"]
    assert sorted(train["repeats"]) == [1, 2], "the old and the new dump were not combined"
    assert sorted(train["cfg.cudnn_benchmark"].astype(str)) == ["False", "True"]


def test_keys_that_never_identify_a_cell_never_split_a_configurations_repeats(tmp_path):
    # Three repeats of one ddp configuration: the second rerun with a longer time limit (a scheduling key), the
    # third with another value in the pipeline's section, which a ddp cell never reads. The orchestrator gives
    # them the ids of one configuration's repeats; the table must hold them as one row of 3, not as 1 + 1 + 1.
    base = {"gpus": 2, "repeats": 3, "breakdown": False}
    configs = [
        synthetic.config(repeat=0, **base),
        synthetic.config(repeat=1, **{"cluster.time_limit_min": 240}, **base),
        synthetic.config(repeat=2, **{"pipeline.bandwidth": "config"}, **base),
    ]
    assert configs[0]["cluster"]["time_limit_min"] != 240 and configs[0]["pipeline"]["bandwidth"] != "config"
    identities = [{k: v for k, v in identity(cfg).items() if k != "repeat"} for cfg in configs]
    assert identities[0] == identities[1] == identities[2]  # what the orchestrator holds them to
    # A knob the ddp cell does read (its learning rate) is another configuration, as always.
    other = synthetic.config(repeat=0, lr=0.5, **base)
    for cfg in (*configs, other):
        synthetic.write_cell(tmp_path, cfg, step_times=[[0.5] * 4] * 2)
    results = collect([tmp_path], progress=False).results
    train = results[results["phase"] == "train"]
    assert sorted(train["repeats"]) == [1, 3], train[["config_key", "repeats"]]
    assert len(_row(train, repeats=3)["cells"].split(";")) == 3


def test_a_dump_from_before_numerics_were_recorded_compares_by_pytorchs_defaults(tmp_path):
    old = synthetic.BASE_ENVIRONMENT
    assert "numerics" not in old  # as dumps were written before numerics were recorded
    new = {**copy.deepcopy(old), **copy.deepcopy(schema.ADDED_ENVIRONMENT_DEFAULTS)}
    tf32 = copy.deepcopy(new)
    tf32["numerics"]["matmul_allow_tf32"] = True
    for name, env in (("same", new), ("tf32", tf32)):
        synthetic.write_cell(tmp_path / name, synthetic.config(gpus=1), step_times=[[0.5] * 3], environment=old)
        synthetic.write_cell(tmp_path / name, synthetic.config(gpus=2), step_times=[[0.5] * 3] * 2, environment=env)
    same = collect([tmp_path / "same"], progress=False)
    assert same.warnings == [] and len(same.environments) == 1
    changed = collect([tmp_path / "tf32"], progress=False)
    assert "numerics.matmul_allow_tf32: True vs False" in _row(changed.results, world_size=2, phase="train")["confound"]
