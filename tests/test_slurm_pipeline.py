"""A pipeline cell across two Slurm nodes: torchrun on each node, one stage per node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from slurm_fixtures import dnnbench, slurm_cluster, status_json  # noqa: F401 - slurm_cluster is a fixture

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_pipeline_runs_across_two_nodes(slurm_cluster, tmp_path: Path) -> None:  # noqa: F811
    sweep = tmp_path / "sweep"
    dnnbench(
        "sweep", "framework=pipeline", "pipeline.stages=2", "model=resnet18", "dataset=synthetic", "nodes=2",
        "gpus=1", "steps=3", "warmup_steps=1", "val_steps=2", "batch_size=16", "cluster=slurm",
        "cluster.request_gpus=false", "cluster.cpus_per_gpu=1", "model.time_limit_min=10", "--sweep-dir", str(sweep),
    )  # fmt: skip
    finished = dnnbench("wait", str(sweep), "--timeout", "300")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    (state,) = status_json(sweep)
    assert state["state"] == "completed"
    dumps = [json.loads(p.read_text()) for p in sorted(sweep.glob("cells/*/attempt_0/rank_*.json"))]
    assert [d["node_rank"] for d in dumps] == [0, 1]
    assert [d["pipeline"]["stage"] for d in dumps] == [0, 1]
    assert [d["counts_samples"] for d in dumps] == [False, True]
    assert dumps[1]["phases"]["train"]["samples"] == 3 * 16
    # Each node's torchrun was told where the store is and, by its node rank, whether it hosts it.
    (attempt,) = sweep.glob("cells/*/attempt_0")
    for node in (0, 1):
        command = (attempt / f"launcher_node{node}.log").read_text().splitlines()[0]
        assert f"--node_rank {node} --rdzv_backend static --master_addr 127.0.0.1 --master_port " in command
