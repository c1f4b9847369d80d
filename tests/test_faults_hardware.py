"""Issue 12 §5 and §6 as named faults: a sweep over hardware keeps its hardware.

A cell's id includes every key that chooses or describes what it runs on (cluster profile,
partition, constraint, GPU type and count, CPUs and memory per GPU, setup lines); grid points
that differ only in scheduling keys are one cell, and the merge is printed. A sweep folder
planned under the old ids is refused, never continued under new ones. The results table has a
``partition`` column and the confound check flags rows compared across partitions. Also here:
the reason a refused ``srun`` left in the task's log (§6), and ``compare`` on disjoint grids.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import synthetic_sweeps as synthetic
from slurm_fixtures import dnnbench as slurm_dnnbench
from slurm_fixtures import ledger_rows, slurm_cluster, wait_until  # noqa: F401 - slurm_cluster is a fixture

from jobs.schema import without_added_defaults
from orchestrator import cli
from orchestrator.backends.slurm import scheduler_log_reason
from orchestrator.cell_identity import CELL_ID_SCHEME, SCHEDULING_KEYS, cell_id
from orchestrator.config import compose, resolved
from orchestrator.paths import SweepPaths

DNNBENCH = [sys.executable, "-m", "orchestrator.cli"]
CELL_LINE = re.compile(r"^([0-9a-f]{12})  (\S+)", re.MULTILINE)
SLURM = ["cluster=slurm", "framework=noop"]


def dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> tuple[list[str], str]:
    """(cell ids, stdout) of `dnnbench sweep --dry-run --list` in a new folder."""
    folder = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
    code = cli.main(["sweep", *overrides, "--dry-run", "--list", "--sweep-dir", str(folder)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return [match.group(1) for match in CELL_LINE.finditer(out)], out


# --------------------------------------------------------------------- hardware is identity ---
HARDWARE_AXES = {
    "partition": "cluster.partition=gpu,gpu_a100",
    "constraint": "cluster.constraint=a100,h100",
    "GPU type": "cluster.gpu_type=a100,h100",
    "GPUs a node": "cluster.gpus_per_node=4,8",
    "CPUs a GPU": "cluster.cpus_per_gpu=2,8",
    "memory a GPU": "cluster.mem_per_gpu_gb=16,64",
    "GPUs requested or not": "cluster.request_gpus=true,false",
    "setup lines (module versions)": "cluster.setup=[module load CUDA/11.8],[module load CUDA/12.1]",
    "interconnect (pipeline planner)": "cluster.interconnect_gbps=12.5,25",
}


@pytest.mark.parametrize("axis", sorted(HARDWARE_AXES))
def test_a_sweep_over_a_hardware_key_keeps_one_cell_per_value(
    axis: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids, out = dry_run(tmp_path, capsys, *SLURM, HARDWARE_AXES[axis])
    assert len(ids) == len(set(ids)) == 2, out
    assert "note:" not in out


def test_two_partitions_are_two_cells_each_submitted_to_its_partition(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids, out = dry_run(tmp_path, capsys, *SLURM, "cluster.partition=gpu,gpu_a100")
    assert len(set(ids)) == 2, out
    scripts = sorted((tmp_path / "s0" / "jobs").glob("*.sh"))
    partitions = sorted(line for s in scripts for line in s.read_text().splitlines() if "--partition=" in line)
    assert partitions == ["#SBATCH --partition=gpu", "#SBATCH --partition=gpu_a100"]


def test_two_cluster_profiles_are_two_cells(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids, out = dry_run(tmp_path, capsys, "framework=noop", "cluster=lisa,snellius")
    assert len(set(ids)) == 2, out


def test_cells_with_their_own_setup_lines_get_their_own_array(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One shape, two setups: each array's script loads its own cells' modules, not the first cell's."""
    dry_run(tmp_path, capsys, *SLURM, "cluster.setup=[module load CUDA/11.8],[module load CUDA/12.1]")
    scripts = [p.read_text() for p in sorted((tmp_path / "s0" / "jobs").glob("*.sh"))]
    assert len(scripts) == 2
    assert sorted(line for s in scripts for line in s.splitlines() if line.startswith("module")) == [
        "module load CUDA/11.8", "module load CUDA/12.1",
    ]  # fmt: skip


