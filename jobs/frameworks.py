"""Every framework dnnbench benchmarks, declared once.

A row names what the rest of the project needs to know about a framework: how its ranks are
started (launcher), the class that runs a rank (strategy), how its ranks count samples (kind),
the config section of knobs that only it reads, its plan-time checks, what it needs installed,
and its colour in every figure. Code is named by dotted path (``module:attribute``) and imported
on first use, so this module imports nothing heavy: a login node reads the table without torch,
and no framework module imports another to register itself.

Adding a framework: one strategy module (jobs/strategies/), one row here, one
``conf/framework/<name>.yaml`` (docs/architecture.md walks through FSDP).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

# data_parallel: every rank is a replica and counts samples. pipelined: a replica is a pipeline of
# ranks; only the rank holding its last stage counts samples. untimed: no step is timed (noop).
Kind = Literal["data_parallel", "pipelined", "untimed"]


@dataclass(frozen=True)
class Framework:
    name: str
    launcher: str  # a key of jobs.launchers.LAUNCHERS
    # "module:Class", a jobs.strategies.base.Strategy; None when the launcher writes the dumps itself (noop).
    strategy: str | None
    kind: Kind
    colour: str  # the same in every figure
    # Config sections only this framework reads: a cell of another framework leaves them out of its id.
    knobs: tuple[str, ...] = ()
    # "module:function": (resolved config dict) -> problems, checked before anything is submitted.
    checks: str | None = None
    # "module:function": () -> why it cannot run with what is installed here, or None.
    available: str | None = None
    # One of the frameworks the original study compared (the thesis presets run these).
    in_study: bool = False


FRAMEWORKS: dict[str, Framework] = {
    row.name: row
    for row in (
        Framework("ddp", "torchrun", "jobs.strategies.ddp:DDPStrategy", "data_parallel", "#0173b2", in_study=True),
        Framework(
            "horovod", "horovodrun", "jobs.strategies.horovod:HorovodStrategy", "data_parallel", "#de8f05",
            knobs=("horovod",), checks="jobs.checks.horovod:check_horovod",
            available="jobs.checks.horovod:horovod_missing", in_study=True,
        ),
        Framework(
            "pipeline", "torchrun", "jobs.strategies.pipeline:PipelineStrategy", "pipelined", "#029e73",
            knobs=("pipeline",), checks="jobs.checks.pipeline:check_pipeline", in_study=True,
        ),
        Framework(
            "model_parallel", "torchrun", "jobs.strategies.pipeline:ModelParallelStrategy", "pipelined", "#d55e00",
            knobs=("pipeline",), checks="jobs.checks.pipeline:check_model_parallel", in_study=True,
        ),
        Framework(
            "fsdp", "torchrun", "jobs.strategies.fsdp:FSDPStrategy", "data_parallel", "#cc78bc",
            knobs=("fsdp",), checks="jobs.checks.fsdp:check_fsdp",
        ),
        Framework(
            "zero", "torchrun", "jobs.strategies.zero:ZeroStrategy", "data_parallel", "#ca9161",
            checks="jobs.checks.fsdp:check_zero",
        ),
        Framework("noop", "noop", None, "untimed", "#949494"),
    )
}  # fmt: skip

# Every section some framework owns: a cell keeps only its own framework's in its id.
KNOB_SECTIONS = frozenset(section for row in FRAMEWORKS.values() for section in row.knobs)


class UnknownFrameworkError(ValueError):
    def __init__(self, name: object):
        super().__init__(f"framework.name={name}: expected one of {', '.join(sorted(FRAMEWORKS))}")


def framework(name: str) -> Framework:
    try:
        return FRAMEWORKS[name]
    except (KeyError, TypeError):
        raise UnknownFrameworkError(name) from None


def kind_of(name: Any) -> Kind | None:
    row = FRAMEWORKS.get(name) if isinstance(name, str) else None
    return row.kind if row else None


@cache
def load(dotted: str) -> Any:
    """The attribute a ``module:attribute`` path names, imported on first use."""
    module, _, attribute = dotted.partition(":")
    return getattr(importlib.import_module(module), attribute)


def foreign_knobs(name: Any) -> frozenset[str]:
    """The knob sections a cell of framework ``name`` does not read (all of them for an unknown name)."""
    row = FRAMEWORKS.get(name) if isinstance(name, str) else None
    return KNOB_SECTIONS - set(row.knobs if row else ())


def checks_of(name: str) -> Callable[[dict[str, Any]], list[str]] | None:
    row = framework(name)
    return load(row.checks) if row.checks else None


def unavailable_reason(name: str) -> str | None:
    row = framework(name)
    return load(row.available)() if row.available else None
