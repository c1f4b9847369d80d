"""Split a torchvision classifier into the ordered blocks a pipeline partitions.

Block granularity is what the profiler measures and the planner cuts between: the
stem, every residual (ResNet family) or MBConv/FusedMBConv (EfficientNet family)
block, the final 1×1 convolution where there is one, and the head (pooling,
flatten, classifier). ``nn.Sequential(*split_blocks(model))(x)`` computes ``model(x)``:
the torchvision ``forward`` of both families is exactly this chain.

Dispatch is on the model's class, not its name, so resnext*/wide_resnet* (torchvision
``ResNet``) and efficientnet_v2_* (``EfficientNet``) are covered without a list.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


class UnsupportedModelError(ValueError):
    """The model's family has no block split: the pipeline cannot partition it."""


@dataclass(frozen=True)
class Block:
    name: str
    module: nn.Module


def _resnet_blocks(model: nn.Module) -> list[Block]:
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    blocks = [Block("stem", stem)]
    for layer_name in ("layer1", "layer2", "layer3", "layer4"):
        layer = getattr(model, layer_name)
        blocks += [Block(f"{layer_name}.{i}", block) for i, block in enumerate(layer)]
    blocks.append(Block("head", nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)))
    return blocks


def _efficientnet_blocks(model: nn.Module) -> list[Block]:
    features = list(model.features)
    blocks = [Block("stem", features[0])]
    for stage_index, stage in enumerate(features[1:-1], start=1):
        blocks += [Block(f"features.{stage_index}.{i}", block) for i, block in enumerate(stage)]
    # The last feature module is the 1×1 expansion conv to 1280+ channels: heavy, its own block.
    blocks.append(Block(f"features.{len(features) - 1}", features[-1]))
    blocks.append(Block("head", nn.Sequential(model.avgpool, nn.Flatten(1), model.classifier)))
    return blocks


_SPLITTERS = {"ResNet": _resnet_blocks, "EfficientNet": _efficientnet_blocks}
SUPPORTED_FAMILIES = "resnet*, resnext*, wide_resnet*, efficientnet_b*, efficientnet_v2_*"


def split_blocks(model: nn.Module) -> list[Block]:
    """The model's blocks in execution order; they share modules (and weights) with ``model``."""
    splitter = _SPLITTERS.get(type(model).__name__)
    if splitter is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no pipeline block split: pipeline and model_parallel "
            f"support {SUPPORTED_FAMILIES}"
        )
    return splitter(model)


def block_count(model_name: str, *, num_classes: int = 10, in_channels: int = 1) -> int:
    """Blocks of a model, built on the meta device (no memory, no weights initialised)."""
    import torch

    from jobs.models import build_model

    with torch.device("meta"):
        model = build_model(model_name, num_classes=num_classes, in_channels=in_channels)
    return len(split_blocks(model))


def stage_module(blocks: list[Block], start: int, stop: int) -> nn.Sequential:
    """Blocks ``start..stop-1`` as one module, named by block so parameter names stay readable."""
    return nn.Sequential(*[b.module for b in blocks[start:stop]])
