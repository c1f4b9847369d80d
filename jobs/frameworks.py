"""Every framework dnnbench benchmarks, declared once.

A row names what the rest of the project needs to know about a framework: how its ranks are
started (launcher), the class that runs a rank (strategy), how its ranks count samples (sample_counting),
the config section of knobs that only it reads, its plan-time checks, what it needs installed,
and its colour in every figure. Code is named by dotted path (``module:attribute``) and imported
on first use, so this module imports nothing heavy: a login node reads the table without torch,
and no framework module imports another to register itself.

Adding a framework: one strategy module (jobs/strategies/), one row here, one
``conf/framework/<name>.yaml``; knobs of its own are a dataclass beside its checks in
jobs/checks/, named by the row (docs/architecture.md walks through FSDP).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from jobs.registry import Registry, load

# data_parallel: every rank is a replica and counts samples. pipelined: a replica is a pipeline of
# ranks; only the rank holding its last stage counts samples. untimed: no step is timed (noop).
SampleCounting = Literal["data_parallel", "pipelined", "untimed"]


@dataclass(frozen=True)
class Framework:
    name: str
    launcher: str  # a name in jobs.launchers.LAUNCHERS
    # "module:Class", a jobs.strategies.base.Strategy; None when the launcher writes the dumps itself (noop).
    strategy: str | None
    sample_counting: SampleCounting  # how its ranks count samples (above)
    colour: str  # the same in every figure
    # Config sections only this framework reads, each with its dataclass ("module:Class", beside the
    # checks; conf/structured.py bench_config adds it to every cell's config). A cell of another
    # framework leaves them out of its id.
    knobs: Mapping[str, str] = field(default_factory=dict)
    # "module:function": (resolved config dict) -> problems, checked before anything is submitted.
    checks: str | None = None
    # "module:function": () -> why it cannot run with what is installed here, or None.
    available: str | None = None
    # One of the frameworks the original study compared (the thesis presets run these).
    in_study: bool = False


PIPELINE_KNOBS = "jobs.checks.pipeline:PipelineConfig"  # one section, two frameworks

FRAMEWORKS: Registry[Framework] = Registry("framework.name", {
    row.name: row
    for row in (
        Framework("ddp", "torchrun", "jobs.strategies.ddp:DDPStrategy", "data_parallel", "#0173b2", in_study=True),
        Framework(
            "horovod", "horovodrun", "jobs.strategies.horovod:HorovodStrategy", "data_parallel", "#de8f05",
            knobs={"horovod": "jobs.checks.horovod:HorovodConfig"}, checks="jobs.checks.horovod:check_horovod",
            available="jobs.checks.horovod:horovod_missing", in_study=True,
        ),
        Framework(
            "pipeline", "torchrun", "jobs.strategies.pipeline:PipelineStrategy", "pipelined", "#029e73",
            knobs={"pipeline": PIPELINE_KNOBS}, checks="jobs.checks.pipeline:check_pipeline", in_study=True,
        ),
        Framework(
            "model_parallel", "torchrun", "jobs.strategies.pipeline:ModelParallelStrategy", "pipelined", "#d55e00",
            knobs={"pipeline": PIPELINE_KNOBS}, checks="jobs.checks.pipeline:check_model_parallel", in_study=True,
        ),
        Framework(
            "fsdp", "torchrun", "jobs.strategies.fsdp:FSDPStrategy", "data_parallel", "#cc78bc",
            knobs={"fsdp": "jobs.checks.fsdp:FsdpConfig"}, checks="jobs.checks.fsdp:check_fsdp",
        ),
        Framework(
            "zero", "torchrun", "jobs.strategies.zero:ZeroStrategy", "data_parallel", "#ca9161",
            checks="jobs.checks.fsdp:check_zero",
        ),
        Framework("noop", "noop", None, "untimed", "#949494"),
    )
})  # fmt: skip

# Every section some framework owns: a cell keeps only its own framework's in its id.
KNOB_SECTIONS = frozenset(section for row in FRAMEWORKS.values() for section in row.knobs)


def framework(name: object) -> Framework:
    """The row of ``name``; :class:`jobs.registry.UnknownNameError` for a name no row declares."""
    return FRAMEWORKS.get(name)


def sample_counting_of(name: Any) -> SampleCounting | None:
    row = FRAMEWORKS.find(name)
    return row.sample_counting if row else None


def foreign_knobs(name: Any) -> frozenset[str]:
    """The knob sections a cell of framework ``name`` does not read (all of them for an unknown name)."""
    row = FRAMEWORKS.find(name)
    return KNOB_SECTIONS - set(row.knobs if row else ())


def knob_configs() -> dict[str, type]:
    """Every knob section some framework owns, with its dataclass (imported now): what
    conf/structured.py bench_config adds to every cell's config."""
    named: dict[str, str] = {}
    for row in FRAMEWORKS.values():
        for section, dotted in row.knobs.items():
            if named.setdefault(section, dotted) != dotted:
                raise ValueError(f"knob section {section}: framework rows name {named[section]} and {dotted}")
    return {section: load(dotted) for section, dotted in named.items()}


def checks_of(name: str) -> Callable[[dict[str, Any]], list[str]] | None:
    row = framework(name)
    return load(row.checks) if row.checks else None


def unavailable_reason(name: str) -> str | None:
    row = framework(name)
    return load(row.available)() if row.available else None
