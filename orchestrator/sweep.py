"""Expand Hydra override grammar into cells, the way Hydra's BasicSweeper does.

``framework=ddp,horovod gpus=1,2 model=glob(resnet*)`` and a preset's
``hydra.sweeper.params`` give the same grid Hydra's multirun would; each grid point
is composed, validated and given a stable id, then repeated ``repeats`` times.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator import config as compose_config
from orchestrator.cell_identity import MergedPoint, backend_problem
from orchestrator.errors import ConfigError, GridTooLargeError
from orchestrator.fast_compose import FastComposer
from orchestrator.framework_checks import unavailable_reason

_NO_CELLS = "the overrides give no cells (an empty sweep axis, such as seed=range(0,0)?): nothing to run"
# The most cells one sweep may plan (grid points × repeats; README, "Running"). Planning holds every
# cell in memory and a ledger row per cell; far beyond this a typo (range(0,1000) on three axes)
# would grow for minutes into gigabytes instead of being refused.
MAX_SWEEP_CELLS = 100_000


@dataclass
class Cell:
    id: str
    overrides: list[str]
    config: dict[str, Any]
    # Set when the cell cannot run with what is installed: it is recorded failed, not submitted.
    unavailable: str | None = None

    @property
    def label(self) -> str:
        c = self.config
        return (
            f"{c['framework']['name']}/{c['model']['name']}/{c['dataset']['name']}"
            f"/n{c['nodes']}xg{c['gpus']}/b{c['batch_size']}/r{c['repeat']}"
        )


@dataclass
class SweepPlan:
    arguments: list[str]
    cells: list[Cell] = field(default_factory=list)
    seconds: float = 0.0
    # Grid points that gave an earlier point's cell id (cell_identity.merge_notes says them).
    merged: list[MergedPoint] = field(default_factory=list)


def _is_sweep_argument(argument: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(argument).is_sweep_override()


def grid(arguments: Sequence[str]) -> list[list[str]]:
    """Every cell's override list, in Hydra's order (the product of the sweep axes)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    with compose_config.hydra_context():
        try:
            fixed = [a for a in arguments if not _is_sweep_argument(a)]
            base = compose_config.compose(fixed, with_hydra=True)
            params = base.hydra.sweeper.get("params") or {}
            preset = [f"{key}={value}" for key, value in params.items()]
            parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
            overrides = parser.parse_overrides([*preset, *arguments])
            refuse_a_grid_too_large(overrides)  # counted from the axes: expanding 10⁹ points is the hang
            (batch,) = BasicSweeper.split_arguments(overrides, None)
        except HydraException as err:
            raise ConfigError(str(err).strip()) from err
    return batch


def axis_length(override: Any) -> int:
    """How many values a sweep override's axis holds, without listing a range's values."""
    from decimal import Decimal

    from hydra.core.override_parser.types import RangeSweep

    value = override.value()
    if isinstance(value, RangeSweep) and value.start is not None and value.stop is not None:
        values = value.range()
        if isinstance(values, range):
            return len(values)
        start, stop, step = (Decimal(str(x)) for x in (value.start, value.stop, value.step))
        return max(0, math.ceil((stop - start) / step)) if step else 0
    return sum(1 for _ in override.sweep_string_iterator())  # a choice list or a glob: as long as it is written


def grid_size(overrides: Sequence[Any]) -> int:
    """Grid points the parsed overrides give: the product of the axes, a later override of a key replacing it."""
    lengths: dict[str, int] = {}
    for override in overrides:
        sweeps = override.is_sweep_override() and override.is_discrete_sweep()
        lengths[override.get_key_element()] = axis_length(override) if sweeps else 1
    return math.prod(lengths.values())


def refuse_a_grid_too_large(overrides: Sequence[Any]) -> None:
    points = grid_size(overrides)
    if points > MAX_SWEEP_CELLS:
        axes = [f"{o.get_key_element()}: {axis_length(o):,}" for o in overrides if o.is_sweep_override()
                and o.is_discrete_sweep()]  # fmt: skip
        raise GridTooLargeError(
            f"the overrides give a grid of {points:,} points ({', '.join(axes)}), more than the "
            f"{MAX_SWEEP_CELLS:,} cells one sweep may plan: nothing was planned. Split it into several sweeps "
            "(each with its own --sweep-dir) or sweep fewer values"
        )


def _refuse_too_many_cells(made: int, repeats: int, overrides: Sequence[str]) -> None:
    """Repeats multiply the grid: checked before a point's repeats are made, so the work stays bounded."""
    if made + repeats > MAX_SWEEP_CELLS:
        raise GridTooLargeError(
            f"the sweep gives more than {MAX_SWEEP_CELLS:,} cells one sweep may plan ({made:,} planned before "
            f"the point {' '.join(overrides) or '(defaults)'} with repeats={repeats:,}): nothing was planned. "
            "Split it into several sweeps (each with its own --sweep-dir) or lower repeats"
        )


def plan(
    arguments: Sequence[str],
    *,
    progress: Callable[[int, int], None] | None = None,
    check_data: bool = True,
) -> SweepPlan:
    """Compose and validate every cell; raise :class:`ConfigError` before anything runs."""
    started = time.perf_counter()
    result = SweepPlan(arguments=list(arguments))
    points = grid(arguments)
    if not points:
        raise ConfigError(_NO_CELLS)
    seen: dict[str, Cell] = {}
    problems: list[tuple[str, str]] = []
    composer = FastComposer()
    made = 0  # cells made so far, merged ones included: what the repeats cost
    for index, overrides in enumerate(points):
        try:
            config = composer.resolved(overrides)
            compose_config.validate(config, check_data=check_data)
        except ConfigError as err:
            problems.append((str(err), " ".join(overrides) or "(defaults)"))
            continue
        _refuse_too_many_cells(made, config["repeats"], overrides)
        made += config["repeats"]
        for repeat in range(config["repeats"]):
            repeated = {**config, "repeat": repeat}
            cell = Cell(compose_config.cell_id(repeated), list(overrides), repeated)
            cell.unavailable = unavailable_reason(repeated)
            if cell.id not in seen:
                seen[cell.id] = cell
                result.cells.append(cell)
            else:  # one config spelled twice, or points differing in scheduling keys only: reported
                result.merged.append(MergedPoint.of(seen[cell.id], cell))
        if progress:
            progress(index + 1, len(points))
    if problems:
        raise ConfigError(_summarise(problems))
    mixed = backend_problem([c.config for c in result.cells])
    if mixed:
        raise ConfigError(mixed)
    if not result.cells:
        raise ConfigError(_NO_CELLS)
    result.seconds = time.perf_counter() - started
    return result


def _summarise(problems: list[tuple[str, str]], limit: int = 10) -> str:
    """One entry per distinct problem, naming the first cell and how many share it."""
    by_message: dict[str, list[str]] = {}
    for message, cell in problems:
        by_message.setdefault(message, []).append(cell)
    lines = []
    for message, cells in list(by_message.items())[:limit]:
        others = f" (and {len(cells) - 1} more cell(s))" if len(cells) > 1 else ""
        lines.append(f"cell {cells[0]}{others}: {message}")
    if len(by_message) > limit:
        lines.append(f"… and {len(by_message) - limit} more distinct problem(s)")
    return "\n".join(lines)
