"""Issue #8 on the real dev Slurm cluster, at CI scale: array splitting and queue limits.

The full-scale runs (2,500 and 10,000 cells, dnnbench vs hydra-submitit-launcher) are in
``benchmarks/sweep_scale.py``; here the same paths run on a few noop cells (``framework=noop``:
each array task writes valid rank dumps without torch, in well under a second).

- MaxArraySize cannot be lowered without restarting the cluster, so the split is checked by
  ``split_groups`` directly and by a dry run one cell over the cluster's real MaxArraySize.
- The queue limit is a real per-user ``MaxSubmitJobs`` set with ``sacctmgr`` (the dev cluster
  does not enforce it, but the submitting side reads it as a user on a real cluster would):
  30 cells with room for 10 → 10 submitted, 20 reported, exit 0; the limit is lifted and the
  same command submits the other 20; all 30 complete, and the ledger, ``status`` and sacct agree.
"""

from __future__ import annotations

import getpass
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from slurm_fixtures import (  # noqa: F401 - slurm_cluster is a fixture
    dnnbench,
    ledger_rows,
    sacct_jobs,
    scancel,
    slurm_cluster,
    status_json,
    wait_until,
)

from orchestrator.backends.base import CellJob, Shape, ShapeGroup
from orchestrator.backends.slurm import split_groups
from orchestrator.backends.slurm_limits import read_limits

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

NOOP = [
    "framework=noop", "model=resnet18", "dataset=synthetic", "cluster=slurm", "cluster.request_gpus=false",
    "cluster.cpus_per_gpu=1", "cluster.time_limit_min=5", "model.time_limit_min=null", "gpus=1",
    "steps=1", "val_steps=2", "warmup_steps=0", "cluster.array_parallelism=8",
]  # fmt: skip


def _shape(nodes: int) -> Shape:
    return Shape(nodes, 1, 1, None, 5, None, None, None, None, False)


def test_split_groups_cuts_each_shape_at_the_limit_in_order() -> None:
    cells = {n: [CellJob(f"c{n}-{i}", "", "", {}) for i in range(2500 if n == 1 else 1001)] for n in (1, 2)}
    groups = [ShapeGroup(_shape(1), cells[1]), ShapeGroup(_shape(2), cells[2])]
    arrays = split_groups(groups, 1001)
    assert [(g.shape.nodes, len(g.cells)) for g in arrays] == [(1, 1001), (1, 1001), (1, 498), (2, 1001)]
    assert [c for g in arrays[:3] for c in g.cells] == cells[1]  # every cell once, in planning order
    assert [len(g.cells) for g in split_groups(groups, 5000)] == [2500, 1001]


def test_dry_run_splits_at_the_clusters_max_array_size(slurm_cluster, tmp_path: Path) -> None:  # noqa: F811
    limit = read_limits().max_array_size  # read from the real scontrol show config
    sweep = tmp_path / "split"
    result = dnnbench("sweep", *NOOP, f"seed=range(0,{limit + 1})", "--dry-run", "--sweep-dir", str(sweep))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"dry run: {limit + 1} cells, 2 array(s) in 1 shape(s)" in result.stdout
    arrays = sorted(
        re.search(r"^#SBATCH --array=(\S+)$", p.read_text(), re.M).group(1) for p in (sweep / "jobs").glob("*.sh")
    )
    assert arrays == sorted([f"0-{limit - 1}%8", "0-0%8"])


