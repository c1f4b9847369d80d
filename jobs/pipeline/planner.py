"""Choose a pipeline's stages from a block profile: PipeDream's optimizer, exact for contiguous splits.

Pure Python (no torch), so a login node can plan from a cached profile.

Cost model, per training step of ``M`` micro-batches (times from the profile, which
was measured at the micro-batch size):

- a stage holding blocks ``i..j-1`` computes for ``M · Σ (forward+backward)``, plus, when
  it has ``R > 1`` data-parallel replicas, a ring all-reduce of its gradients,
  ``2 (R-1)/R · parameter bytes / bandwidth``, once per step;
- the link into a stage carries each micro-batch's activation forward and its gradient
  backward: ``M · 2 · activation bytes / bandwidth``. Like PipeDream, a link is a
  pipeline resource of its own (transfers overlap other micro-batches' compute), so
  the bottleneck is the slowest stage *or* link;
- bandwidth is ``intranode_gbps`` between processes of one node and
  ``interconnect_gbps`` across nodes. Ranks are laid out pipeline-inner: rank
  ``replica · S + stage`` (the runtime's device mesh is ``(dp, pp)``).

The planner minimises the bottleneck with a dynamic programme over (stages used, blocks
covered): ``best[s][j] = min_i max(best[s-1][i], link(s, i), stage(s, i, j))``. It is exact
for the contiguous-partition problem; time O(S · N²), memory O(S · N), for N blocks and
S stages, with an early exit that makes typical plans far cheaper (a stage's cost only
grows as it takes more blocks). :func:`choose_shape` repeats it for every
``stages × replicas = processes`` factorisation: O(d(P) · S · N²).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from itertools import combinations, pairwise
from typing import Any, Literal, get_args

GB = 1e9
# Weights, gradients and SGD momentum: the parameter state a training stage holds.
PARAMETER_COPIES = 3


class PlanError(ValueError):
    """No valid plan for these inputs (too many stages for the blocks, a bad split…)."""


@dataclass(frozen=True)
class BlockCost:
    name: str
    forward_s: float
    backward_s: float
    # Output of the block for one micro-batch: what crosses a stage boundary after it.
    activation_bytes: int
    # Tensors autograd saves inside the block for backward, per micro-batch.
    saved_bytes: int
    parameter_bytes: int

    @property
    def compute_s(self) -> float:
        return self.forward_s + self.backward_s


NOISY_SPREAD = 0.25
NOISE_WARNING = (
    "warning: measured on a busy or unsteady machine; a split planned from it may be off. "
    "Re-measure on a quiet one: dnnbench profile … --refresh"
)


@dataclass
class Profile:
    model: str
    input_shape: list[int]  # one sample: channels, height, width
    microbatch: int  # batch size the blocks were timed at
    device: str
    dtype: str
    fingerprint: str
    blocks: list[BlockCost]
    input_bytes: int = 0  # the first stage's input, per micro-batch
    # How steady the machine was: (max − min) / median of a block's repeated forward+backward
    # times, averaged weighted by block time; and the 1-min load average per core (CPU only).
    spread: float | None = None
    load_per_core: float | None = None

    @property
    def noisy(self) -> bool:
        """Measured on a busy or unsteady machine: a split planned from it may be off."""
        return (self.spread or 0.0) > NOISY_SPREAD or (self.load_per_core or 0.0) > 1.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Profile:
        raw = json.loads(text)
        raw["blocks"] = [BlockCost(**b) for b in raw["blocks"]]
        return cls(**raw)


@dataclass(frozen=True)
class Topology:
    processes: int
    per_node: int
    intranode_gbps: float
    interconnect_gbps: float

    def bytes_per_s(self, rank_a: int, rank_b: int) -> float:
        same = rank_a // self.per_node == rank_b // self.per_node
        return (self.intranode_gbps if same else self.interconnect_gbps) * GB


@dataclass
class StagePlan:
    index: int
    pp_rank: int
    start: int
    stop: int
    blocks: list[str]
    forward_s: float  # per micro-batch
    backward_s: float  # per micro-batch
    allreduce_s: float  # per step
    link_in_s: float  # per step: activations in, gradients out
    time_s: float  # per step: M · compute + all-reduce
    inflight_microbatches: int
    memory_bytes: int
    parameter_bytes: int
    # Weight versions the stage holds (pipedream: one per in-flight micro-batch, 2BW: two) and how
    # many updates its gradients lag behind the weights they are applied to.
    weight_versions: int = 1
    staleness_updates: int = 0
    # What the stage's input carries per micro-batch: the activation it receives from the stage
    # before (and the gradient it sends back, of the same size); 0 for the first stage.
    activation_in_bytes: int = 0


@dataclass
class Plan:
    model: str
    schedule: str
    stages: int  # pipeline processes per replica
    virtual_stages: int  # > stages for interleaved schedules
    replicas: int
    microbatches: int
    source: str  # planner | manual
    split: list[int]  # first block of stages 1..V-1
    stage_plans: list[StagePlan] = field(default_factory=list)
    bottleneck_s: float = 0.0  # per step: the slowest stage or link
    bottleneck: str = ""
    step_s: float = 0.0
    bubble_fraction: float = 0.0
    plan_seconds: float = 0.0
    # The links weighed (jobs/pipeline/bandwidth.py): intranode_gbps, interconnect_gbps and their
    # source; empty where the plan was made without a cell (`dnnbench plan`: the config's figures).
    bandwidth: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Costs:
    """Prefix sums so a stage's cost is O(1)."""

    compute: list[float]
    params: list[float]
    activation: list[int]  # bytes leaving block i

    @classmethod
    def of(cls, blocks: list[BlockCost]) -> _Costs:
        compute, params = [0.0], [0.0]
        for b in blocks:
            compute.append(compute[-1] + b.compute_s)
            params.append(params[-1] + b.parameter_bytes)
        return cls(compute, params, [b.activation_bytes for b in blocks])


