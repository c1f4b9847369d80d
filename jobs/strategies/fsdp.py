"""PyTorch FSDP2 (``torch.distributed.fsdp.fully_shard``) under torchrun (nccl on GPU, gloo on CPU).

The same replica, step and loop as DDP (:class:`DataParallelStrategy`); FSDP shards parameters,
gradients and optimizer state over the processes. ``fsdp.wrap=block`` calls ``fully_shard`` on
every block of ``jobs/pipeline/blocks.py`` (stem, each residual or MBConv block, head) and on
the root; each block's parameters are gathered just before it runs and freed after it
(``fsdp.reshard_after_forward``), while the gradients are reduce-scattered block by block during
the backward. ``fsdp.wrap=root_only`` makes the whole model one unit: gathered once, reduced once.

For the block wrap the model is rebuilt as ``nn.Sequential`` of its blocks (which computes
``model(x)``, blocks.py's contract): ``fully_shard`` hooks a module's own ``forward``, and the
stem and head are groups of the model's children that its ``forward`` never calls as one module.

fp32 only on CPU (plan-time check, jobs/checks/fsdp.py); on GPU ``fsdp.param_dtype`` /
``fsdp.reduce_dtype`` are FSDP's ``MixedPrecisionPolicy``: the sharded parameters and the
optimizer stay fp32, blocks compute in ``param_dtype`` and gradients are reduced in ``reduce_dtype``.
FSDP2 runs on gloo as it is in torch 2.14 (its reduce-scatter and all-gather included), no workaround.
BatchNorm running statistics are buffers, not sharded and not synchronised (DDP broadcasts rank 0's
at every forward): training is the same, each rank evaluates with its own statistics.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.fsdp._fully_shard._fsdp_collectives import DefaultAllGather, DefaultReduceScatter
from torch.distributed.tensor import DTensor

from jobs import breakdown
from jobs.comm_probe import collective
from jobs.pipeline.blocks import split_blocks
from jobs.strategies.base import Strategy
from jobs.strategies.ddp import DDPStrategy, gather_floats

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def mixed_precision(param_dtype: str, reduce_dtype: str, device: torch.device) -> MixedPrecisionPolicy:
    """FSDP's policy for the knobs; fp32 is no cast at all (FSDP's default), which is all a CPU runs."""
    if device.type != "cuda" and (param_dtype, reduce_dtype) != ("fp32", "fp32"):
        raise ValueError(
            f"fsdp.param_dtype={param_dtype}, fsdp.reduce_dtype={reduce_dtype} on {device}: FSDP mixed "
            "precision runs on a GPU only; use fp32 for both on the CPU"
        )
    cast = {name: None if name == "fp32" else DTYPES[name] for name in (param_dtype, reduce_dtype)}
    return MixedPrecisionPolicy(param_dtype=cast[param_dtype], reduce_dtype=cast[reduce_dtype])


def shard_model(model: nn.Module, wrap: str, mesh: DeviceMesh, **options: Any) -> nn.Module:
    """``model`` with ``fully_shard(…, **options)`` applied as ``wrap`` says (block: every block, then the root)."""
    if wrap == "block":
        model = nn.Sequential(*(block.module for block in split_blocks(model)))
        for block in model:
            fully_shard(block, mesh=mesh, **options)
    elif wrap != "root_only":
        raise ValueError(f"fsdp.wrap={wrap}: expected block or root_only")
    fully_shard(model, mesh=mesh, **options)
    return model


def full_parameters(model: nn.Module) -> list[torch.Tensor]:
    """Every parameter whole, in the model's order (a collective: every rank calls it)."""
    with torch.no_grad():
        return [p.full_tensor() if isinstance(p, DTensor) else p.detach() for p in model.parameters()]


def record_collective(strategy: Strategy, start: float, work: dist.Work | None) -> None:
    """A collective FSDP started at ``start``: one that returned done (no ``Work``) blocked this
    thread throughout, so all of it was exposed; an asynchronous one ends when its work does."""
    parts = strategy.parts
    if work is None:
        end = parts.now()
        parts.communication(start, end)
        parts.carve("exposed_comm", end - start)
    else:
        work.get_future().then(lambda _: parts.communication(start, parts.now()))