def test_a_gpu_type_is_requested_as_a_typed_gres(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dry_run(tmp_path, capsys, *SLURM, "cluster.gpu_type=a100", "gpus=2")
    (script,) = (tmp_path / "s0" / "jobs").glob("*.sh")
    assert "#SBATCH --gpus-per-node=a100:2\n" in script.read_text()


def test_a_gpu_type_without_a_gpu_request_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["sweep", *SLURM, "cluster.gpu_type=a100", "cluster.request_gpus=false", "--sweep-dir",
                     str(tmp_path / "s")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "cluster.gpu_type=a100 with cluster.request_gpus=false" in err, err
    assert not (tmp_path / "s").exists()


def test_a_sweep_over_backends_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The backend comes from the cells: local and Slurm cells in one sweep would run on one of them."""
    code = cli.main(["sweep", "framework=noop", "cluster=local,slurm", "--sweep-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 1 and "different backends (local, slurm)" in err, err
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------ scheduling keys merge, loudly ---
SCHEDULING_AXES = {
    "cluster.time_limit_min": "10,20",
    "cluster.account": "proj_a,proj_b",
    "cluster.qos": "low,high",
    "cluster.max_requeues": "0,3",
    "cluster.signal_delay_s": "30,90",
    "cluster.array_parallelism": "4,64",
    "cluster.ssh_port": "22,2222",
    "cluster.scratch": "/tmp/a,/tmp/b",
    "model.time_limit_min": "10,20",
}


def test_every_scheduling_key_is_tested() -> None:
    assert set(SCHEDULING_AXES) | {"cluster.ssh_identity_file"} == set(SCHEDULING_KEYS)


MERGE_REASON = "scheduling keys or knobs their framework does not read"


@pytest.mark.parametrize("key", sorted(SCHEDULING_AXES))
def test_points_differing_in_a_scheduling_key_merge_with_a_note(
    key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids, out = dry_run(tmp_path, capsys, *SLURM, f"{key}={SCHEDULING_AXES[key]}")
    assert len(ids) == 1, out
    first = SCHEDULING_AXES[key].split(",")[0]
    assert f"note: 2 grid points differ only in {MERGE_REASON} ({key}): merged into 1 cell" in out, out
    assert f"{key}={first}," in out  # which value the cell runs with


def test_the_merge_note_counts_grid_points_not_repeats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids, out = dry_run(tmp_path, capsys, *SLURM, "cluster.time_limit_min=10,20,30", "seed=1,2", "repeats=2")
    assert len(ids) == 4, out  # 2 seeds × 2 repeats
    assert f"6 grid points differ only in {MERGE_REASON} (cluster.time_limit_min): merged into 2 cells" in out


def test_points_differing_in_another_frameworks_knobs_merge_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ddp cell reads no horovod knob: sweeping one gives one ddp cell (said), and a horovod cell per value."""
    ids, out = dry_run(tmp_path, capsys, *SLURM, "framework=ddp,horovod", "horovod.fusion_threshold_mb=16,32")
    assert len(ids) == 3, out
    assert f"2 grid points differ only in {MERGE_REASON} (horovod.fusion_threshold_mb): merged into 1 cell" in out


def test_one_config_written_twice_is_one_cell_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids, out = dry_run(tmp_path, capsys, *SLURM, "model=resnet18", "model.name=resnet18,resnet18")
    assert len(ids) == 1
    assert "note: 2 grid points are the same config written differently: merged into 1 cell" in out


# ------------------------------------------------------------------- sweeps of the old ids ---
def scheme_1_id(config: dict) -> str:
    """How the release before gave cell ids: the config without `cluster`."""
    measured = {k: v for k, v in without_added_defaults(config).items() if k != "cluster"}
    return hashlib.sha256(json.dumps(measured, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def test_the_new_ids_differ_from_the_old_so_old_folders_cannot_be_continued() -> None:
    config = resolved(compose(["framework=noop"]))
    assert cell_id(config) != scheme_1_id(config)


@pytest.mark.parametrize(
    ("scheme", "says"),
    [(None, "an older dnnbench (cell id scheme 1;"), (2, "an older dnnbench (cell id scheme 2;"),
     (CELL_ID_SCHEME + 1, "another dnnbench")],
)  # fmt: skip
def test_a_sweep_folder_of_another_id_scheme_is_refused_not_rerun(
    scheme: int | None, says: str, tmp_path: Path
) -> None:
    folder = tmp_path / "sweep"
    command = [*DNNBENCH, "sweep", "framework=noop", "--sweep-dir", str(folder)]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((folder / "sweep.json").read_text())
    assert manifest["cell_id_scheme"] == CELL_ID_SCHEME == 3
    if scheme is None:  # what the release before wrote: no scheme
        del manifest["cell_id_scheme"]
    else:
        manifest["cell_id_scheme"] = scheme
    (folder / "sweep.json").write_text(json.dumps(manifest))
    attempts_before = ledger_rows(folder, "SELECT cell_id, attempt FROM attempts")
    for extra in ([], ["--dry-run"]):
        again = subprocess.run(command + extra, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert again.returncode == 1, again
        assert again.stderr.startswith("Error: ") and says in again.stderr and "new --sweep-dir" in again.stderr
        assert "Traceback" not in again.stderr
    assert ledger_rows(folder, "SELECT cell_id, attempt FROM attempts") == attempts_before
    assert len(list((folder / "cells").iterdir())) == 1
    status = subprocess.run([*DNNBENCH, "status", str(folder)], cwd=tmp_path, capture_output=True, text=True)
    assert status.returncode == 0 and "1 completed" in status.stdout, status


# ---------------------------------------------------------------- partition in the results ---
def _synthetic_sweep(root: Path, partitions: dict[str, tuple[int, ...]], env: dict | None = None) -> Path:
    for partition, gpus in partitions.items():
        for n in gpus:
            cfg = synthetic.config(**{"gpus": n, "cluster.partition": partition or None})
            synthetic.write_cell(root, cfg, step_times=[[0.3 * (1 + 0.1 * n)] * 6] * n, environment=env)
    return root


def _aggregate(folder: Path, says: str = "") -> list[dict[str, str]]:
    run = subprocess.run([*DNNBENCH, "aggregate", str(folder), "--no-figures", "--no-progress"], capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert says in run.stdout + run.stderr, run.stdout
    with open(folder / "results" / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_results_have_a_partition_column_and_rows_across_partitions_are_flagged(tmp_path: Path) -> None:
    folder = _synthetic_sweep(tmp_path / "s", {"gpu": (1, 2, 4), "gpu_a100": (1, 2)})
    says = "Confound: partition (the kind of node) differs between compared cells: gpu (6 rows), gpu_a100 (4 rows)."
    rows = [r for r in _aggregate(folder, says) if r["phase"] == "train"]
    assert sorted((r["partition"], r["world_size"]) for r in rows) == [
        ("gpu", "1"), ("gpu", "2"), ("gpu", "4"), ("gpu_a100", "1"), ("gpu_a100", "2"),
    ]  # fmt: skip
    for row in rows:
        flagged = "partition: gpu_a100 vs gpu" in row["confound"]
        assert flagged == (row["partition"] == "gpu_a100"), row
    # A speedup is taken against the 1-process row of the same partition.
    key_of = {(r["partition"], r["world_size"]): r["config_key"] for r in rows}
    a100_two = next(r for r in rows if (r["partition"], r["world_size"]) == ("gpu_a100", "2"))
    assert a100_two["baseline_config_key"] == key_of[("gpu_a100", "1")]
    assert "cfg.cluster.partition" not in rows[0]


def test_one_partition_is_no_confound(tmp_path: Path) -> None:
    rows = _aggregate(_synthetic_sweep(tmp_path / "s", {"gpu": (1, 2)}))
    assert {r["partition"] for r in rows} == {"gpu"} and not any(r["confound"] for r in rows)
    rows = _aggregate(_synthetic_sweep(tmp_path / "d", {"": (1, 2)}))  # the cluster's default partition
    assert {r["partition"] for r in rows} == {""} and not any(r["confound"] for r in rows)


# ---------------------------------------------------------------------- compare, disjoint grids ---
def _compare(a: Path, b: Path, out: Path) -> tuple[str, list[dict[str, str]]]:
    run = subprocess.run([*DNNBENCH, "compare", str(a), str(b), "--out", str(out)], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    with open(out, newline="") as handle:
        return run.stdout, list(csv.DictReader(handle))


def test_compare_of_disjoint_grids_says_only_which_side_has_each_row(tmp_path: Path) -> None:
    a = _synthetic_sweep(tmp_path / "a", {"gpu": (1,)})
    b = _synthetic_sweep(tmp_path / "b", {"gpu": (2,)})
    for folder in (a, b):
        _aggregate(folder)
    text, rows = _compare(a, b, tmp_path / "cmp.csv")
    assert sorted(r["significant"] for r in rows) == ["only in A", "only in A", "only in B", "only in B"]
    assert all(r["environment_differs"] == "False" and r["ratio"] == "" for r in rows), rows
    table = [line for line in text.splitlines() if line.startswith("| ddp")]
    # No environment difference to name, and no step to compare ("what changed": –).
    assert len(table) == 4 and all(line.endswith("|  | – |") for line in table), table
    assert "Confound" not in text


def test_compare_still_flags_matched_rows_of_different_environments(tmp_path: Path) -> None:
    other_env = {**synthetic.BASE_ENVIRONMENT, "torch": "0.0.1-other"}
    a = _synthetic_sweep(tmp_path / "a", {"gpu": (1, 2)})
    b = _synthetic_sweep(tmp_path / "b", {"gpu": (1, 4)}, env=other_env)
    for folder in (a, b):
        _aggregate(folder)
    text, rows = _compare(a, b, tmp_path / "cmp.csv")
    matched = [r for r in rows if r["world_size"] == "1"]
    unmatched = [r for r in rows if r["world_size"] != "1"]
    assert matched and all(r["environment_differs"] == "True" for r in matched)
    assert unmatched and all(r["environment_differs"] == "False" for r in unmatched)
    assert "Confound: some matched rows ran in different environments" in text


def test_compare_pairs_rows_by_partition_when_both_sides_swept_partitions(tmp_path: Path) -> None:
    a = _synthetic_sweep(tmp_path / "a", {"gpu": (1,), "gpu_a100": (1,)})
    b = _synthetic_sweep(tmp_path / "b", {"gpu": (1,), "gpu_a100": (1,)})
    for folder in (a, b):
        _aggregate(folder)
    _, rows = _compare(a, b, tmp_path / "cmp.csv")
    assert len(rows) == 4 and all(r["significant"] not in ("only in A", "only in B") for r in rows)
    assert sorted(r["partition"] for r in rows) == ["gpu", "gpu", "gpu_a100", "gpu_a100"]


# -------------------------------------------------------------- why a refused srun failed (§6) ---
SRUN_REFUSED = (
    "srun: error: Step requested gres_per_node=gpu:8 is more than the job's gres_per_node=gpu:1\n"
    "srun: error: Unable to create step for job 41: Invalid generic resource (gres) specification\n"
)
LOG_CASES = {
    "refused srun": ({"err": SRUN_REFUSED}, "srun: error: Unable to create step for job 41", "err"),
    "traceback before srun's exit code": (
        {"err": "Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: NCCL error 2\n"
                "srun: error: node1: task 0: Exited with exit code 1\n", "out": "step 1\n"},
        "RuntimeError: NCCL error 2", "err"),
    "bash traces and blank lines": (
        {"err": "+ export X=1\n\nslurmstepd: error: *** JOB 12 ON node1 CANCELLED AT 2026-01-01T00:00:00 DUE TO "
                "TIME LIMIT ***\n+ echo done\n\n"},
        "slurmstepd: error: *** JOB 12 ON node1 CANCELLED AT", "err"),
    "requeued: the latest run's reason": (
        {"err": "OSError: disk full\nsrun: error: node1: task 0: Exited with exit code 1\n"
                "ValueError: the second run's reason\n"},
        "ValueError: the second run's reason", "err"),
    "no error word: the last line that is not noise": (
        {"err": "srun: error: node1: task 0: Exited with exit code 143\n",
         "out": "dnnbench: time limit near, no requeue left\n+ true\n"},
        "dnnbench: time limit near, no requeue left", "out"),
    "a progress bar's last drawing": ({"out": "step 1/9\rstep 9/9\rKilled\n"}, "Killed", "out"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(LOG_CASES))
def test_the_reason_in_a_tasks_log_is_found(case: str, tmp_path: Path) -> None:
    logs, expected, suffix = LOG_CASES[case]
    for name, text in logs.items():
        (tmp_path / f"41_3.{name}").write_text(text)
    (tmp_path / "41_4.err").write_text("srun: error: Unable to create step for another task\n")
    found = scheduler_log_reason(tmp_path, "41_3")
    assert found is not None and found[0].startswith(expected), found
    assert found[1] == tmp_path / f"41_3.{suffix}"


def test_no_reason_without_logs_or_with_noise_only(tmp_path: Path) -> None:
    assert scheduler_log_reason(tmp_path, "41_3") is None
    (tmp_path / "41_3.err").write_text("\n+ set -e\nsrun: error: node1: task 0: Exited with exit code 1\n")
    (tmp_path / "41_3.out").write_text("")
    assert scheduler_log_reason(tmp_path, "41_3") is None


def test_a_long_log_is_read_from_its_end_only(tmp_path: Path) -> None:
    (tmp_path / "7_0.err").write_text("ValueError: old\n" + "x" * 5_000_000 + "\nRuntimeError: " + "y" * 2000 + "\n")
    found = scheduler_log_reason(tmp_path, "7_0")
    assert found is not None and found[0].startswith("RuntimeError: yyy") and len(found[0]) == 500


# ------------------------------------------------------------------- the real dev cluster ---
def sweep_and_wait(folder: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """Submit a noop sweep of the dev cluster into ``folder``; `dnnbench wait`'s result."""
    args = ["sweep", *SLURM, "cluster.cpus_per_gpu=1", "model.time_limit_min=5", *overrides]
    run = slurm_dnnbench(*args, "--sweep-dir", str(folder), cwd=folder.parent)
    assert run.returncode == 0, run.stderr
    return slurm_dnnbench("wait", str(folder), "--timeout", "180", "--interval", "2", cwd=folder.parent, timeout=240)


@pytest.mark.slurm
def test_a_refused_srun_leaves_its_reason_where_status_can_show_it(slurm_cluster, tmp_path: Path) -> None:  # noqa: F811
    """The batch step runs, its srun asks for 8 GPUs of a 1-GPU job: Slurm refuses the step."""
    folder = tmp_path / "refused"
    waited = sweep_and_wait(folder, "gpus=1", "cluster.setup=['export SLURM_GRES=gpu:8']")
    assert waited.returncode != 0, waited.stdout
    statuses = json.loads(slurm_dnnbench("status", "--json", str(folder), cwd=tmp_path).stdout)
    assert [s["state"] for s in statuses] == ["failed"]
    (row,) = ledger_rows(
        folder, "SELECT s.job_id, a.array_index FROM attempts a JOIN submissions s USING (submission_id)"
    )
    key = f"{row['job_id']}_{row['array_index']}"
    found = scheduler_log_reason(SweepPaths(folder), key)
    assert found is not None, list((folder / "jobs").iterdir())
    assert found == (
        f"srun: error: Unable to create step for job {row['job_id']}: Invalid generic resource (gres) specification",
        folder / "jobs" / f"{key}.err",
    )
    # `status` shows that line and where it is, not only the scheduler's word.
    assert statuses[0]["detail"].startswith(f"{found[0]} ({found[1]})"), statuses[0]


@pytest.mark.slurm
def test_a_sweep_over_partitions_runs_each_cell_on_its_partition(slurm_cluster, tmp_path: Path) -> None:  # noqa: F811
    folder = tmp_path / "partitions"
    waited = sweep_and_wait(folder, "cluster.request_gpus=false", "cluster.partition=debug,gpu")
    assert waited.returncode == 0, (waited.stdout, waited.stderr)
    jobs = [r["job_id"] for r in ledger_rows(folder, "SELECT job_id FROM submissions")]

    def partitions() -> list[str]:  # sacct records a job a few seconds after it ends
        argv = ["sacct", "-n", "-X", "-P", "-j", ",".join(jobs), "-o", "Partition"]
        found = sorted(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split())
        return found if len(found) == len(jobs) else []

    assert wait_until(partitions, timeout=60, what="sacct records of both jobs") == ["debug", "gpu"]
    cells = {json.loads(p.read_text())["config"]["cluster"]["partition"] for p in folder.glob("cells/*/cell.json")}
    assert cells == {"debug", "gpu"}
