"""Prove the GPU paths: real cells on one GPU, the checks the CPU cannot make, one table.

Run through ``scripts/gpu-check.sh`` (it finds Python and the carried wheels). On a GPU:
1-GPU DDP (nccl) and pipeline cells on resnet18/resnet50/efficientnet_b0, synthetic and
MNIST-shaped data resident on the device, AMP off and on; then
- allocated ≤ reserved on every phase (the schema rejects a dump otherwise),
- the peaks are reset between phases (validation's peak below training's),
- step times are device-synchronised: StepClock against CUDA events over the same steps,
- harness overhead: dnnbench's img/s against a bare loop on the same GPU,
- achieved TFLOP/s against the card's measured fp32/bf16 matmul peak.
On a CPU the same script runs a small subset and marks the GPU-only checks skipped, so CI
keeps it working. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
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


@dataclass
class Report:
    rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[tuple[str, str, str]] = field(default_factory=list)  # (name, PASS|FAIL|SKIP, detail)

    def check(self, name: str, ok: bool | None, detail: str) -> None:
        self.checks.append((name, "SKIP" if ok is None else "PASS" if ok else "FAIL", detail))

    @property
    def failed(self) -> bool:
        return any(status == "FAIL" for _, status, _ in self.checks)


def run_cell(overrides: list[str], out: Path) -> list[dict[str, Any]]:
    from orchestrator import sweep
    from orchestrator.runner import run_cell as run
    from orchestrator.submit import write_cell_file

    (cell,) = sweep.plan(overrides).cells
    cell_file = out / cell.id / "cell.json"
    write_cell_file(cell_file, cell)
    attempt = out / cell.id / "attempt_0"
    run(str(cell_file), str(attempt))
    return [schema.load(p) for p in sorted(attempt.glob("rank_*.json"))]


def flops_per_sample(model_name: str, device: torch.device) -> float:
    """Forward FLOPs of one 1×28×28 sample, ×3 for forward + backward."""
    from torch.utils.flop_counter import FlopCounterMode

    from jobs.models import build_model

    model = build_model(model_name).to(device)
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(8, 1, 28, 28, device=device))
    return 3.0 * counter.get_total_flops() / 8


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, n: int = 8192) -> float:
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


def bare_loop_rate(model_name: str, batch: int, steps: int, warmup: int, device: torch.device, amp: bool) -> float:
    """The same work without the harness: one process, DDP of one rank, tensors on the device."""
    import torch.distributed as dist
    from torch import nn

    from jobs.models import build_model

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
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    images = torch.randn(4096, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (4096,), device=device)
    per_epoch = 4096 // batch

    def step(i: int) -> None:
        lo = (i % per_epoch) * batch
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = nn.functional.cross_entropy(model(images[lo : lo + batch]), labels[lo : lo + batch])
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

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


def timing_is_synchronised(device: torch.device) -> tuple[float, str]:
    """Largest relative gap between StepClock and CUDA events over the same steps."""
    from jobs.measure import StepClock
    from jobs.models import build_model

    model = build_model("resnet50").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    clock, gaps = StepClock(device), []
    for i in range(8):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        clock.start()
        begin.record()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        end.record()
        wall = clock.stop()
        end.synchronize()
        if i >= 2:
            events = begin.elapsed_time(end) / 1000
            gaps.append(abs(wall - events) / events)
    return max(gaps), f"max |StepClock − CUDA events| / events = {max(gaps):.3f} over 6 steps"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for the dumps and report.json")
    parser.add_argument("--steps", type=int, help="timed steps per cell (default 50 on GPU, 4 on CPU)")
    parser.add_argument(
        "--mnist-root",
        default=os.environ.get("DNNBENCH_MNIST_ROOT"),
        help="a torchvision MNIST root: adds real-MNIST cells (data resident on the device)",
    )
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    device = torch.device("cuda", 0) if gpu else torch.device("cpu")
    out = args.out or Path(tempfile.mkdtemp(prefix="dnnbench-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or (50 if gpu else 4)
    batch = 128 if gpu else 16
    models = ["resnet18", "resnet50", "efficientnet_b0"] if gpu else ["resnet18"]
    precisions = ["fp32", "amp"] if gpu else ["fp32"]
    report = Report()
    name = torch.cuda.get_device_name(0) if gpu else "CPU (no GPU: GPU-only checks skipped)"
    print(f"dnnbench GPU check on {name}, torch {torch.__version__}, dumps in {out}", flush=True)
    common = [
        f"steps={steps}",
        "warmup_steps=5" if gpu else "warmup_steps=1",
        "val_steps=5" if gpu else "val_steps=2",
        f"batch_size={batch}",
        "gpus=1",
        "threads_per_process=1",
    ]
    peaks = {}
    if gpu:
        peaks = {dtype: matmul_peak_tflops(device, dtype) for dtype in (torch.float32, torch.bfloat16)}
    for model in models:
        flops = flops_per_sample(model, device)
        for framework in ("ddp", "pipeline"):
            for data in ("synthetic", "mnist") if args.mnist_root else ("synthetic",):
                for precision in precisions if framework == "ddp" else ["fp32"]:
                    # Real MNIST, decoded once and kept resident on the device (dataset.on_device).
                    dataset = (
                        ["dataset=synthetic"]
                        if data == "synthetic"
                        else ["dataset=mnist", f"dataset.root={args.mnist_root}", "dataset.on_device=true"]
                    )
                    overrides = [
                        f"framework={framework}",
                        f"model={model}",
                        f"precision={precision}",
                        *dataset,
                        *common,
                    ]
                    started = time.perf_counter()
                    docs = run_cell(overrides, out)
                    row = summarise(docs, framework, model, data, precision, flops, peaks, device)
                    row["wall_s"] = round(time.perf_counter() - started, 1)
                    report.rows.append(row)
                    print(json.dumps(row), flush=True)
                    checks_for(report, docs, row, gpu)
    if gpu:
        gap, detail = timing_is_synchronised(device)
        report.check("step timing device-synchronised", gap < 0.05, detail)
    else:
        report.check("step timing device-synchronised", None, "no GPU")
    harness = [r for r in report.rows if r["framework"] == "ddp" and r["data"] == "synthetic"]
    for row in harness:
        bare = bare_loop_rate(row["model"], batch, steps, 5, device, row["precision"] == "amp")
        row["bare_img_s"] = round(bare, 1)
        ratio = row["train_img_s"] / bare
        target = 0.99 if gpu else None  # on 2 shared CPU cores the ratio is noise: reported, not judged
        report.check(
            f"harness ≥ 0.99× bare loop ({row['model']} {row['precision']})",
            None if target is None else ratio >= target,
            f"ratio {ratio:.3f}",
        )
    print_table(report, name, peaks)
    (out / "report.json").write_text(
        json.dumps({"device": name, "rows": report.rows, "checks": report.checks}, indent=1)
    )
    return 1 if report.failed else 0


def summarise(docs, framework, model, data, precision, flops, peaks, device) -> dict[str, Any]:
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
        peak = peaks[torch.bfloat16] if precision == "amp" else peaks[torch.float32]
        row["pct_of_peak"] = round(100 * row["tflops"] / peak, 1)
    return row


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def checks_for(report: Report, docs: list[dict], row: dict, gpu: bool) -> None:
    label = f"{row['framework']}/{row['model']}/{row['data']}/{row['precision']}"
    report.check(f"valid dumps {label}", all(not schema.validate(d) for d in docs), f"{len(docs)} rank(s)")
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


def print_table(report: Report, name: str, peaks: dict) -> None:
    print(f"\n## GPU check — {name}")
    if peaks:
        print(
            f"measured matmul peak: fp32 {peaks[torch.float32]:.1f} TFLOP/s, bf16 {peaks[torch.bfloat16]:.1f} TFLOP/s"
        )
    columns = list(report.rows[0]) if report.rows else []
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in report.rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    print()
    for check, status, detail in report.checks:
        print(f"{status:4s}  {check}: {detail}")


if __name__ == "__main__":
    sys.exit(main())
