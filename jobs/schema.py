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

import errno
import hashlib
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.frameworks import kind_of
from jobs.pipeline.planner import SHAPE_CHOOSERS, PlanError, ShapeRequest

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
    "pipeline.bandwidth": "config",
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
        if node is not None and leaf in node and exactly_equal(node[leaf], value):
            del node[leaf]
    return trimmed


MEMORY_KINDS = ("cuda", "rss")
DEVICE_TYPES = ("cpu", "cuda")
# The memory kind each device's probe records (jobs/measure.py): the CUDA allocator's, or the process's RSS.
MEMORY_KIND_OF_DEVICE = {"cpu": "rss", "cuda": "cuda"}
# Upper bounds on a memory figure where the dump does not record what its node or device has
# (docs/metrics.md, "Memory"). Host memory: x86-64 with 4-level paging addresses 2**46 bytes = 64 TiB of
# physical memory, and the largest single-node machines sold (HPE Superdome Flex: 48 TiB) stay below it.
NODE_MEMORY_LIMIT_BYTES = 64 * 2**40
# A CUDA device's memory: the largest accelerators (2025: NVIDIA B300, AMD MI355X) hold 288 GB; 2 TiB is seven
# times that. Recorded totals, where a rank records them, bound tighter.
DEVICE_MEMORY_LIMIT_BYTES = 2 * 2**40
# environment.resources keys, in bytes, that bound a rank's memory figures when recorded.
NODE_MEMORY_KEY, DEVICE_MEMORY_KEY = "memory_total_bytes", "gpu_memory_total_bytes"
# The largest JSON file a reader reads (a rank dump is ~10-100 KB): anything larger is refused unread.
MAX_JSON_BYTES = 64 * 2**20


