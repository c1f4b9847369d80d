"""Benchmark (issues 8 and 12): sweeps at scale on the real dev Slurm cluster, noop cells.

Usage (each part prints markdown table rows; run them one at a time or together)::

    .venv/bin/python benchmarks/sweep_scale.py --dry-run-10k       # plan + --dry-run, issue 3's grid
    .venv/bin/python benchmarks/sweep_scale.py --dry-run-100k      # --dry-run of 100,000 cells: time, RSS, bytes
    .venv/bin/python benchmarks/sweep_scale.py --vs-hydra-1000     # time to queue 1,000 cells vs hydra
    .venv/bin/python benchmarks/sweep_scale.py --acceptance-2500   # 2,500 noop cells run for real
    .venv/bin/python benchmarks/sweep_scale.py --queue-10k         # time to queue 10,000 cells (held)
    .venv/bin/python benchmarks/sweep_scale.py --plan-fsync        # what fsync of the cell files costs planning

- ``--dry-run-10k``: ``dnnbench sweep GRID --dry-run`` of issue 3's 10,000-cell ddp grid
  (``benchmarks/slurm_scale.py``) in a fresh process; wall time and peak RSS (``wait4``).
  Targets < 10 s, < 1 GiB.
- ``--dry-run-100k`` (issue 12): ``dnnbench sweep GRID cluster=slurm --dry-run`` of two
  100,000-cell grids, each in a fresh process: ``framework=noop seed=range(0,100000)`` (one
  shape) and issue 3's ddp grid with 5,000 seeds (4 shapes). Wall time, peak RSS (``wait4``),
  what the sweep folder holds afterwards (bytes of its files, and what the disk gave it, as
  ``du`` counts) and how many lines the command printed. Targets < 30 s, < 1 GiB, < 200 MB, a
  summary (not a line per cell), and no ``cells/`` folder or ledger.
- ``--vs-hydra-1000``: side by side, 1,000 trivial cells each. dnnbench: ``dnnbench sweep
  framework=noop … seed=range(0,1000) cluster=slurm``. Hydra: a trivial ``@hydra.main`` app,
  ``-m x=range(0,1000) hydra/launcher=submitit_slurm``, in a throw-away venv the benchmark
  makes (hydra-core 1.3.8, hydra-submitit-launcher 1.2.0, submitit). Both submit held (a
  ``sbatch`` first on their PATH that adds ``--hold`` and execs the real one), so nothing runs
  and the cluster's queue, not the jobs, is what is measured. The clock runs from the command's
  start until all 1,000 array tasks of its jobs are listed by ``squeue -r`` (polled every
  0.2 s); hydra's launcher then keeps waiting for its jobs, so it is stopped (process group)
  and its jobs are cancelled. ``--rounds`` alternates which side goes first. Target: dnnbench
  ≥ 20× faster per cell, and its command returns without waiting for the jobs.
- ``--acceptance-2500``: issue 8's acceptance. 2,500 noop cells (one resource shape) submitted
  for real: arrays of ≤ MaxArraySize tasks (checked in every submitted script and in sacct),
  every cell completes (``dnnbench wait``), ``status --json`` agrees with the ledger cell by
  cell (attempt, ``<array job>_<index>``), sacct has 2,500 COMPLETED tasks, and ``dnnbench
  aggregate`` reads 2,500 complete cells.
- ``--queue-10k``: waits until the controller keeps no job record (MaxJobCount counts ended
  jobs for MinJobAge s), then ``dnnbench sweep`` of a 10,000-cell noop grid (4 shapes of 2,500
  → 12 arrays), held; wall time from start to return (= all queued), what ``squeue -r`` lists,
  and what the command reported as not submitted. Target < 15 s. The held jobs are cancelled
  at the end (``--keep`` leaves them).
- ``--plan-fsync``: what the fsyncs of the cell files cost planning a large sweep (no Slurm
  needed). Each run is a fresh process that does what ``dnnbench sweep`` does before it submits
  (``orchestrator.submit.submit`` up to ``submit_cells``): plan ``--plan-cells`` noop cells, then
  the sweep folder, its cell files and its ledger, timed apart. Four ways, each with and without
  the cell files' fsyncs (``durable=False``) and with one or ``CELL_FILE_WRITERS`` cell files
  written at once (1: as before they were written together), both monkeypatched in that process
  only; every other write as the product does it. ``--pairs`` rounds, the order reversed every
  other round; ``os.sync()`` before each run, so that one run's writeback is not charged to the next.

Every part records the load average (1 min) sampled every 2 s while it ran.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from slurm_scale import GRID as ISSUE3_GRID
from slurm_scale import HOLDING_SBATCH, run_measured

from orchestrator.paths import SweepPaths

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "orchestrator.cli"]
# One trivial cell type, one resource shape: 1 CPU, no GPU request, 10 min.
NOOP = [
    "framework=noop", "model=resnet18", "dataset=synthetic", "cluster=slurm", "cluster.request_gpus=false",
    "cluster.cpus_per_gpu=1", "cluster.time_limit_min=10", "model.time_limit_min=null", "gpus=1",
    "steps=1", "val_steps=2", "warmup_steps=0",
]  # fmt: skip
# 10,000 noop cells in 4 shapes of 2,500 (issue 3's grid with framework=noop): 12 arrays.
NOOP_10K = [*NOOP[:-4], "gpus=1,2", "nodes=1,2", "batch_size=16,32,64,128,256", "seed=range(0,500)",
            "steps=1", "val_steps=2", "warmup_steps=0"]  # fmt: skip
HYDRA_SPECS = ["hydra-core==1.3.8", "hydra-submitit-launcher==1.2.0", "submitit"]
HYDRA_APP = """import hydra


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg):
    return cfg.x