class TimedAllGather(DefaultAllGather):
    """FSDP's own all-gather (``set_custom_all_gather``), timed."""

    def __init__(self, strategy: Strategy) -> None:
        super().__init__()
        self.strategy = strategy

    def __call__(self, output_tensor, input_tensor, group, async_op=False):  # type: ignore[no-untyped-def,override]
        start = self.strategy.parts.now()
        work = super().__call__(output_tensor, input_tensor, group, async_op)
        record_collective(self.strategy, start, work)
        return work


class TimedReduceScatter(DefaultReduceScatter):
    """FSDP's own reduce-scatter (``set_custom_reduce_scatter``), timed."""

    def __init__(self, strategy: Strategy) -> None:
        super().__init__()
        self.strategy = strategy

    def __call__(self, output_tensor, input_tensor, group, op, async_op=False):  # type: ignore[no-untyped-def,override]
        start = self.strategy.parts.now()
        work = super().__call__(output_tensor, input_tensor, group, op, async_op)
        record_collective(self.strategy, start, work)
        return work


class FSDPStrategy(DDPStrategy):
    """DDP's process group, barrier and teardown (torchrun); FSDP's wrapping and digest."""

    name = "fsdp"

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        if self.cfg.precision == "amp":
            # GradScaler would judge each rank's gradient shard alone: one rank could skip a step the others take.
            raise ValueError("precision=amp with framework=fsdp: use fsdp.param_dtype=bf16 or precision=bf16")
        assert self.placement is not None, "setup() first"
        knobs = self.cfg.fsdp
        policy = mixed_precision(knobs.param_dtype, knobs.reduce_dtype, self.device)
        # FSDP's default mesh is CUDA whenever CUDA works: a device=cpu cell on a GPU node would move there.
        self.mesh = init_device_mesh(self.device.type, (self.placement.world_size,))
        model = shard_model(
            model, knobs.wrap, self.mesh, reshard_after_forward=bool(knobs.reshard_after_forward), mp_policy=policy
        )
        for module in model.modules():
            if isinstance(module, FSDPModule) and breakdown.enabled(self.cfg):
                module.set_custom_all_gather(TimedAllGather(self))
                module.set_custom_reduce_scatter(TimedReduceScatter(self))
        # fully_shard replaced every parameter by a sharded DTensor: the optimizer is built again over those.
        return model, type(optimizer)(model.parameters(), **optimizer.defaults)

    def backward(self, loss: torch.Tensor) -> None:
        self.parts.measures_communication()
        loss.backward()

    def step_collectives(self) -> list[dict[str, Any]]:
        """Parameters all-gathered for the forward and, resharded after it, again for the backward;
        gradients reduce-scattered. (FSDP keeps the root unit's parameters from forward to
        backward: with ``wrap=block`` the root holds none; with ``root_only`` this counts it twice.)"""
        assert self.placement is not None
        n = self.placement.world_size
        parameters = sum(p.numel() * p.element_size() for p in self.model.parameters())
        gathers = 2 if self.cfg.fsdp.reshard_after_forward else 1
        return [
            *[collective("all_gather", parameters, n) for _ in range(gathers)],
            collective("reduce_scatter", self.gradient_bytes(), n),
        ]

    def parameter_digests(self) -> list[float]:
        """DDP's digest of the gathered parameters: every rank sums the whole model, as DDP's replicas do."""
        local = float(sum(p.double().sum().item() for p in full_parameters(self.model)))
        return gather_floats(local, self.device)

    def framework_knobs(self) -> dict[str, Any]:
        knobs = self.cfg.fsdp
        return {
            "torch_version": torch.__version__,
            "wrap": knobs.wrap,
            "reshard_after_forward": bool(knobs.reshard_after_forward),
            "param_dtype": knobs.param_dtype,
            "reduce_dtype": knobs.reduce_dtype,
            # fully_shard units: the blocks (block wrap) and the root.
            "units": sum(isinstance(module, FSDPModule) for module in self.model.modules()),
            "backend": dist.get_backend(),
            "mesh_device": self.mesh.device_type,
        }
