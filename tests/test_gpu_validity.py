"""What a real GPU cluster would falsify silently, made visible and tested where this machine can.

- ``device=auto`` on a Slurm GPU allocation is CUDA: without a usable GPU the cell fails
  ``no_gpu`` with the driver/torch facts, never runs on the CPU (real cells, through the CLI,
  under the variables Slurm 22.05 sets for a GPU allocation; and those variables from the
  dev cluster's real ``srun``).
- Memory: a phase's baseline excludes what earlier work left cached (pipeline profiling);
  the host RSS peak is per phase on every device; DataLoader batches for a GPU are pinned.
- Horovod on a GPU refuses a build without NCCL; every dump records what Horovod was built with.
- Every rank records the CPUs it may run on and the GPUs it sees.
The CUDA allocator parts are ``gpu``-marked: scripts/gpu-check.sh runs them where a GPU is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from slurm_fixtures import slurm_cluster  # noqa: F401

from jobs.environment import cpu_ranges, slurm_allocated_gpus
from jobs.failures import GpuCollectivesError, NoGpuError, RankFailure, rank_failure, write_rank_failure

REPO = Path(__file__).resolve().parents[1]
DNNBENCH = [sys.executable, "-m", "orchestrator.cli"]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# What the dev cluster's Slurm 22.05 put in an srun step's environment, per way of asking for GPUs.
STEP_ENV = {
    "--gpus-per-node=2": {"CUDA_VISIBLE_DEVICES": "0,1", "GPU_DEVICE_ORDINAL": "0,1", "SLURM_GPUS_ON_NODE": "2",
                          "SLURM_GPUS_PER_NODE": "2", "SLURM_JOB_GPUS": "0,1", "SLURM_STEP_GPUS": "0,1"},
    "--gres=gpu:2": {"CUDA_VISIBLE_DEVICES": "0,1", "GPU_DEVICE_ORDINAL": "0,1", "SLURM_GPUS_ON_NODE": "2",
                     "SLURM_JOB_GPUS": "0,1", "SLURM_STEP_GPUS": "0,1"},
    "--gpus=1": {"CUDA_VISIBLE_DEVICES": "0", "SLURM_GPUS": "1", "SLURM_GPUS_ON_NODE": "1", "SLURM_JOB_GPUS": "0",
                 "SLURM_STEP_GPUS": "0"},
    "--gpus-per-task=1": {"CUDA_VISIBLE_DEVICES": "0", "SLURM_GPUS_ON_NODE": "1", "SLURM_GPUS_PER_TASK": "1",
                          "SLURM_JOB_GPUS": "0", "SLURM_STEP_GPUS": "0"},
}  # fmt: skip
# A 1-GPU allocation as the ranks of a cell see it (--gpus-per-node=1).
ONE_GPU = {"CUDA_VISIBLE_DEVICES": "0", "GPU_DEVICE_ORDINAL": "0", "SLURM_GPUS_ON_NODE": "1",
           "SLURM_GPUS_PER_NODE": "1", "SLURM_JOB_GPUS": "0", "SLURM_STEP_GPUS": "0"}  # fmt: skip
TINY = ["model=resnet18", "dataset=synthetic", "gpus=1", "batch_size=8", "steps=2", "warmup_steps=0", "val_steps=2",
        "dataset.train_samples=64", "dataset.val_samples=32"]  # fmt: skip


# ------------------------------------------------------------------ §2: device=auto on a GPU allocation
@pytest.mark.parametrize("option", sorted(STEP_ENV))
def test_every_way_of_asking_slurm_for_gpus_is_seen(option: str) -> None:
    wanted = int(STEP_ENV[option]["SLURM_GPUS_ON_NODE"])
    assert slurm_allocated_gpus(STEP_ENV[option]) == wanted
    # Each variable alone is enough, as on sites or versions that set fewer of them.
    assert slurm_allocated_gpus({"SLURM_JOB_GPUS": STEP_ENV[option]["SLURM_JOB_GPUS"]}) == wanted


@pytest.mark.parametrize(
    ("environ", "gpus"),
    [({}, 0), ({"CUDA_VISIBLE_DEVICES": "0,1"}, 0), ({"SLURM_GPUS_PER_NODE": "a100:4"}, 4),
     ({"SLURM_GPUS_ON_NODE": "0"}, 0), ({"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "8"}, 0)],
)  # fmt: skip
def test_no_slurm_gpu_allocation_is_zero_gpus(environ: dict[str, str], gpus: int) -> None:
    # CUDA_VISIBLE_DEVICES alone is a user's setting, not an allocation.
    assert slurm_allocated_gpus(environ) == gpus


@pytest.mark.slurm
def test_the_dev_clusters_slurm_sets_what_the_rank_reads(slurm_cluster) -> None:  # noqa: F811
    code = "from jobs.environment import slurm_allocated_gpus; print(slurm_allocated_gpus())"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    seen = {}
    for asked in (["--gres=gpu:2"], ["--gpus-per-node=1"], []):
        done = subprocess.run(["srun", "-N1", "-n1", "-t", "2", *asked, sys.executable, "-c", code],
                              capture_output=True, text=True, timeout=120, env=env, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        seen[" ".join(asked) or "no GPUs"] = int(done.stdout.split()[-1])
    assert seen == {"--gres=gpu:2": 2, "--gpus-per-node=1": 1, "no GPUs": 0}


@dataclass
class CliRun:
    out: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def attempt(self) -> Path:
        (folder,) = self.out.glob("cells/*/attempt_0")
        return folder


@pytest.fixture(scope="module")
def cells_on_gpu_allocation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CliRun]:
    """Real cells through ``dnnbench run`` where Slurm says 1 GPU is allocated (this machine has none):
    ``auto``, a DDP cell left to choose its device, and ``cpu``, a Horovod cell that says device=cpu.
    Started together: each spends most of its time starting Python and torch."""
    pytest.importorskip("horovod.torch", reason="horovod not installed (scripts/install-horovod.sh)")
    cells = {"auto": ["framework=ddp", "device=auto", *TINY], "cpu": ["framework=horovod", "device=cpu", *TINY]}
    started = {}
    for name, overrides in cells.items():
        out = tmp_path_factory.mktemp(name)
        argv = [*DNNBENCH, "run", *overrides, "--out", str(out), "--quiet"]
        process = subprocess.Popen(argv, cwd=REPO, env={**os.environ, **ONE_GPU}, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        started[name] = (out, process)
    runs = {}
    for name, (out, process) in started.items():
        stdout, stderr = process.communicate(timeout=300)
        runs[name] = CliRun(out, process.returncode, stdout, stderr)
    return runs


@pytest.fixture(scope="module")
def cpu_cell_on_gpu_allocation(cells_on_gpu_allocation: dict[str, CliRun]) -> dict:
    done = cells_on_gpu_allocation["cpu"]
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads((done.attempt / "rank_0.json").read_text())


def test_auto_on_a_gpu_allocation_without_a_usable_gpu_fails_no_gpu(cells_on_gpu_allocation) -> None:
    done = cells_on_gpu_allocation["auto"]
    assert done.returncode == 3, done.stdout + done.stderr  # CELLS_FAILED, not a completed CPU cell
    folder = done.attempt
    assert not list(folder.glob("rank_*.json")), "a rank measured something: it fell back to the CPU"
    failure = rank_failure(folder)
    assert failure is not None, sorted(p.name for p in folder.iterdir())
    failure_class, reason = failure
    assert failure_class == "no_gpu"
    assert reason.startswith("device=auto on a Slurm allocation of 1 GPU(s) on this node, but ")
    # The facts that tell a driver too old for the wheel from a node without GPUs.
    for fact in ("torch=", "torch_cuda=", "gpu_driver=", "cuda_init_error=", "CUDA_VISIBLE_DEVICES=0",
                 "SLURM_GPUS_ON_NODE=1"):  # fmt: skip
        assert fact in reason, reason
    assert "NoGpuError: device=auto on a Slurm allocation" in done.stderr
    assert "Traceback" in (folder / "error_rank_0.txt").read_text()


def test_cpu_cell_on_a_gpu_allocation_runs_on_the_cpu(cpu_cell_on_gpu_allocation: dict) -> None:
    doc = cpu_cell_on_gpu_allocation
    assert (doc["device_type"], doc["memory_kind"]) == ("cpu", "rss")
    assert doc["phases"]["train"]["samples"] == 16


def test_device_count_below_processes_per_node_is_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.strategies.base import resolve_device

    # A node where CUDA starts but shows one GPU to two processes: cannot be made on a CPU machine.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: pytest.fail("set_device before the check"))
    with pytest.raises(NoGpuError, match=r"device=cuda, but torch sees 1 GPU\(s\) for 2 process\(es\) on this node"):
        resolve_device("cuda", 1, 2)


def test_the_lowest_rank_failure_is_the_cells(tmp_path: Path) -> None:
    write_rank_failure(tmp_path, 10, GpuCollectivesError("ten"))
    write_rank_failure(tmp_path, 2, NoGpuError("two"))
    (tmp_path / "failure_rank_1.json").write_text("{half")  # a rank killed while writing is skipped
    assert rank_failure(tmp_path) == ("no_gpu", "two")
    assert rank_failure(tmp_path / "none") is None
    assert issubclass(NoGpuError, RankFailure) and issubclass(GpuCollectivesError, RuntimeError)


# ------------------------------------------------------------------ §1: per-rank CPUs and GPUs
def test_every_rank_records_its_cpus_and_gpus(cpu_cell_on_gpu_allocation: dict) -> None:
    from jobs.schema import COMPARABLE_KEYS

    resources = cpu_cell_on_gpu_allocation["environment"]["resources"]
    allowed = os.sched_getaffinity(0)  # the rank inherited this process's affinity: no binding here
    assert resources["cpus_allowed"] == cpu_ranges(allowed)
    assert resources["cpus_allowed_count"] == len(allowed)
    assert resources["cuda_visible_devices"] == "0"
    assert (resources["gpus_visible"], resources["gpu_names"]) == (0, [])
    assert resources["slurm_gpus_allocated"] == 1
    assert resources["slurm_gpu_variables"]["SLURM_JOB_GPUS"] == "0"
    assert "resources" not in COMPARABLE_KEYS  # what a cell was given is checked, not hashed


def test_cpu_ranges_read_as_taskset_prints_them() -> None:
    assert cpu_ranges([3, 0, 1, 2, 8, 10, 11]) == "0-3,8,10-11"
    assert cpu_ranges([5]) == "5" and cpu_ranges([]) == ""


# ------------------------------------------------------------------ §4: Horovod's collectives on GPU
def test_horovod_dump_records_what_it_was_built_with(cpu_cell_on_gpu_allocation: dict) -> None:
    import horovod.torch as hvd

    knobs = cpu_cell_on_gpu_allocation["extra"]["framework_knobs"]
    assert knobs["nccl_built"] == int(hvd.nccl_built())
    assert (knobs["mpi_built"], knobs["gloo_built"], knobs["cuda_built"]) == (
        hvd.mpi_built(), hvd.gloo_built(), hvd.cuda_built()
    )  # fmt: skip


def test_horovod_refuses_a_gpu_cell_without_nccl() -> None:
    horovod_strategy = pytest.importorskip("jobs.strategies.horovod", reason="horovod not installed")
    check = horovod_strategy.check_gpu_collectives
    builds = {"nccl": 0, "mpi": False, "gloo": True, "cuda": True}
    with pytest.raises(GpuCollectivesError, match=r"built without NCCL .* HOROVOD_GPU_OPERATIONS=NCCL") as raised:
        check(torch.device("cuda", 0), builds)
    assert raised.value.failure_class == "no_nccl"
    check(torch.device("cpu"), builds)  # Gloo on CPU tensors is what a CPU cell measures
    check(torch.device("cuda", 0), {**builds, "nccl": 22703})


def test_horovod_setup_checks_the_build_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    horovod_strategy = pytest.importorskip("jobs.strategies.horovod", reason="horovod not installed")
    from omegaconf import OmegaConf

    # No GPU here: the device is injected; the build as a CUDA Horovod without NCCL reports it.
    monkeypatch.setattr(horovod_strategy, "resolve_device", lambda *args: torch.device("cuda", 0))
    monkeypatch.setattr(horovod_strategy, "horovod_builds", lambda: {"nccl": 0, "mpi": False, "gloo": True,
                                                                    "cuda": True})  # fmt: skip
    strategy = horovod_strategy.HorovodStrategy(OmegaConf.create({"device": "cuda"}))
    try:
        with pytest.raises(GpuCollectivesError):
            strategy.setup()
        assert strategy.placement is None
    finally:
        strategy.teardown()


# ------------------------------------------------------------------ §3: memory and data on GPU
PROFILE_THEN_PHASE = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, {repo!r})
    torch.set_num_threads(1)
    from jobs.measure import current_rss_bytes, memory_probe, peak_rss_bytes
    from jobs.models import build_model
    from jobs.pipeline.profiler import profile_blocks
    device = torch.device({device!r})
    # The rank's own model is built (and torchvision's code loaded) before pipeline profiling.
    model = build_model("resnet18", num_classes=10, in_channels=1).to(device)
    before = current_rss_bytes()
    reserved_before = torch.cuda.memory_reserved(device) if device.type == "cuda" else 0
    profile_blocks(build_model("resnet18", num_classes=10, in_channels=1), "resnet18", [1, 28, 28], {microbatch},
                   device, warmup=1, repeats=1)
    doc = {{"before": before, "profiling_peak": peak_rss_bytes(), "left_resident": current_rss_bytes()}}
    if device.type == "cuda":
        doc.update(reserved_before=reserved_before, profiling_reserved=torch.cuda.max_memory_reserved(device))
    probe = memory_probe(device)
    probe.reset()  # the start of the first phase, as jobs/loop.py does it
    doc["phase"] = probe.read()
    print(json.dumps(doc))
""")