if __name__ == "__main__":
    main()
"""


# ------------------------------------------------------------------------------- helpers ---
class LoadSampler:
    """The 1-minute load average every ``interval`` s while the ``with`` block runs."""

    def __init__(self, interval: float = 2.0):
        self.interval, self.samples = interval, [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def describe(self) -> str:
        return f"{min(self.samples):.1f}–{max(self.samples):.1f}"


def held_env(root: Path) -> dict[str, str]:
    """The environment with a PATH whose ``sbatch`` adds ``--hold`` (Slurm 22.05 ignores SBATCH_HOLD)."""
    folder = root / "hold-bin"
    folder.mkdir(parents=True, exist_ok=True)
    real = shutil.which("sbatch")
    assert real, "sbatch not on PATH: is the dev cluster up (scripts/slurm-dev-cluster.sh up)?"
    (folder / "sbatch").write_text(HOLDING_SBATCH.format(log=root / "sbatch-calls.log", real=real))
    (folder / "sbatch").chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def sh(argv: list[str], timeout: float = 60) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def slurm_config() -> dict[str, str]:
    from orchestrator.backends.slurm_limits import parse_config

    return parse_config(sh(["scontrol", "show", "config"]))


def queued_tasks(match) -> int:
    """Array tasks (``squeue -r``) of jobs whose name passes ``match``."""
    return sum(1 for name in sh(["squeue", "-h", "-r", "-o", "%j"]).split() if match(name))


def controller_records() -> int:
    """Job records the controller keeps (ended ones too, for MinJobAge s): what MaxJobCount counts."""
    return len(sh(["squeue", "-h", "-r", "-t", "all", "-o", "%i"]).split())


def wait_for(probe, timeout: float, interval: float = 0.2) -> float | None:
    """Seconds (monotonic clock) when ``probe()`` first held, or None after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return time.monotonic()
        time.sleep(interval)
    return None


def ledger(sweep: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(SweepPaths(sweep).ledger, timeout=30)
    try:
        return list(db.execute(sql))
    finally:
        db.close()


def array_sizes(sweep: Path) -> list[int]:
    """Tasks of every submitted array, read from the scripts sbatch was given."""
    sizes = []
    for (script,) in ledger(sweep, "SELECT script FROM submissions WHERE state='submitted' ORDER BY submission_id"):
        match = re.search(r"^#SBATCH --array=0-(\d+)", Path(script).read_text(), re.M)
        sizes.append(int(match.group(1)) + 1)
    return sizes


def job_ids(sweep: Path) -> list[str]:
    return [row[0] for row in ledger(sweep, "SELECT job_id FROM submissions WHERE job_id IS NOT NULL")]


def today() -> str:
    return datetime.date.today().isoformat()


def header(*columns: str) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns), flush=True)


def row(*cells: object) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


