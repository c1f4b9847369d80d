"""What each cell was given against what it asked for: recorded per rank, flagged per row."""

from __future__ import annotations

import copy
import json

import synthetic_sweeps as synthetic

from analysis import allocation
from analysis.aggregate import aggregate
from analysis.load import load_sweeps
from analysis.table import build_results
from jobs import schema


def _dumps(cfg: dict, **resources: object) -> list[dict]:
    docs = [synthetic.make_dump(cfg, rank, train_step_times=[0.5] * 3) for rank in range(cfg["gpus"])]
    for doc in docs:
        doc["environment"]["resources"] = {"cpus_allowed_count": 4, "gpus_visible": 0, **resources}
    return docs


def test_a_rank_with_fewer_cpus_than_threads_falls_short():
    cfg = synthetic.config(gpus=2, threads_per_process=2)
    docs = _dumps(cfg)
    docs[1]["environment"]["resources"]["cpus_allowed_count"] = 1
    assert allocation.shortfalls(docs, cfg) == ["rank 1: 1 CPU(s) for 2 threads"]
    columns = allocation.cell_columns(docs, cfg)
    assert (columns["cpus_per_rank"], columns["gpus_per_rank"], columns["horovod_nccl"]) == (1, 0, "")


def test_a_gpu_cell_without_a_gpu_or_without_nccl_falls_short():
    cfg = synthetic.config(gpus=1)
    (doc,) = _dumps(cfg)
    doc["device_type"] = "cuda"
    doc["extra"]["framework_knobs"] = {"nccl_built": 0, "cuda_built": True}
    assert allocation.shortfalls([doc], cfg) == [
        "rank 0: a GPU cell that sees no GPU",
        "rank 0: Horovod without NCCL on a GPU",
    ]
    assert allocation.cell_columns([doc], cfg)["horovod_nccl"] == "0"


def test_nothing_recorded_is_no_shortfall():
    cfg = synthetic.config(gpus=2)
    docs = [synthetic.make_dump(cfg, rank, train_step_times=[0.5] * 3) for rank in range(2)]
    assert allocation.shortfalls(docs, cfg) == []
    assert allocation.cell_columns(docs, cfg) == {
        "cpus_per_rank": None, "gpus_per_rank": None, "horovod_nccl": "", "allocation": "",
    }  # fmt: skip


def test_results_carry_what_each_configuration_was_given_and_flag_a_shortfall(tmp_path):
    starved, fine = synthetic.config(gpus=2, threads_per_process=2), synthetic.config(gpus=1, threads_per_process=2)
    for cfg, cpus in ((starved, 1), (fine, 2)):
        folder = synthetic.write_cell(tmp_path, cfg, step_times=[[0.5] * 3] * cfg["gpus"])
        for path in folder.glob("rank_*.json"):
            doc = json.loads(path.read_text())
            env = copy.deepcopy(doc["environment"])
            env["resources"] = {"cpus_allowed_count": cpus, "gpus_visible": 0}
            doc["environment"], doc["environment_hash"] = env, schema.environment_hash(env)
            path.write_text(json.dumps(doc))
    results = build_results(load_sweeps([tmp_path], progress=False)).set_index(["world_size", "phase"])
    assert results.loc[(2, "train"), "cpus_per_rank"] == 1
    assert results.loc[(2, "train"), "allocation"].startswith("rank 0: 1 CPU(s) for 2 threads")
    assert "given less than it asked for: rank 0: 1 CPU(s) for 2 threads" in results.loc[(2, "train"), "confound"]
    assert results.loc[(1, "train"), "allocation"] == ""
    assert "given less" not in results.loc[(1, "train"), "confound"]
    aggregate([str(tmp_path)], figures=False, progress=False)
    report = (tmp_path / "results" / "report.html").read_text()
    assert "What the ranks were given" in report and "rank 0: 1 CPU(s) for 2 threads" in report
