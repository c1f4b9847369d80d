"""Structured-config schema for every benchmark cell.

Hydra merges ``conf/config.yaml`` and the group options onto these dataclasses, so
an unknown key or a value of the wrong type is an error naming the key. Semantic
checks that span fields (``gpus`` against the cluster, micro-batches against the
batch) live in :mod:`orchestrator.config`, not here. A framework's own knob section
(``horovod:``, ``pipeline:``, ``fsdp:``) is declared beside its checks in jobs/checks/ and
added by :func:`bench_config` from the framework table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, make_dataclass
from functools import cache
from typing import Any, Literal, get_args

from omegaconf import MISSING

# Allowed values are Literal types, each with its tuple for the plan-time checks (their order is
# the order every "expected one of" names them in). A field holding one is typed str: OmegaConf has
# no Literal node type, so orchestrator/config.py and the framework checks test membership.

# `precision` (jobs/precision.py says what each runs in).
PrecisionName = Literal["fp32", "amp", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)
# `device`: auto is CUDA where Slurm allocated GPUs or CUDA starts (jobs/strategies/base.py).
DeviceName = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(DeviceName)
# `dataset.name` (jobs/data.py reads each).
DatasetName = Literal["mnist", "synthetic"]
DATASETS: tuple[str, ...] = get_args(DatasetName)


@dataclass
class FrameworkConfig:
    # A name in the framework table (jobs/frameworks.py FRAMEWORKS): every framework is a row there.
    name: str = MISSING
    # A name in jobs/launchers.py LAUNCHERS; the framework's row says which starts its ranks.
    launcher: str = MISSING
    # Process-group backend; auto = nccl on GPU, gloo on CPU.
    backend: str = "auto"


@dataclass
class ModelConfig:
    # Any torchvision classification model name (weights=None), adapted to the dataset's shape.
    name: str = MISSING
    # Slurm time limit for a cell of this model, minutes; null = the cluster profile's.
    time_limit_min: int | None = None


@dataclass
class DatasetConfig:
    name: str = MISSING  # a DatasetName
    # Folder holding MNIST/raw/*-idx*-ubyte(.gz), as torchvision.datasets.MNIST expects.
    root: str = "data"
    download: bool = False
    channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    # Caps on the splits (null = whole split); synthetic uses them as its sizes.
    train_samples: int | None = None
    val_samples: int | None = None
    # Copy the dataset files to node-local scratch ($TMPDIR) before reading.
    copy_to_scratch: bool = False
    # Keep the whole (small) dataset as tensors on the device: the loader is then not measured.
    on_device: bool = False
    num_workers: int = 0


@dataclass
class ClusterConfig:
    name: str = MISSING
    backend: str = MISSING  # a name in orchestrator/backends/base.py BACKENDS
    partition: str | None = None  # null = the cluster's default partition
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    # Hardware of one node; null = not checked (local CPU runs).
    gpus_per_node: int | None = None
    cpus_per_gpu: int = 2
    mem_per_gpu_gb: int | None = None
    # Ask Slurm for GPUs (--gpus-per-node); off on CPU-only partitions.
    request_gpus: bool = True
    # Whole nodes (#SBATCH --exclusive): no other job, another cell of the sweep included, shares a
    # node with a cell. Part of a cell's identity: a cell alone on its node measures another machine
    # than one beside other work (which the dumps record either way: extra.colocation).
    exclusive: bool = False
    # GPU model as the cluster's GRES names it (--gpus-per-node=TYPE:N, e.g. a100); null = any GPU.
    # Where nodes are told apart by features or partitions instead, use constraint or partition.
    gpu_type: str | None = None
    time_limit_min: int = 60
    # Shell lines run before the launcher in every job (module load …).
    setup: list[str] = field(default_factory=list)
    # Node-local scratch folder for dataset copies.
    scratch: str | None = None
    array_parallelism: int = 64
    # Requeues after timeout/preemption before a cell is called failed.
    max_requeues: int = 2
    # Seconds before the time limit at which Slurm signals the job (submitit's --signal).
    signal_delay_s: int = 90
    # Inter-node bandwidth for the pipeline planner, GB/s.
    interconnect_gbps: float = 12.5
    # Intra-node bandwidth between processes (NVLink/PCIe or shared memory), GB/s.
    intranode_gbps: float = 50.0
    # How the first node of a job reaches the others over ssh, for launchers that start
    # remote ranks themselves (horovodrun); null = ssh's own defaults (port 22, ~/.ssh keys).
    ssh_port: int | None = None
    ssh_identity_file: str | None = None


# Container runtimes an environment may name (orchestrator/containers.py renders each one's command).
ContainerRuntime = Literal["apptainer", "pyxis", "charliecloud"]
CONTAINER_RUNTIMES: tuple[str, ...] = get_args(ContainerRuntime)


@dataclass
class EnvConfig:
    """The software a cell runs in (docs/environments.md); ``env=<name>`` picks conf/env/<name>.yaml
    or a user environment (``dnnbench env create``). Part of a cell's identity, like the partition."""

    name: str = "current"
    # null = the interpreter dnnbench runs under; else an interpreter, or a venv/conda prefix (its bin/python).
    python: str | None = None
    # Shell lines run before the launcher, in the cell's own shell (module load …, source …).
    setup: list[str] = field(default_factory=list)
    # Set for every rank. Typed Any so that a number written unquoted is refused by name at plan
    # time (orchestrator/environments.py) instead of being turned into a string silently.
    variables: dict[str, Any] = field(default_factory=dict)
    # An image (path or name) the launcher runs inside, with its runtime (one of CONTAINER_RUNTIMES).
    container: str | None = None
    runtime: str | None = None  # ContainerRuntime; OmegaConf has no Literal node type
    mounts: list[str] = field(default_factory=list)
    # The lock `dnnbench env create` wrote (pip freeze and fingerprint); null = nothing is checked on the rank.
    lock: str | None = None


