"""Numeric precision of a cell: what autocast runs in and whether the loss is scaled.

``fp32`` runs as PyTorch runs by default; ``amp`` is mixed precision with float16 and a
GradScaler (float16's narrow range needs it); ``bf16`` is mixed precision with bfloat16,
whose float32-wide range needs no scaling. The names are ``conf.structured.PrecisionName``'s,
which the plan checks without importing torch; a test asks this table for each of them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from conf.structured import PRECISIONS


@dataclass(frozen=True)
class Precision:
    name: str
    autocast_dtype: torch.dtype | None
    scales_loss: bool

    def autocast(self, device: torch.device) -> AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return nullcontext()
        if device.type != "cuda":
            raise RuntimeError(f"precision={self.name} needs a GPU; use precision=fp32 on CPU")
        return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        return torch.amp.GradScaler("cuda", enabled=self.scales_loss and device.type == "cuda")


_BY_NAME = {
    "fp32": Precision("fp32", None, scales_loss=False),
    "amp": Precision("amp", torch.float16, scales_loss=True),
    "bf16": Precision("bf16", torch.bfloat16, scales_loss=False),
}


def precision(name: str) -> Precision:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"precision={name}: expected one of {', '.join(PRECISIONS)}") from None