# ------------------------------------------------------------------------- queue limits ---
def _sacctmgr_max_submit(user: str, value: int) -> None:
    result = subprocess.run(
        ["sacctmgr", "-i", "modify", "user", user, "set", f"MaxSubmitJobs={value}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def _queued_of(user: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-u", user, "-o", "%i"], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.fixture
def max_submit_jobs(slurm_cluster):  # noqa: F811
    """Set the user's MaxSubmitJobs with sacctmgr; always lifted again (-1) afterwards."""
    user = getpass.getuser()
    probe = subprocess.run(["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", "format=User"],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    if probe.returncode != 0 or user not in probe.stdout.split():
        pytest.skip(f"no association for {user} in the accounting database (sacctmgr: {probe.stderr.strip()})")
    try:
        yield lambda value: _sacctmgr_max_submit(user, value)
    finally:
        _sacctmgr_max_submit(user, -1)


def test_queue_limit_submits_what_fits_reports_the_rest_then_the_rerun_submits_them(
    max_submit_jobs, tmp_path: Path
) -> None:
    user = getpass.getuser()
    # The limit counts the user's queued jobs: start from none, so room is exactly the limit.
    wait_until(lambda: not _queued_of(user), timeout=180, interval=3, what=f"{user}'s queue to empty")

    # ...and MaxJobCount must not be the tighter limit (ended jobs count for MinJobAge=300 s).
    def room_for_30() -> bool:
        room = read_limits().room
        return room is None or room >= 30

    wait_until(room_for_30, timeout=330, interval=10, what="MaxJobCount room for 30 jobs")
    max_submit_jobs(10)
    assert read_limits().max_submit_jobs == 10
    sweep = tmp_path / "limited"
    command = ["sweep", *NOOP, "seed=range(0,30)", "--sweep-dir", str(sweep)]
    job_ids: list[str] = []
    try:
        first = dnnbench(*command)
        assert first.returncode == 0, first.stderr[-2000:]
        assert "Traceback" not in first.stderr
        assert "submitted 10 cell(s) as job(s)" in first.stdout, first.stdout
        assert re.search(r"^20 cell\(s\) not submitted: the queue is full \(.*MaxSubmitJobs=10 \(0 yours queued\)",
                         first.stdout, re.M), first.stdout  # fmt: skip
        submissions = ledger_rows(sweep, "SELECT * FROM submissions")
        assert [s["state"] for s in submissions] == ["submitted"]
        job_ids = [s["job_id"] for s in submissions]
        assert len(ledger_rows(sweep, "SELECT * FROM attempts")) == 10
        states = Counter(s["state"] for s in status_json(sweep))
        assert states["missing"] == 20 and sum(states.values()) == 30, states

        max_submit_jobs(-1)
        second = dnnbench(*command)
        assert second.returncode == 0, second.stderr[-2000:]
        assert "10 cell(s) already submitted earlier: left alone" in second.stdout
        assert "submitted 20 cell(s) as job(s)" in second.stdout
        assert "not submitted" not in second.stdout
        submissions = ledger_rows(sweep, "SELECT * FROM submissions ORDER BY submission_id")
        job_ids = [s["job_id"] for s in submissions]
        assert [s["state"] for s in submissions] == ["submitted", "submitted"]
        arrays = [re.search(r"^#SBATCH --array=(\S+)$", Path(s["script"]).read_text(), re.M).group(1)
                  for s in submissions]  # fmt: skip
        assert arrays == ["0-9%8", "0-19%8"]

        waited = dnnbench("wait", str(sweep), "--timeout", "150", "--interval", "3", timeout=200)
        assert waited.returncode == 0, waited.stdout + waited.stderr
        statuses = status_json(sweep)
        assert Counter(s["state"] for s in statuses) == {"completed": 30}
        attempts = ledger_rows(
            sweep, "SELECT a.cell_id, a.attempt, a.array_index, s.job_id FROM attempts a JOIN submissions s "
            "USING (submission_id)",
        )  # fmt: skip
        assert len(attempts) == 30 and {a["attempt"] for a in attempts} == {0}
        in_ledger = {a["cell_id"]: f"{a['job_id']}_{a['array_index']}" for a in attempts}
        assert {s["cell_id"]: s["job"] for s in statuses} == in_ledger

        def completed_in_sacct() -> list[dict[str, str]] | None:
            done = [r for r in sacct_jobs(job_ids) if r["State"] == "COMPLETED"]
            return done if len(done) == 30 else None

        records = wait_until(completed_in_sacct, timeout=60, interval=3, what="sacct: 30 COMPLETED tasks")
        assert {r["JobID"] for r in records} == set(in_ledger.values())
        aggregated = dnnbench("aggregate", str(sweep), "--out", str(tmp_path / "results"), "--no-figures",
                              "--no-progress", timeout=200)  # fmt: skip
        assert aggregated.returncode == 0, aggregated.stderr[-2000:]
        assert "30 complete cell(s)" in aggregated.stdout, aggregated.stdout
    finally:
        scancel(*job_ids)
