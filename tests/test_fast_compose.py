"""The fast planning path must give exactly Hydra's cells: same grid, same configs."""

from __future__ import annotations

import itertools

import pytest

from orchestrator import config as compose_config
from orchestrator import sweep
from orchestrator.errors import ConfigError
from orchestrator.fast_compose import FastComposer

GRID = [
    "model=glob(resnet1*)",
    "framework=ddp,pipeline",
    "gpus=range(1,4)",
    "batch_size=choice(16,64)",
    "cluster=local,slurm",
    "cluster.setup=[],[module load x]",
    "model.time_limit_min=null,7",
    "dataset.train_samples=256",
]


def hydra_grid(arguments: list[str]) -> list[list[str]]:
    """Hydra's own multirun expansion, through its BasicSweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with compose_config.hydra_context():
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        (batch,) = BasicSweeper.split_arguments(parser.parse_overrides(arguments), None)
    return batch


def test_grid_is_hydras_grid() -> None:
    ours = sweep.grid(GRID)
    theirs = hydra_grid(GRID)
    assert ours == theirs
    # glob(resnet1*) matches the presets resnet101, resnet152, resnet18
    assert {o[0] for o in ours} == {"model=resnet101", "model=resnet152", "model=resnet18"}
    assert len(ours) == 3 * 2 * 3 * 2 * 2 * 2 * 2


def test_every_cell_equals_a_full_hydra_compose() -> None:
    composer = FastComposer()
    points = sweep.grid(GRID)
    for overrides in points:
        assert composer.resolved(overrides) == compose_config.resolved(compose_config.compose(overrides)), overrides
    # The point of it: a handful of composes for the whole grid.
    assert composer.fast_cells == len(points)
    assert len([b for b in composer._bases.values() if b is not None]) == 3 * 2 * 2


def test_cells_do_not_share_mutated_state() -> None:
    composer = FastComposer()
    first = composer.resolved(["gpus=1", "cluster.setup=[a]"])
    second = composer.resolved(["gpus=2"])
    assert first["gpus"] == 1 and second["gpus"] == 2
    assert first["cluster"]["setup"] == ["a"] and second["cluster"]["setup"] == []


@pytest.mark.parametrize(
    ("override", "message"),
    [("gpus=abc", "gpus"), ("nosuch=1", "nosuch"), ("model.nosuch=1", "nosuch")],
)
def test_fast_path_keeps_hydras_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FastComposer().resolved([override])


def test_plan_ids_are_stable_and_distinct() -> None:
    arguments = ["model=resnet18,resnet50,efficientnet_b0", "gpus=1,2,3", "batch_size=16,32,64,128"]
    first = [c.id for c in sweep.plan(arguments).cells]
    second = [c.id for c in sweep.plan(arguments).cells]
    assert first == second
    assert len(set(first)) == 36
    assert all(a != b for a, b in itertools.combinations(first[:5], 2))
