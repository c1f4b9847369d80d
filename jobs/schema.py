"""The metrics schema: the only contract between ``jobs/`` (writers) and ``analysis/`` (readers).

Every rank of every cell writes one JSON document of this shape (``rank_<N>.json``).
Readers call :func:`validate` and get a list of reasons, never an exception, so a
corrupt dump is reported, not fatal. Validation checks meaning as well as types: every
number finite, times positive, samples and predictions that the dump's config can
produce, throughput equal to samples / seconds (docs/metrics.md lists the rules).
:func:`check_against_cell` compares a dump with its cell's ``cell.json``, and
:func:`read_attempt` / :func:`validate_attempt` judge a whole attempt folder: what the
runner, the reader and ``status`` all use. Bump :data:`SCHEMA_VERSION` on any change a
reader of the previous version would misread; docs/metrics.md describes each field.

Pure standard library on purpose: the laptop install (``.[analysis]``) imports it
without torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_NAME = "dnnbench.metrics"
SCHEMA_VERSION = 1

PHASES = ("train", "val")
# Config keys (dotted) added after the first dumps were written, with the value those dumps
# ran with. Readers fill them in, so an old and a new dump of one configuration stay one
# configuration; cell ids leave them out while at that value, so old ids stay valid.
ADDED_CONFIG_DEFAULTS: dict[str, Any] = {
    "cudnn_benchmark": False,
    "cluster.ssh_port": None,
    "cluster.ssh_identity_file": None,
    "cluster.gpu_type": None,
    "cluster.exclusive": False,
}


def _parent_copied(config: dict[str, Any], dotted: str) -> tuple[dict[str, Any] | None, str]:
    """The dict holding ``dotted``'s leaf, copied along the path inside ``config`` (a copy itself)."""
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
        child = node.get(name)
        if not isinstance(child, dict):
            return None, leaf
        node[name] = node = dict(child)
    return node, leaf


def with_added_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with every added key present (a copy; old configs get the old values)."""
    filled = dict(config)
    for dotted, value in ADDED_CONFIG_DEFAULTS.items():
        node, leaf = _parent_copied(filled, dotted)
        if node is not None:
            node.setdefault(leaf, value)
    return filled


def without_added_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as written before the added keys existed, where they hold their old value."""
    trimmed = dict(config)
    for dotted, value in ADDED_CONFIG_DEFAULTS.items():
        node, leaf = _parent_copied(trimmed, dotted)
        if node is not None and leaf in node and node[leaf] == value:
            del node[leaf]
    return trimmed


MEMORY_KINDS = ("cuda", "rss")