def profile_then_phase(device: str, microbatch: int) -> dict:
    code = PROFILE_THEN_PHASE.format(repo=str(REPO), device=device, microbatch=microbatch)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_the_phase_baseline_excludes_what_profiling_left_resident() -> None:
    doc = profile_then_phase("cpu", microbatch=128)
    mib = 2**20
    grown, left = doc["profiling_peak"] - doc["before"], doc["left_resident"] - doc["before"]
    # Profiling leaves freed memory resident (glibc keeps it as the CUDA allocator keeps blocks).
    assert left > 32 * mib, f"profiling left only {left / mib:.0f} MiB resident: nothing to show here"
    baseline = doc["phase"]["peak_rss_bytes"] - doc["before"]
    assert baseline < left / 2, (
        f"phase baseline +{baseline / mib:.0f} MiB holds what profiling left (+{left / mib:.0f} MiB, "
        f"peak +{grown / mib:.0f} MiB)"
    )
    assert doc["phase"]["peak_is_per_phase"] is True


@pytest.mark.gpu
@needs_gpu
def test_the_phase_baseline_excludes_what_profiling_left_in_the_cuda_allocator() -> None:
    doc = profile_then_phase("cuda:0", microbatch=512)
    held = doc["profiling_reserved"] - doc["reserved_before"]
    assert held > 64 * 2**20, "profiling reserved too little to show anything"
    # reset_peak_memory_stats alone would start the phase at the profile's reserved blocks.
    assert doc["phase"]["peak_reserved_bytes"] - doc["reserved_before"] < held / 4, doc
    assert doc["phase"]["peak_is_per_phase"] is True and doc["phase"]["kind"] == "cuda"


