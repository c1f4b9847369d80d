"""The asynchronous pipeline schedules across two Slurm nodes: one stage per node, messages between nodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from slurm_fixtures import dnnbench, slurm_cluster, status_json  # noqa: F401 - slurm_cluster is a fixture

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_pipedream_and_2bw_run_across_two_nodes(slurm_cluster, tmp_path: Path) -> None:  # noqa: F811
    sweep = tmp_path / "sweep"
    dnnbench(
        "sweep", "framework=pipeline", "pipeline.schedule=pipedream,pipedream_2bw", "pipeline.stages=2",
        "model=resnet18", "dataset=synthetic", "nodes=2", "gpus=1", "steps=3", "warmup_steps=2", "val_steps=2",
        "batch_size=16", "cluster=slurm", "cluster.request_gpus=false", "cluster.cpus_per_gpu=1",
        "model.time_limit_min=10", "--sweep-dir", str(sweep),
    )  # fmt: skip
    finished = dnnbench("wait", str(sweep), "--timeout", "600")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert [s["state"] for s in status_json(sweep)] == ["completed", "completed"]
    schedules = set()
    for attempt in sweep.glob("cells/*/attempt_0"):
        dumps = [json.loads((attempt / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
        assert [d["node_rank"] for d in dumps] == [0, 1]
        section = dumps[1]["pipeline"]
        schedules.add(section["schedule"])
        assert dumps[1]["phases"]["train"]["samples"] == 3 * 16
        assert dumps[1]["phases"]["val"]["evaluated"] == 2 * 16  # after the drain, through both nodes
        first_stage_versions = section["per_stage"][0]["weight_versions"]
        assert first_stage_versions == 2 == section["per_stage"][0]["predicted_weight_versions"]
    assert schedules == {"pipedream", "pipedream_2bw"}
