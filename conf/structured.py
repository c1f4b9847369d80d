"""Structured-config schema for every benchmark cell.

Hydra merges ``conf/config.yaml`` and the group options onto these dataclasses, so
an unknown key or a value of the wrong type is an error naming the key. Semantic
checks that span fields (``gpus`` against the cluster, micro-batches against the
batch) live in :mod:`orchestrator.config`, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# Names of `precision` (jobs/precision.py says what each runs in).
PRECISIONS = ("fp32", "amp", "bf16")


@dataclass
class FrameworkConfig:
    # Registry key of the rank-side strategy (jobs/strategies): ddp | horovod | pipeline | model_parallel.
    name: str = MISSING
    # Registry key of the launcher (jobs/launchers.py): torchrun | horovodrun.
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
    name: str = MISSING  # mnist | synthetic
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
    backend: str = MISSING  # local | slurm
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


@dataclass
class HorovodConfig:
    fusion_threshold_mb: int = 64  # HOROVOD_FUSION_THRESHOLD
    cycle_time_ms: float = 1.0  # HOROVOD_CYCLE_TIME
    compression: str = "none"  # none | fp16
    autotune: bool = False  # horovodrun --autotune
    timeline: bool = False  # horovodrun --timeline-filename, kept per cell


# Names of `fsdp.param_dtype` / `fsdp.reduce_dtype`; anything but fp32 needs a GPU (jobs/strategies/fsdp.py).
FSDP_DTYPES = ("fp32", "bf16", "fp16")
# Names of `fsdp.wrap`: `block` shards every block of jobs/pipeline/blocks.py and the root; `root_only` the root.
FSDP_WRAPS = ("block", "root_only")


@dataclass
class FsdpConfig:
    # Free each block's gathered parameters after its forward (gathered again for the backward).
    reshard_after_forward: bool = True
    # FSDP's MixedPrecisionPolicy: dtype of the gathered parameters (compute) and of gradient reduction.
    param_dtype: str = "fp32"  # one of FSDP_DTYPES
    reduce_dtype: str = "fp32"  # one of FSDP_DTYPES
    wrap: str = "block"  # one of FSDP_WRAPS


@dataclass
class PipelineConfig:
    schedule: str = "1f1b"  # 1f1b | gpipe | interleaved_1f1b | pipedream | pipedream_2bw (docs/pipeline.md)
    microbatches: int = 4
    # Stages per replica and data-parallel replicas of every stage: stages × replicas = processes.
    # auto (both): the planner chooses them (PipeDream's replication, jobs/pipeline/planner.py
    # choose_shape); an int ≥ 1 fixes one and the other follows. Typed Any so that Hydra keeps
    # `pipeline.stages=2` an int beside the string auto (checked in jobs/checks/pipeline.py).
    # Configs stored before auto existed hold stages: null, replicas: 1: one stage per process.
    stages: Any = "auto"
    replicas: Any = "auto"
    # Manual split: first block index of stages 1..S-1 (empty = let the planner choose).
    split: list[int] = field(default_factory=list)
    # The link bandwidth the planner weighs: `measured` (the cell's own probe before planning,
    # cached per set of nodes: jobs/pipeline/bandwidth.py) or `config` (cluster.intranode_gbps and
    # cluster.interconnect_gbps, as configs stored before measuring ran).
    bandwidth: str = "measured"


@dataclass
class BenchConfig:
    framework: FrameworkConfig = field(default_factory=FrameworkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    horovod: HorovodConfig = field(default_factory=HorovodConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    fsdp: FsdpConfig = field(default_factory=FsdpConfig)
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
    precision: str = "fp32"  # one of PRECISIONS; amp and bf16 need a GPU
    # cuDNN tries the convolution algorithms for each input shape first and keeps the fastest.
    cudnn_benchmark: bool = False
    threads_per_process: int = 1  # OMP_NUM_THREADS / torch threads, the same for every framework
    device: str = "auto"  # auto | cpu | cuda
    lr: float = 0.05
    momentum: float = 0.9


def register() -> None:
    ConfigStore.instance().store(name="base_config", node=BenchConfig)