def exactly_equal(a: Any, b: Any) -> bool:
    """``a == b`` with types compared too, at every depth: ``False`` is not ``0`` and ``1.0`` is not ``1``."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(exactly_equal(value, b[key]) for key, value in a.items())
    if type(a) is list:
        return len(a) == len(b) and all(map(exactly_equal, a, b))
    return a == b


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
    # What this process holds of the model at the end of training (jobs/model_state.py); null where
    # its strategy cannot tell; absent in dumps written before it was recorded.
    "model_state": (dict, None),
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
# Fields of the ``model_state`` section: bytes this rank owns (local shards of sharded tensors).
MODEL_STATE_FIELDS = ("parameter_bytes", "gradient_bytes", "optimizer_state_bytes")
_MODEL_STATE: dict[str, tuple[type | None, ...]] = dict.fromkeys(MODEL_STATE_FIELDS, (int,))
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
    # Recorded since issue 21: the performance variables (LD_PRELOAD, OMP_*, MALLOC_*, …), the
    # speed-relevant shared libraries mapped, every installed distribution's version.
    "variables",
    "libraries",
    "packages",
)
# Comparable keys added after dumps were written without them: hashed only when present, so an
# old dump's stored hash stays its hash (such a dump still combines; it is flagged against a new one).
ADDED_COMPARABLE_KEYS = frozenset(("variables", "libraries", "packages"))
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
    comparable = {key: env.get(key) for key in COMPARABLE_KEYS if key in env or key not in ADDED_COMPARABLE_KEYS}
    return _hash_of(comparable)


def _hash_of(comparable: Mapping[str, Any]) -> str:
    text = json.dumps(comparable, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# Comparable keys hashed (as null where absent) since they were added, but not hashed at all by the
# versions before: a dump of those versions lacks the key and stored the hash over the keys it had.
HASHED_SINCE_ADDED = ("numerics",)


def environment_hashes(env: Mapping[str, Any]) -> tuple[str, ...]:
    """Every hash a dump holding ``env`` may have stored: :func:`environment_hash` (as this version
    hashes), and, for a dump lacking a key of :data:`HASHED_SINCE_ADDED`, the hash its version took."""
    current = environment_hash(env)
    absent = [key for key in HASHED_SINCE_ADDED if key not in env]
    if not absent:
        return (current,)
    keys = [k for k in COMPARABLE_KEYS if k not in absent and (k in env or k not in ADDED_COMPARABLE_KEYS)]
    return current, _hash_of({key: env.get(key) for key in keys})


def environment_reasons(doc: Mapping[str, Any]) -> list[str]:
    """The stored ``environment_hash`` against the hash of the stored environment (never trusted as written)."""
    stored, hashes = doc["environment_hash"], environment_hashes(doc["environment"])
    if stored in hashes:
        return []
    return [f"environment_hash: stored {stored!r}, but the environment hashes to {hashes[0]!r} "
            "(the environment was edited, or the hash)"]  # fmt: skip


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

# How a framework's ranks count samples is its row's `kind` (jobs/frameworks.py): every rank of a
# data-parallel (or untimed) framework is a replica; a pipelined replica is a pipeline of ranks whose
# last stage counts; an untimed framework (noop) times no step whatever the config asks.
_REPLICA_PER_RANK = ("data_parallel", "untimed")


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
    """Data-parallel replicas of a config = ranks that count samples; None for an unknown framework, and
    for a pipeline whose stages × replicas the planner chooses (:func:`dump_replicas` reads them then)."""
    kind = kind_of(_at(config, "framework.name"))
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
        if not exactly_equal(doc[field_name], wanted):
            reasons.append(f"{field_name}: {doc[field_name]!r}, but the config says {dotted}={wanted!r}")
    framework = _at(config, "framework.name")
    if kind_of(framework) in _REPLICA_PER_RANK and not doc["counts_samples"]:
        reasons.append(f"counts_samples: false, but every rank of {framework} counts its samples")
    last_stage = (doc.get("pipeline") or {}).get("is_last_stage")
    if type(last_stage) is bool and last_stage != doc["counts_samples"]:
        reasons.append(f"counts_samples: {doc['counts_samples']}, but pipeline.is_last_stage is {last_stage}")
    replicas = dump_replicas(doc)
    val_steps = config.get("val_steps", _ABSENT)
    size, size_reasons = _val_size(config, doc.get("extra"))
    reasons += size_reasons
    val = None
    untimed = kind_of(framework) == "untimed"
    exact = not untimed and replicas is not None and size is not None
    if exact and (val_steps is None or (type(val_steps) is int and val_steps >= 0)):
        val = val_counts(batch, replicas, size, val_steps)
    train_timed, train_source, warmup, step_reasons = _train_steps(
        config, doc.get("extra"), replicas, batch, untimed, framework
    )
    reasons += step_reasons
    shape = _Shape(batch=batch, replicas=replicas, val_steps=val_steps, val_size=size, val=val, framework=framework,
                   untimed=untimed, train_timed=train_timed, train_source=train_source, warmup=warmup)  # fmt: skip
    return shape, reasons


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


# --------------------------------------------------------------------------- the pipeline section

# Where a pipelined cell's split came from (``plan_source``); who chose its stages × replicas is
# ``shape_chosen_by``, one of jobs/pipeline/planner.py's SHAPE_CHOOSERS.
PLAN_SOURCES = ("planner", "manual")
_PIPELINE: dict[str, tuple[type | None, ...]] = {
    "schedule": (str,),
    "microbatches": (int,),
    "microbatch_size": (int,),
    "stages": (int,),  # pipeline ranks per replica
    "virtual_stages": (int,),  # stages incl. interleaved chunks
    "replicas": (int,),
    "stage": (int,),  # this rank's pipeline rank
    "replica": (int,),
    "is_last_stage": (bool,),
    "split": (list,),  # first block of stages 1..V-1
    "plan_source": (str,),
    # Absent in dumps written before the planner chose shapes: their config fixed the shape.
    "shape_chosen_by": (str, None),
    "predicted": (dict,),
    "measured": (dict,),
    "per_stage": (list,),
}
_PIPELINE_PREDICTED: dict[str, tuple[type | None, ...]] = {
    "bottleneck": (str,),
    "bottleneck_s": _NUM,
    "step_s": _NUM,
    "bubble_fraction": _NUM,
    "plan_seconds": _NUM,
    "samples_per_s": (*_NUM, None),  # absent before shapes were chosen by the planner
    # The bandwidth the planner weighed (measured by the cell, or the config's): absent before.
    "bandwidth_source": (str, None),
    "intranode_gbps": (*_NUM, None),
    "interconnect_gbps": (*_NUM, None),
}
_PIPELINE_MEASURED: dict[str, tuple[type | None, ...]] = {
    "step_s": (*_NUM, None),
    "bottleneck_stage": (int, None),
    "bottleneck_s": (*_NUM, None),
    "bubble_fraction": (*_NUM, None),
}
_PIPELINE_STAGE: dict[str, tuple[type | None, ...]] = {
    "stage": (int,),
    "pp_rank": (int,),
    "first_block": (int,),
    "last_block": (int,),
    "block_names": (list,),
    "forward_s": (*_NUM, None),  # null where no step was timed
    "backward_s": (*_NUM, None),
    "predicted_forward_s": _NUM,
    "predicted_backward_s": _NUM,
    "measured_stage_s": (*_NUM, None),
    "predicted_stage_s": _NUM,
    "predicted_link_in_s": _NUM,
    "peak_memory_bytes": (int, None),
    "predicted_memory_bytes": (int,),
    "parameter_bytes": (int,),
    "max_inflight_microbatches": (int,),
    "predicted_inflight_microbatches": (int,),
    # Weight stashing (jobs/pipeline/section.py VERSION_FIELDS): peak versions held, updates a gradient
    # lagged, bytes of the stashed versions; absent in dumps written before they were recorded.
    "weight_versions": (int, None),
    "staleness_updates": (int, None),
    "stashed_weight_bytes": (int, None),
    "predicted_weight_versions": (int, None),
    "predicted_staleness_updates": (int, None),
}
# Fields every rank of a cell writes alike: the shape and the plan (stage, replica are the rank's own).
_PIPELINE_SHARED = ("schedule", "microbatches", "microbatch_size", "stages", "virtual_stages", "replicas", "split",
                    "plan_source", "shape_chosen_by")  # fmt: skip
# Key endings of quantities that cannot be negative: times, sizes, micro-batch and update counts, in
# any part of the section (schedule-specific fields included); and of counts of at least one.
_NON_NEGATIVE_ENDINGS = ("_s", "_bytes", "_microbatches", "_updates")
_POSITIVE_ENDINGS = ("_versions",)


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
    replicas = data_replicas(doc["config"])
    section = doc.get("pipeline")
    if replicas is None and kind_of(_at(doc["config"], "framework.name")) == "pipelined" and isinstance(section, dict):
        stages, chosen = _positive_int(section.get("stages")), _positive_int(section.get("replicas"))
        if stages and chosen and stages * chosen == doc.get("world_size"):
            return chosen
    return replicas


def _pipeline_reasons(doc: Mapping[str, Any], checked: bool = True) -> list[str]:
    """Every way ``doc``'s ``pipeline`` section is not one its cell's rank writes (docs/pipeline.md);
    types only unless ``checked`` (its numbers are finite)."""
    section, framework = doc.get("pipeline"), _at(doc["config"], "framework.name")
    kind = kind_of(framework)
    if section is None:
        if kind == "pipelined" and _fixed_shape(doc["config"]) is None:
            return ["pipeline: missing, but the config leaves stages × replicas to the planner (the section says them)"]
        return []
    if kind in _REPLICA_PER_RANK:
        return [f"pipeline: a pipeline section in a dump of {framework}, which runs no pipeline"]
    reasons = _pipeline_types(section)
    if reasons or not checked:
        return reasons[:_LISTED]
    reasons = _pipeline_shape_reasons(doc, section) + _pipeline_config_reasons(doc["config"], section)
    reasons += _pipeline_stage_reasons(section) + _pipeline_number_reasons(section)
    return reasons[:_LISTED]


def _pipeline_types(section: Mapping[str, Any]) -> list[str]:
    reasons = _check_fields("pipeline.", section, _PIPELINE)
    if reasons:
        return reasons
    reasons += _check_fields("pipeline.predicted.", section["predicted"], _PIPELINE_PREDICTED)
    reasons += _check_fields("pipeline.measured.", section["measured"], _PIPELINE_MEASURED)
    for k, entry in enumerate(section["per_stage"]):
        if isinstance(entry, dict):
            reasons += _check_fields(f"pipeline.per_stage[{k}].", entry, _PIPELINE_STAGE)
        else:
            reasons.append(f"pipeline.per_stage[{k}]: expected object, got {type(entry).__name__}")
    if any(type(b) is not int for b in section["split"]):
        reasons.append(f"pipeline.split: {section['split']}, expected block indices (ints)")
    return reasons


def _pipeline_shape_reasons(doc: Mapping[str, Any], section: Mapping[str, Any]) -> list[str]:
    """The shape against the rank and the world: stages × replicas = world size, rank = replica · stages + stage."""
    s, r, v, m, size = (section[k] for k in ("stages", "replicas", "virtual_stages", "microbatches", "microbatch_size"))
    if min(s, r, v, m, size) < 1:
        return [f"pipeline: stages {s}, replicas {r}, virtual_stages {v}, microbatches {m}, microbatch_size {size}: "
                "each must be ≥ 1"]  # fmt: skip
    reasons = []
    if s * r != doc["world_size"]:
        reasons.append(f"pipeline: {s} stages × {r} replicas ≠ world_size {doc['world_size']}")
    if v % s:
        reasons.append(f"pipeline.virtual_stages: {v}, not a multiple of its {s} stages")
    stage, replica = section["stage"], section["replica"]
    if not (0 <= stage < s and 0 <= replica < r):
        reasons.append(f"pipeline: stage {stage} of replica {replica}, outside {s} stages × {r} replicas")
    elif doc["rank"] != replica * s + stage:
        reasons.append(f"pipeline: stage {stage} of replica {replica} is rank {replica * s + stage} "
                       f"(replica · stages + stage), not rank {doc['rank']}")  # fmt: skip
    if section["is_last_stage"] != (stage == s - 1):
        reasons.append(f"pipeline.is_last_stage: {section['is_last_stage']} on stage {stage} of {s}")
    batch = doc["config"].get("batch_size")
    if type(batch) is int and m * size != batch:
        reasons.append(f"pipeline: {m} micro-batches of {size} samples, but batch_size is {batch}")
    if section["plan_source"] not in PLAN_SOURCES:
        reasons.append(f"pipeline.plan_source: {section['plan_source']!r}, expected one of {PLAN_SOURCES}")
    chosen = section.get("shape_chosen_by")
    if chosen is not None and chosen not in SHAPE_CHOOSERS:
        reasons.append(f"pipeline.shape_chosen_by: {chosen!r}, expected one of {SHAPE_CHOOSERS}")
    return reasons


def _pipeline_config_reasons(config: Mapping[str, Any], section: Mapping[str, Any]) -> list[str]:
    """The section against what its config asks: schedule, micro-batches, a fixed shape, a manual split."""
    request = _requested(config)
    if request is None:
        return []
    reasons = []
    if (section["schedule"], section["microbatches"]) != (request.schedule, request.microbatches):
        reasons.append(f"pipeline: schedule {section['schedule']} with {section['microbatches']} micro-batches, "
                       f"but the config runs {request.schedule} with {request.microbatches}")  # fmt: skip
    chosen = section.get("shape_chosen_by")
    if chosen is not None and chosen != request.chosen_by:
        reasons.append(f"pipeline.shape_chosen_by: {chosen!r}, but the config's pipeline.stages and replicas "
                       f"leave it to the {request.chosen_by}")  # fmt: skip
    fixed = _fixed_shape(config)
    if fixed is not None and fixed != (section["stages"], section["replicas"]):
        reasons.append(f"pipeline: {section['stages']} stages × {section['replicas']} replicas, "
                       f"but the config fixes {fixed[0]} × {fixed[1]}")  # fmt: skip
    if request.split and list(request.split) != section["split"]:
        reasons.append(f"pipeline.split: {section['split']}, but the config's pipeline.split is {list(request.split)}")
    return reasons


def _pipeline_stage_reasons(section: Mapping[str, Any]) -> list[str]:
    """Per-stage entries in order, placed where the split puts them."""
    s, v, split, per_stage = section["stages"], section["virtual_stages"], section["split"], section["per_stage"]
    firsts = [0, *split]
    if len(split) != v - 1 or any(b <= a for a, b in zip(firsts, split, strict=False)):
        return [f"pipeline.split: {split}, but {v} stages need {v - 1} strictly increasing first blocks ≥ 1"]
    if len(per_stage) != v:
        return [f"pipeline.per_stage: {len(per_stage)} entries for {v} stages"]
    reasons = []
    for k, entry in enumerate(per_stage):
        where = f"pipeline.per_stage[{k}]."
        first, last = entry["first_block"], entry["last_block"]
        if (entry["stage"], entry["pp_rank"]) != (k, k % s):
            reasons.append(f"{where}stage, pp_rank: {entry['stage']}, {entry['pp_rank']}, "
                           f"but entry {k} is stage {k} on pipeline rank {k % s}")  # fmt: skip
        ends = last == firsts[k + 1] - 1 if k + 1 < v else last >= first
        if first != firsts[k] or not ends:
            reasons.append(f"{where}first_block, last_block: {first}, {last}, but the split starts it at block "
                           f"{firsts[k]}" + (f" and ends it at {firsts[k + 1] - 1}" if k + 1 < v else ""))  # fmt: skip
        elif len(entry["block_names"]) != last - first + 1:
            reasons.append(f"{where}block_names: {len(entry['block_names'])} names for blocks {first}..{last}")
    bottleneck = section["measured"]["bottleneck_stage"]
    if bottleneck is not None and not 0 <= bottleneck < v:
        reasons.append(f"pipeline.measured.bottleneck_stage: {bottleneck}, outside the {v} stages")
    return reasons


def _pipeline_number_reasons(section: Mapping[str, Any]) -> list[str]:
    """Times, sizes and micro-batch counts not negative; the predicted bubble a fraction, the measured one ≤ 1."""
    parts = [("pipeline.", section), ("pipeline.predicted.", section["predicted"]),
             ("pipeline.measured.", section["measured"]),
             *((f"pipeline.per_stage[{k}].", entry) for k, entry in enumerate(section["per_stage"]))]  # fmt: skip
    numbers = [(where + key, value, key.endswith(_POSITIVE_ENDINGS)) for where, node in parts
               for key, value in node.items()
               if key.endswith(_NON_NEGATIVE_ENDINGS + _POSITIVE_ENDINGS) and type(value) in _NUMBER_TYPES]  # fmt: skip
    reasons = [f"{path}: {value} < {int(positive)}" for path, value, positive in numbers if value < int(positive)]
    predicted, measured = section["predicted"]["bubble_fraction"], section["measured"]["bubble_fraction"]
    if not 0 <= predicted <= 1:
        reasons.append(f"pipeline.predicted.bubble_fraction: {predicted}, outside [0, 1]")
    if measured is not None and measured > 1:
        reasons.append(f"pipeline.measured.bubble_fraction: {measured} > 1 (idle longer than the step)")
    return reasons


def _pipeline_rank_reasons(docs: Mapping[int, dict[str, Any]]) -> list[str]:
    """The ranks of one attempt agree on the pipeline's shape and plan."""
    sections = [d["pipeline"] for d in docs.values() if isinstance(d.get("pipeline"), dict)]
    reasons = []
    for key in _PIPELINE_SHARED:
        values = {json.dumps(s.get(key), sort_keys=True) for s in sections}
        if len(values) > 1:
            reasons.append(f"ranks disagree on pipeline.{key}: {', '.join(sorted(values))}")
    return reasons


