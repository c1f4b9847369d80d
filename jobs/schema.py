"""The metrics schema: the only contract between ``jobs/`` (writers) and ``analysis/`` (readers).

Every rank of every cell writes one JSON document of this shape (``rank_<N>.json``).
Readers call :func:`validate` and get a list of reasons, never an exception, so a
corrupt dump is reported, not fatal. Bump :data:`SCHEMA_VERSION` on any change a
reader of the previous version would misread; docs/metrics.md describes each field.

Pure standard library on purpose: the laptop install (``.[analysis]``) imports it
without torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
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


def _names(types: tuple[type, ...]) -> str:
    return "|".join(t.__name__ for t in types)


def validate(doc: Any) -> list[str]:
    """Every reason ``doc`` is not a valid rank dump of this version; empty when valid."""
    if not isinstance(doc, dict):
        return [f"top level: expected object, got {type(doc).__name__}"]
    if doc.get("schema") != SCHEMA_NAME:
        return [f"schema: expected {SCHEMA_NAME!r}, got {doc.get('schema')!r}"]
    if doc.get("schema_version") != SCHEMA_VERSION:
        return [f"schema_version: this reader understands {SCHEMA_VERSION}, got {doc.get('schema_version')!r}"]
    reasons = _check_fields("", doc, _TOP_LEVEL)
    if reasons:
        return reasons
    if doc["memory_kind"] not in MEMORY_KINDS:
        reasons.append(f"memory_kind: expected one of {MEMORY_KINDS}, got {doc['memory_kind']!r}")
    if not 0 <= doc["rank"] < doc["world_size"]:
        reasons.append(f"rank: {doc['rank']} outside world_size {doc['world_size']}")
    for name in PHASES:
        phase = doc["phases"].get(name)
        if not isinstance(phase, dict):
            reasons.append(f"phases.{name}: missing")
            continue
        reasons += _check_phase(f"phases.{name}.", phase)
    missing_env = [k for k in ENVIRONMENT_REQUIRED if k not in doc["environment"]]
    if missing_env:
        reasons.append(f"environment: missing {', '.join(missing_env)}")
    return reasons


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
    if phase["seconds"] < 0 or phase["samples"] < 0:
        reasons.append(f"{where}: negative seconds or samples")
    memory = phase["memory"]
    allocated, reserved = memory.get("peak_allocated_bytes"), memory.get("peak_reserved_bytes")
    if allocated is not None and reserved is not None and allocated > reserved:
        reasons.append(f"{where}memory: peak allocated {allocated} > peak reserved {reserved}")
    return reasons


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate one dump; raises :class:`SchemaError` with every reason."""
    path = str(path)
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SchemaError(path, [f"unreadable: {err}"]) from err
    reasons = validate(doc)
    if reasons:
        raise SchemaError(path, reasons)
    return doc


def dump_filename(rank: int) -> str:
    return f"rank_{rank}.json"


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