class _Model:
    """Stage and link costs for one (stages, replicas, micro-batches, topology)."""

    def __init__(self, blocks: list[BlockCost], virtual: int, stages: int, replicas: int,
                 microbatches: int, topology: Topology, allreduces_per_step: int = 1):  # fmt: skip
        self.costs = _Costs.of(blocks)
        self.virtual, self.stages, self.replicas, self.m = virtual, stages, replicas, microbatches
        self.topology = topology
        # 2 (R-1)/R · bytes / bandwidth for a ring all-reduce among a stage's replicas.
        # pipedream averages gradients at every micro-batch's update: M all-reduces a step.
        self.allreduce_factor = [self._ring_factor(k % stages) * allreduces_per_step for k in range(virtual)]
        self.link_bw = [topology.bytes_per_s((k - 1) % stages, k % stages) if k else math.inf for k in range(virtual)]

    def _ring_factor(self, pp_rank: int) -> float:
        if self.replicas == 1:
            return 0.0
        ranks = [r * self.stages + pp_rank for r in range(self.replicas)]
        bw = min(self.topology.bytes_per_s(ranks[0], other) for other in ranks[1:])
        return 2 * (self.replicas - 1) / self.replicas / bw

    def stage(self, k: int, i: int, j: int) -> float:
        c = self.costs
        return self.m * (c.compute[j] - c.compute[i]) + self.allreduce_factor[k] * (c.params[j] - c.params[i])

    def link(self, k: int, i: int) -> float:
        """Per step: stage k receives block i-1's output and returns its gradient."""
        if k == 0:
            return 0.0
        return self.m * 2 * self.costs.activation[i - 1] / self.link_bw[k]

    def bottleneck(self, bounds: list[int]) -> float:
        worst = 0.0
        for k in range(self.virtual):
            i, j = bounds[k], bounds[k + 1]
            worst = max(worst, self.stage(k, i, j), self.link(k, i))
        return worst