# --------------------------------------------------------------------------- one dump


def validate(doc: Any, *, numbers_finite: bool = False) -> list[str]:
    """Every reason ``doc`` is not a valid rank dump of this version; empty when valid.

    Types first; then meaning: finite numbers everywhere, and phases whose times, samples,
    predictions, throughput and memory the dump's own config can produce. ``numbers_finite``:
    the caller knows from the file's text that no number can be non-finite or beyond int64
    (:func:`text_may_hold_odd_numbers`), so the walk over every number is skipped.
    """
    if not isinstance(doc, dict):
        return [f"top level: expected object, got {type(doc).__name__}"]
    if doc.get("schema") != SCHEMA_NAME:
        return [f"schema: expected {SCHEMA_NAME!r}, got {doc.get('schema')!r}"]
    if doc.get("schema_version") != SCHEMA_VERSION:
        return [f"schema_version: this reader understands {SCHEMA_VERSION}, got {doc.get('schema_version')!r}"]
    found = [] if numbers_finite else non_finite(doc)
    reasons = _non_finite_reasons(found)
    typed = _check_fields("", doc, _TOP_LEVEL)
    if typed:
        return reasons + typed
    if doc["memory_kind"] not in MEMORY_KINDS:
        reasons.append(f"memory_kind: expected one of {MEMORY_KINDS}, got {doc['memory_kind']!r}")
    reasons += _device_reasons(doc)
    reasons += environment_reasons(doc)
    limits = _memory_limits(doc["environment"])
    if not 0 <= doc["rank"] < doc["world_size"]:
        reasons.append(f"rank: {doc['rank']} outside world_size {doc['world_size']}")
    missing_env = [k for k in ENVIRONMENT_REQUIRED if k not in doc["environment"]]
    if missing_env:
        reasons.append(f"environment: missing {', '.join(missing_env)}")
    reasons += _model_state_reasons(doc.get("model_state"), limits[1 if doc["device_type"] == "cuda" else 0])
    shape, shape_reasons = _shape(doc)
    reasons += shape_reasons
    # Numbers that are not finite are named already; checking their meaning would only restate it.
    reasons += _pipeline_reasons(doc, checked=not any(path.startswith("pipeline.") for path, _ in found))
    if not any(path.startswith("communication.") for path, _ in found):
        reasons += _communication_reasons(doc)
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
            phase_reasons = _phase_meaning(where, phase, unusable, doc["memory_kind"], limits)
            if not unusable & {"breakdown", "step_times_s"}:
                phase_reasons += _breakdown_reasons(where, phase)
            if shape is not None and not unusable & _SAMPLE_FIELDS:
                phase_reasons += _step_reasons(where, name, phase, shape, doc["counts_samples"])
                phase_reasons += _sample_reasons(where, name, phase, shape, doc["counts_samples"])
        reasons += phase_reasons
    return reasons


