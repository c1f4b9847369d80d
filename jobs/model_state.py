"""What one process holds of the model: the dump's ``model_state`` section.

Bytes of parameters, gradients and optimizer state counted from the tensors this rank owns,
not from its resident set: a sharded parameter (an FSDP ``DTensor``) counts with its local
shard only, an optimizer that keeps the state of some parameters only (ZeRO's local optimizer)
with the state it keeps. A tensor reachable twice (a shared weight) counts once. Communication
buffers (DDP's gradient buckets, FSDP's all-gather buffers, Horovod's fusion buffer) are not
model state: they show in the phase's peak memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from jobs.schema import MODEL_STATE_FIELDS


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The part of ``tensor`` this process stores: a DTensor's local shard, else the tensor itself."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


class _Counter:
    """Bytes of distinct storages: a tensor (or a view of one already counted) adds its bytes once."""

    def __init__(self) -> None:
        self.seen: set[tuple[int, int, int]] = set()
        self.bytes = 0

    def add(self, tensor: torch.Tensor | None) -> None:
        if tensor is None:
            return
        local = local_tensor(tensor)
        key = (local.untyped_storage().data_ptr(), local.storage_offset(), local.numel())
        if local.numel() == 0 or key in self.seen:
            return
        self.seen.add(key)
        self.bytes += local.numel() * local.element_size()


def _tensors_in(value: Any) -> Iterable[torch.Tensor]:
    """Every tensor inside one parameter's optimizer state (a dict of tensors and numbers, maybe nested)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors_in(item)


def measure(parameters: Iterable[torch.Tensor], optimizer: torch.optim.Optimizer | None) -> dict[str, int]:
    """The ``model_state`` section of ``parameters`` (and their ``.grad``) and ``optimizer``'s state."""
    params, grads, states = _Counter(), _Counter(), _Counter()
    for parameter in parameters:
        params.add(parameter)
        grads.add(parameter.grad)
    if optimizer is not None:
        for state in optimizer.state.values():
            for tensor in _tensors_in(state):
                states.add(tensor)
    return dict(zip(MODEL_STATE_FIELDS, (params.bytes, grads.bytes, states.bytes), strict=True))