def optimal_split(model: _Model, n: int) -> tuple[float, list[int]]:
    """(bottleneck, split) minimising the slowest stage or link over contiguous partitions."""
    v = model.virtual
    if v > n:
        raise PlanError(f"{v} stages for {n} blocks: every stage needs at least one block")
    inf = math.inf
    best = [[inf] * (n + 1) for _ in range(v + 1)]
    choice = [[0] * (n + 1) for _ in range(v + 1)]
    best[0][0] = 0.0
    for k in range(1, v + 1):
        stage_index = k - 1
        # Stage k-1 ends at j; the remaining v-k stages need a block each.
        for j in range(k, n - (v - k) + 1):
            value, arg = inf, k - 1
            for i in range(j - 1, k - 2, -1):
                cost = model.stage(stage_index, i, j)
                if cost >= value:
                    break  # taking more blocks only makes this stage slower
                candidate = max(best[k - 1][i], model.link(stage_index, i), cost)
                if candidate < value:
                    value, arg = candidate, i
            best[k][j], choice[k][j] = value, arg
    bounds = [n]
    for k in range(v, 0, -1):
        bounds.append(choice[k][bounds[-1]])
    bounds.reverse()
    return best[v][n], bounds[1:-1]


def brute_force_split(model: _Model, n: int) -> tuple[float, list[int]]:
    """Every contiguous partition, for tests: O(C(N-1, V-1))."""
    best, arg = math.inf, []
    for cut in combinations(range(1, n), model.virtual - 1):
        value = model.bottleneck([0, *cut, n])
        if value < best:
            best, arg = value, list(cut)
    return best, arg


def _inflight(schedule: str, stage: int, stages: int, microbatches: int) -> int:
    # 1F1B: stage s runs S-s warm-up forwards before its first backward, then holds that many.
    if schedule == "1f1b":
        return min(microbatches, stages - stage)
    if schedule in ASYNC_SCHEDULES:
        return stages - stage  # 1F1B without a flush: in flight across steps, whatever M
    return microbatches  # gpipe holds all; interleaved bounded by it (conservative)


def weight_versions(schedule: str, stage: int, stages: int) -> int:
    """Weight versions a stage holds: PipeDream stashes one per in-flight micro-batch, 2BW double-buffers."""
    if schedule == "pipedream":
        return stages - stage
    return 2 if schedule == "pipedream_2bw" else 1


def staleness_updates(schedule: str, stage: int, stages: int) -> int:
    """Updates between the weights a gradient was computed at and those it is applied to."""
    if schedule == "pipedream":
        return stages - 1 - stage
    return 1 if schedule == "pipedream_2bw" else 0


def parameter_copies(schedule: str, stage: int, stages: int) -> int:
    """Parameter-sized tensors a training stage holds: weight versions, gradient(s), momentum."""
    if schedule not in ASYNC_SCHEDULES:
        return PARAMETER_COPIES
    # A micro-batch's gradient, plus 2BW's running sum over the step.
    gradients = 2 if schedule == "pipedream_2bw" else 1
    return weight_versions(schedule, stage, stages) + gradients + 1


def check_split(split: list[int], n: int, virtual: int) -> None:
    if len(split) != virtual - 1:
        raise PlanError(f"pipeline.split={split}: {virtual} stages need {virtual - 1} first-block indices")
    bounds = [0, *split, n]
    if any(b <= a for a, b in pairwise(bounds)):
        raise PlanError(
            f"pipeline.split={split}: indices must increase strictly within 1..{n - 1} (the model has {n} blocks)"
        )


def plan(
    profile: Profile,
    *,
    stages: int,
    replicas: int = 1,
    microbatches: int,
    topology: Topology,
    schedule: str = "1f1b",
    split: list[int] | None = None,
    chunks_per_rank: int = 2,
) -> Plan:
    """The plan for fixed stages × replicas; ``split`` overrides the planner's choice."""
    import time

    started = time.perf_counter()
    n = len(profile.blocks)
    virtual = stages * chunks_per_rank if schedule == "interleaved_1f1b" else stages
    if virtual > n:
        raise PlanError(
            f"{virtual} stages for {profile.model}'s {n} blocks: use at most {n} stages"
            + (" (interleaved_1f1b needs 2 blocks a process)" if virtual != stages else "")
        )
    model = _Model(profile.blocks, virtual, stages, replicas, microbatches, topology,
                   allreduces_per_step=microbatches if schedule == "pipedream" else 1)  # fmt: skip
    if split:
        check_split(list(split), n, virtual)
        chosen, source = list(split), "manual"
    else:
        chosen, source = optimal_split(model, n)[1], "planner"
    result = describe(profile, model, chosen, schedule, source)
    result.plan_seconds = time.perf_counter() - started
    return result