# --------------------------------------------------------------------------- breakdown, communication

# The parts a step's time splits into (jobs/breakdown.py PARTS), and the clocks that time them.
BREAKDOWN_PARTS = ("data", "forward", "backward", "exposed_comm", "optimizer", "wait", "other")
BREAKDOWN_CLOCKS = ("host", "cuda_events")
# ``other`` is what no part claimed, so the parts add up to the step time up to rounding; the slack
# covers a GPU's parts and step clock being separate events on one stream.
_PARTS_SUM_RELATIVE, _PARTS_SUM_ABSOLUTE_S = 0.02, 1e-3
PROBE_SCOPES = ("intra_node", "inter_node")
COMMUNICATION_TIMED_IN = ("comm", "wait")
_BREAKDOWN: dict[str, tuple[type | None, ...]] = {"clock": (str,), "parts_s": (dict,), "comm_s": (list, None)}
_COMMUNICATION: dict[str, tuple[type | None, ...]] = {
    "probes": (list,),
    "collectives": (list,),
    "bytes_per_step": _NUM,
    "bound_s": (*_NUM, None),
    "timed_in": (list, None),  # absent in dumps written before pipelines counted their sends
}
_PROBE: dict[str, tuple[type | None, ...]] = {
    "collective": (str,), "scope": (str,), "processes": (int,), "sizes": (list,), "bus_gbps": _NUM,
}  # fmt: skip
_PROBE_SIZE: dict[str, tuple[type | None, ...]] = {"bytes": (int,), "seconds": _NUM, "bus_gbps": _NUM}
_COLLECTIVE: dict[str, tuple[type | None, ...]] = {"collective": (str,), "payload_bytes": (int,), "factor": _NUM}


