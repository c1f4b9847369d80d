"""How many blocks ``jobs.pipeline.blocks.split_blocks`` yields per model, without torch.

Plan-time checks (jobs/checks/pipeline.py) need only the count, and building a
torchvision model to count it costs seconds and most of a gigabyte on a login node. The
counts follow from each family's architecture as torchvision defines it:

- ResNet family (resnet*, resnext*, wide_resnet*): the stem, every residual block of
  ``layer1..layer4``, the head;
- EfficientNet family (efficientnet_b*, efficientnet_v2_*): the stem, every MBConv or
  FusedMBConv block of each stage, the final 1×1 convolution, the head. B0's stages hold
  1, 2, 2, 3, 3, 4, 1 blocks; B1…B7 scale each by the depth multiplier, rounded up.

tests/test_pipeline_block_counts.py checks every entry against ``len(split_blocks(model))``.
A model missing here returns None: the caller counts it the torch way.
"""

from __future__ import annotations

# Residual blocks per layer (torchvision ResNet(block, layers)).
RESNET_LAYERS: dict[str, tuple[int, ...]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
    "resnext50_32x4d": (3, 4, 6, 3),
    "resnext101_32x8d": (3, 4, 23, 3),
    "resnext101_64x4d": (3, 4, 23, 3),
    "wide_resnet50_2": (3, 4, 6, 3),
    "wide_resnet101_2": (3, 4, 23, 3),
}

# MBConv / FusedMBConv blocks per stage (torchvision _efficientnet_conf).
EFFICIENTNET_STAGES: dict[str, tuple[int, ...]] = {
    "efficientnet_b0": (1, 2, 2, 3, 3, 4, 1),
    "efficientnet_b1": (2, 3, 3, 4, 4, 5, 2),
    "efficientnet_b2": (2, 3, 3, 4, 4, 5, 2),
    "efficientnet_b3": (2, 3, 3, 5, 5, 6, 2),
    "efficientnet_b4": (2, 4, 4, 6, 6, 8, 2),
    "efficientnet_b5": (3, 5, 5, 7, 7, 9, 3),
    "efficientnet_b6": (3, 6, 6, 8, 8, 11, 3),
    "efficientnet_b7": (4, 7, 7, 10, 10, 13, 4),
    "efficientnet_v2_s": (2, 4, 4, 6, 9, 15),
    "efficientnet_v2_m": (3, 5, 5, 7, 14, 18, 5),
    "efficientnet_v2_l": (4, 7, 7, 10, 19, 25, 7),
}

# Blocks outside the stages: stem + head; EfficientNet adds its final 1×1 convolution.
RESNET_EXTRA = 2
EFFICIENTNET_EXTRA = 3


def block_count(model_name: str) -> int | None:
    """Blocks ``split_blocks`` yields for ``model_name``, or None when the table does not know it."""
    if model_name in RESNET_LAYERS:
        return sum(RESNET_LAYERS[model_name]) + RESNET_EXTRA
    if model_name in EFFICIENTNET_STAGES:
        return sum(EFFICIENTNET_STAGES[model_name]) + EFFICIENTNET_EXTRA
    return None


def known_models() -> list[str]:
    """Every model the table counts."""
    return sorted([*RESNET_LAYERS, *EFFICIENTNET_STAGES])
