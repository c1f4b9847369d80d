"""What the step breakdown costs: the same dnnbench cell with and without it, in alternating pairs.

With ``breakdown=false`` (the default; jobs/breakdown.py) the loop opens no parts and the strategies
register no timed comm hooks (DDP's bucket all-reduce hook, Horovod's launch record, FSDP's timed
all-gather and reduce-scatter, ZeRO's timed broadcast): the bare loop. Everything else, the
bandwidth probe before warm-up included, is the same. Prints each pair and the ratio's median
and range (instrumented / bare training throughput, from wall time and from the median step).

    python benchmarks/breakdown_overhead.py --framework ddp --pairs 5
"""

from __future__ import annotations

import sys
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.overhead_common import (
    cell_overrides,
    compare_pairs,
    dnnbench_train_phases,
    overhead_parser,
)

FRAMEWORK_OVERRIDES = {
    "ddp": [],
    "horovod": [],
    "fsdp": [],
    "zero": [],
    "pipeline": ["pipeline.schedule=1f1b", "pipeline.stages=2"],
}


def counted_rates(ranks: list[dict]) -> tuple[float, float]:
    """(samples of the counting ranks / slowest rank's seconds, the same per median step): a
    pipeline's first stages finish no samples, so per-rank samples cannot be multiplied out."""
    samples = sum(r["samples"] for r in ranks)
    steps = len(ranks[0]["step_times_s"])
    return samples / max(r["seconds"] for r in ranks), samples / steps / max(median(r["step_times_s"]) for r in ranks)


def main() -> None:
    parser = overhead_parser(__doc__, pairs=5, steps=20, batch=32)
    parser.add_argument("--framework", choices=sorted(FRAMEWORK_OVERRIDES), default="ddp")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    overrides = [*cell_overrides(args.framework, args, args.processes, 1), *FRAMEWORK_OVERRIDES[args.framework]]

    def run(folder: Path, enabled: str) -> tuple[float, float]:
        return counted_rates(dnnbench_train_phases([*overrides, f"breakdown={enabled}"], folder, args.processes))

    compare_pairs(
        args,
        lambda folder: run(folder, "true"),
        lambda folder: run(folder, "false"),
        f"breakdown on / off, {args.framework}, {args.processes} processes, resnet18, CPU",
    )


if __name__ == "__main__":
    main()