@pytest.mark.gpu
@needs_gpu
def test_the_host_rss_peak_is_per_phase_on_gpu_too() -> None:
    from jobs.measure import memory_probe

    probe = memory_probe(torch.device("cuda", 0))
    ballast = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB of host memory, touched
    del ballast
    probe.reset()
    record = probe.read()
    assert record["peak_is_per_phase"] is True
    assert record["peak_rss_bytes"] <= record["end_rss_bytes"] + 16 * 2**20, record


def mnist_loader_config(root: Path):
    from omegaconf import OmegaConf

    from orchestrator.sweep import plan

    overrides = ["dataset=mnist", f"dataset.root={root}", "dataset.on_device=false", "dataset.train_samples=64",
                 "dataset.val_samples=32", "batch_size=16", "device=cpu"]  # fmt: skip
    (cell,) = plan(overrides).cells
    return OmegaConf.create(cell.config)


def test_loader_batches_for_a_gpu_come_from_pinned_memory(mnist_root: Path) -> None:
    from jobs.data import Shard, build_batches

    cfg = mnist_loader_config(mnist_root)
    # Building the loader touches no GPU: what it is told about the device is all this checks.
    source, record = build_batches(cfg, Shard(0, 1), torch.device("cuda", 0))
    assert source.train_loader.pin_memory and source.val_loader.pin_memory and record["pinned"] is True
    source, record = build_batches(cfg, Shard(0, 1), torch.device("cpu"))
    assert not source.train_loader.pin_memory and record["pinned"] is False


@pytest.mark.gpu
@needs_gpu
def test_loader_batches_are_pinned_on_a_gpu(mnist_root: Path) -> None:
    from jobs.data import Shard, build_batches

    source, _ = build_batches(mnist_loader_config(mnist_root), Shard(0, 1), torch.device("cuda", 0))
    images, labels = next(iter(source.train_epoch(0)))
    assert images.is_pinned() and labels.is_pinned()