# ---------------------------------------------------------------------------- dry run 10k ---
def dry_run_10k(root: Path) -> None:
    sweep = root / "dry"
    shutil.rmtree(sweep, ignore_errors=True)
    with LoadSampler() as load:
        wall, rss, code, out, err = run_measured([*CLI, "sweep", *ISSUE3_GRID, "--dry-run", "--sweep-dir", str(sweep)])
    assert code == 0, err[-2000:]
    summary = next(line for line in out.splitlines() if line.startswith("dry run:"))
    scripts = len(list(SweepPaths(sweep).jobs.glob("*.sh")))
    header("date", "load avg (1 min) during", "step", "wall", "peak RSS", "result")
    row(today(), load.describe(), "plan + `--dry-run`, 10,000 cells (issue 3's grid)", f"{wall:.1f} s",
        f"{rss:.0f} MiB", f"{summary.split(':', 1)[1].split(' in ')[0].strip()} → {scripts} scripts")  # fmt: skip


# --------------------------------------------------------------------------- dry run 100k ---
DRY_RUN_100K = {
    "noop, seed=range(0,100000) (1 shape)": [*NOOP, "seed=range(0,100000)"],
    "ddp, issue 3's grid × 5,000 seeds (4 shapes)": [*ISSUE3_GRID[:-4], "seed=range(0,5000)", *ISSUE3_GRID[-3:]],
}


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(bytes of the files under ``folder``, bytes the disk gave it as ``du`` counts: blocks of files and folders)."""
    size = used = 0
    for entry in [folder, *folder.rglob("*")]:
        stat = entry.lstat()
        used += stat.st_blocks * 512
        if entry.is_file():
            size += stat.st_size
    return size, used


def run_timed(argv: list[str]) -> tuple[float, float, float, int, str, str]:
    """(wall s, CPU s (user + system), peak RSS MiB, exit code, stdout, stderr) of one subprocess.

    The CPU time is what the command costs on a core of its own: on a shared machine the wall
    time also counts the time other processes held the cores.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), stdout, stderr


def dry_run_100k(root: Path) -> int:
    """One row per grid; the number of grids that missed a target."""
    header("date", "load avg (1 min) during", "grid", "wall", "CPU (user + sys)", "peak RSS", "written (files / du)",
           "lines printed", "summary", "result")  # fmt: skip
    failed = 0
    for name, grid in DRY_RUN_100K.items():
        sweep = root / f"dry100k-{uuid.uuid4().hex[:8]}"
        with LoadSampler() as load:
            wall, cpu, rss, code, out, err = run_timed([*CLI, "sweep", *grid, "--dry-run", "--sweep-dir", str(sweep)])
        assert code == 0, err[-2000:]
        size, used = folder_bytes(sweep)
        summary = next(line for line in out.splitlines() if line.startswith("dry run:"))
        lines = len(out.splitlines()) + len(err.splitlines())
        paths = SweepPaths(sweep)
        problems = [
            *(["wall ≥ 30 s"] if wall >= 30 else []),
            *(["RSS ≥ 1 GiB"] if rss >= 1024 else []),
            *(["≥ 200 MB written"] if max(size, used) >= 200e6 else []),
            *(["cells/ or ledger written"] if paths.cells.exists() or paths.ledger.exists() else []),
            *([f"{lines} lines printed"] if lines > 50 else []),
        ]
        failed += bool(problems)
        row(today(), load.describe(), name, f"{wall:.1f} s", f"{cpu:.1f} s", f"{rss:.0f} MiB",
            f"{size / 1e6:.1f} MB / {used / 1e6:.1f} MB", lines, summary.split(":", 1)[1].split(" in ")[0].strip(),
            "PASS" if not problems else "FAIL: " + "; ".join(problems))  # fmt: skip
        shutil.rmtree(sweep, ignore_errors=True)
    return failed


