"""ZeRO-1 under torchrun: DDP with ``torch.distributed.optim.ZeroRedundancyOptimizer``.

Every process keeps the whole model and, after DDP's all-reduce, the whole averaged gradient;
the optimizer's state (SGD's momentum buffers) is split over the processes by parameter. Each
process steps the parameters it owns and broadcasts them to the others, so the replicas stay
equal to DDP's. The same SGD (learning rate, momentum) as every other framework.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.optim import ZeroRedundancyOptimizer

from jobs.model_state import measure as measure_model_state
from jobs.strategies.ddp import DDPStrategy


class ZeroStrategy(DDPStrategy):
    name = "zero"

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        model, _ = super().wrap(model, optimizer)
        sharded = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=type(optimizer), **optimizer.defaults)
        return model, sharded

    def model_state(self) -> dict[str, int]:
        # The wrapper's own ``state`` is not where steps go: ``optim`` is this rank's optimizer of its parameters.
        return measure_model_state(self.model.parameters(), self.optimizer.optim)  # type: ignore[attr-defined]
