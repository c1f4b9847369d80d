"""Prove the GPU paths: real cells on one GPU, the checks the CPU cannot make, one table.

Run through ``scripts/gpu-check.sh`` (it finds Python and the carried wheels). On a GPU:
1-GPU DDP (nccl) cells on resnet18/resnet50/efficientnet_b0 in fp32, amp (float16 + loss
scaling) and bf16, and fp32 pipeline cells, on MNIST-shaped synthetic data made on the device;
with ``--mnist-root``, resnet18 on real MNIST kept resident on the device too. Then:
- allocated ≤ reserved on every phase (the schema rejects a dump otherwise),
- the peaks are reset between phases (validation's peak below training's),
- step times cover the device's work: the steps add up to the synchronised wall time of
  their phase in every cell, and a GPU-bound step timed by StepClock (CUDA events) matches
  the same step timed with a synchronisation before and after it,
- harness overhead: dnnbench's img/s against a bare loop on the same GPU, as the ratio of
  the medians of ``--pairs`` alternating runs, each long enough (≥ 3 s of timed steps) that
  the comparison resolves 1 %; one that cannot (too few pairs, too noisy) says so and fails,
- achieved TFLOP/s against the card's measured matmul peak for the precision's math.
Cells and comparisons that would start after ``--budget-s`` are skipped and said so, and a
failure is a FAIL line, not the end of the run, so one call on a lent machine always ends
with its table. report.json is rewritten after every cell.
On a CPU the same script runs a small subset and marks the GPU-only checks skipped, so CI
keeps it working. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from jobs import schema  # noqa: E402
from orchestrator.errors import DnnbenchError  # noqa: E402


@dataclass
class Report:
    device: str
    peaks: dict[str, float] = field(default_factory=dict)  # measured matmul TFLOP/s by math
    rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[tuple[str, str, str]] = field(default_factory=list)  # (name, PASS|FAIL|SKIP, detail)

    def check(self, name: str, ok: bool | None, detail: str) -> None:
        self.checks.append((name, "SKIP" if ok is None else "PASS" if ok else "FAIL", detail))

    @property
    def failed(self) -> bool:
        return any(status == "FAIL" for _, status, _ in self.checks)

    def write(self, out: Path) -> None:
        """Rewritten after every cell, so a run cut short still leaves what it measured."""
        doc = {"device": self.device, "peaks_tflops": self.peaks, "rows": self.rows, "checks": self.checks}
        schema.write_atomic(out / "report.json", doc)


def plan_cell(overrides: list[str]) -> Any:
    from orchestrator import sweep

    (cell,) = sweep.plan(overrides).cells
    return cell


def run_cell(cell: Any, out: Path) -> list[dict[str, Any]]:
    """Run one planned cell as a sweep would; a rerun into the same --out adds an attempt."""
    from orchestrator.runner import run_cell as run
    from orchestrator.submit import write_cell_file

    cell_file = out / cell.id / "cell.json"
    write_cell_file(cell_file, cell)
    attempt = next(out / cell.id / f"attempt_{n}" for n in range(1000) if not (out / cell.id / f"attempt_{n}").exists())
    run(str(cell_file), str(attempt))  # raises CellFailedError, with the log's tail, if it failed
    return [schema.load(p) for p in sorted(attempt.glob("rank_*.json"))]


def flops_per_sample(model_name: str, device: torch.device) -> float:
    """Forward FLOPs of one 1×28×28 sample, ×3 for forward + backward."""
    from torch.utils.flop_counter import FlopCounterMode

    from jobs.models import build_model

    model = build_model(model_name).to(device)
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(8, 1, 28, 28, device=device))
    return 3.0 * counter.get_total_flops() / 8


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, *, tf32: bool = False, n: int = 8192) -> float:
    """Dense n×n×n matmul rate: the card's attainable peak for this math, measured, not quoted."""
    was = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize(device)
        return 10 * 2 * n**3 / (time.perf_counter() - start) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = was


def measured_peaks(device: torch.device) -> dict[str, float]:
    return {
        "fp32": matmul_peak_tflops(device, torch.float32),
        "tf32": matmul_peak_tflops(device, torch.float32, tf32=True),
        "fp16": matmul_peak_tflops(device, torch.float16),
        "bf16": matmul_peak_tflops(device, torch.bfloat16),
    }


def peak_basis(precision: str) -> str:
    """Which measured peak a cell's math runs at: fp32 convolutions use TF32 where cuDNN may."""
    if precision == "fp32":
        return "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"
    return {"amp": "fp16", "bf16": "bf16"}[precision]


