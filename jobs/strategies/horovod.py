"""Horovod ring-allreduce data parallelism under horovodrun (Gloo controller on CPU).

The same replica, step and loop as DDP (:class:`DataParallelStrategy`); only the
communication differs: ``hvd.DistributedOptimizer`` allreduces gradients (fused into
buffers of ``HOROVOD_FUSION_THRESHOLD`` bytes every ``HOROVOD_CYCLE_TIME`` ms), and the
initial parameters and optimizer state are broadcast from rank 0. horovodrun turns the
cell's ``horovod:`` knobs into those variables (jobs/horovodrun_launcher.py); what the
process actually saw is recorded by :meth:`HorovodStrategy.framework_knobs`.
"""

from __future__ import annotations

import os
from typing import Any

import horovod
import horovod.torch as hvd
import torch
from torch import nn

from jobs import breakdown
from jobs.comm_probe import probe
from jobs.failures import GpuCollectivesError
from jobs.strategies.base import Placement, StepResult, resolve_device
from jobs.strategies.data_parallel import DataParallelStrategy

# What horovodrun sets from the cell's knobs (and the controller it chose), recorded per rank.
KNOB_VARIABLES = (
    "HOROVOD_FUSION_THRESHOLD",
    "HOROVOD_CYCLE_TIME",
    "HOROVOD_AUTOTUNE",
    "HOROVOD_TIMELINE",
    "HOROVOD_CONTROLLER",
    "HOROVOD_CPU_OPERATIONS",
)


# Rebuilds Horovod with NCCL for GPU tensors, on a node with the CUDA toolkit (docs/horovod.md).
NCCL_INSTALL = (
    "HOROVOD_GPU_OPERATIONS=NCCL scripts/install-horovod.sh --force-rebuild "
    "(set HOROVOD_NCCL_HOME to NCCL's folder unless a loaded module sets NCCL_HOME)"
)


def horovod_builds() -> dict[str, Any]:
    """What this Horovod was compiled with; ``nccl`` is NCCL's version number, 0 without it."""
    return {
        "nccl": int(hvd.nccl_built()),
        "mpi": bool(hvd.mpi_built()),
        "gloo": bool(hvd.gloo_built()),
        "cuda": bool(hvd.cuda_built()),
    }


def check_gpu_collectives(device: torch.device, builds: dict[str, Any]) -> None:
    """Refuse a GPU cell whose Horovod has no NCCL: its allreduce would run through host memory
    and Gloo, silently, and the cell would measure that instead of GPU collectives."""
    if device.type == "cuda" and not builds["nccl"]:
        raise GpuCollectivesError(
            f"device {device} but this Horovod {horovod.__version__} was built without NCCL "
            f"(nccl_built=0, cuda_built={int(builds['cuda'])}): CUDA tensors would be reduced through "
            f"host memory and Gloo. Rebuild it with NCCL: {NCCL_INSTALL}"
        )


class HorovodStrategy(DataParallelStrategy):
    name = "horovod"
    first_comm_launch: float | None = None

    def setup(self) -> Placement:
        hvd.init()
        device = resolve_device(self.cfg.device, hvd.local_rank(), hvd.local_size())
        check_gpu_collectives(device, horovod_builds())
        self.placement = Placement(
            rank=hvd.rank(),
            local_rank=hvd.local_rank(),
            world_size=hvd.size(),
            node_rank=hvd.cross_rank(),
            device=device,
        )
        return self.placement

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        compression = hvd.Compression.fp16 if self.cfg.horovod.compression == "fp16" else hvd.Compression.none
        optimizer = hvd.DistributedOptimizer(
            optimizer, named_parameters=model.named_parameters(), compression=compression
        )
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        # Each gradient's hook calls this method on the instance: when the first one is launched.
        if breakdown.enabled(self.cfg):
            optimizer._allreduce_grad_async = self._record_launch(optimizer._allreduce_grad_async)  # type: ignore[attr-defined]
        return model, optimizer

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
        """DataParallelStrategy's step, in the order Horovod needs for AMP.

        The gradients are allreduced (``synchronize``) before the scaler unscales and
        checks them; ``step`` then skips its own synchronize. Horovod's ``zero_grad``
        takes no ``set_to_none`` but sets gradients to None by default, as DDP's does.
        """
        parts = self.parts
        self.model.train()
        with parts.part("optimizer"):
            self.optimizer.zero_grad()
        with parts.part("forward"), self.autocast():
            loss = self.criterion(self.model(images), labels)
        self.first_comm_launch = None
        with parts.part("backward"):
            self.scaler.scale(loss).backward()
        with parts.part("optimizer"):
            # The all-reduces run on Horovod's background thread from the first gradient's hook;
            # synchronize() waits for the rest: that wait is exposed, the whole span is communication.
            start = parts.now()
            self.optimizer.synchronize()  # type: ignore[attr-defined]
            end = parts.now()
            parts.measures_communication()
            parts.carve("exposed_comm", end - start)
            parts.communication(self.first_comm_launch or start, end)
            with self.optimizer.skip_synchronize():  # type: ignore[attr-defined]
                self.scaler.step(self.optimizer)
            self.scaler.update()
        return StepResult(loss=loss.detach(), samples=images.shape[0])

    def _record_launch(self, allreduce_grad_async: Any) -> Any:
        def launch(parameter: Any) -> Any:
            if self.first_comm_launch is None:
                self.first_comm_launch = self.parts.now()
            return allreduce_grad_async(parameter)

        return launch

    def barrier(self) -> None:
        hvd.barrier()

    def communication_probes(self) -> list[dict[str, Any]]:
        """Horovod's own all-reduce (its controller and operations: Gloo here, NCCL on GPUs)."""
        if hvd.size() <= 1:
            return []
        scope = "inter_node" if hvd.cross_size() > 1 else "intra_node"
        probes = iter(range(1 << 30))

        def allreduce(tensor: torch.Tensor) -> None:
            hvd.allreduce(tensor, op=hvd.Sum, name=f"dnnbench.probe.{next(probes)}")

        return [probe(allreduce, hvd.size(), self.device, scope)]

    def parameter_digests(self) -> list[float]:
        local = torch.tensor([self.local_parameter_digest()], dtype=torch.float64)
        return [float(v) for v in hvd.allgather(local, name="dnnbench.parameter_digest").tolist()]

    def framework_knobs(self) -> dict[str, Any]:
        knobs = self.cfg.horovod
        timeline = os.environ.get("HOROVOD_TIMELINE")
        return {
            "horovod_version": horovod.__version__,
            "fusion_threshold_mb": knobs.fusion_threshold_mb,
            "cycle_time_ms": knobs.cycle_time_ms,
            "compression": knobs.compression,
            "autotune": knobs.autotune,
            "timeline": os.path.basename(timeline) if timeline else None,
            "controller": "gloo" if hvd.gloo_enabled() else "mpi" if hvd.mpi_enabled() else None,
            # What this Horovod was built with: a CUDA build without NCCL reduces through host memory.
            **{f"{name}_built": value for name, value in horovod_builds().items()},
            "env": {name: os.environ.get(name) for name in KNOB_VARIABLES},
        }

    def teardown(self) -> None:
        if hvd.is_initialized():
            hvd.shutdown()
