"""What every data-parallel framework shares: one replica per process, the same step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from jobs.comm_probe import collective
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
        parts = self.parts
        self.model.train()
        with parts.part("optimizer"):
            self.optimizer.zero_grad(set_to_none=True)
        with parts.part("forward"), self.autocast():
            loss = self.criterion(self.model(images), labels)
        with parts.part("backward"):
            self.backward(self.scaler.scale(loss) if self.scaler.is_enabled() else loss)
        with parts.part("optimizer"):
            self.optimizer_step()
        return StepResult(loss=loss.detach(), samples=images.shape[0])

    def backward(self, loss: torch.Tensor) -> None:
        """The backward pass; a framework whose gradients are reduced inside it carves out the wait."""
        loss.backward()

    def optimizer_step(self) -> None:
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:  # fp32, bf16: the plain step, nothing of the scaler's bookkeeping inside the clock
            self.optimizer.step()

    @torch.no_grad()
    def eval_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
        self.model.eval()
        with self.parts.part("forward"), self.autocast():
            logits = self.model(images)
        return int((logits.argmax(dim=1) == labels).sum().item()), int(labels.shape[0])

    def model_state(self) -> dict[str, int]:
        return measure_model_state(self.model.parameters(), self.optimizer)

    def gradient_bytes(self) -> int:
        """Bytes of the whole model's gradients (global sizes, also of sharded parameters)."""
        return sum(p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad)

    def step_collectives(self) -> list[dict[str, Any]]:
        """One ring all-reduce of every gradient per step (DDP's buckets, Horovod's fused buffers)."""
        assert self.placement is not None
        return [collective("all_reduce", self.gradient_bytes(), self.placement.world_size)]

    def local_parameter_digest(self) -> float:
        with torch.no_grad():
            return float(sum(p.double().sum().item() for p in self.model.parameters()))
