"""Bases combined from single-change composes equal Hydra's own compose, for every preset."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import config as compose_config
from orchestrator import sweep
from orchestrator.fast_compose import FastComposer
from orchestrator.group_compose import plain_option

REPO = Path(__file__).resolve().parents[1]
SWEEP_PRESETS = sorted(p.stem for p in (REPO / "conf" / "sweep").glob("*.yaml"))


def _one_point_per_base(composer: FastComposer, arguments: list[str]) -> dict[tuple[str, ...], list[str]]:
    """Every grid point planned through ``composer``; one point per distinct choice of groups."""
    chosen: dict[tuple[str, ...], list[str]] = {}
    for overrides in sweep.grid(arguments):
        composer.resolved(overrides)
        chosen.setdefault(tuple(o for o in overrides if not composer._is_value(o)), overrides)
    return chosen


@pytest.mark.parametrize(
    "arguments",
    [
        *([f"+sweep={preset}"] for preset in SWEEP_PRESETS),
        # Three groups at once, interpolating (oc.env) cluster and dataset options among them.
        ["model=resnet18,efficientnet_b0", "framework=ddp,pipeline,horovod", "cluster=local,slurm",
         "dataset=mnist,synthetic", "gpus=1,2"],
        # Choices that are not plain files: presets chosen per point.
        ["+sweep=quickstart,thesis_cpu", "model=resnet34,resnet50"],
    ],
)  # fmt: skip
def test_every_base_equals_a_full_hydra_compose(arguments):
    composer = FastComposer()
    for overrides in _one_point_per_base(composer, arguments).values():
        assert composer.resolved(overrides) == compose_config.resolved(compose_config.compose(overrides)), overrides


def test_a_grid_of_plain_choices_composes_once_per_changed_choice():
    composer = FastComposer()
    bases = _one_point_per_base(composer, ["framework=ddp,horovod,pipeline", "model=resnet18,resnet50,efficientnet_b0"])
    assert len(bases) == 9
    # The first point, two framework changes, two model changes; the other four combined from them.
    assert composer._combiner.combined == 4


def test_presets_are_not_combined():
    composer = FastComposer()
    _one_point_per_base(composer, ["+sweep=quickstart,thesis_cpu", "model=resnet34,resnet50"])
    assert composer._combiner.combined == 0


@pytest.mark.parametrize(
    ("text", "section"),
    [
        ("model=resnet50", "model"),
        ("framework=pipeline", "framework"),
        ("cluster=slurm", "cluster"),
        ("sweep=thesis", None),  # a @package _global_ header: it may set any section
        ("+sweep=thesis", None),
        ("model=no_such_file", None),
        ("model@model=resnet50", None),
        ("gpus=2", None),
    ],
)
def test_plain_option(text, section):
    assert plain_option(text) == section
