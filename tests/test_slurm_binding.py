"""A cell's CPUs and its neighbours on the real dev cluster (binding task plugin task/affinity).

- The launcher step gets the CPUs its cell asked for: ``srun --cpus-per-task`` (Slurm 22.05+
  no longer passes the job's to the step). Submitted with ``SLURM_CPU_BIND=cores``, as on sites
  whose task plugin binds tasks to cores by default: without it every rank shares one core.
- ``cluster.exclusive=true`` keeps other jobs off a cell's node; without it another job beside
  the cell is recorded (``colocation_node<N>.json``) and the cell flagged in the results.
The batch scripts themselves are checked without Slurm (dry runs) at the end.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from slurm_fixtures import dnnbench, job_prefix, scancel, slurm_cluster, squeue_names, wait_until  # noqa: F401

from jobs import schema
from jobs.schema import without_added_defaults
from orchestrator import cli
from orchestrator.cell_identity import cell_id
from orchestrator.config import compose, resolved

ON_SLURM = ["cluster=slurm", "cluster.request_gpus=false", "cluster.cpus_per_gpu=1", "model.time_limit_min=10"]
TINY_CPU_DDP = [
    "framework=ddp", "model=resnet18", "dataset=synthetic", "device=cpu", "batch_size=8", "steps=2",
    "warmup_steps=0", "val_steps=2", "dataset.train_samples=64", "dataset.val_samples=32",
]  # fmt: skip
NOOP = ["framework=noop", "model=resnet18", "dataset=synthetic"]


def _completed(sweep: Path, env: dict[str, str] | None = None) -> None:
    waited = dnnbench("wait", str(sweep), "--timeout", "420", "--interval", "3", cwd=REPO, env=env, timeout=480)
    assert waited.returncode == 0, waited.stdout + waited.stderr


def _attempts(sweep: Path) -> dict[int, Path]:
    """gpus of the cell → its attempt folder."""
    found = {}
    for attempt in sweep.glob("cells/*/attempt_0"):
        found[json.loads((attempt.parent / "cell.json").read_text())["config"]["gpus"]] = attempt
    return found


@pytest.mark.slurm
@pytest.mark.slow
def test_every_rank_runs_on_the_cpus_its_cell_asked_for(slurm_cluster, tmp_path: Path) -> None:  # noqa: F811
    # 1 CPU a process: on this 2-core host a 1-process cell gets one core, a 2-process cell both.
    # The 1-process cell also proves the binding plugin is on (unbound, it would see both cores).
    env = {**os.environ, "SLURM_CPU_BIND": "cores"}
    sweep = tmp_path / "sweep"
    run = dnnbench("sweep", *TINY_CPU_DDP, *ON_SLURM, "gpus=1,2", "--sweep-dir", str(sweep), cwd=REPO, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    _completed(sweep, env)
    attempts = _attempts(sweep)
    assert sorted(attempts) == [1, 2]
    for gpus, attempt in attempts.items():
        node = json.loads((attempt / "colocation_node0.json").read_text())
        assert node["step_cpus_allowed"] == gpus, node
        dumps = [schema.load(p) for p in sorted(attempt.glob("rank_*.json"))]
        assert len(dumps) == gpus
        allowed = [d["environment"]["resources"]["cpus_allowed_count"] for d in dumps]
        assert allowed == [gpus] * gpus, f"{gpus}-process cell: ranks may run on {allowed} CPUs"
    launcher_log = (attempts[2] / "launcher_node0.log").read_text()
    assert "--nproc_per_node 2" in launcher_log.splitlines()[0]


def _squeue(job: str, field: str) -> str:
    done = subprocess.run(["squeue", "-h", "-j", job, "-o", field], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def _sbatch_neighbour(node: str, tmp_path: Path) -> str:
    """A plain one-CPU job on ``node`` that sleeps: someone else's work."""
    done = subprocess.run(
        ["sbatch", "--parsable", "-J", "neighbour", "-w", node, "-n1", "-c1", "-o", str(tmp_path / "neighbour.out"),
         "--wrap", "sleep 300"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("exclusive", [True, False], ids=["exclusive", "shared"])
def test_an_exclusive_cell_keeps_other_jobs_off_its_node_and_a_shared_one_records_them(
    exclusive: bool,
    slurm_cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"  # the noop cell runs until this file exists
    env = {**os.environ, "DNNBENCH_TEST_NOOP_GATE": str(gate)}
    sweep = tmp_path / "sweep"
    setting = f"cluster.exclusive={str(exclusive).lower()}"
    run = dnnbench("sweep", *NOOP, *ON_SLURM, setting, "--sweep-dir", str(sweep), cwd=REPO, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    neighbour = None
    try:
        (cell,) = wait_until(
            lambda: [r for r in squeue_names(job_prefix(sweep)) if r["State"] == "RUNNING"],
            timeout=300, what="the cell to run",
        )  # fmt: skip
        node = _squeue(cell["JobID"], "%N")
        neighbour = _sbatch_neighbour(node, tmp_path)
        if exclusive:
            # Slurm holds it while the cell has the node (it would have started in seconds).
            wait_until(lambda: _squeue(neighbour, "%r") in ("Resources", "Priority"), timeout=60, what="a reason")
            assert _squeue(neighbour, "%T") == "PENDING"
        else:
            wait_until(lambda: _squeue(neighbour, "%T") == "RUNNING", timeout=120, what="the neighbour to run")
        gate.touch()
        _completed(sweep, env)
    finally:
        gate.touch()
        if neighbour:
            scancel(neighbour)
    (attempt,) = sweep.glob("cells/*/attempt_0")
    record = json.loads((attempt / "colocation_node0.json").read_text())
    assert record["node"] == node and record["before"]["error"] is None and record["after"]["error"] is None
    others = {job["job_id"] for moment in ("before", "after") for job in record[moment]["jobs"]}
    if exclusive:
        assert others == set(), record
    else:
        assert neighbour in others, record
    aggregated = dnnbench("aggregate", str(sweep), "--no-figures", "--no-progress", cwd=REPO)
    assert aggregated.returncode == 0, aggregated.stderr
    with open(sweep / "results" / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        assert ("other Slurm job(s) on its node(s)" in row["busy"]) is not exclusive, row["busy"]
        assert ("measured beside other work" in row["confound"]) is not exclusive, row["confound"]


# ------------------------------------------------------------------ the batch script (no Slurm) ---
def _script(tmp_path: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> list[str]:
    folder = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
    code = cli.main(["sweep", *NOOP, "cluster=slurm", *overrides, "--dry-run", "--sweep-dir", str(folder)])
    assert code == 0, capsys.readouterr().err
    return [path.read_text() for path in sorted((folder / "jobs").glob("*.sh"))]


def test_the_launcher_step_asks_for_the_jobs_cpus_per_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (script,) = _script(tmp_path, capsys, "gpus=3", "cluster.cpus_per_gpu=4", "cluster.request_gpus=false")
    assert "#SBATCH --cpus-per-task=12\n" in script
    (srun,) = [line for line in script.splitlines() if line.startswith("exec srun ")]
    assert " --cpus-per-task=12 " in srun


def test_exclusive_renders_whole_nodes_and_is_part_of_the_cells_identity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scripts = _script(tmp_path, capsys, "cluster.exclusive=true,false")
    assert sorted("#SBATCH --exclusive\n" in s for s in scripts) == [False, True], "one array per setting"
    shared = resolved(compose([*NOOP, "cluster=slurm"]))
    alone = resolved(compose([*NOOP, "cluster=slurm", "cluster.exclusive=true"]))
    assert shared["cluster"]["exclusive"] is False and cell_id(alone) != cell_id(shared)
    # A cell planned before the key existed keeps its id (and its results).
    before = without_added_defaults(shared)
    assert "exclusive" not in before["cluster"] and cell_id(before) == cell_id(shared)


@pytest.mark.parametrize(
    ("preset", "exclusive"), [("lisa", True), ("snellius", True), ("slurm", False), ("local", False)]
)
def test_the_study_clusters_take_whole_nodes(preset: str, exclusive: bool) -> None:
    assert resolved(compose([*NOOP, f"cluster={preset}"]))["cluster"]["exclusive"] is exclusive
