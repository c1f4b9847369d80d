"""Bad pipeline layouts are refused at plan time, with the override that fixes them."""

from __future__ import annotations

import pytest

import jobs.checks.pipeline  # noqa: F401 - registers the checkers
from orchestrator import config as compose_config
from orchestrator.errors import ConfigError


def _validate(*overrides: str) -> None:
    compose_config.validate(compose_config.resolved(compose_config.compose(list(overrides))))


def test_good_layouts_pass():
    _validate("framework=pipeline", "gpus=2")
    _validate("framework=pipeline", "gpus=4", "pipeline.stages=2", "pipeline.replicas=2")
    _validate("framework=model_parallel", "gpus=2", "pipeline.microbatches=3")  # M is 1 there
    _validate("framework=pipeline", "gpus=2", "pipeline.split=[4]")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["gpus=12", "model=resnet18", "pipeline.replicas=1"], "12 pipeline stages for resnet18's 10 blocks"),
        (["gpus=2", "pipeline.microbatches=3"], "pipeline.microbatches=3 does not divide batch_size=32"),
        (
            ["gpus=4", "pipeline.stages=3", "pipeline.replicas=1"],
            r"pipeline.stages=3 × pipeline.replicas=1 ≠ 4 processes",
        ),
        (["gpus=4", "pipeline.replicas=3"], "pipeline.replicas=3 does not divide 4 processes"),
        (["gpus=2", "pipeline.schedule=zb"], "pipeline.schedule=zb: expected one of"),
        (["gpus=2", "pipeline.split=[3,5]", "pipeline.replicas=1"], "2 stages need 1 first-block indices"),
        (["gpus=2", "pipeline.split=[10]"], "must increase strictly within 1..9"),
        (["gpus=2", "model.name=vgg11"], "VGG has no pipeline block split"),
        (["gpus=8", "pipeline.schedule=interleaved_1f1b", "pipeline.replicas=1"], "interleaved_1f1b puts 2 stages"),
        (["gpus=2", "precision=amp"], "runs fp32 only"),
    ],
)
def test_bad_layouts_are_refused_before_launch(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _validate("framework=pipeline", *overrides)
