"""What a scheduler backend does: submit groups of cells, and say what became of jobs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.registry import Registry
from orchestrator.errors import ConfigError
from orchestrator.ledger import AttemptRow, Ledger
from orchestrator.paths import SweepPaths


@dataclass(frozen=True)
class Shape:
    """The resource request a Slurm array shares: cells with equal shapes share an array."""

    nodes: int
    gpus_per_node: int
    cpus_per_task: int
    mem_gb: int | None
    time_min: int
    partition: str | None
    account: str | None
    qos: str | None
    constraint: str | None
    request_gpus: bool
    gpu_type: str | None = None  # typed GRES: --gpus-per-node=TYPE:N

    @classmethod
    def of(cls, config: dict[str, Any]) -> Shape:
        cluster = config["cluster"]
        gpus = config["gpus"]
        mem = cluster.get("mem_per_gpu_gb")
        return cls(
            nodes=config["nodes"],
            gpus_per_node=gpus,
            cpus_per_task=max(1, gpus * cluster["cpus_per_gpu"]),
            mem_gb=mem * gpus if mem else None,
            time_min=config["model"].get("time_limit_min") or cluster["time_limit_min"],
            partition=cluster.get("partition"),
            account=cluster.get("account"),
            qos=cluster.get("qos"),
            constraint=cluster.get("constraint"),
            request_gpus=bool(cluster.get("request_gpus", True)),
            gpu_type=cluster.get("gpu_type"),
        )

    def describe(self) -> str:
        parts = [f"{self.nodes}n×{self.gpus_per_node}g", f"{self.cpus_per_task}cpu", f"{self.time_min}min"]
        if self.mem_gb:
            parts.append(f"{self.mem_gb}G")
        if self.partition:
            parts.append(f"p={self.partition}")
        if self.gpu_type:
            parts.append(f"gpu={self.gpu_type}")
        return " ".join(parts)


@dataclass
class CellJob:
    """A planned :class:`orchestrator.sweep.Cell` as a backend queues it: where its ``cell.json`` was written."""

    cell_id: str
    label: str
    cell_file: str
    config: dict[str, Any]


@dataclass
class ShapeGroup:
    shape: Shape
    cells: list[CellJob] = field(default_factory=list)


@dataclass
class SubmitOutcome:
    job_ids: list[str] = field(default_factory=list)
    # Cells left out because the cluster's queue limits had no room: no attempt recorded,
    # so rerunning the sweep (or `dnnbench resubmit`) submits them later.
    not_submitted: list[CellJob] = field(default_factory=list)
    reason: str = ""


@dataclass(frozen=True)
class SchedulerState:
    """A job's state as the scheduler reports it (sacct/squeue words, upper case)."""

    state: str
    exit_code: str | None = None
    reason: str | None = None


class Backend(ABC):
    name: str
    # True when submit() returns before the cells run (a queue), False when it runs them.
    detached: bool = True

    def __init__(self, cluster: dict[str, Any]):
        self.cluster = cluster

    @abstractmethod
    def submit(
        self,
        paths: SweepPaths,
        ledger: Ledger,
        groups: list[ShapeGroup],
        progress: Callable[[int], None] | None = None,
    ) -> SubmitOutcome:
        """Submit every group that fits; records each submission in the ledger."""

    def exclude(self, nodes: str) -> None:
        """Keep this backend's next submissions off ``nodes`` (a Slurm host list; checked by the caller)."""
        raise ConfigError(
            f"--exclude-nodes {nodes}: the {self.name} backend runs cells on this machine, there are no nodes "
            "to exclude; use it with a Slurm sweep"
        )

    def resolve_pending(self, ledger: Ledger) -> None:  # noqa: B027 - optional
        """Settle submissions a crash left as ``submitting`` (submitted or not?).

        Called only by the holder of the sweep folder's lock, so no other command is submitting.
        """

    def query(self, keys: list[str]) -> dict[str, SchedulerState]:
        """States of the given job keys, in as few scheduler calls as possible (batched)."""
        return {}

    def states(self, rows: list[AttemptRow], paths: SweepPaths, *, busy: bool) -> dict[str, SchedulerState]:
        """Each attempt's state by cell id (``busy``: a command holds the sweep's lock and may still start jobs)."""
        answer = self.query([row.scheduler_key for row in rows if row.scheduler_key])
        return {row.cell_id: answer[row.scheduler_key] for row in rows if row.scheduler_key in answer}

    def wait_running(self, ledger: Ledger, paths: SweepPaths, progress: Callable[[int], None] | None = None) -> None:  # noqa: B027
        """Backends that run cells here: return once the cells earlier commands started have ended."""


# name (cluster.backend) -> "module:Class"; a backend's module is imported when a sweep uses it.
BACKENDS: Registry[str] = Registry("cluster.backend", {
    "local": "orchestrator.backends.local:LocalBackend",
    "slurm": "orchestrator.backends.slurm:SlurmBackend",
})  # fmt: skip


def get_backend(cluster: dict[str, Any]) -> Backend:
    """The backend ``cluster.backend`` names; :class:`jobs.registry.UnknownNameError` for any other name."""
    return BACKENDS.load(cluster["backend"])(cluster)