# field -> accepted Python types; ``None`` in the tuple means the field may be null.
_NUM = (int, float)
_TOP_LEVEL: dict[str, tuple[type | None, ...]] = {
    "schema": (str,),
    "schema_version": (int,),
    "cell_id": (str,),
    "attempt": (int,),
    "repeat": (int,),
    "rank": (int,),
    "local_rank": (int,),
    "world_size": (int,),
    "node_rank": (int,),
    "framework": (str,),
    "model": (str,),
    "dataset": (str,),
    "device_type": (str,),
    "memory_kind": (str,),
    "counts_samples": (bool,),
    "config": (dict,),
    "phases": (dict,),
    "environment": (dict,),
    "environment_hash": (str,),
    "started_at": (str,),
    "finished_at": (str,),
    "pipeline": (dict, None),
    "extra": (dict, None),
}
_PHASE: dict[str, tuple[type | None, ...]] = {
    "timed_steps": (int,),
    "warmup_steps": (int,),
    "samples": (int,),
    "seconds": _NUM,
    "throughput_samples_per_s": _NUM,
    "step_times_s": (list,),
    "memory": (dict,),
    "loss": (*_NUM, None),
    "accuracy": (*_NUM, None),
    # Validation: predictions right and predictions made by this rank (global accuracy = sums).
    "correct": (int, None),
    "evaluated": (int, None),
    # Joules of the timed part per counter, null with the reason where unreadable (jobs/energy.py);
    # absent in dumps written before it was recorded.
    "energy": (dict, None),
}
_MEMORY: dict[str, tuple[type | None, ...]] = {
    "kind": (str,),
    "peak_allocated_bytes": (int, None),
    "peak_reserved_bytes": (int, None),
    "peak_rss_bytes": (int, None),
    "end_rss_bytes": (int, None),
}
# Environment fields that can change a result: equal values make two cells comparable.
# Hashed by environment_hash (below) for every dump, read by analysis/ (confound check).
COMPARABLE_KEYS = (
    "python",
    "torch",
    "torchvision",
    "cuda",
    "cudnn",
    "nccl",
    "horovod",
    "threads",
    "numerics",
    "cpu_model",
    "gpu_name",
    "gpu_driver",
    "dnnbench",
)
ENVIRONMENT_REQUIRED = ("python", "torch", "hostname", "dnnbench", "threads")
# Environment fields added after the first dumps were written, with what those dumps ran
# with (PyTorch's defaults: dnnbench set none of them then). Readers fill them in before
# hashing, so an old and a new dump from one environment still hash alike.
ADDED_ENVIRONMENT_DEFAULTS: dict[str, Any] = {
    "numerics": {
        "cudnn_deterministic": False,
        "cudnn_allow_tf32": True,
        "matmul_allow_tf32": False,
        "float32_matmul_precision": "highest",
    },
}


def with_environment_defaults(env: Mapping[str, Any]) -> dict[str, Any]:
    return {**ADDED_ENVIRONMENT_DEFAULTS, **env}