def collective_factor(collective: str, processes: int) -> float:
    """Bytes each process sends per payload byte: ring all-reduce 2(n−1)/n, reduce-scatter and
    all-gather (n−1)/n, a broadcast (n−1)/n (pipelined), point-to-point once."""
    n = processes
    if n <= 1:
        return 0.0
    factors = {
        "all_reduce": 2 * (n - 1) / n,
        "reduce_scatter": (n - 1) / n,
        "all_gather": (n - 1) / n,
        "broadcast": (n - 1) / n,
        "send_recv": 1.0,
    }
    if collective not in factors:
        raise ValueError(f"collective {collective!r}: expected one of {', '.join(factors)}")
    return factors[collective]


COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "send_recv")


def bytes_moved(collectives: list[dict[str, Any]]) -> float:
    """Bytes a step's collectives send from one process: Σ payload × the algorithm's factor."""
    return math.fsum(c["payload_bytes"] * c["factor"] for c in collectives)


def communication_bound_s(collectives: list[dict[str, Any]], probes: list[dict[str, Any]]) -> float | None:
    """A step's communication lower bound: its bytes over the world group's probed bus bandwidth
    (the slowest link the step's collectives cross); None without a probe or a bandwidth."""
    bandwidth = probes[0]["bus_gbps"] if probes else 0
    return bytes_moved(collectives) / (bandwidth * 1e9) if bandwidth > 0 else None


def _non_negative_numbers(values: list[Any], nullable: bool = False) -> bool:
    present = [v for v in values if v is not None] if nullable else values
    return not present or (set(map(type, present)) <= _NUMBER_TYPES and min(present) >= 0)