# ----------------------------------------------------------------------- plan with fsync ---
def plan_child(durable: bool, writers: int, sweep: Path, cells: int) -> None:
    """One planning of ``cells`` noop cells into ``sweep`` as ``dnnbench sweep`` does it; prints its times as JSON.

    ``durable=False`` and ``writers`` change this process only: the cell files without their fsyncs, and how
    many are written at once (1: one after another, as before ``orchestrator.submit.CELL_FILE_WRITERS``).
    """
    import functools

    from orchestrator import submit
    from orchestrator import sweep as sweeping
    from orchestrator.ledger import config_digest
    from orchestrator.lock import sweep_lock

    if not durable:
        submit.write_atomic_text = functools.partial(submit.write_atomic_text, durable=False)
    submit.CELL_FILE_WRITERS = writers
    started = time.perf_counter()
    plan = sweeping.plan([*NOOP, f"seed=range(0,{cells})"])
    planned = time.perf_counter()
    # orchestrator.submit.submit, up to submit_cells (which would call sbatch).
    paths = submit.sweep_folder(plan, sweep)
    paths.root.mkdir(parents=True, exist_ok=True)
    with sweep_lock(paths):
        paths, ledger = submit.prepare(plan, sweep)
        with ledger:
            ledger.record_config_digests({cell.id: config_digest(cell.config) for cell in plan.cells})
    written = time.perf_counter()
    files = sum(1 for _ in paths.cells.glob("*/cell.json"))
    print(json.dumps({"plan_s": planned - started, "write_s": written - planned, "files": files}))


def plan_fsync(root: Path, pairs: int, cells: int) -> None:
    from orchestrator.submit import CELL_FILE_WRITERS

    modes = [(durable, writers) for writers in (1, CELL_FILE_WRITERS) for durable in (True, False)]
    results: list[dict] = []
    with LoadSampler() as load:
        for number in range(pairs):
            for durable, writers in modes if number % 2 == 0 else modes[::-1]:
                sweep = root / f"plan-{uuid.uuid4().hex[:8]}"
                os.sync()  # the previous run's writeback is not charged to this one
                child = ["--plan-child", str(int(durable)), str(writers), str(sweep), str(cells)]
                wall, _, code, out, err = run_measured([sys.executable, __file__, *child])
                assert code == 0, err[-2000:]
                res = json.loads(out.splitlines()[-1])
                assert res["files"] == cells, res
                results.append({**res, "round": number, "durable": durable, "writers": writers, "wall_s": wall})
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
                shutil.rmtree(sweep)
    header("date", "load avg (1 min) during", "round", "cell files", "plan", "folder + cell files + ledger",
           "process wall")  # fmt: skip
    for res in results:
        how = f"{'fsync' if res['durable'] else 'no fsync'}, {res['writers']} at once"
        row(today(), load.describe(), res["round"], how, f"{res['plan_s']:.2f} s", f"{res['write_s']:.2f} s",
            f"{res['wall_s']:.2f} s")  # fmt: skip
    by = {(r["round"], r["durable"], r["writers"]): r for r in results}
    for writers in (1, CELL_FILE_WRITERS):
        ratio = [by[n, True, writers]["write_s"] / by[n, False, writers]["write_s"] for n in range(pairs)]
        share = [
            (by[n, True, writers]["write_s"] - by[n, False, writers]["write_s"])
            / (by[n, True, writers]["plan_s"] + by[n, True, writers]["write_s"])
            for n in range(pairs)
        ]
        print(f"{cells:,} cells, {writers} at once: writing with / without fsync by round "
              f"{', '.join(f'{r:.2f}×' for r in ratio)}; the fsyncs' share of plan + write "
              f"{', '.join(f'{s:.0%}' for s in share)}")  # fmt: skip
    gain = [by[n, True, 1]["write_s"] / by[n, True, CELL_FILE_WRITERS]["write_s"] for n in range(pairs)]
    print(f"writing with fsync, 1 / {CELL_FILE_WRITERS} at once, by round: {', '.join(f'{g:.2f}×' for g in gain)}")


