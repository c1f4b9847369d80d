"""How a cell's ranks are started: one ``command()`` per launcher, returning argv tokens.

Pure functions of a :class:`LaunchSpec`, so the exact commands are unit-tested without
starting anything. No torch import here: the orchestrator builds commands on login nodes.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from jobs.registry import Registry

# Ports below are left to the system; the rendezvous port is taken from this window.
PORT_BASE, PORT_SPAN = 20000, 20000


def rendezvous_port(job_id: str) -> int:
    """A port derived from the job id, so concurrent jobs sharing a node don't collide on 29500."""
    key = int(job_id) if job_id.isdigit() else zlib.crc32(job_id.encode())
    return PORT_BASE + key % PORT_SPAN


@dataclass(frozen=True)
class LaunchSpec:
    python: str
    cell_file: str
    out_dir: str
    nnodes: int
    nproc_per_node: int
    node_rank: int
    # Host names or addresses of the job's nodes; the first one hosts the rendezvous.
    hosts: tuple[str, ...]
    job_id: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def entry(self) -> list[str]:
        return ["-m", "jobs.entry", self.cell_file, self.out_dir]


class Launcher(ABC):
    name: ClassVar[str]
    # True: the launcher is started on every node (torchrun); False: once, on the first node.
    per_node: ClassVar[bool]

    @abstractmethod
    def command(self, spec: LaunchSpec) -> list[str]: ...


class TorchrunLauncher(Launcher):
    name = "torchrun"
    per_node = True

    def command(self, spec: LaunchSpec) -> list[str]:
        # `python -m torch.distributed.run` is torchrun, pinned to the job's interpreter.
        argv = [spec.python, "-m", "torch.distributed.run"]
        if spec.nnodes == 1:
            # A free port chosen by the OS: nothing to collide with on a shared node.
            argv += ["--standalone", "--nnodes", "1"]
        else:
            # Static rendezvous: node rank 0 hosts the store because its node rank says so, and every
            # node and rank reaches it at the address given here. With c10d, torchrun would decide
            # the host by matching the endpoint against this machine's names and addresses, and give
            # the ranks rank 0's host name (getfqdn) to meet at: both hang on name resolution.
            # Node ranks, and so global ranks, also follow SLURM_NODEID instead of arrival order.
            argv += [
                "--nnodes", str(spec.nnodes),
                "--node_rank", str(spec.node_rank),
                "--rdzv_backend", "static",
                "--master_addr", spec.hosts[0],
                "--master_port", str(rendezvous_port(spec.job_id)),
                "--rdzv_id", f"dnnbench-{spec.job_id}",
            ]  # fmt: skip
        argv += ["--nproc_per_node", str(spec.nproc_per_node), *spec.entry]
        return argv


class NoopLauncher(Launcher):
    """``framework=noop``: one process writes every rank's dump, nothing is trained."""

    name = "noop"
    per_node = False

    def command(self, spec: LaunchSpec) -> list[str]:
        return [spec.python, "-m", "jobs.noop", spec.cell_file, spec.out_dir]


# name -> "module:Class"; a launcher's module is imported when a cell needs it.
LAUNCHERS: Registry[str] = Registry("framework.launcher", {
    "torchrun": "jobs.launchers:TorchrunLauncher",
    "horovodrun": "jobs.horovodrun_launcher:HorovodrunLauncher",
    "noop": "jobs.launchers:NoopLauncher",
})  # fmt: skip


def get_launcher(name: object) -> Launcher:
    """A launcher by name; :class:`jobs.registry.UnknownNameError` for a name no row declares."""
    return LAUNCHERS.load(name)()