def _breakdown_reasons(where: str, phase: Mapping[str, Any]) -> list[str]:
    """The phase's ``breakdown`` (absent in older dumps): every part, one non-negative number per timed
    step, adding up to that step's time; ``comm_s`` per step, within the step on the host clock."""
    record = phase.get("breakdown")
    if record is None:
        return []
    at = f"{where}breakdown"
    if not isinstance(record, dict):
        return [f"{at}: expected object, got {type(record).__name__}"]
    reasons = _check_fields(f"{at}.", record, _BREAKDOWN)
    if reasons:
        return reasons
    if record["clock"] not in BREAKDOWN_CLOCKS:
        reasons.append(f"{at}.clock: expected one of {BREAKDOWN_CLOCKS}, got {record['clock']!r}")
    parts, steps, times = record["parts_s"], phase["timed_steps"], phase["step_times_s"]
    if set(parts) != set(BREAKDOWN_PARTS):
        return [*reasons, f"{at}.parts_s: parts {sorted(parts)}, expected {list(BREAKDOWN_PARTS)}"]
    for name in BREAKDOWN_PARTS:
        values = parts[name]
        if not isinstance(values, list) or len(values) != steps:
            count = len(values) if isinstance(values, list) else type(values).__name__
            reasons.append(f"{at}.parts_s.{name}: {count} entries for {steps} timed steps")
        elif not _non_negative_numbers(values):
            reasons.append(f"{at}.parts_s.{name}: entries must be non-negative numbers")
    if reasons or len(times) != steps:
        return reasons
    for step, (total, *values) in enumerate(zip(times, *(parts[p] for p in BREAKDOWN_PARTS), strict=True)):
        added = math.fsum(values)
        if abs(added - total) > _PARTS_SUM_RELATIVE * total + _PARTS_SUM_ABSOLUTE_S:
            reasons.append(f"{at}.parts_s: step {step}'s parts add up to {added:.6g} s, its time is {total:.6g} s")
            break
    return reasons + _comm_time_reasons(at, record, times)


def _comm_time_reasons(at: str, record: Mapping[str, Any], times: list[Any]) -> list[str]:
    comm = record["comm_s"]
    if comm is None:
        return []
    if len(comm) != len(times):
        return [f"{at}.comm_s: {len(comm)} entries for {len(times)} timed steps"]
    if not _non_negative_numbers(comm, nullable=True):
        return [f"{at}.comm_s: entries must be non-negative numbers or null"]
    if record["clock"] == "host":  # a GPU's collective intervals are host times beside event times
        for step, (spent, total) in enumerate(zip(comm, times, strict=True)):
            if spent is not None and spent > total * (1 + _PARTS_SUM_RELATIVE) + _PARTS_SUM_ABSOLUTE_S:
                return [f"{at}.comm_s: step {step} communicated {spent:.6g} s of its {total:.6g} s"]
    return []


def _communication_reasons(doc: Mapping[str, Any]) -> list[str]:
    """The ``communication`` section (null on one process, absent in older dumps): probes and
    collectives as jobs/comm_probe.py writes them, and its summaries as recomputed from them."""
    section = doc.get("communication")
    if section is None:
        return []
    if not isinstance(section, dict):
        return [f"communication: expected object, got {type(section).__name__}"]
    reasons = _check_fields("communication.", section, _COMMUNICATION)
    if reasons:
        return reasons
    world = doc["world_size"]
    if world < 2:
        return [f"communication: a section in a dump of world_size {world} (one process communicates nothing)"]
    reasons = _probe_reasons(section["probes"], world) + _collective_reasons(section["collectives"], world)
    timed_in = section.get("timed_in")
    if timed_in is not None and (not timed_in or not set(map(str, timed_in)) <= set(COMMUNICATION_TIMED_IN)):
        reasons.append(f"communication.timed_in: {timed_in!r}, expected parts of {list(COMMUNICATION_TIMED_IN)}")
    if reasons:
        return reasons
    moved = bytes_moved(section["collectives"])
    if abs(section["bytes_per_step"] - moved) > _RATIO_TOLERANCE * moved + 1e-6:
        reasons.append(f"communication.bytes_per_step: {section['bytes_per_step']:.6g}, "
                       f"but the collectives move {moved:.6g}")  # fmt: skip
    bound, expected = section["bound_s"], communication_bound_s(section["collectives"], section["probes"]) or 0.0
    if bound is None or abs(bound - expected) > _RATIO_TOLERANCE * expected + 1e-12:
        reasons.append(f"communication.bound_s: {bound!r}, but bytes ÷ the world probe's bandwidth = {expected:.6g}")
    return reasons


def _probe_reasons(probes: list[Any], world: int) -> list[str]:
    if not probes:
        return ["communication.probes: empty (the bound needs the world group's probe)"]
    reasons = []
    for i, entry in enumerate(probes):
        at = f"communication.probes[{i}]"
        if not isinstance(entry, dict):
            reasons.append(f"{at}: expected object, got {type(entry).__name__}")
            continue
        typed = _check_fields(f"{at}.", entry, _PROBE)
        if typed:
            reasons += typed
            continue
        if entry["scope"] not in PROBE_SCOPES or entry["collective"] != "all_reduce":
            reasons.append(f"{at}: {entry['collective']!r} over {entry['scope']!r}, expected an all_reduce "
                           f"over one of {PROBE_SCOPES}")  # fmt: skip
        if not 2 <= entry["processes"] <= world:
            reasons.append(f"{at}.processes: {entry['processes']} outside 2..{world}")
            continue
        reasons += _probe_size_reasons(at, entry)
    return reasons