def environment_hash(env: Mapping[str, Any]) -> str:
    """12 hex digits over the ``COMPARABLE_KEYS`` of an environment fingerprint."""
    comparable = {key: env.get(key) for key in COMPARABLE_KEYS}
    text = json.dumps(comparable, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class SchemaError(ValueError):
    """A dump that does not match this schema version; ``reasons`` lists every mismatch."""

    def __init__(self, path: str, reasons: list[str]):
        self.path = path
        self.reasons = reasons
        super().__init__(f"{path}: " + "; ".join(reasons))


def _check_fields(where: str, doc: Mapping[str, Any], spec: Mapping[str, tuple[type | None, ...]]) -> list[str]:
    reasons = []
    for key, types in spec.items():
        value = doc.get(key, _ABSENT)
        # Fast path: the exact type is one the field accepts (bool never passes as int here).
        if type(value) in types:
            continue
        if value is _ABSENT or value is None:
            if None not in types:
                reasons.append(f"{where}{key}: {'missing' if value is _ABSENT else 'null not allowed'}")
            continue
        concrete = tuple(t for t in types if t is not None)
        # bool is an int subclass; a True where a count belongs is a bug, not a number.
        if isinstance(value, bool) and bool not in concrete:
            reasons.append(f"{where}{key}: expected {_names(concrete)}, got bool")
        elif not isinstance(value, concrete):
            reasons.append(f"{where}{key}: expected {_names(concrete)}, got {type(value).__name__}")
    return reasons


_ABSENT = object()
_NUMBER_TYPES = frozenset((int, float))
_FLOATS = frozenset((float,))
# Beyond int64 no count, size or time is real, pandas cannot hold it and float() overflows on it.
_INT_LIMIT = 2**63
_LISTED = 5  # offending values named one by one per dump; the rest are counted
# A ratio recomputed from the same JSON numbers agrees up to rounding.
_RATIO_TOLERANCE = 1e-6
# The timed steps lie inside the phase's wall clock; the slack covers a GPU's two clocks (events, host).
_STEP_SUM_RELATIVE, _STEP_SUM_ABSOLUTE_S = 0.01, 1e-3

# Every rank of these is one data-parallel replica and counts samples.
DATA_PARALLEL_FRAMEWORKS = ("ddp", "horovod", "noop")
# Each replica of these is a pipeline of ranks; only the rank holding its last stage counts samples.
PIPELINED_FRAMEWORKS = ("pipeline", "model_parallel")
# These time no step whatever the config asks (jobs/noop.py): the config's step counts do not apply.
_UNTIMED_FRAMEWORKS = ("noop",)


def _names(types: tuple[type, ...]) -> str:
    return "|".join(t.__name__ for t in types)


# --------------------------------------------------------------------------- finite numbers


def _all_finite(container: dict[str, Any] | list[Any]) -> bool:
    """Whether every number inside ``container`` is finite (and every int within int64).

    The hot path of every read, so one loop without a call per value: ``v - v`` is 0.0 for
    a finite float and NaN for an infinity or a NaN; lists of floats (step times) go in one
    C-level pass.
    """
    stack: list[Any] = [container]
    while stack:
        items = stack.pop()
        if type(items) is dict:
            items = items.values()
        elif set(map(type, items)) <= _FLOATS:
            if not all(map(math.isfinite, items)):
                return False
            continue
        for value in items:
            kind = type(value)
            if kind is float:
                if value - value != 0.0:
                    return False
            elif kind is int:
                if not -_INT_LIMIT <= value < _INT_LIMIT:
                    return False
            elif kind is dict or kind is list:
                stack.append(value)
    return True


def _collect_non_finite(value: Any, path: str, found: list[tuple[str, str]]) -> None:
    kind = type(value)
    if kind is float and not math.isfinite(value):
        found.append((path, f"{json.dumps(value)} is not a finite number"))  # JSON's spelling: Infinity, NaN
    elif kind is int and not -_INT_LIMIT <= value < _INT_LIMIT:
        found.append((path, f"an integer of {len(str(abs(value)))} digits is out of range"))
    elif kind is dict:
        for key, item in value.items():
            _collect_non_finite(item, f"{path}.{key}" if path else str(key), found)
    elif kind is list:
        for index, item in enumerate(value):
            _collect_non_finite(item, f"{path}[{index}]", found)


def non_finite(doc: Any) -> list[tuple[str, str]]:
    """(path, what is wrong) for every number in ``doc`` that is not finite or beyond int64; [] fast."""
    try:
        if type(doc) not in (dict, list) or _all_finite(doc):
            return []
        found: list[tuple[str, str]] = []
        _collect_non_finite(doc, "", found)
    except RecursionError:
        return [("", "nested too deeply to check its numbers")]
    return found


def _non_finite_reasons(found: list[tuple[str, str]]) -> list[str]:
    reasons = [f"{path or 'top level'}: {problem}" for path, problem in found[:_LISTED]]
    if len(found) > _LISTED:
        reasons.append(f"and {len(found) - _LISTED} more numbers that are not finite")
    return reasons


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
    """Data-parallel replicas of a config = ranks that count samples; None for an unknown framework."""
    framework = _at(config, "framework.name")
    if framework in DATA_PARALLEL_FRAMEWORKS:
        return world_size_of(config)
    if framework in PIPELINED_FRAMEWORKS:
        return _positive_int(_at(config, "pipeline.replicas"))
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

    def val_source(self) -> str:
        return (f"val_steps={self.val_steps}, {self.val_size} validation samples over "
                f"{self.replicas} replica(s), batch_size {self.batch}")  # fmt: skip


def _val_size(config: Mapping[str, Any], extra: Any) -> tuple[int | None, list[str]]:
    """The validation split's size as the rank recorded it (``extra.data``), checked against the config."""
    recorded = _at(extra, "data.val_samples") if isinstance(extra, Mapping) else _ABSENT
    if recorded is _ABSENT:
        return None, []  # dumps from before the record: checked against bounds instead
    if type(recorded) is not int or recorded < 0:
        return None, [f"extra.data.val_samples: expected a non-negative int, got {recorded!r}"]
    cap = _positive_int(_at(config, "dataset.val_samples"))
    if cap is not None and recorded > cap:
        return None, [f"extra.data.val_samples: {recorded} > the config's dataset.val_samples={cap}"]
    if cap is not None and _at(config, "dataset.name") == "synthetic" and recorded != cap:
        return None, [f"extra.data.val_samples: {recorded}, but a synthetic split has dataset.val_samples={cap}"]
    return recorded, []


def _shape(doc: Mapping[str, Any]) -> tuple[_Shape | None, list[str]]:
    """What ``doc``'s config lets it hold, and every way its identity disagrees with that config."""
    config = doc["config"]
    reasons = []
    batch = _positive_int(config.get("batch_size"))
    world = world_size_of(config)
    if batch is None or world is None:
        shown = {key: config.get(key) for key in ("batch_size", "gpus", "nodes")}
        return None, [f"config: batch_size, gpus and nodes must be positive ints, got {shown}"]
    if doc["world_size"] != world:
        reasons.append(f"world_size: {doc['world_size']}, but the config's gpus × nodes = {world}")
    if not 0 <= doc["local_rank"] < config["gpus"]:
        reasons.append(f"local_rank: {doc['local_rank']} outside the config's {config['gpus']} processes per node")
    if not 0 <= doc["node_rank"] < config["nodes"]:
        reasons.append(f"node_rank: {doc['node_rank']} outside the config's {config['nodes']} node(s)")
    for field_name, dotted in (("repeat", "repeat"), ("framework", "framework.name"), ("model", "model.name"),
                               ("dataset", "dataset.name")):  # fmt: skip
        wanted = _at(config, dotted)
        if doc[field_name] != wanted:
            reasons.append(f"{field_name}: {doc[field_name]!r}, but the config says {dotted}={wanted!r}")
    framework = _at(config, "framework.name")
    if framework in DATA_PARALLEL_FRAMEWORKS and not doc["counts_samples"]:
        reasons.append(f"counts_samples: false, but every rank of {framework} counts its samples")
    last_stage = (doc.get("pipeline") or {}).get("is_last_stage")
    if type(last_stage) is bool and last_stage != doc["counts_samples"]:
        reasons.append(f"counts_samples: {doc['counts_samples']}, but pipeline.is_last_stage is {last_stage}")
    replicas = data_replicas(config)
    val_steps = config.get("val_steps", _ABSENT)
    size, size_reasons = _val_size(config, doc.get("extra"))
    reasons += size_reasons
    val = None
    exact = framework not in _UNTIMED_FRAMEWORKS and replicas is not None and size is not None
    if exact and (val_steps is None or (type(val_steps) is int and val_steps >= 0)):
        val = val_counts(batch, replicas, size, val_steps)
    return _Shape(batch=batch, replicas=replicas, val_steps=val_steps, val_size=size, val=val), reasons


# --------------------------------------------------------------------------- one dump


def validate(doc: Any) -> list[str]:
    """Every reason ``doc`` is not a valid rank dump of this version; empty when valid.

    Types first; then meaning: finite numbers everywhere, and phases whose times, samples,
    predictions, throughput and memory the dump's own config can produce.
    """
    if not isinstance(doc, dict):
        return [f"top level: expected object, got {type(doc).__name__}"]
    if doc.get("schema") != SCHEMA_NAME:
        return [f"schema: expected {SCHEMA_NAME!r}, got {doc.get('schema')!r}"]
    if doc.get("schema_version") != SCHEMA_VERSION:
        return [f"schema_version: this reader understands {SCHEMA_VERSION}, got {doc.get('schema_version')!r}"]
    found = non_finite(doc)
    reasons = _non_finite_reasons(found)
    typed = _check_fields("", doc, _TOP_LEVEL)
    if typed:
        return reasons + typed
    if doc["memory_kind"] not in MEMORY_KINDS:
        reasons.append(f"memory_kind: expected one of {MEMORY_KINDS}, got {doc['memory_kind']!r}")
    if not 0 <= doc["rank"] < doc["world_size"]:
        reasons.append(f"rank: {doc['rank']} outside world_size {doc['world_size']}")
    missing_env = [k for k in ENVIRONMENT_REQUIRED if k not in doc["environment"]]
    if missing_env:
        reasons.append(f"environment: missing {', '.join(missing_env)}")
    shape, shape_reasons = _shape(doc)
    reasons += shape_reasons
    for name in PHASES:
        phase = doc["phases"].get(name)
        if not isinstance(phase, dict):
            reasons.append(f"phases.{name}: missing")
            continue
        where = f"phases.{name}."
        phase_reasons = _check_phase(where, phase)
        if not phase_reasons:
            # A check reading a field that holds Infinity or NaN would only restate that reason.
            unusable = {_field_of(path, where) for path, _ in found if path.startswith(where)}
            phase_reasons = _phase_meaning(where, phase, unusable)
            if shape is not None and not unusable & _SAMPLE_FIELDS:
                phase_reasons += _sample_reasons(where, name, phase, shape, doc["counts_samples"])
        reasons += phase_reasons
    return reasons


def _field_of(path: str, where: str) -> str:
    """The phase field a path inside the phase ``where`` belongs to: 'step_times_s' for '…step_times_s[3]'."""
    return path[len(where) :].split(".")[0].split("[")[0]


_TIME_FIELDS = frozenset(("step_times_s", "seconds", "samples", "throughput_samples_per_s"))
_PREDICTION_FIELDS = frozenset(("correct", "evaluated", "accuracy"))
_SAMPLE_FIELDS = frozenset(("timed_steps", "samples", "evaluated"))


def _check_phase(where: str, phase: Mapping[str, Any]) -> list[str]:
    reasons = _check_fields(where, phase, _PHASE)
    if reasons:
        return reasons
    reasons += _check_fields(f"{where}memory.", phase["memory"], _MEMORY)
    times = phase["step_times_s"]
    if len(times) != phase["timed_steps"]:
        reasons.append(f"{where}step_times_s: {len(times)} entries for {phase['timed_steps']} steps")
    # set(map(type, …)) and min() run in C: this is the hot loop when reading 40,000 dumps.
    if times and (not set(map(type, times)) <= _NUMBER_TYPES or min(times) < 0):
        reasons.append(f"{where}step_times_s: entries must be non-negative numbers")
    if phase["timed_steps"] < 0 or phase["warmup_steps"] < 0:
        reasons.append(f"{where[:-1]}: negative step count")
    if phase["seconds"] < 0 or phase["samples"] < 0:
        reasons.append(f"{where[:-1]}: negative seconds or samples")
    return reasons


def _phase_meaning(where: str, phase: Mapping[str, Any], unusable: set[str]) -> list[str]:
    """Times, throughput, loss, predictions and memory that make sense and agree with each other.

    Types already hold; a group of checks is left out when one of its fields is in ``unusable``.
    """
    reasons = []
    if not unusable & _TIME_FIELDS:
        reasons += _time_reasons(where, phase)
    if "loss" not in unusable and phase["loss"] is not None and phase["loss"] < 0:
        reasons.append(f"{where}loss: {phase['loss']} < 0 (a cross-entropy is never negative)")
    if not unusable & _PREDICTION_FIELDS:
        reasons += _prediction_reasons(where, phase)
    if "memory" not in unusable:
        reasons += _memory_reasons(where, phase["memory"])
    return reasons


def _time_reasons(where: str, phase: Mapping[str, Any]) -> list[str]:
    reasons = []
    times, seconds, samples = phase["step_times_s"], phase["seconds"], phase["samples"]
    if times and phase["timed_steps"] > 0:
        if not seconds > 0:
            reasons.append(f"{where}seconds: {seconds} for {phase['timed_steps']} timed steps")
        if min(times) == 0:
            reasons.append(f"{where}step_times_s: a timed step took 0 s")
        total = math.fsum(times)
        if total > seconds * (1 + _STEP_SUM_RELATIVE) + _STEP_SUM_ABSOLUTE_S:
            reasons.append(f"{where}step_times_s: the timed steps add up to {total:.6g} s, "
                           f"more than the phase's {seconds:.6g} s")  # fmt: skip
    throughput = phase["throughput_samples_per_s"]
    expected = samples / seconds if seconds > 0 else 0.0  # as jobs/loop.py computes it
    if abs(throughput - expected) > _RATIO_TOLERANCE * abs(expected) + 1e-9:
        reasons.append(f"{where}throughput_samples_per_s: {throughput:.6g}, but samples / seconds = {expected:.6g}")
    return reasons


def _prediction_reasons(where: str, phase: Mapping[str, Any]) -> list[str]:
    correct, evaluated, accuracy = phase["correct"], phase["evaluated"], phase["accuracy"]
    if (correct is None) != (evaluated is None):
        return [f"{where}correct, evaluated: {correct}, {evaluated} (both counts or neither)"]
    reasons = []
    if evaluated is not None and (correct < 0 or evaluated < 0):
        reasons.append(f"{where}correct, evaluated: {correct}, {evaluated} (negative)")
    elif evaluated is not None and correct > evaluated:
        reasons.append(f"{where}correct: {correct} > evaluated {evaluated}")
    if accuracy is None:
        if evaluated:
            reasons.append(f"{where}accuracy: null for {evaluated} predictions")
    elif not 0 <= accuracy <= 1:
        reasons.append(f"{where}accuracy: {accuracy} outside [0, 1]")
    elif not evaluated:
        reasons.append(f"{where}accuracy: {accuracy} without predictions (evaluated {evaluated})")
    elif abs(accuracy - correct / evaluated) > 1e-9:
        reasons.append(f"{where}accuracy: {accuracy}, but correct / evaluated = {correct}/{evaluated}")
    return reasons


def _memory_reasons(where: str, memory: Mapping[str, Any]) -> list[str]:
    reasons = [
        f"{where}memory.{key}: {memory[key]} < 0" for key in _MEMORY if key != "kind" and (memory.get(key) or 0) < 0
    ]
    allocated, reserved = memory.get("peak_allocated_bytes"), memory.get("peak_reserved_bytes")
    if allocated is not None and reserved is not None and allocated > reserved:
        reasons.append(f"{where}memory: peak allocated {allocated} > peak reserved {reserved}")
    return reasons


def _sample_reasons(where: str, name: str, phase: Mapping[str, Any], shape: _Shape, counts: bool) -> list[str]:
    """Samples and predictions the config can produce (jobs/loop.py; docs/metrics.md has the rules)."""
    timed, samples, evaluated = phase["timed_steps"], phase["samples"], phase["evaluated"]
    batch = shape.batch
    if not counts:
        # Pipeline stages before the last finish no sample and make no prediction.
        if samples != 0 or evaluated not in (None, 0):
            return [f"{where[:-1]}: {samples} samples, {evaluated} evaluated on a rank that does not count samples (0)"]
        return []
    if name == "train":
        # Training batches are always whole (drop_last): every timed step is one full batch.
        if samples != timed * batch:
            return [f"{where}samples: {samples}, but {timed} timed steps of batch_size {batch} give {timed * batch}"]
        return []
    if shape.val is not None:
        if (timed, samples, evaluated) != shape.val:
            wanted = ", ".join(map(str, shape.val))
            return [f"{where[:-1]}: {timed} timed steps, {samples} samples, {evaluated} evaluated, "
                    f"but the config gives {wanted} ({shape.val_source()})"]  # fmt: skip
        return []
    return _val_bounds(where, timed, samples, evaluated, shape)


def _val_bounds(where: str, timed: int, samples: int, evaluated: int | None, shape: _Shape) -> list[str]:
    """Validation counts within what any split size allows (its size unknown): batches of at most batch_size."""
    batch, reasons = shape.batch, []
    if samples > timed * batch:
        reasons.append(f"{where}samples: {samples} > {timed} timed steps × batch_size {batch}")
    elif samples < timed:
        reasons.append(f"{where}samples: {samples} for {timed} timed steps (every step has one at least)")
    first = None if evaluated is None else evaluated - samples  # the untimed first batch
    if first is not None and (not 0 <= first <= batch or (timed > 0 and first == 0)):
        reasons.append(f"{where}evaluated: {evaluated}, but the timed {samples} samples and an untimed first batch "
                       f"of 1 to batch_size {batch} samples give {samples + 1} to {samples + batch}")  # fmt: skip
    if type(shape.val_steps) is int and timed > max(shape.val_steps - 1, 0):
        reasons.append(f"{where}timed_steps: {timed}, but val_steps={shape.val_steps} less the untimed first step "
                       f"allow {max(shape.val_steps - 1, 0)}")  # fmt: skip
    return reasons


# --------------------------------------------------------------------------- a dump and its cell


def _differences(dump: Any, cell: Any, path: str = "") -> list[str]:
    if isinstance(dump, dict) and isinstance(cell, dict):
        found = []
        for key in sorted(set(dump) | set(cell), key=str):
            found += _differences(dump.get(key, _ABSENT), cell.get(key, _ABSENT), f"{path}.{key}" if path else key)
        return found
    if dump == cell:
        return []

    def shown(value: Any) -> str:
        return "absent" if value is _ABSENT else json.dumps(value, default=str)

    return [f"{path or 'config'}: {shown(dump)} in the dump, {shown(cell)} in cell.json"]


def check_against_cell(doc: Any, cell_config: Mapping[str, Any], cell_id: str | None = None) -> list[str]:
    """Every way ``doc`` is not a dump of the cell whose ``cell.json`` holds ``cell_config`` (and ``cell_id``).

    Both configs get :func:`with_added_defaults` first: a dump written before a key existed still matches.
    """
    return _cell_reasons(doc, cell_config, with_added_defaults(cell_config), cell_id)


def _cell_reasons(doc: Any, cell_config: Mapping[str, Any], filled: dict[str, Any], cell_id: str | None) -> list[str]:
    """:func:`check_against_cell` with the cell's config already filled in (once per attempt)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        return []  # validate() names what is wrong with such a document
    reasons = []
    config = doc["config"]
    if config != cell_config:  # equal as written: equal with the added defaults too
        ours = with_added_defaults(config)
        if ours != filled:
            differences = _differences(ours, filled)
            more = f"; and {len(differences) - _LISTED} more" if len(differences) > _LISTED else ""
            reasons.append("config differs from cell.json: " + "; ".join(differences[:_LISTED]) + more)
    if cell_id is not None and doc.get("cell_id") != cell_id:
        reasons.append(f"cell_id: {doc.get('cell_id')!r}, but cell.json is cell {cell_id!r}")
    return reasons


# --------------------------------------------------------------------------- one attempt


def read_json(path: str | os.PathLike[str]) -> tuple[Any, str | None]:
    """(document, None), or (None, "missing"), or (None, why it is unreadable); never raises for content."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read()), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        return None, f"unreadable ({type(err).__name__}: {err})"


def check_ranks(docs: Mapping[int, dict[str, Any]], world_size: int) -> list[str]:
    """Every way the valid dumps of one attempt (rank → dump) do not fit together."""
    if not docs:
        return []
    reasons = []
    for key in ("cell_id", "repeat", "framework", "model", "world_size"):
        values = {str(d[key]) for d in docs.values()}
        if len(values) > 1:
            reasons.append(f"ranks disagree on {key}: {sorted(values)}")
    first = next(iter(docs.values()))
    if any(d["config"] != first["config"] for d in docs.values()):
        reasons.append("ranks disagree on config")
    replicas = data_replicas(first["config"])
    counting = sum(d["counts_samples"] for d in docs.values())
    if len(docs) == world_size and replicas is not None and counting != replicas:
        reasons.append(
            f"{counting} rank(s) count samples, but the config has {replicas} data-parallel replica(s), one each"
        )
    return reasons


def read_attempt(
    attempt_dir: str | os.PathLike[str],
    world_size: int,
    cell_config: Mapping[str, Any] | None = None,
    cell_id: str | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """(valid dumps of ranks ``0..world_size-1``, every reason the attempt is not complete and valid).

    Each dump is validated (:func:`validate`), compared with its cell (:func:`check_against_cell`,
    when ``cell_config`` is given) and with the other ranks (:func:`check_ranks`).
    """
    folder = os.fspath(attempt_dir)
    filled = with_added_defaults(cell_config) if cell_config is not None else {}
    docs: dict[int, dict[str, Any]] = {}
    reasons: list[str] = []
    for rank in range(world_size):
        name = dump_filename(rank)
        doc, error = read_json(os.path.join(folder, name))
        if error:
            reasons.append(f"rank {rank}: {'no dump' if error == 'missing' else error}")
            continue
        invalid = validate(doc)
        if cell_config is not None:
            invalid += _cell_reasons(doc, cell_config, filled, cell_id)
        if invalid:
            reasons.append(f"rank {rank}: invalid dump: " + "; ".join(invalid))
        elif doc["rank"] != rank:
            reasons.append(f"rank {rank}: {name} holds rank {doc['rank']} (duplicated rank)")
        elif doc["world_size"] != world_size:
            reasons.append(f"rank {rank}: world_size {doc['world_size']}, but the attempt has {world_size} ranks")
        else:
            docs[rank] = doc
    if world_size <= 0:
        reasons.append("no rank dumps")
    reasons += check_ranks(docs, world_size)
    return [docs[r] for r in sorted(docs)], reasons


def validate_attempt(
    attempt_dir: str | os.PathLike[str],
    cell_config: Mapping[str, Any],
    world_size: int | None = None,
    cell_id: str | None = None,
) -> list[str]:
    """Every reason an attempt folder does not hold complete, valid dumps of its cell; [] when it does.

    ``cell_config`` (and ``cell_id``) as the cell's ``cell.json`` holds them; ``world_size``
    defaults to the config's ``gpus × nodes``.
    """
    world = world_size if world_size is not None else world_size_of(cell_config)
    if world is None:
        return ["cell.json: gpus and nodes are not positive ints"]
    return read_attempt(attempt_dir, world, cell_config, cell_id)[1]


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate one dump; raises :class:`SchemaError` with every reason."""
    path = str(path)
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise SchemaError(path, [f"unreadable: {err}"]) from err
    reasons = validate(doc)
    if reasons:
        raise SchemaError(path, reasons)
    return doc


def dump_filename(rank: int) -> str:
    return f"rank_{rank}.json"


def error_filename(rank: int | str) -> str:
    """The traceback file of a rank that raised (``rank`` may be ``unknown``)."""
    return f"error_rank_{rank}.txt"


def write_atomic(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> None:
    """Write JSON so that a reader sees the old file, or the whole new one, never half.

    Written to a temporary file in the same folder, fsync'd, then renamed over.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(doc, handle, indent=1, sort_keys=True, allow_nan=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_dump(**fields: Any) -> dict[str, Any]:
    """A dump carrying the schema's name and version; the writer fills in the rest."""
    return {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, **fields}
