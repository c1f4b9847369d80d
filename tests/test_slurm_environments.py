"""`env=a,b` on the real Slurm dev cluster: one array holds cells of two environments, and each
array task runs its own cell in its own environment (variables, preload, setup lines), as the
dumps' fingerprints show; the batch script itself stays the one of the resource shape."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from slurm_fixtures import dnnbench, job_prefix, scancel, slurm_cluster, squeue_names  # noqa: F401 - a fixture

from orchestrator.errors import ExitCode

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
TINY = [
    "framework=ddp", "model=resnet18", "dataset=synthetic", "batch_size=4", "steps=2", "val_steps=2",
    "warmup_steps=1", "dataset.train_samples=16", "dataset.val_samples=8", "cluster=slurm",
    "cluster.time_limit_min=10", "model.time_limit_min=null", "cluster.cpus_per_gpu=1", "device=cpu",
    "cluster.request_gpus=false",
]  # fmt: skip


@pytest.mark.usefixtures("slurm_cluster")
def test_an_env_sweep_on_slurm_runs_each_array_task_in_its_cells_environment(tmp_path: Path) -> None:
    if not JEMALLOC.is_file():
        pytest.skip(f"{JEMALLOC} missing: apt-get install libjemalloc2")
    env_dir = tmp_path / "envs"
    (env_dir / "env").mkdir(parents=True)
    marker = tmp_path / "setup-ran-on-the-node"
    (env_dir / "env" / "arena2.yaml").write_text(yaml.safe_dump(
        {"name": "arena2", "variables": {"MALLOC_ARENA_MAX": "2"}, "setup": [f"touch {marker}"]}))  # fmt: skip
    (env_dir / "env" / "jem.yaml").write_text(yaml.safe_dump(
        {"name": "jem", "variables": {"LD_PRELOAD": str(JEMALLOC), "MALLOC_CONF": "narenas:1"}}))  # fmt: skip
    environ = {**os.environ, "DNNBENCH_ENV_DIR": str(env_dir)}
    sweep = tmp_path / "envsweep"
    try:
        planned = dnnbench("sweep", "env=arena2,jem", *TINY, "--sweep-dir", str(sweep), env=environ)
        assert planned.returncode == ExitCode.OK, planned.stdout + planned.stderr
        scripts = list(sweep.rglob("*.sh"))
        assert len(scripts) == 1  # one resource shape: one array for both environments
        waited = dnnbench("wait", str(sweep), "--timeout", "400", "--interval", "3", env=environ, timeout=460)
        assert waited.returncode == ExitCode.OK, waited.stdout + waited.stderr
    finally:
        scancel(*{row["ArrayJobID"] for row in squeue_names(job_prefix(sweep))})
    by_env = {}
    for path in sweep.glob("cells/*/attempt_*/rank_0.json"):
        doc = json.loads(path.read_text())
        by_env[doc["config"]["env"]["name"]] = doc["environment"]
    assert set(by_env) == {"arena2", "jem"}
    assert by_env["arena2"]["variables"].get("MALLOC_ARENA_MAX") == "2" and marker.exists()
    assert "libjemalloc.so.2" not in by_env["arena2"]["libraries"]
    assert by_env["jem"]["variables"].get("LD_PRELOAD") == str(JEMALLOC)
    assert "libjemalloc.so.2" in by_env["jem"]["libraries"] and "MALLOC_ARENA_MAX" not in by_env["jem"]["variables"]
    assert all(env["slurm"].get("SLURM_ARRAY_JOB_ID") for env in by_env.values())  # ran as array tasks