def _probe_size_reasons(at: str, entry: Mapping[str, Any]) -> list[str]:
    factor, found = collective_factor("all_reduce", entry["processes"]), []
    for j, size in enumerate(entry["sizes"]):
        where = f"{at}.sizes[{j}]"
        typed = _check_fields(f"{where}.", size, _PROBE_SIZE) if isinstance(size, dict) else [f"{where}: not an object"]
        if typed:
            return typed
        if size["bytes"] <= 0 or not size["seconds"] > 0:
            return [f"{where}: {size['bytes']} bytes in {size['seconds']} s"]
        bus = size["bytes"] / size["seconds"] * factor / 1e9
        if abs(size["bus_gbps"] - bus) > _RATIO_TOLERANCE * bus:
            return [f"{where}.bus_gbps: {size['bus_gbps']:.6g}, but bytes ÷ seconds × 2(n−1)/n = {bus:.6g}"]
        found.append(bus)
    if not found or abs(entry["bus_gbps"] - max(found)) > _RATIO_TOLERANCE * max(found):
        return [f"{at}.bus_gbps: {entry['bus_gbps']!r}, but its sizes' best is {max(found, default=None)!r}"]
    return []


def _collective_reasons(collectives: list[Any], world: int) -> list[str]:
    reasons = []
    for i, entry in enumerate(collectives):
        at = f"communication.collectives[{i}]"
        typed = _check_fields(f"{at}.", entry, _COLLECTIVE) if isinstance(entry, dict) else [f"{at}: not an object"]
        if typed:
            reasons += typed
            continue
        name = entry["collective"]
        if name not in COLLECTIVES:
            reasons.append(f"{at}.collective: {name!r}, expected one of {COLLECTIVES}")
            continue
        if entry["payload_bytes"] < 0:
            reasons.append(f"{at}.payload_bytes: {entry['payload_bytes']} < 0")
        # The factor of some group of this world: 2..world processes (a pipeline's replicas are fewer).
        possible = [collective_factor(name, n) for n in range(2, world + 1)]
        if not any(abs(entry["factor"] - f) <= 1e-9 for f in possible):
            reasons.append(f"{at}.factor: {entry['factor']!r}, not the {name} factor of any group of 2..{world}")
    return reasons


def _model_state_reasons(section: Mapping[str, Any] | None, limit: tuple[int, str]) -> list[str]:
    """Byte counts of the ``model_state`` section: present, ints, not negative, within the memory of the
    device that holds them (a null section is fine)."""
    if section is None:
        return []
    reasons = _check_fields("model_state.", section, _MODEL_STATE)
    if reasons:
        return reasons
    bound, what = limit
    return [f"model_state.{key}: {section[key]} < 0" for key in MODEL_STATE_FIELDS if section[key] < 0] + [
        f"model_state.{key}: {section[key]} > {bound}, {what}" for key in MODEL_STATE_FIELDS if section[key] > bound
    ]


def _device_reasons(doc: Mapping[str, Any]) -> list[str]:
    """The device a rank says it ran on, against its memory kind, its config and its environment."""
    device, kind = doc["device_type"], doc["memory_kind"]
    if device not in DEVICE_TYPES:
        return [f"device_type: expected one of {DEVICE_TYPES}, got {device!r}"]
    reasons = []
    if kind in MEMORY_KINDS and MEMORY_KIND_OF_DEVICE[device] != kind:
        reasons.append(f"device_type: {device!r}, but memory_kind is {kind!r}")
    wanted = _at(doc["config"], "device")
    if wanted in DEVICE_TYPES and wanted != device:
        reasons.append(f"device_type: {device!r}, but the config says device={wanted}")
    env = doc["environment"]
    index = env.get("device_index", _ABSENT)
    if device == "cuda":
        if index is None:
            reasons.append("device_type: 'cuda', but environment.device_index is null (the rank ran on no CUDA device)")
        if env.get("cuda_available") is False:
            reasons.append("device_type: 'cuda', but environment.cuda_available is false")
    elif index is not _ABSENT and index is not None:
        reasons.append(f"device_type: 'cpu', but environment.device_index is {index!r}")
    return reasons


def _memory_limits(env: Mapping[str, Any]) -> tuple[tuple[int, str], tuple[int, str]]:
    """((bound, what it is) on host memory, the same on the CUDA device's): recorded totals, else hard bounds."""
    resources = env.get("resources")
    recorded = resources if isinstance(resources, dict) else {}
    node, device = recorded.get(NODE_MEMORY_KEY), recorded.get(DEVICE_MEMORY_KEY)
    return (
        (node, "the node's memory") if type(node) is int and node > 0
        else (NODE_MEMORY_LIMIT_BYTES, "more than any node has (docs/metrics.md)"),
        (device, "the device's memory") if type(device) is int and device > 0
        else (DEVICE_MEMORY_LIMIT_BYTES, "more than any accelerator has (docs/metrics.md)"),
    )  # fmt: skip


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


def _phase_meaning(
    where: str, phase: Mapping[str, Any], unusable: set[str], kind: str, limits: tuple[tuple[int, str], ...]
) -> list[str]:
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
        reasons += _memory_reasons(where, phase["memory"], kind, limits)
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


_ALLOCATOR_FIELDS = ("peak_allocated_bytes", "peak_reserved_bytes")
_RSS_FIELDS = ("peak_rss_bytes", "end_rss_bytes")


