"""What a dump's own config lets its ranks produce: replicas, timed steps, samples, validation counts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobs.frameworks import sample_counting_of
from jobs.pipeline.planner import PlanError, ShapeRequest
from jobs.schema.fields import _ABSENT, _REPLICA_PER_RANK, exactly_equal
from jobs.schema.memo import ExactMemo

# --------------------------------------------------------------------------- what a config can produce


def value_at(config: Mapping[str, Any], dotted: str, missing: Any = None) -> Any:
    """The value at a dotted key (``cluster.partition``) of a JSON config, or ``missing``."""
    node: Any = config
    for name in dotted.split("."):
        if not isinstance(node, dict) or name not in node:
            return missing
        node = node[name]
    return node


def _at(config: Mapping[str, Any], dotted: str) -> Any:
    return value_at(config, dotted, _ABSENT)


def _positive_int(value: Any) -> int | None:
    return value if type(value) is int and value > 0 else None


def world_size_of(config: Any) -> int | None:
    """``gpus × nodes`` of a cell's config: how many rank dumps its attempts hold; None if unreadable."""
    if not isinstance(config, dict):
        return None
    gpus, nodes = _positive_int(config.get("gpus")), _positive_int(config.get("nodes"))
    return gpus * nodes if gpus and nodes else None


def data_replicas(config: Mapping[str, Any]) -> int | None:
    """Data-parallel replicas of a config = ranks that count samples; None for an unknown framework, and
    for a pipeline whose stages × replicas the planner chooses (:func:`dump_replicas` reads them then)."""
    kind = sample_counting_of(_at(config, "framework.name"))
    if kind in _REPLICA_PER_RANK:
        return world_size_of(config)
    if kind == "pipelined":
        fixed = _fixed_shape(config)
        return fixed[1] if fixed else None
    return None


