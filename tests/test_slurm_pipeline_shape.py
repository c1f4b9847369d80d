"""The planner's stages × replicas across two Slurm nodes: rank 0 plans, both nodes build that mesh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from slurm_fixtures import dnnbench, slurm_cluster, status_json  # noqa: F401 - slurm_cluster is a fixture

from jobs import schema

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_auto_shape_runs_across_two_nodes(slurm_cluster, tmp_path: Path) -> None:  # noqa: F811
    sweep = tmp_path / "sweep"
    # A link this slow makes replicating resnet18's gradients cost seconds: the planner puts a stage on each node.
    dnnbench(
        "sweep", "framework=pipeline", "model=resnet18", "dataset=synthetic", "nodes=2", "gpus=1", "steps=3",
        "warmup_steps=1", "val_steps=2", "batch_size=16", "cluster=slurm", "cluster.request_gpus=false",
        "cluster.cpus_per_gpu=1", "model.time_limit_min=10", "cluster.interconnect_gbps=0.01",
        "pipeline.bandwidth=config",  # the configured link, not the one the cell measures (loopback-fast here)
        "--sweep-dir", str(sweep),
    )  # fmt: skip
    finished = dnnbench("wait", str(sweep), "--timeout", "300")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    (state,) = status_json(sweep)
    assert state["state"] == "completed"
    dumps = [schema.load(p) for p in sorted(sweep.glob("cells/*/attempt_0/rank_*.json"))]
    assert dumps[0]["config"]["pipeline"]["stages"] == "auto"
    sections = [d["pipeline"] for d in dumps]
    assert [(s["shape_chosen_by"], s["stages"], s["replicas"], s["stage"]) for s in sections] == [
        ("planner", 2, 1, 0),
        ("planner", 2, 1, 1),
    ]
    assert [d["node_rank"] for d in dumps] == [0, 1] and [d["counts_samples"] for d in dumps] == [False, True]
    assert json.dumps(sections[0]["split"]) == json.dumps(sections[1]["split"])