def _memory_reasons(where: str, memory: Mapping[str, Any], kind: str, limits: tuple[tuple[int, str], ...]) -> list[str]:
    """No negative figure; the allocator's peaks exactly on a CUDA rank; each figure within its memory."""
    reasons = [
        f"{where}memory.{key}: {memory[key]} < 0" for key in _MEMORY if key != "kind" and (memory.get(key) or 0) < 0
    ]
    if memory["kind"] != kind:
        reasons.append(f"{where}memory.kind: {memory['kind']!r}, but the dump's memory_kind is {kind!r}")
    (node, node_what), (device, device_what) = limits
    for key in _ALLOCATOR_FIELDS:
        value = memory.get(key)
        if kind == "rss" and value is not None:
            reasons.append(f"{where}memory.{key}: {value}, but memory kind rss has no CUDA allocator")
        elif kind == "cuda" and value is None:
            reasons.append(f"{where}memory.{key}: null, but memory kind cuda records the allocator's peaks")
        elif value is not None and value > device:
            reasons.append(f"{where}memory.{key}: {value} > {device}, {device_what}")
    for key in _RSS_FIELDS:
        value = memory.get(key)
        if value is not None and value > node:
            reasons.append(f"{where}memory.{key}: {value} > {node}, {node_what}")
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
    if exactly_equal(dump, cell):
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
    if not exactly_equal(config, cell_config):  # equal as written: equal with the added defaults too
        ours = with_added_defaults(config)
        if not exactly_equal(ours, filled):
            differences = _differences(ours, filled)
            more = f"; and {len(differences) - _LISTED} more" if len(differences) > _LISTED else ""
            reasons.append("config differs from cell.json: " + "; ".join(differences[:_LISTED]) + more)
    if cell_id is not None and doc.get("cell_id") != cell_id:
        reasons.append(f"cell_id: {doc.get('cell_id')!r}, but cell.json is cell {cell_id!r}")
    return reasons


# --------------------------------------------------------------------------- one attempt


def read_json(path: str | os.PathLike[str]) -> tuple[Any, str | None]:
    """(document, None), or (None, "missing"), or (None, why it is unreadable); never raises for content."""
    doc, error, _ = _read_json_text(path)
    return doc, error


# Every way JSON text can spell a number `non_finite` would name: Python's json reads Infinity, NaN and
# -Infinity, a float literal with a 3-digit exponent or 309+ digits can overflow to inf, and an int
# beyond int64 has 19+ digits. Text without any of these holds only finite, int64-sized numbers.
# Matches inside strings (a host name, a hash) only cost the full walk, never a missed number.
_ODD_NUMBER_TEXT = re.compile(rb"Infinity|NaN|[eE]\+?\d{3}|\d{19}")


def text_may_hold_odd_numbers(text: bytes) -> bool:
    return _ODD_NUMBER_TEXT.search(text) is not None


_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))  # fmt: skip


class NotRegularFileError(OSError):
    """A path that is a FIFO, a device, a socket or a folder where a file was expected."""


def open_regular(path: str | os.PathLike[str]) -> int:
    """A descriptor of ``path`` opened for reading, only if it is a regular file.

    Never blocks: opened non-blocking (a FIFO opens at once, without a writer), then judged by what
    ``fstat`` says it is, before a byte is read; the descriptor reads as blocking from then on.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = next((name for test, name in _NOT_REGULAR if test(mode)), f"of mode {stat.filemode(mode)}")
            raise NotRegularFileError(f"{path} is {what}, not a regular file")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike[str], limit: int = MAX_JSON_BYTES) -> tuple[bytes | None, str | None]:
    """(the bytes of a regular file of at most ``limit`` bytes, None), or (None, "missing"), or (None, why not).

    Never blocks: the file is opened non-blocking (a FIFO opens at once, without a writer) and
    anything but a regular file is refused by what ``fstat`` says it is, before a byte is read.
    """
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return None, "missing"
    except NotRegularFileError as err:
        return None, f"unreadable (is {str(err).split(' is ', 1)[-1]})"
    except OSError as err:
        return None, f"unreadable ({type(err).__name__}: {err})"
    try:
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            return None, f"unreadable (larger than {limit} bytes)"
        return b"".join(chunks), None
    except OSError as err:
        return None, f"unreadable ({type(err).__name__}: {err})"
    finally:
        os.close(fd)


def _read_json_text(path: str | os.PathLike[str]) -> tuple[Any, str | None, bool]:
    """:func:`read_json`, and whether the text may hold a number that is not finite or beyond int64."""
    text, error = read_bytes(path)
    if text is None:
        return None, error, True
    try:
        return json.loads(text), None, text_may_hold_odd_numbers(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        return None, f"unreadable ({type(err).__name__}: {err})", True


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
    if any(not exactly_equal(d["config"], first["config"]) for d in docs.values()):
        reasons.append("ranks disagree on config")
    for key in ("device_type", "memory_kind"):
        values = {str(d[key]) for d in docs.values()}
        if len(values) > 1:
            reasons.append(f"ranks disagree on {key}: {sorted(values)}")
    for name in PHASES:
        for key in ("timed_steps", "warmup_steps"):
            values = {d["phases"][name][key] for d in docs.values()}
            if len(values) > 1:
                reasons.append(f"ranks disagree on phases.{name}.{key}: {sorted(values)}")
    reasons += _pipeline_rank_reasons(docs)
    replicas = dump_replicas(first)
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
        doc, error, odd_numbers = _read_json_text(os.path.join(folder, name))
        if error:
            reasons.append(f"rank {rank}: {'no dump' if error == 'missing' else error}")
            continue
        invalid = validate(doc, numbers_finite=not odd_numbers)
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
    doc, error = read_json(path)
    if error is not None:
        shown = os.strerror(errno.ENOENT) if error == "missing" else error.removeprefix("unreadable ")
        raise SchemaError(path, [f"unreadable: {shown}"])
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
