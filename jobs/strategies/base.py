"""The strategy interface the one training loop (jobs/loop.py) talks to.

A strategy owns everything framework-specific: starting communication, placing the
process on a device, wrapping the model and optimizer, telling the loop which slice
of data this process reads, and what one training or evaluation step is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from jobs.breakdown import NO_PARTS, StepParts
from jobs.data import Shard
from jobs.environment import cuda_facts, slurm_allocated_gpus
from jobs.failures import NoGpuError
from jobs.precision import precision


@dataclass(frozen=True)
class Placement:
    rank: int
    local_rank: int
    world_size: int
    node_rank: int
    device: torch.device


@dataclass
class StepResult:
    loss: torch.Tensor | None
    # Samples that finished a whole training step on this process (0 on non-final pipeline stages).
    samples: int


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class of framework ``name`` (jobs/frameworks.py), its module imported now."""
    from jobs import frameworks

    row = frameworks.framework(name)
    if row.strategy is None:
        raise ValueError(f"framework {name!r} runs no training ranks (launcher {row.launcher} writes its dumps)")
    return frameworks.load(row.strategy)


def resolve_device(requested: str, local_rank: int, local_world: int = 1) -> torch.device:
    """This process's device: ``auto`` is CUDA when Slurm allocated GPUs or CUDA starts.

    On a GPU allocation ``auto`` never falls back to the CPU: a driver too old for the
    wheel's CUDA would otherwise turn a GPU sweep into a CPU one that completes.
    ``local_world`` processes on this node need as many GPUs, one each.
    """
    allocated = slurm_allocated_gpus()
    if requested == "cpu" or (requested == "auto" and not allocated and not torch.cuda.is_available()):
        return torch.device("cpu")
    problem = gpu_shortfall(local_world)
    if problem:
        raise NoGpuError(no_gpu_reason(requested, allocated, problem, cuda_facts()))
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def gpu_shortfall(local_world: int) -> str | None:
    """Why ``local_world`` processes cannot have one GPU each here, or None."""
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    count = torch.cuda.device_count()
    if count < local_world:
        return f"torch sees {count} GPU(s) for {local_world} process(es) on this node"
    return None


def no_gpu_reason(requested: str, allocated: int, problem: str, facts: dict[str, Any]) -> str:
    asked = f"device={requested}"
    if allocated:
        asked += f" on a Slurm allocation of {allocated} GPU(s) on this node"
    shown = ", ".join(f"{key}={value}" for key, value in facts.items())
    return (
        f"{asked}, but {problem} ({shown}). A GPU cell does not fall back to the CPU: check that the "
        "node's NVIDIA driver supports torch's CUDA (torch_cuda) and that every process has a GPU, "
        "or run it on the CPU with device=cpu."
    )


def resolve_backend(requested: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    return "nccl" if device.type == "cuda" else "gloo"


class Strategy(ABC):
    name: ClassVar[str]
    # True when this process's finished samples count toward global throughput.
    counts_samples: bool = True
    # Where the parts of a timed step go (jobs/breakdown.py); the loop sets it for each timed phase.
    parts: StepParts = NO_PARTS

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.placement: Placement | None = None

    @abstractmethod
    def setup(self) -> Placement:
        """Start communication and choose this process's device."""

    @abstractmethod
    def build(self, model_factory: Callable[[], nn.Module]) -> None:
        """Create (or receive) the model and optimizer, wrapped for this framework."""

    @abstractmethod
    def data_shard(self) -> Shard:
        """Which slice of the data this process reads."""

    @abstractmethod
    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> StepResult: ...

    @abstractmethod
    def eval_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
        """(correct, evaluated) predictions made by this process; (0, 0) if it makes none."""

    @abstractmethod
    def barrier(self) -> None: ...

    def begin_phase(self, phase: str) -> None:  # noqa: B027 - optional hook
        """The loop enters ``warmup`` (untimed steps), ``train`` (timed steps) or ``val``, before that phase's
        barrier and memory reset. A strategy whose steps leave work in flight (a pipeline without a flush)
        finishes it at ``val``."""

    @abstractmethod
    def parameter_digests(self) -> list[float]:
        """A digest of the parameters each process holds, gathered from all of them."""

    def framework_knobs(self) -> dict[str, Any] | None:
        """Settings of this framework that change its speed (Horovod's fusion buffer, …)."""
        return None

    def pipeline_metrics(self) -> dict[str, Any] | None:
        """The dump's ``pipeline`` section: stage times, bubble, plan; None for data parallel."""
        return None

    def model_state(self) -> dict[str, int] | None:
        """The dump's ``model_state`` section: bytes of parameters, gradients and optimizer state this
        process owns (jobs/model_state.py), read after training; None where the strategy cannot tell."""
        return None

    def communication_probes(self) -> list[dict[str, Any]]:
        """All-reduce probes of the bandwidth between this cell's processes (jobs/comm_probe.py),
        run before warm-up by every rank together; none on one process."""
        return []

    def step_collectives(self) -> list[dict[str, Any]]:
        """The collectives of one training step of this process (jobs/comm_probe.py ``collective``)."""
        return []

    # The breakdown's parts in which this strategy's collectives are timed: ``comm`` (their
    # intervals), and for a pipeline also ``wait``, where its sends and receives block.
    communication_timed_in: tuple[str, ...] = ("comm",)

    def teardown(self) -> None:  # noqa: B027 - optional hook
        """Stop communication; called once, also after a failure."""

    @property
    def device(self) -> torch.device:
        assert self.placement is not None, "setup() first"
        return self.placement.device

    def autocast(self) -> AbstractContextManager[Any]:
        return precision(self.cfg.precision).autocast(self.device)