def describe(profile: Profile, model: _Model, split: list[int], schedule: str,
             source: str) -> Plan:  # fmt: skip
    n, v, s, m = len(profile.blocks), model.virtual, model.stages, model.m
    bounds = [0, *split, n]
    result = Plan(profile.model, schedule, s, v, model.replicas, m, source, list(split))
    worst, where = -1.0, ""
    for k in range(v):
        i, j = bounds[k], bounds[k + 1]
        blocks = profile.blocks[i:j]
        params = sum(b.parameter_bytes for b in blocks)
        saved = sum(b.saved_bytes for b in blocks)
        inflight = _inflight(schedule, k, v, m)
        stage_time, link = model.stage(k, i, j), model.link(k, i)
        result.stage_plans.append(
            StagePlan(
                index=k, pp_rank=k % s, start=i, stop=j, blocks=[b.name for b in blocks],
                forward_s=sum(b.forward_s for b in blocks),
                backward_s=sum(b.backward_s for b in blocks),
                allreduce_s=model.allreduce_factor[k] * params, link_in_s=link,
                time_s=stage_time, inflight_microbatches=inflight,
                memory_bytes=parameter_copies(schedule, k, v) * params + inflight * saved,
                parameter_bytes=params, weight_versions=weight_versions(schedule, k, v),
                staleness_updates=staleness_updates(schedule, k, v),
                activation_in_bytes=profile.blocks[i - 1].activation_bytes if k > 0 else 0,
            )
        )  # fmt: skip
        if stage_time > worst:
            worst, where = stage_time, f"stage {k}"
        if link > worst:
            worst, where = link, f"link into stage {k}"
    result.bottleneck_s, result.bottleneck = worst, where
    # Fill and drain pass every stage and link once per micro-batch; the steady state
    # runs the other M-1 micro-batches at the bottleneck's pace.
    per_mb = [(p.time_s + p.link_in_s) / m for p in result.stage_plans]
    result.step_s = sum(per_mb) + (m - 1) * worst / m
    if schedule in ASYNC_SCHEDULES:
        # No flush: fill and drain happen once per training run, every step runs at the bottleneck's pace.
        result.step_s = worst
    busy = sum(p.time_s for p in result.stage_plans)
    result.bubble_fraction = max(0.0, 1.0 - busy / (v * result.step_s)) if result.step_s else 0.0
    return result


