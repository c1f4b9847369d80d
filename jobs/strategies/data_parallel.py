"""What every data-parallel framework shares: one replica per process, the same step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from jobs.data import Shard
from jobs.model_state import measure as measure_model_state
from jobs.precision import precision
from jobs.strategies.base import StepResult, Strategy


class DataParallelStrategy(Strategy):
    """Subclasses start communication (``setup``) and wrap model and optimizer (``wrap``)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer

    def build(self, model_factory: Callable[[], nn.Module]) -> None:
        model = model_factory().to(self.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum)
        self.model, self.optimizer = self.wrap(model, optimizer)
        self.criterion = nn.CrossEntropyLoss()
        self.scaler = precision(self.cfg.precision).grad_scaler(self.device)

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        raise NotImplementedError

    def data_shard(self) -> Shard:
        assert self.placement is not None
        return Shard(rank=self.placement.rank, world=self.placement.world_size)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.criterion(self.model(images), labels)
        if self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:  # fp32, bf16: the plain step, nothing of the scaler's bookkeeping inside the clock
            loss.backward()
            self.optimizer.step()
        return StepResult(loss=loss.detach(), samples=images.shape[0])

    @torch.no_grad()
    def eval_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
        self.model.eval()
        with self.autocast():
            logits = self.model(images)
        return int((logits.argmax(dim=1) == labels).sum().item()), int(labels.shape[0])

    def model_state(self) -> dict[str, int]:
        return measure_model_state(self.model.parameters(), self.optimizer)

    def local_parameter_digest(self) -> float:
        with torch.no_grad():
            return float(sum(p.double().sum().item() for p in self.model.parameters()))
