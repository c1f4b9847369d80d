"""ZeRO-1 under torchrun: DDP with ``torch.distributed.optim.ZeroRedundancyOptimizer``.

Every process keeps the whole model and, after DDP's all-reduce, the whole averaged gradient;
the optimizer's state (SGD's momentum buffers) is split over the processes by parameter. Each
process steps the parameters it owns and broadcasts them to the others, so the replicas stay
equal to DDP's. The same SGD (learning rate, momentum) as every other framework.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.distributed.optim import ZeroRedundancyOptimizer

from jobs import breakdown
from jobs.comm_probe import collective
from jobs.model_state import measure as measure_model_state
from jobs.strategies.ddp import DDPStrategy


class ZeroStrategy(DDPStrategy):
    name = "zero"

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        model, _ = super().wrap(model, optimizer)
        sharded = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=type(optimizer), **optimizer.defaults)
        if breakdown.enabled(self.cfg):
            sharded._sync_params = self._timed_broadcast(sharded._sync_params)  # type: ignore[method-assign]
        return model, sharded

    def _timed_broadcast(self, sync_params: Callable[[], Any]) -> Callable[[], Any]:
        """ZeRO's parameter broadcast after each rank's step: blocking, so all of it is exposed."""

        def timed() -> Any:
            start = self.parts.now()
            result = sync_params()
            end = self.parts.now()
            self.parts.communication(start, end)
            self.parts.carve("exposed_comm", end - start)
            return result

        return timed

    def step_collectives(self) -> list[dict[str, Any]]:
        """DDP's all-reduce, then every rank's updated parameters broadcast to the others."""
        assert self.placement is not None
        parameters = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return [*super().step_collectives(), collective("broadcast", parameters, self.placement.world_size)]

    def model_state(self) -> dict[str, int]:
        # The wrapper's own ``state`` is not where steps go: ``optim`` is this rank's optimizer of its parameters.
        return measure_model_state(self.model.parameters(), self.optimizer.optim)  # type: ignore[attr-defined]
