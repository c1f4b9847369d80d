"""Benchmark (issue 3): a 10,000-cell sweep on the real dev Slurm cluster.

Usage::

    .venv/bin/python benchmarks/slurm_scale.py [--root /tmp/dnnbench_slurm_scale] [--keep]

1. plan + ``--dry-run``: ``dnnbench sweep GRID cluster=slurm --dry-run`` in a subprocess;
   wall time and peak RSS (``wait4``). Target < 10 s, < 1 GiB.
2. submit: the same command without ``--dry-run``, through the real ``SlurmBackend`` and
   the real ``sbatch``, with a PATH wrapper that adds ``--hold`` (10,000 real array tasks
   queued, none running: the 2-core VM could not run them). Wall time, sbatch calls.
3. status: ``dnnbench status --json`` of that 10,000-cell ledger while Slurm answers for
   every task (held → PENDING via ``squeue -r``), then again after ``scancel`` (sacct
   records, CANCELLED). Wall time and the number of scheduler calls, counted by PATH
   shims around the real squeue/sacct. Target < 2 s, a constant number of calls.

The grid: model=resnet18 gpus=1,2 nodes=1,2 batch_size=16,32,64,128,256 seed=range(0,500)
= 10,000 cells in 4 resource shapes of 2,500 cells: more than MaxArraySize (1001), so the
backend must split each shape into several arrays.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.paths import SweepPaths

ROOT = Path(__file__).resolve().parent.parent
GRID = [
    "framework=ddp", "model=resnet18", "dataset=synthetic", "cluster=slurm", "gpus=1,2", "nodes=1,2",
    "batch_size=16,32,64,128,256", "seed=range(0,500)", "steps=2", "val_steps=2", "warmup_steps=0",
]  # fmt: skip
COUNTING_SHIM = """#!/bin/bash
echo "$(basename "$0") $*" >> "{log}"
exec {real} "$@"
"""
HOLDING_SBATCH = """#!/bin/bash
echo "sbatch $*" >> "{log}"
exec {real} --hold "$@"
"""


def run_measured(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, str, str]:
    """(wall s, peak RSS MiB, exit code, stdout, stderr) of one subprocess."""
    out_path, err_path = Path("/tmp/.slurm_scale.out"), Path("/tmp/.slurm_scale.err")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode, out_path.read_text(), err_path.read_text()


def shim_dir(folder: Path, log: Path, hold: bool) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("squeue", "sacct", "sbatch", "scontrol"):
        real = shutil.which(name)
        assert real, f"{name} not on PATH: is the dev cluster up (scripts/slurm-dev-cluster.sh up)?"
        text = (HOLDING_SBATCH if name == "sbatch" and hold else COUNTING_SHIM).format(log=log, real=real)
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def calls(log: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        counts[line.split()[0]] = counts.get(line.split()[0], 0) + 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/dnnbench_slurm_scale")
    parser.add_argument("--keep", action="store_true", help="leave the held jobs queued")
    args = parser.parse_args()
    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    cli = [sys.executable, "-m", "orchestrator.cli"]
    results: dict[str, object] = {}

    dry = root / "dry"
    wall, rss, code, out, err = run_measured([*cli, "sweep", *GRID, "--dry-run", "--sweep-dir", str(dry)])
    assert code == 0, err[-2000:]
    summary = next(line for line in out.splitlines() if line.startswith("dry run:"))
    scripts = len(list(SweepPaths(dry).jobs.glob("*.sh")))
    results["plan_dry_run"] = {"seconds": round(wall, 2), "peak_rss_mib": round(rss), "summary": summary,
                               "scripts_written": scripts}  # fmt: skip
    print(f"plan + dry-run: {wall:.2f} s, peak RSS {rss:.0f} MiB; {summary}; {scripts} scripts", flush=True)

    sweep = root / "held"
    log = root / "calls.log"
    env = {**os.environ, "PATH": shim_dir(root / "bin", log, hold=True)}
    wall, rss, code, out, err = run_measured([*cli, "sweep", *GRID, "--sweep-dir", str(sweep)], env=env)
    submitted = calls(log)
    results["submit"] = {"seconds": round(wall, 2), "peak_rss_mib": round(rss), "exit_code": code,
                         "scheduler_calls": submitted, "stderr_tail": err.strip()[-300:]}  # fmt: skip
    print(f"submit (held): {wall:.2f} s, peak RSS {rss:.0f} MiB, exit {code}, calls {submitted}", flush=True)
    if code != 0:  # measure status on what was submitted; the error is reported above
        print(err[-2000:], file=sys.stderr)
    from orchestrator.ledger import Ledger

    with Ledger(SweepPaths(sweep).ledger) as ledger:
        job_ids = [row["job_id"] for row in ledger.submissions("submitted")]
        results["ledger"] = {"cells": len(ledger.cell_ids()), "arrays_submitted": len(job_ids)}
    try:
        for label in ("pending (held, squeue)", "cancelled (sacct)"):
            if label.startswith("cancelled"):
                subprocess.run(["scancel", *job_ids], check=True)
                time.sleep(8)  # sacct records arrive a few seconds late
            log.unlink(missing_ok=True)
            wall, rss, code, out, err = run_measured([*cli, "status", "--json", str(sweep)], env=env)
            assert code == 0, err[-2000:]
            states: dict[str, int] = {}
            for cell in json.loads(out):
                key = cell["state"] + (f":{cell['failure_class']}" if cell["failure_class"] else "")
                states[key] = states.get(key, 0) + 1
            results[f"status {label}"] = {"seconds": round(wall, 2), "peak_rss_mib": round(rss),
                                          "scheduler_calls": calls(log), "states": states}  # fmt: skip
            print(f"status, {label}: {wall:.2f} s, peak RSS {rss:.0f} MiB, calls {calls(log)}, {states}", flush=True)
    finally:
        if not args.keep:
            subprocess.run(["scancel", *job_ids], check=False)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
