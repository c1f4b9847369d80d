"""fsdp and zero cells across two Slurm nodes (torchrun on each, one process a node), equal to their DDP twin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from slurm_fixtures import dnnbench, slurm_cluster, status_json  # noqa: F401 - slurm_cluster is a fixture

from analysis.load import node_name

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

FRAMEWORKS = ("ddp", "fsdp", "zero")


def _dumps_by_framework(sweep: Path) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for attempt in sorted(sweep.glob("cells/*/attempt_0")):
        docs = [json.loads(p.read_text()) for p in sorted(attempt.glob("rank_*.json"))]
        found[docs[0]["framework"]] = docs
    return found


def test_fsdp_and_zero_across_two_nodes_equal_ddp(slurm_cluster, tmp_path: Path) -> None:  # noqa: F811
    sweep = tmp_path / "sweep"
    planned = dnnbench(
        "sweep", f"framework={','.join(FRAMEWORKS)}", "model=resnet18", "dataset=synthetic", "dataset.image_size=16",
        "dataset.train_samples=64", "dataset.val_samples=32", "batch_size=8", "steps=3", "warmup_steps=1",
        "val_steps=2", "nodes=2", "gpus=1", "device=cpu", "cluster=slurm", "cluster.request_gpus=false",
        "cluster.cpus_per_gpu=1", "model.time_limit_min=10", "--sweep-dir", str(sweep),
    )  # fmt: skip
    assert planned.returncode == 0, planned.stdout + planned.stderr
    finished = dnnbench("wait", str(sweep), "--timeout", "600", timeout=660)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert [s["state"] for s in status_json(sweep)] == ["completed"] * 3
    dumps = _dumps_by_framework(sweep)
    assert sorted(dumps) == sorted(FRAMEWORKS)
    for framework, docs in dumps.items():
        assert [d["node_rank"] for d in docs] == [0, 1], framework
        assert len({node_name(d["environment"]) for d in docs}) == 2, framework  # one process on each node
    digests = {framework: docs[0]["extra"]["parameter_digests"] for framework, docs in dumps.items()}
    # Exact, as on one node (tests/test_fsdp_zero.py says why): the same averaging of 2 gradients over TCP.
    assert digests["fsdp"] == digests["zero"] == digests["ddp"], digests
    ddp_state = dumps["ddp"][0]["model_state"]
    for field, whole in ddp_state.items():
        assert sum(d["model_state"][field] for d in dumps["fsdp"]) == whole, field
    assert sum(d["model_state"]["optimizer_state_bytes"] for d in dumps["zero"]) == ddp_state["optimizer_state_bytes"]
