"""The dump's field specs: names, accepted types, limits, and the type checker that reads them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

SCHEMA_NAME = "dnnbench.metrics"
SCHEMA_VERSION = 1

PHASES = ("train", "val")


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


_SORTED_JSON = msgspec.json.Encoder(order="sorted").encode


def json_text(value: Any) -> bytes | None:
    """``value``'s sorted JSON text, which :func:`exactly_equal` compares; None where JSON has none for it."""
    try:
        return _SORTED_JSON(value)
    except (TypeError, ValueError, msgspec.EncodeError):
        return None


def _same_json(a: dict[str, Any] | list[Any], b: dict[str, Any] | list[Any]) -> bool:
    """Whether ``a`` and ``b`` (already ``==``) have one sorted JSON text: then they are exactly equal, as
    JSON spells ``1``, ``1.0`` and ``true`` apart at every depth. Only a NaN or an infinity is spelled
    ``null``, and such a leaf is ``==`` only to itself: two parses never share one."""
    try:
        return _SORTED_JSON(a) == _SORTED_JSON(b)
    except (TypeError, ValueError, msgspec.EncodeError):  # a key or value JSON has no text for
        return False


def exactly_equal(a: Any, b: Any) -> bool:
    """``a == b`` with types compared too, at every depth: ``False`` is not ``0`` and ``1.0`` is not ``1``."""
    if type(a) is not type(b):
        return False
    if type(a) is dict or type(a) is list:
        # Exactly equal values are ==, so != rules out in C; == with one sorted JSON text rules in, in C
        # too (the configs of 40,000 dumps are compared with their cells'); the walk decides the rest.
        if a != b:
            return False
        if _same_json(a, b):
            return True
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


def nulls_filled(node: Mapping[str, Any], spec: Mapping[str, tuple[type | None, ...]]) -> Mapping[str, Any]:
    """``node`` with every nullable field of ``spec`` it lacks as null (a copy only then).

    The field checker lets a nullable field be absent (dumps written before it was recorded); the
    meaning checks, which run once the types hold, read it through this, so absent reads as null
    and never raises a KeyError out of a reader that promises reasons, not exceptions.
    """
    nullable = _NULLABLE_KEYS.get(id(spec))
    if nullable is None:
        nullable = _NULLABLE_KEYS[id(spec)] = tuple(key for key, types in spec.items() if None in types)
    missing = [key for key in nullable if key not in node]
    return {**node, **dict.fromkeys(missing)} if missing else node


# The nullable fields of each spec, found once (read twice per phase of every dump); the specs are
# module-level constants, so their ids stay theirs.
_NULLABLE_KEYS: dict[int, tuple[str, ...]] = {}
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
