"""Issue #3 against the real dev Slurm cluster: submission, states, faults, resubmit, safety.

Nothing about Slurm is mocked: every sweep is the real ``dnnbench`` command line in a
subprocess (a login-node process of its own), every job runs real ranks (resnet18 on
synthetic data, a few steps), and every state comes from sacct/squeue and the files.
The only injected fault is the corrupt rank dump (a test-only ``sitecustomize`` hook that
truncates a dump the real ranks wrote, before the real judge reads it).

To keep the file within a few minutes on 2 cores, the two long-lived sweeps (the
acceptance sweep and the fault sweep) are submitted together by a module fixture, in
background threads, and the other tests run while their jobs do. Jobs submitted by the
kill-mid-submit test are held (``sbatch --hold`` in its PATH wrapper) and never run.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from slurm_fixtures import (  # noqa: F401 - slurm_cluster is a fixture
    dnnbench,
    hash_tree,
    job_prefix,
    ledger_rows,
    sacct_jobs,
    sacct_names,
    scancel,
    slurm_cluster,
    squeue_names,
    start_dnnbench,
    status_json,
    wait_until,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# The smallest real cell: one resnet18 rank on synthetic data, two timed steps.
TINY = [
    "framework=ddp", "model=resnet18", "dataset=synthetic", "batch_size=8", "steps=2", "val_steps=2",
    "warmup_steps=0", "dataset.train_samples=64", "dataset.val_samples=32", "cluster=slurm",
    "cluster.time_limit_min=10", "model.time_limit_min=null", "cluster.cpus_per_gpu=1",
    "device=cpu",  # the dev cluster's GPUs are fake: device=auto on a GPU allocation must fail no_gpu
]  # fmt: skip
# The fault sweep asks for no GPUs (CPU ranks), so it runs beside the main sweep's 8 fake GPUs.
CPU_ONLY = ["cluster.request_gpus=false"]
LONG_STEPS = "steps=100000"  # a cell that runs until it is stopped
# Over a 1-minute limit. Slurm sends USR2 up to 30 s early (its limit checks run every
# ~30 s): a delay of 20 s gives the signal 10-40 s into each run, after the task's handler is set.
OVER_TIME = [LONG_STEPS, "seed=2", "cluster.time_limit_min=1", "cluster.signal_delay_s=20", "cluster.max_requeues=1"]

# sitecustomize for the corrupt-dump fault: in the Slurm task process only, after the real
# launcher returned (real, valid dumps), cut rank 0's dump in half; the real judge then runs.
CORRUPT_HOOK = """
import os, sys
if os.environ.get("DNNBENCH_TEST_CORRUPT_DUMP") == "1" and "orchestrator.slurm_task" in sys.orig_argv:
    from orchestrator import runner
    _real = runner._run_logged
    def _corrupting(argv, env, log, echo):
        code = _real(argv, env, log, echo)
        dump = log.parent / "rank_0.json"
        if dump.exists():
            data = dump.read_bytes()
            dump.write_bytes(data[: len(data) // 2])
        return code
    runner._run_logged = _corrupting
"""


@dataclass
class Invocation:
    args: list[str]
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    outcomes_at_return: int = -1  # outcome.json files in the sweep when the command returned
    queued_at_return: int = -1  # the sweep's jobs squeue listed when the command returned


@dataclass
class Chain:
    """Several ``dnnbench sweep`` commands into one sweep folder, one after another, in a thread."""

    sweep: Path
    steps: list[tuple[list[str], dict[str, str] | None]]
    cwd: Path
    done: list[Invocation] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> Chain:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        for args, env in self.steps:
            inv = Invocation(["sweep", *args, "--sweep-dir", str(self.sweep)])
            started = time.monotonic()
            result = dnnbench(*inv.args, cwd=self.cwd, env=env, timeout=600)
            inv.seconds = time.monotonic() - started
            inv.outcomes_at_return = len(list(self.sweep.glob("cells/*/attempt_*/outcome.json")))
            inv.queued_at_return = len(squeue_names(job_prefix(self.sweep)))
            inv.returncode, inv.stdout, inv.stderr = result.returncode, result.stdout, result.stderr
            self.done.append(inv)
            if result.returncode != 0:
                return

    def join(self) -> list[Invocation]:
        assert self.thread is not None
        self.thread.join(timeout=900)
        for inv in self.done:
            assert inv.returncode == 0, f"dnnbench {' '.join(inv.args)} failed:\n{inv.stderr[-3000:]}"
        assert len(self.done) == len(self.steps)
        return self.done


@dataclass
class Sweeps:
    base: Path
    main: Chain
    faults: Chain
    hook_dir: Path


@pytest.fixture(scope="module")
def sweeps(slurm_cluster, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """Submit the acceptance sweep and the fault sweep at once; cancel whatever is left at the end."""
    base = tmp_path_factory.mktemp("slurm")
    tag = uuid.uuid4().hex[:6]
    hook_dir = base / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(CORRUPT_HOOK)
    pythonpath = os.pathsep.join(p for p in (str(hook_dir), os.environ.get("PYTHONPATH")) if p)
    corrupt_env = {**os.environ, "DNNBENCH_TEST_CORRUPT_DUMP": "1", "PYTHONPATH": pythonpath}
    main = Chain(
        base / f"main-{tag}",
        [
            ([*TINY, "gpus=1,2", "seed=0,1"], None),  # 4 cells, 2 shapes
            ([*TINY, "gpus=1", "nodes=2"], None),  # the 2-node cell: a third shape
        ],
        base,
    ).start()
    faults = Chain(
        base / f"faults-{tag}",
        [
            # cpu/2 steps: completes; cuda/*: raises on this CPU-only cluster; cpu/long: scancel'd.
            ([*TINY, *CPU_ONLY, "device=cpu,cuda", f"steps=2,{LONG_STEPS.split('=')[1]}"], None),
            # Over its 1-minute limit: USR2 ~10-40 s in, requeued once, then out of requeues.
            ([*TINY, *CPU_ONLY, *OVER_TIME], None),
            # Real ranks, then rank 0's dump is truncated (the hook) before the judge reads it.
            ([*TINY, *CPU_ONLY, "seed=1"], corrupt_env),
        ],
        base,
    ).start()
    yield Sweeps(base, main, faults, hook_dir)
    for chain in (main, faults):
        if chain.thread is not None:
            chain.thread.join(timeout=600)
        scancel(*{row["ArrayJobID"] for row in squeue_names(job_prefix(chain.sweep))})


def collect(sweep: Path) -> list:
    from orchestrator.paths import SweepPaths
    from orchestrator.status import collect as collect_statuses

    return collect_statuses(SweepPaths(sweep))


def terminal(sweep: Path, cell_ids: set[str] | None = None) -> list | None:
    """The statuses when every (chosen) cell is terminal, else None."""
    statuses = collect(sweep)
    chosen = [s for s in statuses if cell_ids is None or s.cell_id in cell_ids]
    return statuses if chosen and all(s.state in ("completed", "failed", "missing") for s in chosen) else None


def cell_of(sweep: Path, **wanted: object) -> str:
    """The id of the one cell whose config has these top-level values."""
    found = []
    for cell_file in sweep.glob("cells/*/cell.json"):
        doc = json.loads(cell_file.read_text())
        if all(doc["config"][k] == v for k, v in wanted.items()):
            found.append(doc["cell_id"])
    assert len(found) == 1, (wanted, found)
    return found[0]


# ------------------------------------------------------------------ acceptance: main sweep ---
def test_sweep_returns_before_jobs_finish_then_all_complete(sweeps: Sweeps) -> None:
    first, _second = sweeps.main.join()
    assert "submitted 4 cell(s)" in first.stdout and "check progress: dnnbench status" in first.stdout
    # Detached: the command returned while the cells were still queued or running.
    assert first.outcomes_at_return == 0, "the first sweep command waited for cells to finish"
    assert first.queued_at_return >= 1
    started = time.monotonic()
    waited = dnnbench("wait", str(sweeps.main.sweep), "--timeout", "420", "--interval", "3", timeout=480)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert waited.stdout.strip() == "5 completed"
    assert time.monotonic() - started < 420
    statuses = status_json(sweeps.main.sweep)
    assert [s["state"] for s in statuses] == ["completed"] * 5
    assert all(re.fullmatch(r"\d+_\d+", s["job"]) for s in statuses), statuses
    table = dnnbench("status", str(sweeps.main.sweep))
    assert table.returncode == 0 and "5 completed" in table.stdout


def test_one_array_per_resource_shape(sweeps: Sweeps) -> None:
    sweep = sweeps.main.sweep
    wait_until(lambda: terminal(sweep), timeout=420, what="main sweep terminal")
    submissions = ledger_rows(sweep, "SELECT * FROM submissions ORDER BY submission_id")
    assert [s["state"] for s in submissions] == ["submitted"] * 3
    tasks = ledger_rows(sweep, "SELECT submission_id, COUNT(*) AS n FROM attempts GROUP BY submission_id")
    assert sorted(t["n"] for t in tasks) == [1, 2, 2]
    job_ids = [s["job_id"] for s in submissions]

    def all_recorded() -> list[dict[str, str]] | None:
        rows = sacct_jobs(job_ids)
        return rows if len(rows) == 5 and all(r["State"] == "COMPLETED" for r in rows) else None

    rows = wait_until(all_recorded, timeout=60, what="sacct records of the 5 array tasks")
    by_job: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_job.setdefault(row["JobID"].split("_")[0], []).append(row)
    assert sorted(by_job) == sorted(job_ids)  # exactly three arrays, nothing else for this sweep
    names = {r["JobName"] for r in sacct_names(job_prefix(sweep))}
    assert names == {s["job_name"] for s in submissions}
    shapes = {}
    for submission in submissions:
        lines = by_job[submission["job_id"]]
        assert {r["JobName"] for r in lines} == {submission["job_name"]}
        gpus = re.search(r"gres/gpu=(\d+)", lines[0]["AllocTRES"])
        shapes[(int(lines[0]["NNodes"]), int(gpus.group(1)) if gpus else 0)] = len(lines)
    # (nodes, GPUs of the whole allocation) → array tasks: gpus=1 ×2 seeds, gpus=2 ×2 seeds, 2 nodes × 1 GPU.
    assert shapes == {(1, 1): 2, (1, 2): 2, (2, 2): 1}


def test_aggregate_gives_the_table(sweeps: Sweeps) -> None:
    sweep = sweeps.main.sweep
    wait_until(lambda: terminal(sweep), timeout=420, what="main sweep terminal")
    out = sweeps.base / "main-results"
    result = dnnbench("aggregate", str(sweep), "--out", str(out), "--no-figures", "--no-progress", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(out / "cells.csv") as handle:
        cells = list(csv.DictReader(handle))
    # One row per cell and phase (train, val): every cell of the sweep is in the table.
    assert {row["cell_id"] for row in cells} == {s.cell_id for s in collect(sweep)}
    assert {row["phase"] for row in cells} == {"train", "val"}
    assert (out / "results.csv").stat().st_size > 0


# ----------------------------------------------------------------------------- faults ---
def test_cell_that_raises_is_failed_with_its_traceback(sweeps: Sweeps) -> None:
    sweeps.faults.join()
    sweep = sweeps.faults.sweep
    raising = {cell_of(sweep, device="cuda", steps=2), cell_of(sweep, device="cuda", steps=100000)}
    wait_until(lambda: terminal(sweep, raising), timeout=300, what="the device=cuda cells to end")
    for status in status_json(sweep):
        if status["cell_id"] in raising:
            assert (status["state"], status["failure_class"]) == ("failed", "no_gpu"), status
            no_gpu = "jobs.failures.NoGpuError: device=cuda, but torch.cuda.is_available() is False"
            assert status["detail"].startswith(no_gpu), status
            assert status["traceback"].startswith("Traceback (most recent call last)")
            assert "jobs/strategies/base.py" in status["traceback"]
    wide = {**os.environ, "COLUMNS": "400"}  # rich folds cells at the 80 columns of a pipe
    table = dnnbench("status", str(sweep), env=wide)
    assert table.stdout.count("NoGpuError: device=cuda") >= 2, table.stdout


def test_scancel_gives_cancelled(sweeps: Sweeps) -> None:
    sweeps.faults.join()
    sweep = sweeps.faults.sweep
    cell = cell_of(sweep, device="cpu", steps=100000, seed=0)
    key = {s.cell_id: s.job for s in collect(sweep)}[cell]
    # Wait until it really runs (its launcher started), then cancel that one array task.
    wait_until(lambda: [r for r in squeue_names(job_prefix(sweep)) if r["JobID"] == key and r["State"] == "RUNNING"]
               and list(sweep.glob(f"cells/{cell}/attempt_0/launcher_node0.log")),
               timeout=300, what=f"{key} running")  # fmt: skip
    scancel(key)
    wait_until(lambda: terminal(sweep, {cell}), timeout=120, what=f"{key} to end after scancel")
    (status,) = [s for s in status_json(sweep) if s["cell_id"] == cell]
    assert (status["state"], status["failure_class"]) == ("failed", "cancelled"), status
    assert "CANCELLED" in status["detail"]


def test_time_limit_requeues_then_times_out(sweeps: Sweeps) -> None:
    sweeps.faults.join()
    sweep = sweeps.faults.sweep
    cell = cell_of(sweep, seed=2)
    wait_until(lambda: terminal(sweep, {cell}), timeout=240, interval=3, what="the over-time cell to end")
    (status,) = [s for s in status_json(sweep) if s["cell_id"] == cell]
    assert (status["state"], status["failure_class"]) == ("failed", "timeout"), status
    assert "no requeue left (1 of 1 used)" in status["detail"]
    # It was requeued once: the interrupted run was set aside, the rerun got the same attempt folder.
    folder = sweep / "cells" / cell
    assert (folder / "attempt_0.interrupted1").is_dir()
    array_job, index = status["job"].split("_")
    log = (sweep / "jobs" / f"{array_job}_{index}.err").read_text()
    assert "time limit near, requeue 1/1" in log and "time limit near, no requeue left" in log


def test_corrupt_rank_dump_is_bad_metrics(sweeps: Sweeps) -> None:
    sweeps.faults.join()
    sweep = sweeps.faults.sweep
    cell = cell_of(sweep, seed=1)
    wait_until(lambda: terminal(sweep, {cell}), timeout=300, what="the corrupt-dump cell to end")
    (status,) = [s for s in status_json(sweep) if s["cell_id"] == cell]
    assert (status["state"], status["failure_class"]) == ("failed", "bad_metrics"), status
    assert status["detail"].startswith("rank 0:"), status
    outcome = json.loads((sweep / "cells" / cell / "attempt_0" / "outcome.json").read_text())
    assert outcome["returncode"] == 0 and outcome["ranks_valid"] == 0


def test_resubmit_reruns_only_failed_cells_and_leaves_completed_bytes(sweeps: Sweeps) -> None:
    sweeps.faults.join()
    sweep = sweeps.faults.sweep
    long_cell = cell_of(sweep, device="cpu", steps=100000, seed=0)  # cancelled by test_scancel_gives_cancelled
    if not terminal(sweep, {long_cell}):  # this test run alone: cancel it here
        scancel({s.cell_id: s.job for s in collect(sweep)}[long_cell])
    statuses = wait_until(lambda: terminal(sweep), timeout=400, interval=3, what="fault sweep terminal")
    completed = {s.cell_id for s in statuses if s.state == "completed"}
    failed = {s.cell_id for s in statuses if s.state == "failed"}
    assert completed == {cell_of(sweep, device="cpu", steps=2, seed=0)}
    assert len(failed) == 5, statuses
    before = {cid: hash_tree(sweep / "cells" / cid) for cid in completed}
    attempts_before = ledger_rows(sweep, "SELECT cell_id, attempt, submission_id FROM attempts")
    result = dnnbench("resubmit", str(sweep), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    # The two device=cuda cells failed no_gpu: a plain retry cannot give this cluster a GPU.
    no_gpu = {cell_of(sweep, device="cuda", steps=2), cell_of(sweep, device="cuda", steps=100000)}
    assert "resubmitting 3 cell(s)" in result.stdout
    assert all(f"not retried: {cell} " in result.stdout for cell in no_gpu), result.stdout
    attempts_after = ledger_rows(sweep, "SELECT cell_id, attempt, submission_id FROM attempts")
    new = [a for a in attempts_after if a not in attempts_before]
    assert sorted(a["cell_id"] for a in new) == sorted(failed - no_gpu)
    assert all(a["attempt"] == 1 for a in new)
    # The long cells' reruns are not needed here: cancel them; the others run to their end.
    long_cells = {cell_of(sweep, device="cpu", steps=100000, seed=0), cell_of(sweep, seed=2)}
    rerun = {s.cell_id: s.job for s in collect(sweep)}
    scancel(*(rerun[c] for c in long_cells))
    statuses = wait_until(lambda: terminal(sweep), timeout=300, interval=3, what="resubmitted cells to end")
    by_id = {s.cell_id: s for s in statuses}
    bad = cell_of(sweep, seed=1)
    assert (by_id[bad].state, by_id[bad].attempt) == ("completed", 1)  # no hook this time: it completes
    assert all((by_id[c].failure_class, by_id[c].attempt) == ("no_gpu", 0) for c in no_gpu)
    assert {cid: hash_tree(sweep / "cells" / cid) for cid in completed} == before
    # The first attempts' folders are kept, untouched by the reruns.
    assert (sweep / "cells" / bad / "attempt_0" / "outcome.json").exists()


# -------------------------------------------------------------------- kill mid-submit ---
SBATCH_WRAPPER = """#!/bin/bash
# Test plumbing around the REAL sbatch: jobs are held (they never run: this test is about
# bookkeeping), and a slow login node can be simulated before or after sbatch answers.
state="$DNNBENCH_TEST_SBATCH_STATE"
n=$(( $(cat "$state/count" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$state/count"
if [[ "$n" == "${HANG_BEFORE:-}" ]]; then echo "hang-before $n" >> "$state/log"; sleep 600; fi
out=$(REAL_SBATCH --hold "$@") || exit $?
echo "answered $n $out" >> "$state/log"
if [[ "$n" == "${HANG_AFTER:-}" ]]; then sleep 600; fi
echo "$out"
"""


@pytest.fixture(scope="module")
def held_sweep(slurm_cluster, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """A 4-shape sweep whose submitting process is SIGKILLed twice, then rerun; its jobs are held."""
    base = tmp_path_factory.mktemp("slurm-kill")
    sweep = base / f"kill-{uuid.uuid4().hex[:6]}"
    wrapper_dir = base / "bin"
    wrapper_dir.mkdir()
    wrapper = wrapper_dir / "sbatch"
    wrapper.write_text(SBATCH_WRAPPER.replace("REAL_SBATCH", shutil.which("sbatch") or "sbatch"))
    wrapper.chmod(0o755)
    args = ["sweep", *TINY, *CPU_ONLY, "gpus=1", "cluster.mem_per_gpu_gb=1,2,3,4", "--sweep-dir", str(sweep)]
    log: list[str] = []

    def run(hang: dict[str, str], kill_when: str | None) -> subprocess.CompletedProcess[str] | None:
        state = base / f"state{len(log)}"
        state.mkdir()
        env = {**os.environ, **hang, "DNNBENCH_TEST_SBATCH_STATE": str(state),
               "PATH": f"{wrapper_dir}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
        if kill_when is None:
            done = dnnbench(*args, cwd=base, env=env, timeout=300)
            log.append((state / "log").read_text() if (state / "log").exists() else "")
            return done
        proc = start_dnnbench(*args, cwd=base, env=env)

        def reached() -> bool:
            text = (state / "log").read_text() if (state / "log").exists() else ""
            return kill_when in text or proc.poll() is not None

        try:
            wait_until(reached, timeout=240, interval=0.2, what=kill_when)
            assert proc.poll() is None, f"dnnbench ended before the kill: {proc.communicate()}"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the login-node process and the wrapper under it
            proc.communicate()
        log.append((state / "log").read_text())
        return None

    submissions = []
    # 1. Killed after the 2nd sbatch answered but before the ledger heard of it.
    run({"HANG_AFTER": "2"}, "answered 2")
    submissions.append(ledger_rows(sweep, "SELECT * FROM submissions ORDER BY submission_id"))
    # 2. Rerun, killed while its first sbatch (the 3rd shape) has not reached Slurm yet.
    run({"HANG_BEFORE": "1"}, "hang-before 1")
    submissions.append(ledger_rows(sweep, "SELECT * FROM submissions ORDER BY submission_id"))
    # 3. Rerun to the end.
    final = run({}, None)
    yield sweep, submissions, final, log
    scancel(*{row["ArrayJobID"] for row in squeue_names(job_prefix(sweep))})


def test_login_process_killed_mid_submit_rerun_submits_only_the_rest(held_sweep) -> None:
    sweep, (after_first, after_second), final, _log = held_sweep
    # After the first kill: shape 1 recorded, shape 2 in Slurm but only 'submitting' in the ledger.
    assert [s["state"] for s in after_first] == ["submitted", "submitting"]
    first_two = {s["job_name"] for s in after_first}
    # After the second kill: shape 2 recovered by its job name, shape 3 never reached Slurm.
    assert [s["state"] for s in after_second] == ["submitted", "submitted", "submitting"]
    assert after_second[1]["note"] == "recovered by job name"
    assert final is not None and final.returncode == 0, final
    assert "2 cell(s) already submitted earlier" in final.stdout
    rows = ledger_rows(sweep, "SELECT * FROM submissions ORDER BY submission_id")
    assert [(s["state"], s["note"]) for s in rows][2] == ("refused", "never reached Slurm")
    assert [s["state"] for s in rows] == ["submitted", "submitted", "refused", "submitted", "submitted"]
    # Slurm holds exactly one job per shape, each the ledger's, none twice.
    queued = squeue_names(job_prefix(sweep))
    assert sorted(r["JobName"] for r in queued) == sorted(s["job_name"] for s in rows if s["state"] == "submitted")
    assert {r["ArrayJobID"] for r in queued} == {s["job_id"] for s in rows if s["state"] == "submitted"}
    assert first_two <= {r["JobName"] for r in queued}
    # Every cell has exactly one live attempt.
    live = ledger_rows(sweep, "SELECT a.cell_id FROM attempts a JOIN submissions s USING (submission_id) "
                              "WHERE s.state != 'refused'")  # fmt: skip
    assert len(live) == len({a["cell_id"] for a in live}) == 4


# ------------------------------------------------------------------------ shell safety ---
def test_config_values_cannot_inject_shell_commands(slurm_cluster, tmp_path: Path) -> None:  # noqa: F811
    cases = {
        "partition": (["cluster.partition='x;touch PWNED'"], "cluster.partition='x;touch PWNED'"),
        "account": (["cluster.account='a$(touch PWNED)'"], "cluster.account="),
        "setup": (["cluster.setup=['module load x; touch PWNED']"], "cluster.setup line"),
    }  # a hostile sweep folder is rendered as itself and runs: tests/test_faults_input.py
    procs = {}
    for name, (overrides, _) in cases.items():
        cwd = tmp_path / name
        cwd.mkdir()
        folder = cwd / f"sweep-{name}"
        procs[name] = (start_dnnbench("sweep", *TINY, "gpus=1", *overrides, "--sweep-dir", str(folder), cwd=cwd),
                       folder)  # fmt: skip
    for name, (proc, folder) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        expected = cases[name][1]
        assert proc.returncode == 1, (name, stdout, stderr)
        assert stderr.startswith("Error:") and expected in stderr, (name, stderr)
        assert "would reach a shell" in stderr or "not a plain word" in stderr, (name, stderr)
        assert not list(tmp_path.rglob("PWNED*")), name
        assert not sacct_names(f"dnnbench-{folder.name}") and not squeue_names(f"dnnbench-{folder.name}")
        if folder.exists():  # the folder check comes after planning: nothing was submitted
            assert not ledger_rows(folder, "SELECT * FROM submissions")


def test_render_refuses_unsafe_values_even_past_validation(tmp_path: Path) -> None:
    """The batch-script renderer checks again (a config that skipped plan-time validation)."""
    from orchestrator.backends.base import CellJob, Shape, ShapeGroup
    from orchestrator.backends.slurm import render_script
    from orchestrator.errors import ConfigError
    from orchestrator.paths import SweepPaths

    config = {"gpus": 1, "nodes": 1, "model": {"time_limit_min": None},
              "cluster": {"cpus_per_gpu": 1, "time_limit_min": 5, "partition": "x;touch PWNED"}}  # fmt: skip
    group = ShapeGroup(Shape.of(config), [CellJob("c", "c", "c.json", config)])
    paths = SweepPaths(tmp_path / "ok")
    with pytest.raises(ConfigError, match=r"cluster\.partition"):
        render_script(paths, group, "n", tmp_path / "c.json")
    config["cluster"].update(partition=None, setup=["echo `touch PWNED`"])
    group = ShapeGroup(Shape.of(config), [CellJob("c", "c", "c.json", config)])
    with pytest.raises(ConfigError, match="not a plain word"):
        render_script(paths, group, "n", tmp_path / "c.json")
    config["cluster"]["setup"] = ["module load CUDA/12.1.1"]
    script = render_script(paths, group, "n", tmp_path / "c.json")
    assert "\nmodule load CUDA/12.1.1\n" in script
    assert not list(tmp_path.rglob("PWNED*"))


# ------------------------------------------------------------------------ without sacct ---
def path_without_sacct(folder: Path) -> str:
    """A PATH with every Slurm client but sacct (symlinks), and no /usr/bin or /bin."""
    folder.mkdir(exist_ok=True)
    real = Path(shutil.which("squeue") or "/usr/bin/squeue").parent
    for name in ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun", "salloc", "sattach", "sbcast",
                 "sprio", "sreport", "sshare", "sstat", "sdiag", "strigger", "sacctmgr"):  # fmt: skip
        if (real / name).exists():
            (folder / name).symlink_to(real / name)
    path = str(folder)
    assert shutil.which("sacct", path=path) is None and shutil.which("squeue", path=path) is not None
    return path


def test_status_and_wait_work_without_sacct(sweeps: Sweeps, held_sweep, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": path_without_sacct(tmp_path / "bin")}
    main = sweeps.main.sweep
    wait_until(lambda: terminal(main), timeout=420, what="main sweep terminal")
    # Ended jobs: squeue no longer lists them, the files say how they ended.
    assert [s["state"] for s in status_json(main, env=env)] == ["completed"] * 5
    started = time.monotonic()
    waited = dnnbench("wait", str(main), "--timeout", "60", "--interval", "1", env=env, timeout=120)
    assert (waited.returncode, waited.stdout.strip()) == (0, "5 completed"), waited
    assert time.monotonic() - started < 30
    # Live jobs: squeue alone says they are pending (the held sweep's jobs never run).
    held, *_ = held_sweep
    assert [s["state"] for s in status_json(held, env=env)] == ["pending"] * 4
    started = time.monotonic()
    waited = dnnbench("wait", str(held), "--timeout", "3", "--interval", "1", env=env, timeout=60)
    assert waited.returncode == 5 and "timeout: 4 pending" in waited.stderr, waited
    assert time.monotonic() - started < 30


# ---------------------------------------------------------------------------- dry run ---
def test_dry_run_writes_scripts_and_submits_nothing(slurm_cluster, tmp_path: Path) -> None:  # noqa: F811
    sweep = tmp_path / f"dry-{uuid.uuid4().hex[:6]}"
    result = dnnbench("sweep", *TINY, "gpus=1,2", "nodes=1,2", "cluster.setup=['module load foo']",
                      "--dry-run", "--sweep-dir", str(sweep), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "dry run: 4 cells, 4 array(s)" in result.stdout and "nothing submitted" in result.stdout
    scripts = sorted((sweep / "jobs").glob("*.sh"))
    assert len(scripts) == 4
    for script in scripts:
        text = script.read_text()
        assert "#SBATCH --array=0-0%" in text and "\nmodule load foo\n" in text
        # Slurm itself accepts each script (--test-only: validated and scheduled, never submitted).
        check = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and "to start at" in check.stderr, check.stderr
    assert not (sweep / "ledger.sqlite").exists() and not (sweep / "cells").exists()  # scripts only
    time.sleep(6)  # sacct records arrive 2-5 s after a submission: give any a chance to show
    assert sacct_names(job_prefix(sweep)) == [] and squeue_names(job_prefix(sweep)) == []
