"""What the A/B overhead benchmarks share: their options and the dnnbench side of each pair."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from orchestrator.paths import AttemptPaths, SweepPaths

REPO = Path(__file__).resolve().parents[1]


def overhead_parser(doc: str | None, *, pairs: int, steps: int, batch: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=pairs)
    parser.add_argument("--steps", type=int, default=steps, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=batch, help="per process")
    parser.add_argument("--bare-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser


def parse_or_serve(
    doc: str | None, bare_worker: Callable[[argparse.Namespace], None], *, pairs: int, steps: int, batch: int
) -> argparse.Namespace | None:
    """The script's arguments, or None once it has served as its own bare-loop worker
    (each benchmark re-runs itself with ``--bare-worker`` under the bare launcher)."""
    args = overhead_parser(doc, pairs=pairs, steps=steps, batch=batch).parse_args()
    if args.bare_worker:
        bare_worker(args)
        return None
    return args


def cell_overrides(framework: str, args: argparse.Namespace, processes: int, threads: int) -> list[str]:
    """The measured cell: resnet18 on synthetic data on CPU, as the bare loop runs it."""
    return [
        f"framework={framework}", "model=resnet18", f"gpus={processes}", "dataset=synthetic",
        f"batch_size={args.batch}", f"steps={args.steps}", f"warmup_steps={args.warmup}", "val_steps=2",
        f"threads_per_process={threads}", "device=cpu",
    ]  # fmt: skip


def dnnbench_train_phases(overrides: list[str], folder: Path, processes: int) -> list[dict]:
    """Run one cell with `dnnbench run`; the training phase of every rank's dump."""
    dnnbench = Path(sys.executable).parent / "dnnbench"
    command = [str(dnnbench)] if dnnbench.exists() else [sys.executable, "-m", "orchestrator.cli"]
    subprocess.run(
        [*command, "run", *overrides, "--quiet", "--out", str(folder)], check=True, cwd=REPO, stdout=subprocess.DEVNULL
    )
    paths = SweepPaths(folder)
    attempts = [paths.cell(cell.name).attempt(0) for cell in sorted(paths.cells.iterdir())]
    dumps = [json.loads(p.read_text()) for attempt in attempts for p in AttemptPaths(attempt).rank_dumps()]
    assert len(dumps) == processes, f"expected {processes} rank dumps under {folder}"
    return [d["phases"]["train"] for d in dumps]