def val_counts(batch_size: int, replicas: int, val_size: int, val_steps: int | None) -> tuple[int, int, int]:
    """(timed steps, samples, evaluated) of the validation phase of a rank that counts samples.

    As ``jobs/loop.py``'s ``val_phase`` produces them: each replica reads ``ceil(val_size /
    replicas)`` samples (``DistributedSampler`` pads, ``drop_last=False``) in batches of
    ``batch_size``, the last one partial; ``val_steps`` batches at most (null: all); the
    first batch is untimed and not in ``samples``, but its predictions are evaluated.
    """
    per_replica = -(-val_size // replicas)
    batches = -(-per_replica // batch_size)
    run = batches if val_steps is None else min(val_steps, batches)
    if run <= 0:
        return 0, 0, 0
    evaluated = min(run * batch_size, per_replica)
    return run - 1, evaluated - min(batch_size, per_replica), evaluated


@dataclass(slots=True)
class _Shape:
    """What the dump's own config lets one of its ranks produce."""

    batch: int
    replicas: int | None
    val_steps: Any  # int, None (whole split) or _ABSENT
    val_size: int | None  # the validation split's size, as the rank recorded it
    # (timed steps, samples, evaluated) of a counting rank's validation, when the split's size is known.
    val: tuple[int, int, int] | None
    framework: Any = None
    untimed: bool = False  # the framework times no step (noop)
    train_timed: int | None = None  # the timed training steps every rank runs, when the config says
    train_source: str = ""  # how the config gives them
    warmup: int | None = None  # the config's warmup_steps

    def val_source(self) -> str:
        return (f"val_steps={self.val_steps}, {self.val_size} validation samples over "
                f"{self.replicas} replica(s), batch_size {self.batch}")  # fmt: skip


def _split_size(config: Mapping[str, Any], extra: Any, split: str = "val") -> tuple[int | None, list[str]]:
    """A split's size (``train``/``val``) as the rank recorded it (``extra.data``), checked against the config."""
    key = f"{split}_samples"
    recorded = _at(extra, f"data.{key}") if isinstance(extra, Mapping) else _ABSENT
    if recorded is _ABSENT:
        return None, []  # dumps from before the record: checked against bounds instead
    if type(recorded) is not int or recorded < 0:
        return None, [f"extra.data.{key}: expected a non-negative int, got {recorded!r}"]
    cap = _positive_int(_at(config, f"dataset.{key}"))
    if cap is not None and recorded > cap:
        return None, [f"extra.data.{key}: {recorded} > the config's dataset.{key}={cap}"]
    if cap is not None and _at(config, "dataset.name") == "synthetic" and recorded != cap:
        return None, [f"extra.data.{key}: {recorded}, but a synthetic split has dataset.{key}={cap}"]
    return recorded, []


def _val_size(config: Mapping[str, Any], extra: Any) -> tuple[int | None, list[str]]:
    return _split_size(config, extra, "val")


def _shown(value: Any) -> str:
    return json.dumps(value, default=str)


def _train_steps(
    config: Mapping[str, Any], extra: Any, replicas: int | None, batch: int, untimed: bool, framework: Any
) -> tuple[int | None, str, int | None, list[str]]:
    """(timed training steps, how the config gives them, warmup_steps, reasons the config cannot say).

    As ``jobs/loop.py``'s ``train_phase``: ``steps`` timed steps after ``warmup_steps``, or with ``epochs``
    every whole batch of the rank's shard (``DistributedSampler(drop_last=True)``: ``⌊split / replicas⌋``
    samples, batches of ``batch_size``) in each epoch, less the warm-up steps taken from the first.
    """
    reasons = []
    warmup = config.get("warmup_steps")
    if type(warmup) is not int or warmup < 0:
        reasons.append(f"config: warmup_steps={_shown(warmup)} is not a non-negative int")
        warmup = None
    size, size_reasons = _split_size(config, extra, "train")
    reasons += size_reasons
    if untimed:
        return 0, f"framework {framework} times none", warmup, reasons
    epochs, steps = config.get("epochs"), config.get("steps")
    if epochs is None:
        if _positive_int(steps) is None:
            reasons.append(f"config: steps={_shown(steps)} is not a positive int (and epochs is null)")
            return None, "", warmup, reasons
        return steps, f"steps={steps} time {steps}", warmup, reasons
    if _positive_int(epochs) is None:
        reasons.append(f"config: epochs={_shown(epochs)} is neither null nor a positive int")
        return None, "", warmup, reasons
    if size is None or replicas is None or warmup is None:
        return None, "", warmup, reasons  # the split's size unrecorded (older dumps): not checked exactly
    per_epoch = size // replicas // batch
    timed = epochs * per_epoch - warmup
    if timed <= 0:
        reasons.append(f"config: epochs={epochs} of {per_epoch} steps are not more than warmup_steps={warmup}")
        return None, "", warmup, reasons
    return timed, f"epochs={epochs} of {per_epoch} steps less warmup_steps={warmup} time {timed}", warmup, reasons


def _shape(doc: Mapping[str, Any], *, decoded: bool = False) -> tuple[_Shape | None, list[str]]:
    """What ``doc``'s config lets it hold, and every way its identity disagrees with that config.

    ``decoded``: ``doc`` was parsed from JSON text (it holds JSON's types only), so what its config lets a
    rank hold is kept by the config's exact text: the ranks of a cell share one config, and it is worked
    out once per cell instead of once per rank.
    """
    config = doc["config"]
    extra, section, world_size = doc.get("extra"), doc.get("pipeline"), doc["world_size"]
    if decoded:
        facts = _FACTS.get(
            _facts_inputs(config, extra, section, world_size),
            lambda: _config_facts(config, extra, section, world_size),
            decoded=True,
        )
    else:
        facts = _config_facts(config, extra, section, world_size)
    shape, config_reasons = facts
    if shape is None:
        return None, list(config_reasons)
    return shape, _identity_reasons(doc, config, shape) + list(config_reasons)


def _config_facts(
    config: Mapping[str, Any], extra: Any, section: Any, world_size: Any
) -> tuple[_Shape | None, tuple[str, ...]]:
    """(what ``config`` lets one of its ranks produce, every reason the config cannot say) — nothing of the
    rank itself but the split sizes it recorded (``extra.data``) and, for a pipeline whose shape the planner
    chose, the shape its section records."""
    batch = _positive_int(config.get("batch_size"))
    world = world_size_of(config)
    if batch is None or world is None:
        shown = {key: config.get(key) for key in ("batch_size", "gpus", "nodes")}
        return None, (f"config: batch_size, gpus and nodes must be positive ints, got {shown}",)
    framework = _at(config, "framework.name")
    replicas = _replicas(config, section, world_size)
    val_steps = config.get("val_steps", _ABSENT)
    size, reasons = _val_size(config, extra)
    val = None
    untimed = sample_counting_of(framework) == "untimed"
    exact = not untimed and replicas is not None and size is not None
    if exact and (val_steps is None or (type(val_steps) is int and val_steps >= 0)):
        val = val_counts(batch, replicas, size, val_steps)
    train_timed, train_source, warmup, step_reasons = _train_steps(config, extra, replicas, batch, untimed, framework)
    reasons += step_reasons
    shape = _Shape(batch=batch, replicas=replicas, val_steps=val_steps, val_size=size, val=val, framework=framework,
                   untimed=untimed, train_timed=train_timed, train_source=train_source, warmup=warmup)  # fmt: skip
    return shape, tuple(reasons)


def _identity_reasons(doc: Mapping[str, Any], config: Mapping[str, Any], shape: _Shape) -> list[str]:
    """Every way the rank's own fields (world, ranks, names, whether it counts samples) disagree with its config."""
    reasons = []
    world = world_size_of(config)
    if doc["world_size"] != world:
        reasons.append(f"world_size: {doc['world_size']}, but the config's gpus × nodes = {world}")
    if not 0 <= doc["local_rank"] < config["gpus"]:
        reasons.append(f"local_rank: {doc['local_rank']} outside the config's {config['gpus']} processes per node")
    if not 0 <= doc["node_rank"] < config["nodes"]:
        reasons.append(f"node_rank: {doc['node_rank']} outside the config's {config['nodes']} node(s)")
    for field_name, dotted in (("repeat", "repeat"), ("framework", "framework.name"), ("model", "model.name"),
                               ("dataset", "dataset.name")):  # fmt: skip
        wanted = _at(config, dotted)
        if not exactly_equal(doc[field_name], wanted):
            reasons.append(f"{field_name}: {doc[field_name]!r}, but the config says {dotted}={wanted!r}")
    framework = shape.framework
    if sample_counting_of(framework) in _REPLICA_PER_RANK and not doc["counts_samples"]:
        reasons.append(f"counts_samples: false, but every rank of {framework} counts its samples")
    last_stage = (doc.get("pipeline") or {}).get("is_last_stage")
    if type(last_stage) is bool and last_stage != doc["counts_samples"]:
        reasons.append(f"counts_samples: {doc['counts_samples']}, but pipeline.is_last_stage is {last_stage}")
    return reasons


# Facts by an exact key of what they are worked out from: only documents parsed from JSON text are kept (their
# values are JSON's types by construction).
_FACTS: ExactMemo[tuple[_Shape | None, tuple[str, ...]]] = ExactMemo()


def _facts_inputs(config: Any, extra: Any, section: Any, world_size: Any) -> list[Any]:
    """What :func:`_config_facts` reads of a rank: its config, the split sizes it recorded, the shape its
    pipeline section records and its world size."""
    data = extra.get("data") if isinstance(extra, dict) else None
    recorded = (
        [[key in data, data.get(key)] for key in ("train_samples", "val_samples")] if isinstance(data, dict) else 0
    )
    shape = [section.get("stages"), section.get("replicas")] if isinstance(section, dict) else 0
    return [config, recorded, shape, world_size]


def _step_reasons(where: str, name: str, phase: Mapping[str, Any], shape: _Shape, counts: bool) -> list[str]:
    """Timed and warm-up steps the config runs, on every rank (a rank that counts no sample runs them too)."""
    timed, warm = phase["timed_steps"], phase["warmup_steps"]
    reasons = []
    if name == "train":
        if shape.train_timed is not None and timed != shape.train_timed:
            reasons.append(f"{where}timed_steps: {timed}, but the config's {shape.train_source}")
        if shape.warmup is not None and warm != shape.warmup:
            reasons.append(f"{where}warmup_steps: {warm}, but the config's warmup_steps={shape.warmup}")
        return reasons
    if shape.untimed:
        if timed != 0:
            reasons.append(f"{where}timed_steps: {timed}, but framework {shape.framework} times none")
        if warm != 0:
            reasons.append(f"{where}warmup_steps: {warm}, but framework {shape.framework} runs no validation step")
        return reasons
    if shape.val is not None:
        ran = shape.val[2] > 0
        if not counts and timed != shape.val[0]:  # a counting rank's steps are checked with its samples
            reasons.append(f"{where}timed_steps: {timed}, but the config gives {shape.val[0]} ({shape.val_source()})")
        if warm != int(ran):
            runs = "1 untimed first step" if ran else "no step"
            reasons.append(f"{where}warmup_steps: {warm}, but validation runs {runs} ({shape.val_source()})")
        return reasons
    if warm not in (0, 1):
        reasons.append(f"{where}warmup_steps: {warm}, but validation runs 1 untimed first step at most")
    elif warm == 0 and timed > 0:
        reasons.append(f"{where}timed_steps: {timed} without the untimed first step (warmup_steps 0)")
    return reasons


def _requested(config: Mapping[str, Any]) -> ShapeRequest | None:
    """What a pipelined config asks of its shape; None when the config cannot say (damaged)."""
    world, pipeline = world_size_of(config), _at(config, "pipeline")
    if world is None or not isinstance(pipeline, dict):
        return None
    try:
        return ShapeRequest.of(str(_at(config, "framework.name")), pipeline, world)
    except (PlanError, LookupError, TypeError, ValueError):
        return None


def _fixed_shape(config: Mapping[str, Any]) -> tuple[int, int] | None:
    """(stages, replicas) a config fixes; None where the planner chooses them (auto) or it cannot say."""
    request = _requested(config)
    if request is None or request.chosen_by == "planner":
        return None
    layouts = request.shapes()
    return (layouts[0].stages, layouts[0].replicas) if layouts else None


def dump_replicas(doc: Mapping[str, Any]) -> int | None:
    """Data-parallel replicas of the cell that wrote ``doc``: what its config fixes, else (stages and
    replicas auto) what its pipeline section records, when that makes the world size."""
    return _replicas(doc["config"], doc.get("pipeline"), doc.get("world_size"))


def _replicas(config: Mapping[str, Any], section: Any, world_size: Any) -> int | None:
    replicas = data_replicas(config)
    pipelined = sample_counting_of(_at(config, "framework.name")) == "pipelined"
    if replicas is None and pipelined and isinstance(section, dict):
        stages, chosen = _positive_int(section.get("stages")), _positive_int(section.get("replicas"))
        if stages and chosen and stages * chosen == world_size:
            return chosen
    return replicas
