"""Blocks chained in order compute the model; unsupported families fail with a clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jobs.models import build_model
from jobs.pipeline.blocks import UnsupportedModelError, block_count, split_blocks


@pytest.mark.parametrize(
    "name", ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "efficientnet_b0"]
)
def test_sequential_of_blocks_equals_model(name):
    torch.manual_seed(0)
    model = build_model(name).eval()  # eval: dropout and stochastic depth off
    x = torch.randn(2, 1, 28, 28)
    blocks = split_blocks(model)
    with torch.no_grad():
        torch.testing.assert_close(nn.Sequential(*[b.module for b in blocks])(x), model(x))
    assert blocks[0].name == "stem" and blocks[-1].name == "head"
    # Every parameter belongs to exactly one block.
    ids = [id(p) for b in blocks for p in b.module.parameters()]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())


def test_block_counts():
    assert block_count("resnet18") == 10  # stem, 8 basic blocks, head
    assert block_count("resnet50") == 18  # stem, 16 bottlenecks, head
    assert block_count("efficientnet_b0") == 19  # stem, 16 MBConv, final conv, head


def test_unsupported_family_names_the_supported_ones():
    with pytest.raises(UnsupportedModelError, match=r"VGG has no pipeline block split.*resnet\*"):
        split_blocks(build_model("vgg11"))
