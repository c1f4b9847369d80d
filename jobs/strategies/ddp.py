"""PyTorch DistributedDataParallel under torchrun (nccl on GPU, gloo on CPU)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from jobs.strategies.base import Placement, resolve_backend, resolve_device
from jobs.strategies.data_parallel import DataParallelStrategy


def init_torch_distributed(requested_device: str, requested_backend: str) -> Placement:
    """Join the process group torchrun set up through RANK/WORLD_SIZE/MASTER_* variables."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    device = resolve_device(requested_device, local_rank, local_world)
    backend = resolve_backend(requested_backend, device)
    dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    world = dist.get_world_size()
    return Placement(
        rank=dist.get_rank(),
        local_rank=local_rank,
        world_size=world,
        node_rank=int(os.environ.get("GROUP_RANK", str(dist.get_rank() // max(local_world, 1)))),
        device=device,
    )


def gather_floats(value: float, device: torch.device) -> list[float]:
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    gathered = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    return [float(t.item()) for t in gathered]


def shutdown_torch_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class DDPStrategy(DataParallelStrategy):
    name = "ddp"

    def setup(self) -> Placement:
        self.placement = init_torch_distributed(self.cfg.device, self.cfg.framework.backend)
        return self.placement

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids), optimizer

    def barrier(self) -> None:
        dist.barrier()

    def parameter_digests(self) -> list[float]:
        return gather_floats(self.local_parameter_digest(), self.device)

    def teardown(self) -> None:
        shutdown_torch_distributed()
