"""Pipeline stages × replicas chosen by the planner (auto), or by the user, and the typed pipeline section.

The runs are real (torchrun, two gloo processes, resnet18 on synthetic data); the planner's
choice is checked against :func:`jobs.pipeline.planner.choose_shape` on the profile the cell
cached. Damaged sections start from synthetic dumps built by the runtime's own writer.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthetic_sweeps as synthetic

from analysis.aggregate import collect
from jobs import schema
from jobs.pipeline import planner
from orchestrator import cli
from orchestrator import config as compose_config
from orchestrator.errors import ConfigError, ExitCode

SMALL = ["framework=pipeline", "model=resnet18", "gpus=2", "device=cpu", "dataset=synthetic", "batch_size=8",
         "steps=2", "warmup_steps=1", "val_steps=2"]  # fmt: skip
# A link this slow makes replicating resnet18's 45 MB of gradients cost seconds a step: the planner
# then splits the model into stages, which exercises the mesh the chosen shape builds.
SLOW_LINK = ["cluster.intranode_gbps=0.01", "cluster.interconnect_gbps=0.01", "pipeline.bandwidth=config"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("profiles")


def _dumps(out: Path) -> list[dict[str, Any]]:
    (attempt,) = out.glob("cells/*/attempt_0")
    config = json.loads((attempt.parent / "cell.json").read_text())["config"]
    assert schema.validate_attempt(attempt, config) == []
    return [schema.load(path) for path in sorted(attempt.glob("rank_*.json"))]


def _run(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> list[dict[str, Any]]:
    monkeypatch.setenv("DNNBENCH_CACHE", str(cache))
    out = tmp_path / "run"
    assert cli.main(["run", "--out", str(out), "--quiet", *SMALL, *overrides]) == 0
    return _dumps(out)


def _cached_profile(cache: Path) -> planner.Profile:
    (path,) = (cache / "profiles").glob("*.json")
    return planner.Profile.from_json(path.read_text())


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> list[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return _run(tmp_path_factory.mktemp("auto"), cache, monkeypatch, *SLOW_LINK)


# --------------------------------------------------------------------------- the shape a cell runs


def test_auto_runs_the_planners_shape_on_every_rank(auto_run, cache):
    assert auto_run[0]["config"]["pipeline"]["stages"] == "auto"
    best = planner.choose_shape(
        _cached_profile(cache), processes=2, microbatches=4, schedule="1f1b",
        topology=planner.Topology(processes=2, per_node=2, intranode_gbps=0.01, interconnect_gbps=0.01),
    )  # fmt: skip
    assert (best.stages, best.replicas) == (2, 1), "a slow link makes the planner split the model"
    for rank, doc in enumerate(auto_run):
        section = doc["pipeline"]
        assert section["shape_chosen_by"] == "planner"
        assert (section["stages"], section["replicas"], section["split"]) == (best.stages, best.replicas, best.split)
        assert section["predicted"]["step_s"] == pytest.approx(best.step_s)
        assert section["predicted"]["samples_per_s"] == pytest.approx(8 / best.step_s)
        assert section["stage"] == rank and doc["counts_samples"] == (rank == 1)


def test_the_planner_weighs_the_bandwidth_the_cell_measured_and_repeats_plan_alike(tmp_path, cache, monkeypatch):
    # The config claims a link of 10 MB/s; the cell measures its own (loopback: GB/s) and plans with that.
    first = _run(tmp_path / "a", cache, monkeypatch, "cluster.intranode_gbps=0.01", "cluster.interconnect_gbps=0.01")
    (probe,) = first[0]["communication"]["probes"]
    predicted = first[0]["pipeline"]["predicted"]
    assert predicted["bandwidth_source"] == "measured"
    assert predicted["intranode_gbps"] == pytest.approx(probe["bus_gbps"]) and probe["bus_gbps"] > 0.01
    assert predicted["interconnect_gbps"] == 0.01  # one node: no link between nodes, the config's figure kept
    assert (first[0]["pipeline"]["stages"], first[0]["pipeline"]["replicas"]) == (1, 2), "a fast link: replicate"
    # A repeat measures again (its own probe in its dump) but plans with the first figure: the same shape.
    second = _run(tmp_path / "b", cache, monkeypatch, "cluster.intranode_gbps=0.01", "cluster.interconnect_gbps=0.01")
    assert second[0]["pipeline"]["predicted"]["intranode_gbps"] == predicted["intranode_gbps"]
    assert second[0]["communication"]["probes"][0]["bus_gbps"] != probe["bus_gbps"]


def test_where_each_planned_link_comes_from():
    from jobs.pipeline import bandwidth

    intra = {"scope": "intra_node", "bus_gbps": 5.0}
    inter = {"scope": "inter_node", "bus_gbps": 1.0}
    one_node = bandwidth.from_probes([intra], nodes=1, per_node=4, intranode_gbps=50.0, interconnect_gbps=10.0)
    assert (one_node.intranode_gbps, one_node.interconnect_gbps, one_node.source) == (5.0, 10.0, "measured")
    two_nodes = bandwidth.from_probes([inter, intra], nodes=2, per_node=4, intranode_gbps=50.0, interconnect_gbps=10.0)
    assert (two_nodes.intranode_gbps, two_nodes.interconnect_gbps, two_nodes.source) == (5.0, 1.0, "measured")
    one_a_node = bandwidth.from_probes([inter], nodes=2, per_node=1, intranode_gbps=50.0, interconnect_gbps=10.0)
    assert one_a_node.source == "measured"
    half = bandwidth.from_probes([inter], nodes=2, per_node=4, intranode_gbps=50.0, interconnect_gbps=10.0)
    assert (half.intranode_gbps, half.source) == (50.0, "measured+config")
    unmeasured = bandwidth.from_probes([], nodes=1, per_node=2, intranode_gbps=50.0, interconnect_gbps=10.0)
    assert unmeasured.source == "config"


def test_a_link_bandwidth_source_the_planner_does_not_know_is_refused_at_plan_time():
    with pytest.raises(ConfigError, match=r"pipeline\.bandwidth=guess: expected one of measured, config"):
        _validate(*SMALL[1:], "pipeline.bandwidth=guess")


# A real pipeline cell beside a synthetic one: its memory figure's legend once made tight_layout give
# up ("Tight layout not applied", labels cut); the legend now lies outside the packed grid.
@pytest.mark.filterwarnings("error:Tight layout not applied")
def test_the_results_table_and_report_show_the_shape(auto_run, tmp_path):
    sweep = tmp_path / "sweep"
    folder = sweep / "cells" / auto_run[0]["cell_id"] / "attempt_0"
    folder.mkdir(parents=True)
    (folder.parent / "cell.json").write_text(json.dumps({"cell_id": auto_run[0]["cell_id"],
                                                         "config": auto_run[0]["config"]}))  # fmt: skip
    for doc in auto_run:
        (folder / schema.dump_filename(doc["rank"])).write_text(json.dumps(doc))
    # Beside it a ddp cell whose config differs in 7 keys: each names the series in the throughput figure's
    # legend (whose labels once grew past what tight_layout can place: an error in the test run now).
    synthetic.write_cell(sweep, synthetic.config(gpus=2), step_times=[[0.5] * 3] * 2)
    assert cli.main(["aggregate", str(sweep), "--out", str(tmp_path / "out")]) == 0
    results = collect([sweep], progress=False).results
    pipeline, ddp = (results[(results["framework"] == f) & (results["phase"] == "train")].iloc[0]
                     for f in ("pipeline", "ddp"))  # fmt: skip
    assert (pipeline["pp_stages"], pipeline["pp_replicas"]) == (2, 1)
    assert ddp[["pp_stages", "pp_replicas"]].isna().all()
    csv = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert {"pp_stages", "pp_replicas"} <= set(csv[0].split(","))
    report = (tmp_path / "out" / "report.html").read_text()
    assert "pipeline stages × replicas" in report and "<td>2 × 1</td>" in report


def test_a_value_the_user_sets_wins_and_the_other_follows(cache, capsys):
    text = _plan(cache, "pipeline.stages=1", *SLOW_LINK)
    assert "1 stage(s) × 2 replica(s)" in text and "shape chosen by the user" in text
    # The planner's better shape for this machine is offered, not taken.
    assert "pipeline.stages=2 pipeline.replicas=1 (or both auto)" in text
    text = _plan(cache, *SLOW_LINK)
    assert "2 stage(s) × 1 replica(s)" in text and "shape chosen by the planner" in text


def _plan(cache: Path, *overrides: str) -> str:
    from orchestrator.pipeline_commands import plan_command

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("DNNBENCH_CACHE", str(cache))
        return plan_command([*SMALL, *overrides])


def test_a_stored_config_from_before_auto_runs_one_stage_per_process(tmp_path, cache, monkeypatch):
    """Cells planned before ``auto`` hold stages: null, replicas: 1 in cell.json; rerun, they mean what they meant."""
    from orchestrator.runner import run_cell
    from orchestrator.sweep import plan

    monkeypatch.setenv("DNNBENCH_CACHE", str(cache))
    cell = plan(SMALL).cells[0]
    config = copy.deepcopy(cell.config)
    config["pipeline"].update(stages=None, replicas=1)
    (tmp_path / "cell.json").write_text(json.dumps({"cell_id": cell.id, "attempt": 0, "config": config}))
    run_cell(str(tmp_path / "cell.json"), str(tmp_path / "attempt_0"))
    assert schema.validate_attempt(tmp_path / "attempt_0", config) == []
    for rank in range(2):
        section = schema.load(tmp_path / "attempt_0" / schema.dump_filename(rank))["pipeline"]
        assert (section["stages"], section["replicas"], section["shape_chosen_by"]) == (2, 1, "user")


# --------------------------------------------------------------------------- plan-time checks


def _validate(*overrides: str) -> None:
    compose_config.validate(compose_config.resolved(compose_config.compose(["framework=pipeline", *overrides])))


def test_hydra_keeps_a_set_value_an_int_beside_auto():
    config = compose_config.resolved(compose_config.compose(["framework=pipeline", "gpus=4", "pipeline.stages=2"]))
    assert config["pipeline"]["stages"] == 2 and type(config["pipeline"]["stages"]) is int
    assert config["pipeline"]["replicas"] == "auto"


@pytest.mark.parametrize(
    "overrides",
    [
        ["gpus=12", "model=resnet18"],  # 12 stages would not fit 10 blocks; 6 × 2 and others do
        ["gpus=8", "pipeline.schedule=interleaved_1f1b"],  # 16 chunks would not; 4 × 2 does
        ["gpus=3", "pipeline.schedule=interleaved_1f1b", "pipeline.microbatches=8"],
        ["gpus=4", "pipeline.split=[5]"],  # the split names 2 stages: 2 replicas follow
        ["gpus=4", "pipeline.replicas=2"],
        ["framework=model_parallel", "gpus=4"],
    ],
)
def test_auto_passes_where_some_shape_runs(overrides):
    _validate(*overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["gpus=2", "pipeline.stages=0"], r"pipeline.stages=0: expected auto or an int ≥ 1"),
        (["gpus=2", "pipeline.stages=two"], r"pipeline.stages=two: expected auto or an int ≥ 1"),
        (["gpus=2", "pipeline.replicas=-1"], r"pipeline.replicas=-1: expected auto or an int ≥ 1"),
        (["gpus=2", "pipeline.replicas=1.5"], r"pipeline.replicas=1.5: expected auto or an int ≥ 1"),
        (["gpus=2", "pipeline.stages=true"], r"pipeline.stages=True: expected auto or an int ≥ 1"),
        (["gpus=4", "pipeline.stages=3"], r"pipeline.stages=3 does not divide 4 processes"),
        (["gpus=4", "pipeline.stages=3", "pipeline.replicas=2"], r"pipeline.stages=3 × pipeline.replicas=2 ≠ 4"),
        (["gpus=2", "pipeline.split=[3,5]"], r"pipeline.split=\[3, 5\] names 3 stages, which do not divide 2"),
        (["gpus=12", "pipeline.stages=12"], "12 pipeline stages for resnet18's 10 blocks"),
        (["gpus=2", "pipeline.microbatches=0"], "pipeline.microbatches=0: must be ≥ 1"),
        (["gpus=2", "pipeline.microbatches=3"], "does not divide batch_size=32"),
        (["gpus=2", "model.name=vgg11"], "VGG has no pipeline block split"),
    ],
)
def test_bad_shapes_are_refused_at_plan_time(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _validate(*overrides)


def test_the_cli_refuses_a_bad_shape_before_anything_runs(tmp_path, capsys):
    code = cli.main(["run", "--out", str(tmp_path / "run"), *SMALL, "pipeline.stages=3"])
    assert code == ExitCode.ERROR
    assert "pipeline.stages=3 does not divide 2 processes" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_planner_only_offers_shapes_that_run():
    blocks = [planner.BlockCost(f"b{i}", 0.01, 0.02, 1000, 3000, 10**6) for i in range(10)]
    profile = planner.Profile("ten", [1, 28, 28], 8, "cpu", "fp32", "", blocks)
    topology = planner.Topology(8, 8, 50.0, 12.5)
    request = planner.ShapeRequest.of("pipeline", {"stages": "auto", "replicas": "auto", "microbatches": 4,
                                                   "schedule": "interleaved_1f1b", "split": []}, 8)  # fmt: skip
    chosen = planner.plan_for(request, profile, topology)  # 8 stages × 2 chunks would not fit 10 blocks
    assert chosen.stages * 2 <= 10 and chosen.stages * chosen.replicas == 8


@pytest.mark.parametrize(
    ("framework", "pipeline", "shapes", "chosen_by"),
    [
        ("pipeline", {"stages": "auto", "replicas": "auto"}, [(4, 1), (2, 2), (1, 4)], "planner"),
        ("pipeline", {"stages": None, "replicas": 1}, [(4, 1)], "user"),  # stored before auto existed
        ("pipeline", {"stages": 2, "replicas": "auto"}, [(2, 2)], "user"),
        ("pipeline", {"stages": "auto", "replicas": 4}, [(1, 4)], "user"),
        ("pipeline", {"stages": "auto", "replicas": "auto", "split": [5]}, [(2, 2)], "user"),
        ("model_parallel", {"stages": "auto", "replicas": "auto"}, [(4, 1)], "framework"),
    ],
)
def test_what_a_config_asks_of_the_shape(framework, pipeline, shapes, chosen_by):
    section = {"microbatches": 4, "schedule": "1f1b", "split": [], **pipeline}
    request = planner.ShapeRequest.of(framework, section, 4)
    assert [(layout.stages, layout.replicas) for layout in request.shapes()] == shapes
    assert request.chosen_by == chosen_by


# --------------------------------------------------------------------------- synthetic dumps, real writer


def _pipeline_cell(tmp_path: Path, **overrides: Any) -> tuple[Path, dict[str, Any]]:
    cfg = synthetic.config(**{"framework.name": "pipeline", "gpus": 4, **overrides})
    return synthetic.write_cell(tmp_path, cfg, step_times=[[0.5] * 6] * 4), cfg


SYNTHETIC_SHAPES = [{}, {"pipeline.stages": 2}, {"pipeline.stages": 4}, {"framework.name": "model_parallel"},
                    {"pipeline.schedule": "interleaved_1f1b", "pipeline.stages": 2},
                    {"pipeline.schedule": "pipedream", "pipeline.stages": 4},
                    {"pipeline.schedule": "pipedream_2bw", "pipeline.stages": 2}]  # fmt: skip


@pytest.mark.parametrize("overrides", SYNTHETIC_SHAPES)
def test_synthetic_dumps_are_valid_and_shaped_like_real_ones(tmp_path, overrides):
    folder, cfg = _pipeline_cell(tmp_path, **overrides)
    assert schema.validate_attempt(folder, cfg) == []
    docs = [json.loads(p.read_text()) for p in sorted(folder.glob("rank_*.json"))]
    for doc in docs:
        for stage in doc["pipeline"]["per_stage"]:
            assert isinstance(stage["predicted_stage_s"], float) and "predicted_s" not in stage
    assert sum(d["counts_samples"] for d in docs) == docs[0]["pipeline"]["replicas"]


def test_the_real_and_the_synthetic_section_have_the_same_fields(auto_run, tmp_path):
    folder, _ = _pipeline_cell(tmp_path, **{"pipeline.stages": 2})
    synthetic_section = json.loads((folder / "rank_0.json").read_text())["pipeline"]
    real = auto_run[0]["pipeline"]
    assert set(synthetic_section) == set(real)
    for part in ("predicted", "measured"):
        assert set(synthetic_section[part]) == set(real[part])
    assert set(synthetic_section["per_stage"][0]) == set(real["per_stage"][0])


# --------------------------------------------------------------------------- damaged sections


Damage = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Damage:
    def damage(doc: dict[str, Any]) -> None:
        node: Any = doc["pipeline"]
        *parents, leaf = path.split(".")
        for name in parents:
            node = node[int(name)] if name.isdigit() else node[name]
        node[int(leaf) if leaf.isdigit() else leaf] = value

    return damage


def _drop(path: str) -> Damage:
    def damage(doc: dict[str, Any]) -> None:
        node: Any = doc["pipeline"]
        *parents, leaf = path.split(".")
        for name in parents:
            node = node[int(name)] if name.isdigit() else node[name]
        del node[int(leaf) if leaf.isdigit() else leaf]

    return damage


DAMAGES: dict[str, tuple[Damage, str]] = {
    "replicas that do not make the world": (_set("replicas", 3), r"2 stages × 3 replicas ≠ world_size 4"),
    "a negative measured time": (_set("per_stage.0.forward_s", -0.01), r"per_stage\[0\].forward_s: -0.01 < 0"),
    "a negative predicted time": (_set("predicted.step_s", -1.0), r"predicted.step_s: -1.0 < 0"),
    "a negative size": (_set("per_stage.1.peak_memory_bytes", -5), r"per_stage\[1\].peak_memory_bytes: -5 < 0"),
    "a stage outside the stages": (_set("stage", 2), r"stage 2 of replica 0, outside 2 stages × 2 replicas"),
    "another rank's seat": (_set("replica", 1), r"stage 0 of replica 1 is rank 2"),
    "stage entries out of order": (_set("per_stage.1.stage", 0), r"per_stage\[1\].stage, pp_rank: 0, 1"),
    "a missing stage entry": (_drop("per_stage.1"), r"per_stage: 1 entries for 2 stages"),
    "blocks the split does not place": (_set("per_stage.1.first_block", 3), r"per_stage\[1\].first_block"),
    "a split of the wrong length": (_set("split", [2, 6]), r"split: \[2, 6\], but 2 stages need 1"),
    "a count as text": (_set("microbatches", "4"), r"pipeline.microbatches: expected int, got str"),
    "a missing list": (_drop("per_stage"), r"pipeline.per_stage: missing"),
    "an unknown chooser": (_set("shape_chosen_by", "oracle"), r"shape_chosen_by: 'oracle', expected one of"),
    "a chooser the config contradicts": (_set("shape_chosen_by", "planner"), r"leave it to the user"),
    "a bubble over 1": (_set("predicted.bubble_fraction", 1.5), r"predicted.bubble_fraction: 1.5, outside"),
    "a bottleneck outside the stages": (_set("measured.bottleneck_stage", 7), r"bottleneck_stage: 7, outside"),
    "micro-batches that do not make the batch": (_set("microbatch_size", 9), r"4 micro-batches of 9 samples"),
    "another schedule than the config's": (_set("schedule", "gpipe"), r"schedule gpipe with 4 micro-batches"),
    "the last stage flag on a first stage": (_set("is_last_stage", True), r"is_last_stage: True on stage 0 of 2"),
    "no weight version": (_set("per_stage.0.weight_versions", 0), r"per_stage\[0\].weight_versions: 0 < 1"),
    "a negative staleness": (_set("per_stage.1.staleness_updates", -1), r"staleness_updates: -1 < 0"),
    "a negative stash": (_set("per_stage.0.stashed_weight_bytes", -8), r"stashed_weight_bytes: -8 < 0"),
    "virtual stages not a multiple": (_set("virtual_stages", 3), r"virtual_stages: 3, not a multiple of its 2"),
}


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_a_damaged_section_is_named(tmp_path, name):
    folder, _ = _pipeline_cell(tmp_path, **{"pipeline.stages": 2})
    damage, message = DAMAGES[name]
    doc = json.loads((folder / "rank_0.json").read_text())
    assert schema.validate(doc) == []
    damage(doc)
    reasons = schema.validate(doc)
    assert any(re.search(message, reason) for reason in reasons), reasons


def test_a_section_from_before_the_planner_chose_shapes_is_valid(tmp_path):
    folder, cfg = _pipeline_cell(tmp_path, **{"pipeline.stages": None, "pipeline.replicas": 1})
    for path in folder.glob("rank_*.json"):
        doc = json.loads(path.read_text())
        del doc["pipeline"]["shape_chosen_by"], doc["pipeline"]["predicted"]["samples_per_s"]
        path.write_text(json.dumps(doc))
    assert schema.validate_attempt(folder, cfg) == []


def test_a_config_that_fixes_the_shape_must_be_the_shape_run(tmp_path):
    folder, _ = _pipeline_cell(tmp_path, **{"pipeline.stages": 2})
    doc = json.loads((folder / "rank_0.json").read_text())
    doc["config"]["pipeline"]["stages"] = 4
    assert any("but the config fixes 4 × 1" in reason for reason in schema.validate(doc))


def test_auto_takes_the_replicas_from_the_section_and_counts_them(tmp_path):
    folder, cfg = _pipeline_cell(tmp_path)  # auto: the synthetic profile replicates, 1 stage × 4
    docs = {rank: json.loads((folder / schema.dump_filename(rank)).read_text()) for rank in range(4)}
    assert schema.dump_replicas(docs[0]) == 4 and schema.data_replicas(cfg) is None
    # 4 replicas read 256 of the 1024 validation samples each: 3 batches of 32, the first untimed. A count
    # within what any split allows but not this one is named only by the exact rule, which needs the replicas.
    val = docs[0]["phases"]["val"]
    assert (val["timed_steps"], val["samples"], val["evaluated"]) == schema.val_counts(32, 4, 1024, 3) == (2, 64, 96)
    val["evaluated"] = 88
    val["correct"] = 44
    val["accuracy"] = 0.5
    assert any("but the config gives 2, 64, 96" in reason for reason in schema.validate(docs[0]))


def test_ranks_that_disagree_on_the_shape_are_named(tmp_path):
    folder, cfg = _pipeline_cell(tmp_path, **{"pipeline.stages": 2})
    path = folder / "rank_3.json"
    doc = json.loads(path.read_text())
    doc["pipeline"]["plan_source"] = "manual"
    path.write_text(json.dumps(doc))
    assert any("ranks disagree on pipeline.plan_source" in r for r in schema.validate_attempt(folder, cfg))


def test_a_section_where_none_belongs_or_missing_where_one_does(tmp_path):
    ddp = synthetic.make_dump(synthetic.config(gpus=1), 0, train_step_times=[0.5] * 3)
    folder, _ = _pipeline_cell(tmp_path / "p", **{"pipeline.stages": 2})
    ddp["pipeline"] = json.loads((folder / "rank_0.json").read_text())["pipeline"]
    assert any("a pipeline section in a dump of ddp" in r for r in schema.validate(ddp))
    folder, _ = _pipeline_cell(tmp_path / "auto")
    doc = json.loads((folder / "rank_0.json").read_text())
    doc["pipeline"] = None
    assert any("pipeline: missing, but the config leaves" in r for r in schema.validate(doc))


def test_aggregate_excludes_a_cell_with_a_damaged_section_and_keeps_the_others(tmp_path):
    sweep = tmp_path / "sweep"
    good, _ = _pipeline_cell(sweep, **{"pipeline.stages": 2})
    bad, _ = _pipeline_cell(sweep, **{"pipeline.stages": 4})
    doc = json.loads((bad / "rank_1.json").read_text())
    doc["pipeline"]["per_stage"][2]["measured_stage_s"] = -1.0
    (bad / "rank_1.json").write_text(json.dumps(doc))
    assert cli.main(["aggregate", str(sweep), "--out", str(tmp_path / "out")]) == 0
    incomplete = (tmp_path / "out" / "incomplete.csv").read_text()
    assert bad.parent.name in incomplete and "measured_stage_s: -1.0 < 0" in incomplete
    results = collect([sweep], progress=False).results
    assert set(results["cells"].str.split(":").str[0]) == {good.parent.name}
