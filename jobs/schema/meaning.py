"""One dump's meaning: :func:`validate` and the per-phase checks it runs once the types hold."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from jobs.schema.communication import _breakdown_reasons, _communication_reasons
from jobs.schema.environment_hash import ENVIRONMENT_REQUIRED, environment_reasons
from jobs.schema.fields import (
    _ABSENT,
    _MEMORY,
    _MODEL_STATE,
    _NUMBER_TYPES,
    _PHASE,
    _RATIO_TOLERANCE,
    _STEP_SUM_ABSOLUTE_S,
    _STEP_SUM_RELATIVE,
    _TOP_LEVEL,
    DEVICE_MEMORY_KEY,
    DEVICE_MEMORY_LIMIT_BYTES,
    DEVICE_TYPES,
    MEMORY_KIND_OF_DEVICE,
    MEMORY_KINDS,
    MODEL_STATE_FIELDS,
    NODE_MEMORY_KEY,
    NODE_MEMORY_LIMIT_BYTES,
    PHASES,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    _check_fields,
    nulls_filled,
)
from jobs.schema.numbers import _non_finite_reasons, non_finite
from jobs.schema.pipeline_section import _pipeline_reasons
from jobs.schema.shape import _at, _Shape, _shape, _step_reasons

# --------------------------------------------------------------------------- one dump


def validate(doc: Any, *, numbers_finite: bool = False, shape_checked: bool = False) -> list[str]:
    """Every reason ``doc`` is not a valid rank dump of this version; empty when valid.

    Types first; then meaning: finite numbers everywhere, and phases whose times, samples,
    predictions, throughput and memory the dump's own config can produce. ``numbers_finite``:
    the caller knows from the file's text that no number can be non-finite or beyond int64
    (:func:`text_may_hold_odd_numbers`), so the walk over every number is skipped. ``shape_checked``:
    ``doc`` was decoded through jobs/schema/structs.py, so every field's type and bound holds and
    only the meaning is checked here.
    """
    if not isinstance(doc, dict):
        return [f"top level: expected object, got {type(doc).__name__}"]
    if doc.get("schema") != SCHEMA_NAME:
        return [f"schema: expected {SCHEMA_NAME!r}, got {doc.get('schema')!r}"]
    if doc.get("schema_version") != SCHEMA_VERSION:
        return [f"schema_version: this reader understands {SCHEMA_VERSION}, got {doc.get('schema_version')!r}"]
    found = [] if numbers_finite else non_finite(doc)
    reasons = _non_finite_reasons(found)
    typed = [] if shape_checked else _check_fields("", doc, _TOP_LEVEL)
    if typed:
        return reasons + typed
    if doc["memory_kind"] not in MEMORY_KINDS:
        reasons.append(f"memory_kind: expected one of {MEMORY_KINDS}, got {doc['memory_kind']!r}")
    reasons += _device_reasons(doc)
    reasons += environment_reasons(doc, decoded=shape_checked)
    limits = _memory_limits(doc["environment"])
    if not 0 <= doc["rank"] < doc["world_size"]:
        reasons.append(f"rank: {doc['rank']} outside world_size {doc['world_size']}")
    missing_env = [k for k in ENVIRONMENT_REQUIRED if k not in doc["environment"]]
    if missing_env:
        reasons.append(f"environment: missing {', '.join(missing_env)}")
    limit = limits[1 if doc["device_type"] == "cuda" else 0]
    reasons += _model_state_reasons(doc.get("model_state"), limit, shape_checked)
    shape, shape_reasons = _shape(doc, decoded=shape_checked)
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
        phase_reasons = _check_phase(where, phase, shape_checked)
        if not phase_reasons:
            phase = nulls_filled(phase, _PHASE)
            # A check reading a field that holds Infinity or NaN would only restate that reason.
            unusable = {_field_of(path, where) for path, _ in found if path.startswith(where)}
            phase_reasons = _phase_meaning(where, phase, unusable, doc["memory_kind"], limits)
            if not unusable & {"breakdown", "step_times_s"}:
                phase_reasons += _breakdown_reasons(where, phase)
                phase_reasons += _breakdown_knob_reasons(where, phase, doc.get("config"))
            if shape is not None and not unusable & _SAMPLE_FIELDS:
                phase_reasons += _step_reasons(where, name, phase, shape, doc["counts_samples"])
                phase_reasons += _sample_reasons(where, name, phase, shape, doc["counts_samples"])
        reasons += phase_reasons
    return reasons


def _breakdown_knob_reasons(where: str, phase: Mapping[str, Any], config: Any) -> list[str]:
    """A phase's breakdown against the cell's ``breakdown`` knob: a row of a bare cell must not hold
    instrumented steps, nor an instrumented one bare steps. Configs from before the knob say nothing."""
    asked = config.get("breakdown") if isinstance(config, Mapping) else None
    if not isinstance(asked, bool):
        return []
    present = phase.get("breakdown") is not None
    if present and not asked:
        return [f"{where}breakdown: present, but the cell ran with breakdown=false (the bare loop)"]
    if asked and not present and phase.get("step_times_s"):
        return [f"{where}breakdown: missing, but the cell asked for breakdown=true"]
    return []


def _model_state_reasons(
    section: Mapping[str, Any] | None, limit: tuple[int, str], shape_checked: bool = False
) -> list[str]:
    """Byte counts of the ``model_state`` section: present, ints, not negative, within the memory of the
    device that holds them (a null section is fine)."""
    if section is None:
        return []
    reasons = [] if shape_checked else _check_fields("model_state.", section, _MODEL_STATE)
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


def _check_phase(where: str, phase: Mapping[str, Any], shape_checked: bool = False) -> list[str]:
    if shape_checked:  # types, non-negative counts, times and step times held while decoding (structs.py)
        return _step_count_reasons(where, phase)
    reasons = _check_fields(where, phase, _PHASE)
    if reasons:
        return reasons
    reasons += _check_fields(f"{where}memory.", phase["memory"], _MEMORY)
    reasons += _step_count_reasons(where, phase)
    times = phase["step_times_s"]
    # set(map(type, …)) and min() run in C: this is the hot loop when reading 40,000 dumps.
    if times and (not set(map(type, times)) <= _NUMBER_TYPES or min(times) < 0):
        reasons.append(f"{where}step_times_s: entries must be non-negative numbers")
    if phase["timed_steps"] < 0 or phase["warmup_steps"] < 0:
        reasons.append(f"{where[:-1]}: negative step count")
    if phase["seconds"] < 0 or phase["samples"] < 0:
        reasons.append(f"{where[:-1]}: negative seconds or samples")
    return reasons


def _step_count_reasons(where: str, phase: Mapping[str, Any]) -> list[str]:
    times = phase["step_times_s"]
    if len(times) != phase["timed_steps"]:
        return [f"{where}step_times_s: {len(times)} entries for {phase['timed_steps']} steps"]
    return []


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
