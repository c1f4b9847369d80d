"""Benchmark: aggregate 10,000 cells × 4 ranks (40,000 realistic rank dumps).

Usage::

    .venv/bin/python benchmarks/aggregate_scale.py [--cells 10000] [--ranks 4]
        [--steps 50] [--root /tmp/dnnbench_bench] [--figures] [--workers N]

Builds the sweep once (reused when present), then runs the aggregation in a fresh
subprocess and reports its wall time and peak RSS (the process and its reader
workers). Targets: < 10 s and < 1 GiB on the 2-core dev VM (issue 6); < 3 s (issue 20: BENCHMARKS.md
says where it stands).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic-sweep fixture, a sibling module of the tests


def build(root: Path, cells: int, ranks: int, steps: int) -> None:
    import synthetic_sweeps as synthetic

    marker = root / ".complete"
    # Rebuilt when built by an older fixture: before cells had a cell.json, before configs were composed from conf/.
    spec = f"{cells}x{ranks}x{steps}+cell.json+composed"
    if marker.exists() and marker.read_text() == spec:
        return
    if marker.exists():
        # Built by this script to another spec: its cells' ids are not the new ones', so they would stay beside them.
        shutil.rmtree(root / "cells", ignore_errors=True)
        marker.unlink()
    rng = random.Random(0)
    frameworks, models, batches, lrs = ("ddp", "horovod"), 5, 10, 10
    repeats = max(1, cells // (len(frameworks) * models * batches * lrs))
    made = 0
    started = time.perf_counter()
    for framework in frameworks:
        for m in range(models):
            for b in range(batches):
                for lr in range(lrs):
                    for repeat in range(repeats):
                        if made >= cells:
                            break
                        cfg = synthetic.config(
                            **{
                                "framework.name": framework,
                                "model.name": f"model{m}",
                                "batch_size": 16 * (b + 1),
                                "lr": 0.01 * (lr + 1),
                                "gpus": ranks,
                                "repeat": repeat,
                                "repeats": repeats,
                                "steps": steps,
                                # 11 validation batches, the first untimed, all whole at every batch size.
                                "val_steps": 11,
                                "dataset.val_samples": 8192,
                            }
                        )
                        base = 0.2 + 0.01 * b
                        times = [[base * rng.uniform(0.9, 1.1) for _ in range(steps)] for _ in range(ranks)]
                        synthetic.write_cell(root, cfg, step_times=times, val_step_times=[base / 4] * 10)
                        made += 1
    marker.write_text(spec)
    print(f"built {made} cells × {ranks} ranks in {time.perf_counter() - started:.1f} s under {root}")


def measure(root: Path, figures: bool, workers: int | None) -> dict[str, float]:
    code = (
        "import json, resource, sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "t0 = time.perf_counter()\n"
        "from analysis.aggregate import aggregate\n"
        f"done = aggregate([{str(root)!r}], {str(root / 'results')!r}, figures={figures}, "
        f"report={figures}, progress=False, workers={workers})\n"
        "wall = time.perf_counter() - t0\n"
        "me, ch = resource.getrusage(resource.RUSAGE_SELF), "
        "resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "own, kids = me.ru_maxrss, ch.ru_maxrss\n"
        "cpu = me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime\n"
        "print(json.dumps({'wall_s': wall, 'rss_self_mib': own / 1024, "
        "'rss_worker_max_mib': kids / 1024, 'cpu_s': cpu, 'rows': len(done.results), "
        "'cells': int(done.loaded.cells['cell_id'].nunique()), "
        "'problems': len(done.problems)}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--root", type=Path, default=Path("/tmp/dnnbench_bench"))
    parser.add_argument("--figures", action="store_true", help="also draw figures + report")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    build(args.root, args.cells, args.ranks, args.steps)
    dumps = list((args.root / "cells").glob("*/attempt_0/rank_0.json"))
    size = dumps[0].stat().st_size if dumps else 0
    stats = measure(args.root, args.figures, args.workers)
    print(json.dumps({"dump_bytes": size, **stats}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