@dataclass
class BenchConfig:
    framework: FrameworkConfig = field(default_factory=FrameworkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    gpus: int = 1  # processes per node (one per GPU; CPU processes when no GPU)
    nodes: int = 1
    batch_size: int = 32  # per process (per data-parallel replica for pipelines)
    steps: int | None = 20  # timed training steps, after warm-up
    epochs: int | None = None  # when set, train whole epochs instead and ignore steps
    warmup_steps: int = 5
    val_steps: int | None = 10  # null = the whole validation split
    repeats: int = 1  # independent runs of each cell (separate jobs)
    repeat: int = 0  # which of them this is: set by the sweep, not by hand
    seed: int = 0
    precision: str = "fp32"  # a PrecisionName; amp and bf16 need a GPU
    # cuDNN tries the convolution algorithms for each input shape first and keeps the fastest.
    cudnn_benchmark: bool = False
    # Time each step's parts and the framework's collectives (jobs/breakdown.py). It costs DDP
    # 1–2.5 % of its throughput on a CPU (BENCHMARKS.md, "Step breakdown"), more than a measured
    # number may silently pay: off unless asked for, and part of the cell's identity.
    breakdown: bool = False
    threads_per_process: int = 1  # OMP_NUM_THREADS / torch threads, the same for every framework
    device: str = "auto"  # a DeviceName
    lr: float = 0.05
    momentum: float = 0.9


def bench_config(sections: Mapping[str, type] | None = None) -> type:
    """BenchConfig with the knob sections of the frameworks (``section -> dataclass``).

    A framework's knobs are declared beside its plan-time checks and named by its row in
    jobs/frameworks.py (``jobs.frameworks.knob_configs()``); conf is the bottom layer and imports
    no framework code, so the caller hands the sections in.
    """
    return _with_sections(tuple(sorted((sections or {}).items())))


@cache
def _with_sections(sections: tuple[tuple[str, type], ...]) -> type:
    if not sections:
        return BenchConfig
    clashes = sorted({name for name, _ in sections} & {f.name for f in fields(BenchConfig)})
    if clashes:
        raise ValueError(f"knob section(s) {', '.join(clashes)}: already keys of every cell's config")
    added = [(name, cls, field(default_factory=cls)) for name, cls in sections]
    composed = make_dataclass("BenchConfig", added, bases=(BenchConfig,))
    composed.__module__ = __name__  # make_dataclass's module= needs Python 3.12
    return composed


def register(sections: Mapping[str, type]) -> None:
    """Store the schema with the frameworks' knob sections: ``register(jobs.frameworks.knob_configs())``.

    No default: a schema without them would refuse every ``pipeline.*`` override as an unknown key.
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="base_config", node=bench_config(sections))