# --------------------------------------------------------------------------- vs hydra 1000 ---
def hydra_venv(folder: Path) -> Path:
    python = folder / "bin" / "python"
    if not python.exists():
        print(f"making the throw-away venv {folder}: {' '.join(HYDRA_SPECS)}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *HYDRA_SPECS], check=True)
    versions = sh([str(python), "-m", "pip", "list", "--format=json"])
    found = {p["name"].lower(): p["version"] for p in json.loads(versions)}
    assert found.get("hydra-core") == "1.3.8" and found.get("hydra-submitit-launcher") == "1.2.0", found
    return python


def stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def time_to_queue(
    argv: list[str],
    match,
    count: int,
    cwd: Path,
    log: Path,
    env: dict[str, str],
    timeout: float,
    grace: float = 10.0,
) -> dict:
    """Start ``argv`` (held submissions); seconds until ``count`` tasks are queued, and until it exits.

    Polls ``squeue -r`` and the process every 0.2 s. After the tasks are all queued, the command
    gets ``grace`` s to exit; one still running then blocks (hydra waits for its jobs) and is stopped.
    """
    queued_at = exit_at = None
    with open(log, "w") as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        while True:
            now = time.monotonic()
            if exit_at is None and proc.poll() is not None:
                exit_at = now
            if queued_at is None and queued_tasks(match) >= count:
                queued_at = time.monotonic()
            if queued_at is not None and (exit_at is not None or now - queued_at > grace):
                break
            if queued_at is None and exit_at is not None and now - exit_at > grace:  # exited, tasks not all seen
                break
            if now - started > timeout:
                break
            time.sleep(0.2)
        stop_group(proc)
    return {"queued_s": None if queued_at is None else queued_at - started,
            "exit_s": None if exit_at is None else exit_at - started, "returncode": proc.returncode}  # fmt: skip


def vs_hydra_1000(root: Path, venv: Path, rounds: int, cells: int = 1000) -> None:
    python = hydra_venv(venv)
    app = root / "hydra_app"
    (app / "conf").mkdir(parents=True, exist_ok=True)
    (app / "app.py").write_text(HYDRA_APP)
    (app / "conf" / "config.yaml").write_text("x: 0\n")
    results: list[dict] = []
    env = held_env(root)
    with LoadSampler() as load:
        for number in range(rounds):
            order = ("dnnbench", "hydra") if number % 2 == 0 else ("hydra", "dnnbench")
            for side in order:
                tag = uuid.uuid4().hex[:8]
                if side == "dnnbench":
                    sweep = root / f"vs-hydra-{tag}"
                    prefix = f"dnnbench-{sweep.name}-"
                    argv = [*CLI, "sweep", *NOOP, f"seed=range(0,{cells})", "--sweep-dir", str(sweep)]
                    res = time_to_queue(argv, lambda n, p=prefix: n.startswith(p), cells, ROOT,
                                        root / f"{side}-{tag}.log", env, timeout=300)  # fmt: skip
                    ids = job_ids(sweep)
                    subprocess.run(["scancel", *ids], check=False)
                else:
                    name = f"hsl-{tag}"
                    argv = [str(python), "app.py", "-m", f"x=range(0,{cells})", "hydra/launcher=submitit_slurm",
                            f"hydra.job.name={name}", f"hydra.sweep.dir={root / ('hydra-' + tag)}",
                            "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1",
                            "hydra.launcher.array_parallelism=64"]  # fmt: skip
                    res = time_to_queue(argv, lambda n, m=name: n == m, cells, app, root / f"{side}-{tag}.log",
                                        env, timeout=600)  # fmt: skip
                    subprocess.run(["scancel", "--name", name], check=False)
                res.update(side=side, round=number)
                results.append(res)
                print(json.dumps(res), file=sys.stderr, flush=True)
    header("date", "load avg (1 min) during", "round", "side", f"{cells} tasks queued after", "per cell",
           "command returned")  # fmt: skip
    for res in results:
        queued = res["queued_s"]
        returned = (f"yes, after {res['exit_s']:.2f} s (exit {res['returncode']})" if res["exit_s"] is not None
                    else "no: still waiting for its jobs 10 s later (stopped)")  # fmt: skip
        row(today(), load.describe(), res["round"], res["side"], "timeout" if queued is None else f"{queued:.2f} s",
            "" if queued is None else f"{queued / cells * 1000:.2f} ms", returned)  # fmt: skip
    by_side = {s: [r["queued_s"] for r in results if r["side"] == s and r["queued_s"]] for s in ("dnnbench", "hydra")}
    if by_side["dnnbench"] and by_side["hydra"]:
        ratios = [h / d for d, h in zip(by_side["dnnbench"], by_side["hydra"], strict=False)]
        print(f"\nhydra / dnnbench time per cell, by round: {', '.join(f'{r:.1f}×' for r in ratios)} (target ≥ 20×)")


# ---------------------------------------------------------------------- acceptance 2500 ---
def acceptance_2500(root: Path, cells: int = 2500, timeout: float = 3600) -> int:
    sweep = root / f"acceptance-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ)  # not held: every cell runs
    max_array = int(slurm_config().get("MaxArraySize", "1001"))
    problems: list[str] = []
    with LoadSampler() as load:
        wall, rss, code, out, err = run_measured(
            [*CLI, "sweep", *NOOP, f"seed=range(0,{cells})", "--sweep-dir", str(sweep)], env=env
        )
        print(out[-1500:], err[-1500:], file=sys.stderr, flush=True)
        if code != 0 or "Traceback" in err:
            problems.append(f"sweep exit {code}")
        sizes = array_sizes(sweep)
        if sum(sizes) != cells or max(sizes) > max_array:
            problems.append(f"arrays {sizes} (MaxArraySize {max_array})")
        started = time.monotonic()
        waited = subprocess.run([*CLI, "wait", str(sweep), "--timeout", str(timeout), "--interval", "10"],
                                cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
        run_s = time.monotonic() - started
        print(waited.stdout, waited.stderr, file=sys.stderr, flush=True)
        if waited.returncode != 0:
            problems.append(f"wait exit {waited.returncode}: {waited.stdout.strip()} {waited.stderr.strip()}")
    status_started = time.monotonic()
    status = subprocess.run([*CLI, "status", "--json", str(sweep)], cwd=ROOT, capture_output=True, text=True,
                            check=True)  # fmt: skip
    status_s = time.monotonic() - status_started
    statuses = json.loads(status.stdout)
    states: dict[str, int] = {}
    for s in statuses:
        states[s["state"]] = states.get(s["state"], 0) + 1
    rows = ledger(sweep, "SELECT a.cell_id, a.attempt, s.job_id, a.array_index FROM attempts a "
                         "JOIN submissions s USING (submission_id) WHERE s.state = 'submitted'")  # fmt: skip
    in_ledger = {cid: (attempt, f"{job}_{index}") for cid, attempt, job, index in rows}
    disagree = [s["cell_id"] for s in statuses if in_ledger.get(s["cell_id"]) != (s["attempt"], s["job"])]
    if len(statuses) != cells or states != {"completed": cells} or disagree or len(rows) != cells:
        problems.append(f"status {states}, ledger {len(rows)} attempts, {len(disagree)} disagree")

    def sacct_completed() -> int:
        out = sh(["sacct", "-n", "-X", "-P", "-j", ",".join(job_ids(sweep)), "-o", "JobID,State"])
        return sum(1 for line in out.splitlines() if line.endswith("|COMPLETED"))

    wait_for(lambda: sacct_completed() >= cells, 60, interval=3)
    completed_in_sacct = sacct_completed()
    if completed_in_sacct != cells:
        problems.append(f"sacct: {completed_in_sacct} COMPLETED")
    results = root / f"{sweep.name}-results"
    agg_started = time.monotonic()
    agg = subprocess.run([*CLI, "aggregate", str(sweep), "--out", str(results), "--no-figures", "--no-progress"],
                         cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
    agg_s = time.monotonic() - agg_started
    with open(results / "cells.csv") as handle:
        aggregated = len({r["cell_id"] for r in csv.DictReader(handle)})
    if aggregated != cells:
        problems.append(f"aggregate: {aggregated} cells; {agg.stdout.strip()[:300]}")
    header("date", "load avg (1 min) during", "cells", "submit (command start → return)", "peak RSS",
           "arrays (tasks each)", "run until all terminal", "status --json", "sacct COMPLETED",
           "aggregate cells", "result")  # fmt: skip
    verdict = "PASS" if not problems else "FAIL: " + "; ".join(problems)
    row(today(), load.describe(), cells, f"{wall:.1f} s", f"{rss:.0f} MiB",
        f"{len(sizes)} ({', '.join(map(str, sizes))})", f"{run_s:.0f} s",
        f"{status_s:.1f} s: {states}, {len(disagree)} disagree with the ledger", completed_in_sacct,
        f"{aggregated} ({agg_s:.0f} s)", verdict)  # fmt: skip
    print(f"sweep folder: {sweep}", file=sys.stderr)
    return 0 if not problems else 1


# ----------------------------------------------------------------------------- queue 10k ---
def queue_10k(root: Path, keep: bool, wait_empty: float) -> None:
    config = slurm_config()
    records_at_start = controller_records()
    empty_at = wait_for(lambda: controller_records() == 0, wait_empty, interval=10)
    records = controller_records()
    if empty_at is None:
        print(f"the controller still keeps {records} job record(s) after {wait_empty:.0f} s", file=sys.stderr)
    sweep = root / f"queue10k-{uuid.uuid4().hex[:8]}"
    prefix = f"dnnbench-{sweep.name}-"
    env = held_env(root)
    with LoadSampler() as load:
        wall, rss, code, out, err = run_measured([*CLI, "sweep", *NOOP_10K, "--sweep-dir", str(sweep)], env=env)
    print(out[-2000:], err[-2000:], file=sys.stderr, flush=True)
    queued = queued_tasks(lambda n: n.startswith(prefix))
    held = len([r for r in sh(["squeue", "-h", "-r", "-o", "%j|%r"]).split() if r.startswith(prefix) and "Held" in r])
    sizes = array_sizes(sweep)
    left = re.search(r"^(\d+) cell\(s\) not submitted: (.*?)\. They stay", out, re.M)
    header("date", "load avg (1 min) during", "MaxJobCount / records kept before", "step", "wall", "peak RSS",
           "exit", "queued (squeue -r) / held", "arrays", "reported not submitted")  # fmt: skip
    row(today(), load.describe(), f"{config.get('MaxJobCount')} / {records} (was {records_at_start})",
        "submit 10,000 noop cells (held)", f"{wall:.1f} s", f"{rss:.0f} MiB", code, f"{queued} / {held}", len(sizes),
        f"{left.group(1)}: {left.group(2)}" if left else "0")  # fmt: skip
    if not keep:
        ids = job_ids(sweep)
        if ids:
            subprocess.run(["scancel", *ids], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run-10k", action="store_true")
    parser.add_argument("--dry-run-100k", action="store_true")
    parser.add_argument("--vs-hydra-1000", action="store_true")
    parser.add_argument("--acceptance-2500", action="store_true")
    parser.add_argument("--queue-10k", action="store_true")
    parser.add_argument("--root", default="/tmp/dnnbench_sweep_scale", help="sweep folders and logs")
    parser.add_argument("--hydra-venv", default="/tmp/dnnbench-hydra-submitit-venv", help="throw-away venv")
    parser.add_argument("--rounds", type=int, default=2, help="--vs-hydra-1000: rounds, order alternating")
    parser.add_argument("--wait-empty", type=float, default=420, help="--queue-10k: s to wait for an empty controller")
    parser.add_argument("--keep", action="store_true", help="--queue-10k: leave the held jobs queued")
    parser.add_argument("--plan-fsync", action="store_true")
    parser.add_argument("--pairs", type=int, default=3, help="--plan-fsync: pairs of runs, order alternating")
    parser.add_argument("--plan-cells", type=int, default=10_000, help="--plan-fsync: cells planned in each run")
    parser.add_argument("--plan-child", nargs=4, metavar=("DURABLE", "WRITERS", "SWEEP_DIR", "CELLS"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.plan_child:
        durable, writers, sweep, cells = args.plan_child
        plan_child(durable == "1", int(writers), Path(sweep), int(cells))
        return 0
    if not (args.dry_run_10k or args.dry_run_100k or args.vs_hydra_1000 or args.acceptance_2500 or args.queue_10k
            or args.plan_fsync):  # fmt: skip
        parser.error("name at least one of --dry-run-10k, --dry-run-100k, --vs-hydra-1000, --acceptance-2500, "
                     "--queue-10k, --plan-fsync")  # fmt: skip
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    code = 0
    if args.dry_run_10k:
        dry_run_10k(root)
    if args.dry_run_100k:
        code = min(1, dry_run_100k(root))
    if args.vs_hydra_1000:
        vs_hydra_1000(root, Path(args.hydra_venv), args.rounds)
    if args.acceptance_2500:
        code = acceptance_2500(root)
    if args.queue_10k:
        queue_10k(root, args.keep, args.wait_empty)
    if args.plan_fsync:
        plan_fsync(root, args.pairs, args.plan_cells)
    return code


if __name__ == "__main__":
    sys.exit(main())
