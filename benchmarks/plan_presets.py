"""Benchmark (issue 13 §4): planning every sweep preset, as a login node would.

Usage::

    .venv/bin/python benchmarks/plan_presets.py                 # every conf/sweep/*.yaml, 3 runs each
    .venv/bin/python benchmarks/plan_presets.py --runs 5 --preset quickstart
    .venv/bin/python benchmarks/plan_presets.py --source /tmp/old-checkout   # another tree's code

Each run is ``dnnbench sweep +sweep=<preset> --dry-run`` in a fresh process (the CLI's own
``main``, started from a throw-away folder so nothing lands in the repository); wall time, CPU
time (user + sys: what a busy machine's wall time hides) and peak RSS come from ``wait4``. The
process also says whether torch was imported: planning needs none (the pipeline checks count
blocks from jobs/pipeline/block_counts.py). Prints one Markdown row per preset: median and
slowest wall, median CPU, largest peak RSS. Targets: < 3 s (slowest wall), < 300 MB. Exits 1
when a preset misses a target or fails to plan.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WALL_TARGET_S = 3.0
RSS_TARGET_MB = 300.0
TORCH_MARK = "torch imported: "
# Runs the CLI like the dnnbench script does, then reports whether planning imported torch.
_PROGRAM = (
    "import sys\n"
    "from orchestrator.cli import main\n"
    "code = main(sys.argv[1:])\n"
    f"print({TORCH_MARK!r} + str('torch' in sys.modules), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    rss_mb: float
    exit_code: int
    torch: bool
    stderr: str


def presets() -> list[str]:
    """Every sweep preset: conf/sweep/*.yaml."""
    return sorted(p.stem for p in (ROOT / "conf" / "sweep").glob("*.yaml"))


def plan_once(preset: str, source: Path, cwd: Path) -> Run:
    """One dry-run plan of ``preset`` in a fresh process; wall time and peak RSS from ``wait4``."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    argv = [sys.executable, "-c", _PROGRAM, "sweep", f"+sweep={preset}", "--dry-run"]
    with tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=cwd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        err.seek(0)
        stderr = err.read()
    cpu = usage.ru_utime + usage.ru_stime
    code = os.waitstatus_to_exitcode(status)
    return Run(wall, cpu, usage.ru_maxrss / 1024, code, f"{TORCH_MARK}True" in stderr, stderr)


def row(preset: str, runs: list[Run]) -> tuple[str, bool]:
    """The Markdown row of one preset, and whether it met both targets."""
    walls = [r.wall_s for r in runs]
    rss = max(r.rss_mb for r in runs)
    failed = [r for r in runs if r.exit_code != 0]
    met = not failed and max(walls) < WALL_TARGET_S and rss < RSS_TARGET_MB
    result = "PASS" if met else "MISS"
    if failed:
        result = f"FAILED (exit {failed[0].exit_code}: {failed[0].stderr.strip().splitlines()[-1:]})"
    load = os.getloadavg()[0]
    cells = (
        datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        f"{load:.1f}",
        f"`+sweep={preset} --dry-run`",
        str(len(runs)),
        f"{statistics.median(walls):.2f} s (max {max(walls):.2f} s)",
        f"{statistics.median(r.cpu_s for r in runs):.2f} s",
        f"{rss:.0f} MiB",
        "yes" if any(r.torch for r in runs) else "no",
        result,
    )
    return "| " + " | ".join(cells) + " |", met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per preset (default 3)")
    parser.add_argument("--preset", action="append", help="only this preset (repeatable); default: all")
    parser.add_argument("--source", type=Path, default=ROOT, help="the source tree to import (default: this one)")
    args = parser.parse_args(argv)
    chosen = args.preset or presets()
    columns = ("date", "load avg (1 min)", "command", "runs", "wall: median (max)", "CPU (user + sys): median",
               "peak RSS (max)", "torch imported", "result")  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    missed = 0
    with tempfile.TemporaryDirectory(prefix="plan_presets_") as cwd:
        for preset in chosen:
            line, met = row(preset, [plan_once(preset, args.source.resolve(), Path(cwd)) for _ in range(args.runs)])
            print(line, flush=True)
            missed += not met
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