def factorisations(processes: int) -> list[tuple[int, int]]:
    """Every (stages, replicas) with stages × replicas = processes, fewest replicas first."""
    return [(processes // r, r) for r in range(1, processes + 1) if processes % r == 0]


def choose_shape(profile: Profile, *, processes: int, microbatches: int, topology: Topology,
                 schedule: str = "1f1b", shapes: list[tuple[int, int]] | None = None) -> Plan:  # fmt: skip
    """PipeDream's choice of replication: the stages × replicas with the best throughput.

    Replication is uniform (every stage gets R replicas) because that is what the
    runtime's (dp, pp) mesh runs; throughput = R micro-batch groups per predicted step.
    ``shapes`` limits the (stages, replicas) tried (default: every factorisation of ``processes``).
    """
    best: Plan | None = None
    n = len(profile.blocks)
    chunks = 2 if schedule == "interleaved_1f1b" else 1
    for stages, replicas in factorisations(processes) if shapes is None else shapes:
        if stages * replicas != processes or stages * chunks > n:
            continue
        candidate = plan(profile, stages=stages, replicas=replicas,
                         microbatches=microbatches, topology=topology, schedule=schedule)  # fmt: skip
        if best is None or candidate.replicas / candidate.step_s > best.replicas / best.step_s:
            best = candidate
    if best is None:
        raise PlanError(f"no stages × replicas = {processes} fits {n} blocks")
    return best


def format_plan(result: Plan, profile: Profile) -> str:
    lines = [
        f"{result.model}: {result.virtual_stages} stage(s) × {result.replicas} replica(s), "
        f"schedule {result.schedule}, {result.microbatches} micro-batch(es) of "
        f"{profile.microbatch} (profiled on {profile.device}, {profile.dtype}); "
        f"split {result.split} ({result.source})",
        f"{'stage':>5} {'rank':>4} {'blocks':>9} {'fwd+bwd/mb ms':>14} {'stage/step ms':>14} "
        f"{'link in ms':>11} {'memory MiB':>11}  first … last block",
    ]
    for p in result.stage_plans:
        lines.append(
            f"{p.index:>5} {p.pp_rank:>4} {f'{p.start}-{p.stop - 1}':>9} "
            f"{(p.forward_s + p.backward_s) * 1e3:>14.2f} {p.time_s * 1e3:>14.2f} "
            f"{p.link_in_s * 1e3:>11.3f} {p.memory_bytes / 2**20:>11.1f}  "
            f"{p.blocks[0]} … {p.blocks[-1]}"
        )
    lines.append(
        f"bottleneck: {result.bottleneck} at {result.bottleneck_s * 1e3:.2f} ms/step; predicted "
        f"step {result.step_s * 1e3:.2f} ms, bubble fraction {result.bubble_fraction:.3f}; "
        f"planned in {result.plan_seconds * 1e3:.1f} ms"
    )
    return "\n".join(lines)


# `pipeline.schedule` (docs/pipeline.md): declared here, not beside the knob section in jobs/checks/pipeline.py,
# because the ranks read this module without the plan-time checks; those check against the same tuple.
PipelineSchedule = Literal["1f1b", "gpipe", "interleaved_1f1b", "pipedream", "pipedream_2bw"]
SCHEDULES: tuple[str, ...] = get_args(PipelineSchedule)
# Without a flush: weights change while micro-batches are in flight (jobs/pipeline/async_schedules.py).
ASYNC_SCHEDULES: tuple[PipelineSchedule, ...] = ("pipedream", "pipedream_2bw")


@dataclass(frozen=True)
class Layout:
    """How a pipeline cell's processes are used: one stages × replicas (:meth:`ShapeRequest.shapes` gives
    those a config allows); shared by the plan-time checker and the ranks."""

    stages: int
    replicas: int
    microbatches: int
    schedule: str

    @property
    def chunks_per_rank(self) -> int:
        return 2 if self.schedule == "interleaved_1f1b" else 1

    @property
    def virtual_stages(self) -> int:
        return self.stages * self.chunks_per_rank

    @property
    def microbatches_fit(self) -> bool:
        """interleaved_1f1b runs its micro-batches in rounds of M ÷ S: M must be a multiple of that.
        pipedream_2bw's two weight buffers suffice only when a step's M micro-batches cover the S stages."""
        if self.schedule == "pipedream_2bw":
            return self.microbatches >= self.stages
        if self.schedule != "interleaved_1f1b" or self.microbatches < 1:
            return True
        return self.microbatches % max(1, self.microbatches // self.stages) == 0

    def fits(self, blocks: int) -> bool:
        """Whether the runtime can run this layout on a model of ``blocks`` blocks."""
        return self.stages >= 1 and self.replicas >= 1 and self.virtual_stages <= blocks and self.microbatches_fit


AUTO = "auto"
# Who fixed a cell's stages × replicas: the planner (both auto), the user (a value set, or a manual
# split), or the framework (model_parallel's auto: one stage per process, naive model parallelism).
SHAPE_CHOOSERS = ("planner", "user", "framework")


def shape_value(key: str, value: Any) -> int | None:
    """``pipeline.<key>`` as a positive int, or None for ``auto`` (null: configs written before auto existed)."""
    if value is None or value == AUTO:
        return None
    if type(value) is int and value >= 1:
        return value
    raise PlanError(f"pipeline.{key}={value}: expected auto or an int ≥ 1")


@dataclass(frozen=True)
class ShapeRequest:
    """What a cell's config asks of its pipeline's shape: stages × replicas = processes.

    ``stages``/``replicas`` are None where the config says ``auto``. One value set fixes the
    other (processes ÷ it); with neither set, a manual split fixes the stages (its first blocks + 1).
    Stored configs from before ``auto`` (``stages: null, replicas: 1``) thus keep meaning one
    stage per process.
    """

    framework: str
    processes: int
    stages: int | None
    replicas: int | None
    microbatches: int
    schedule: str
    split: tuple[int, ...] = ()

    @classmethod
    def of(cls, framework: str, pipeline: Any, processes: int) -> ShapeRequest:
        """From the config's ``pipeline`` section (a dict or DictConfig); model_parallel is M=1, gpipe."""
        stages = shape_value("stages", pipeline["stages"])
        replicas = shape_value("replicas", pipeline["replicas"])
        split = tuple(int(b) for b in pipeline["split"] or ())
        if framework == "model_parallel":
            # Naive model parallelism: the whole batch is one micro-batch, so stages never overlap.
            return cls(framework, processes, stages, replicas, 1, "gpipe", split)
        microbatches, schedule = int(pipeline["microbatches"]), str(pipeline["schedule"])
        return cls(framework, processes, stages, replicas, microbatches, schedule, split)

    @property
    def chosen_by(self) -> str:
        if self.stages is not None or self.replicas is not None or self.split:
            return "user"
        return "framework" if self.framework == "model_parallel" else "planner"

    def layout(self, stages: int, replicas: int) -> Layout:
        return Layout(stages, replicas, self.microbatches, self.schedule)

    @property
    def split_stages(self) -> int:
        """Stages (processes per replica) a manual split names: one more than its first blocks, per chunk."""
        chunks = 2 if self.schedule == "interleaved_1f1b" else 1
        return max(1, (len(self.split) + 1) // chunks)

    def shapes(self) -> list[Layout]:
        """The layouts this request allows: every factorisation of the processes for the planner,
        else the one the config fixes. A fixed value that does not divide the processes gives
        none; two fixed values are kept even when their product is off (the checks say so)."""
        stages, replicas, p = self.stages, self.replicas, self.processes
        if stages is None and replicas is None and self.split:
            stages = self.split_stages
        if self.chosen_by == "framework":
            replicas = 1
        if stages is not None and replicas is not None:
            return [self.layout(stages, replicas)]
        if stages is not None:
            return [self.layout(stages, p // stages)] if p % stages == 0 else []
        if replicas is not None:
            return [self.layout(p // replicas, replicas)] if p % replicas == 0 else []
        return [self.layout(s, r) for s, r in factorisations(p)]


def plan_for(request: ShapeRequest, profile: Profile, topology: Topology) -> Plan:
    """The plan a cell asking ``request`` runs: for auto, the best stages × replicas that runs on the
    profile's blocks (:func:`choose_shape`); else the configured shape (and split, if any)."""
    n = len(profile.blocks)
    layouts = request.shapes()
    if request.chosen_by == "planner":
        shapes = [(layout.stages, layout.replicas) for layout in layouts if layout.fits(n)]
        return choose_shape(profile, processes=request.processes, microbatches=request.microbatches,
                            topology=topology, schedule=request.schedule, shapes=shapes)  # fmt: skip
    if not layouts:
        raise PlanError(f"pipeline.stages × pipeline.replicas cannot make {request.processes} processes")
    return plan(
        profile, stages=layouts[0].stages, replicas=layouts[0].replicas, microbatches=request.microbatches,
        topology=topology, schedule=request.schedule, split=list(request.split) or None,
    )  # fmt: skip
