"""torchvision classification models, untrained, adapted to small single-channel images.

The adaptation (the README's "How models meet MNIST"):
- the first convolution is rebuilt with ``in_channels`` = the dataset's channels
  (1 for MNIST), keeping its kernel, stride and padding;
- the classifier comes from torchvision's own ``num_classes`` argument (10);
- the input is not upsampled: 28×28 passes through every listed model because
  their global average pooling accepts any spatial size ≥ 1 (ResNets reach 1×1).
"""

from __future__ import annotations

from functools import cache

import torch
from torch import nn


@cache
def classification_model_names() -> tuple[str, ...]:
    from torchvision import models

    return tuple(sorted(models.list_models(module=models)))


def build_model(name: str, *, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    from torchvision import models

    if name not in classification_model_names():
        raise ValueError(
            f"unknown model {name!r}: expected a torchvision classification model "
            f"such as resnet18, resnext50_32x4d, efficientnet_b0"
        )
    model = models.get_model(name, weights=None, num_classes=num_classes)
    _replace_first_conv(model, in_channels)
    return model


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    # Registration order is the stem first for every torchvision classifier.
    path, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None or path is None:
        raise ValueError(f"{type(model).__name__} has no Conv2d to adapt to {in_channels} channels")
    if conv.in_channels == in_channels:
        return
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(
        parent,
        attr,
        nn.Conv2d(
            in_channels,
            conv.out_channels,
            kernel_size=conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=conv.bias is not None,
        ),
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameters_digest(model: nn.Module) -> float:
    """A cheap scalar summary of all parameters, for cross-rank equality checks."""
    with torch.no_grad():
        return float(sum(p.double().sum().item() for p in model.parameters()))