def bare_loop_rate(model_name: str, batch: int, steps: int, warmup: int, device: torch.device, name: str) -> float:
    """The same work without the harness: one process, DDP of one rank, tensors on the device,
    a shuffled batch gathered per step (as the harness's resident data is served)."""
    import torch.distributed as dist
    from torch import nn

    from jobs.models import build_model
    from jobs.precision import precision

    if device.type == "cpu":
        torch.set_num_threads(1)  # as the cells' threads_per_process=1
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    torch.manual_seed(0)
    model = build_model(model_name).to(device)
    ids = [device.index] if device.type == "cuda" else None
    model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    numeric = precision(name)
    scaler = numeric.grad_scaler(device)
    images = torch.randn(4096, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (4096,), device=device)
    per_epoch = 4096 // batch
    order = torch.randperm(4096, device=device)

    def step(i: int) -> None:
        nonlocal order
        if i % per_epoch == 0:  # a new shuffle each epoch, as any training loop has
            order = torch.randperm(4096, device=device)
        index = order[(i % per_epoch) * batch : (i % per_epoch + 1) * batch]
        optimizer.zero_grad(set_to_none=True)
        with numeric.autocast(device):
            loss = nn.functional.cross_entropy(model(images[index]), labels[index])
        if scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    for i in range(warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def ratio_of_medians(harness: list[float], bare: list[float]) -> tuple[float, float]:
    """(median harness / median bare, half-width of its ~95 % interval, relative).

    The standard error of a median is about 1.25 σ/√n; the interval is two of them, for
    both series. With one run per side there is no spread to judge: the width is infinite.
    """
    ratio = statistics.median(harness) / statistics.median(bare)
    if min(len(harness), len(bare)) < 2:
        return ratio, math.inf

    def relative_se(values: list[float]) -> float:
        return 1.2533 * statistics.stdev(values) / math.sqrt(len(values)) / statistics.median(values)

    return ratio, 2 * math.hypot(relative_se(harness), relative_se(bare))


@dataclass
class Comparison:
    harness: list[float] = field(default_factory=list)  # img/s of each harness run
    bare: list[float] = field(default_factory=list)  # img/s of each bare run
    steps: int = 0

    def verdict(self, resolution: float = 0.01) -> tuple[bool, str]:
        """(harness ≥ (1 - resolution) × bare, resolved; the detail line)."""
        ratio, half = ratio_of_medians(self.harness, self.bare)
        detail = (
            f"median {statistics.median(self.harness):.1f} vs {statistics.median(self.bare):.1f} img/s over "
            f"{len(self.harness)} pair(s) of {self.steps} steps: ratio {ratio:.4f} ± {half:.4f}"
        )
        if half > resolution:
            return False, detail + f" (cannot resolve {resolution:.0%}: more --pairs or a quieter machine)"
        return ratio >= 1 - resolution, detail


def compare_with_bare(overrides: list[str], model: str, precision: str, batch: int, device: torch.device,
                      out: Path, *, pairs: int, min_steps: int, target_s: float) -> Comparison:  # fmt: skip
    """Alternate harness cells and bare loops of the same work, each ≥ ``target_s`` of timed steps."""
    rate = bare_loop_rate(model, batch, 20, 5, device, precision)  # sizes the runs; warms the GPU up too
    steps = max(min_steps, math.ceil(target_s * rate / batch))
    result = Comparison(steps=steps)
    cell = plan_cell([o for o in overrides if not o.startswith("steps=")] + [f"steps={steps}"])

    def harness() -> None:
        docs = run_cell(cell, out)
        counting = [d for d in docs if d["counts_samples"]]
        seconds = max(d["phases"]["train"]["seconds"] for d in docs)
        result.harness.append(sum(d["phases"]["train"]["samples"] for d in counting) / seconds)

    def bare() -> None:
        result.bare.append(bare_loop_rate(model, batch, steps, 5, device, precision))
        if device.type == "cuda":  # the next harness cell gets the GPU's memory back from this process
            torch.cuda.empty_cache()

    for index in range(pairs):  # ABBA order: a drift in the machine's speed favours neither side
        for run in (harness, bare) if index % 2 == 0 else (bare, harness):
            run()
    return result


def step_clock_against_synchronised_steps(device: torch.device) -> tuple[float, str]:
    """Relative gap between StepClock's median step and the median of fully synchronised steps.

    resnet50 at batch 2048 keeps the GPU busier than the host, so a synchronised step is the
    device's time; a clock that stopped at kernel launch would read far less (shown too).
    """
    from jobs.measure import StepClock
    from jobs.models import build_model

    model = build_model("resnet50").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(2048, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (2048,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    for _ in range(3):
        step()
    clock, synced, launched = StepClock(device), [], []
    for _ in range(10):
        clock.start()
        step()
        clock.stop()
    for _ in range(10):
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        step()
        torch.cuda.synchronize(device)
        synced.append(time.perf_counter() - started)
    for _ in range(10):
        started = time.perf_counter()
        step()
        launched.append(time.perf_counter() - started)
    torch.cuda.synchronize(device)
    events, truth = statistics.median(clock.finish()), statistics.median(synced)
    gap = abs(events - truth) / truth
    return gap, (
        f"resnet50 batch 2048, median step: StepClock {events * 1e3:.2f} ms, synchronised {truth * 1e3:.2f} ms "
        f"(gap {gap:.3f}); host-only timing would read {statistics.median(launched) * 1e3:.2f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for the dumps and report.json")
    parser.add_argument("--steps", type=int, help="timed steps per cell (default 50 on GPU, 4 on CPU)")
    parser.add_argument(
        "--mnist-root",
        default=os.environ.get("DNNBENCH_MNIST_ROOT"),
        help="a torchvision MNIST root: adds real-MNIST cells (data resident on the device)",
    )
    parser.add_argument(
        "--pairs", type=int, help="harness/bare runs per overhead comparison (default 5 on GPU, 1 on CPU)"
    )
    parser.add_argument(
        "--budget-s", type=float, default=400.0, help="start no cell or comparison after this many seconds (400)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    gpu = torch.cuda.is_available()
    device = torch.device("cuda", 0) if gpu else torch.device("cpu")
    out = args.out or Path(tempfile.mkdtemp(prefix="dnnbench-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or (50 if gpu else 4)
    batch = 128 if gpu else 16
    name = torch.cuda.get_device_name(0) if gpu else "CPU (no GPU: GPU-only checks skipped)"
    try:  # every cell is planned before anything runs: bad input ends the check at once
        planned = plan_cells(gpu, steps, batch, args.mnist_root)
    except DnnbenchError as err:
        print(f"gpu-check: {err}", file=sys.stderr)
        return 2
    report = Report(device=name)
    from jobs.environment import numerics

    print(f"dnnbench GPU check on {name}, torch {torch.__version__}, dumps in {out}", flush=True)
    print(f"numerics: {json.dumps(numerics(torch))}", flush=True)
    if gpu:
        report.peaks = {k: round(v, 1) for k, v in measured_peaks(device).items()}
        print(f"measured matmul peaks, TFLOP/s: {json.dumps(report.peaks)}", flush=True)

    def in_budget(name: str) -> bool:
        if time.perf_counter() - started <= args.budget_s:
            return True
        report.check(name, None, f"not started: past --budget-s {args.budget_s:.0f}")
        return False

    for (framework, model, data, precision), _, cell in planned:
        label = f"{framework}/{model}/{data}/{precision}"
        if not in_budget(f"cell {label}"):
            continue
        cell_started = time.perf_counter()
        try:  # one broken cell is a failed check, the others still run
            docs = run_cell(cell, out)
            row = summarise(docs, framework, model, data, precision, flops_per_sample(model, device), report.peaks)
            row["wall_s"] = round(time.perf_counter() - cell_started, 1)
            report.rows.append(row)
            print(json.dumps(row), flush=True)
            checks_for(report, docs, row, gpu)
        except Exception as err:
            report.check(f"cell {label}", False, f"{type(err).__name__}: {err}")
        report.write(out)
    name = "step times are the device's (StepClock vs synchronised steps)"
    if not gpu:
        report.check(name, None, "no GPU")
    elif in_budget(name):
        try:
            gap, detail = step_clock_against_synchronised_steps(device)
            report.check(name, gap < 0.05, detail)
        except Exception as err:
            report.check(name, False, f"{type(err).__name__}: {err}")
    pairs = args.pairs or (5 if gpu else 1)
    for (framework, model, data, precision), overrides, _ in planned:
        if (framework, data) != ("ddp", "synthetic"):
            continue
        name = f"harness ≥ 0.99× bare loop ({model} {precision})"
        if not in_budget(name):
            continue
        try:
            compared = compare_with_bare(overrides, model, precision, batch, device, out / "overhead",
                                         pairs=pairs, min_steps=steps, target_s=3.0 if gpu else 0.0)  # fmt: skip
        except Exception as err:
            report.check(name, False, f"{type(err).__name__}: {err}")
            continue
        ok, detail = compared.verdict()
        for row in report.rows:
            if (row["framework"], row["model"], row["data"], row["precision"]) == (framework, model, data, precision):
                row["bare_img_s"] = round(statistics.median(compared.bare), 1)
        # On 2 shared CPU cores the ratio is noise: reported, not judged.
        report.check(name, ok if gpu else None, detail)
        report.write(out)
    print_table(report)
    report.write(out)
    print(f"gpu-check took {time.perf_counter() - started:.0f} s", flush=True)
    return 1 if report.failed else 0


def plan_cells(
    gpu: bool, steps: int, batch: int, mnist_root: str | None
) -> list[tuple[tuple[str, ...], list[str], Any]]:
    """((framework, model, data, precision), its overrides, planned cell) for every cell of the check."""
    common = [
        f"steps={steps}",
        "warmup_steps=5" if gpu else "warmup_steps=1",
        "val_steps=5" if gpu else "val_steps=2",
        f"batch_size={batch}",
        "gpus=1",
        "threads_per_process=1",
        # Planned here, run here: say so, rather than have the plan look for a driver.
        "device=cuda" if gpu else "device=cpu",
    ]
    planned = []
    for framework, model, data, precision in cell_matrix(gpu, bool(mnist_root)):
        # Real MNIST is decoded once and kept resident on the device (dataset.on_device).
        dataset = (
            ["dataset=synthetic"]
            if data == "synthetic"
            else ["dataset=mnist", f"dataset.root={mnist_root}", "dataset.on_device=true"]
        )
        overrides = [f"framework={framework}", f"model={model}", f"precision={precision}", *dataset, *common]
        planned.append(((framework, model, data, precision), overrides, plan_cell(overrides)))
    return planned


def cell_matrix(gpu: bool, mnist: bool) -> list[tuple[str, str, str, str]]:
    """(framework, model, data, precision) of every cell, cheapest first."""
    models = ["resnet18", "resnet50", "efficientnet_b0"] if gpu else ["resnet18"]
    precisions = ["fp32", "amp", "bf16"] if gpu else ["fp32"]
    cells = [("ddp", m, "synthetic", p) for m in models for p in precisions]
    cells += [("pipeline", m, "synthetic", "fp32") for m in models]  # the pipeline runs fp32 only
    if mnist:
        cells += [(framework, "resnet18", "mnist", "fp32") for framework in ("ddp", "pipeline")]
    return cells


def summarise(docs, framework, model, data, precision, flops, peaks) -> dict[str, Any]:
    counting = [d for d in docs if d["counts_samples"]]
    train = sum(d["phases"]["train"]["samples"] for d in counting) / max(d["phases"]["train"]["seconds"] for d in docs)
    val = sum(d["phases"]["val"]["samples"] for d in counting) / max(
        max(d["phases"]["val"]["seconds"] for d in docs), 1e-9
    )
    memory = {p: docs[0]["phases"][p]["memory"] for p in ("train", "val")}
    row = {
        "framework": framework,
        "model": model,
        "data": data,
        "precision": precision,
        "train_img_s": round(train, 1),
        "val_img_s": round(val, 1),
        "train_alloc_MiB": _mib(memory["train"].get("peak_allocated_bytes")),
        "train_reserved_MiB": _mib(memory["train"].get("peak_reserved_bytes")),
        "val_alloc_MiB": _mib(memory["val"].get("peak_allocated_bytes")),
        "tflops": round(train * flops / 1e12, 2),
    }
    if peaks:
        basis = peak_basis(precision)
        row["peak_basis"] = basis
        row["pct_of_peak"] = round(100 * row["tflops"] / peaks[basis], 2)
    return row


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def checks_for(report: Report, docs: list[dict], row: dict, gpu: bool) -> None:
    label = f"{row['framework']}/{row['model']}/{row['data']}/{row['precision']}"
    report.check(f"valid dumps {label}", all(not schema.validate(d) for d in docs), f"{len(docs)} rank(s)")
    coverage = min(
        sum(d["phases"][p]["step_times_s"]) / d["phases"][p]["seconds"] for d in docs for p in ("train", "val")
    )
    # A step clock that stopped at kernel launch would cover far less than its phase's wall time.
    report.check(
        f"steps cover the phase {label}",
        coverage >= (0.95 if gpu else 0.8),
        f"Σ step times / synchronised phase wall time ≥ {coverage:.3f}",
    )
    if not gpu:
        report.check(f"allocated ≤ reserved {label}", None, "no GPU")
        return
    memory = [d["phases"][p]["memory"] for d in docs for p in ("train", "val")]
    report.check(
        f"allocated ≤ reserved {label}",
        all(m["peak_allocated_bytes"] <= m["peak_reserved_bytes"] for m in memory),
        "every rank, both phases",
    )
    resets = all(
        d["phases"]["val"]["memory"]["peak_allocated_bytes"] < d["phases"]["train"]["memory"]["peak_allocated_bytes"]
        for d in docs
    )
    report.check(f"peaks reset between phases {label}", resets, "val peak < train peak on every rank")


def print_table(report: Report) -> None:
    print(f"\n## GPU check — {report.device}")
    if report.peaks:
        print("measured matmul peaks, TFLOP/s: " + ", ".join(f"{k} {v}" for k, v in report.peaks.items()))
    columns = list(dict.fromkeys(c for row in report.rows for c in row))
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in report.rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    print()
    for check, status, detail in report.checks:
        print(f"{status:4s}  {check}: {detail}")


if __name__ == "__main__":
    sys.exit(main())
