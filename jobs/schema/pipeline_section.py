"""The ``pipeline`` section of a pipelined rank's dump (docs/pipeline.md): its fields and its rules."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jobs.frameworks import sample_counting_of
from jobs.pipeline.planner import SHAPE_CHOOSERS
from jobs.schema.fields import _LISTED, _NUM, _NUMBER_TYPES, _REPLICA_PER_RANK, _check_fields, nulls_filled
from jobs.schema.shape import _at, _fixed_shape, _requested

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


def _pipeline_reasons(doc: Mapping[str, Any], checked: bool = True) -> list[str]:
    """Every way ``doc``'s ``pipeline`` section is not one its cell's rank writes (docs/pipeline.md);
    types only unless ``checked`` (its numbers are finite)."""
    section, framework = doc.get("pipeline"), _at(doc["config"], "framework.name")
    kind = sample_counting_of(framework)
    if section is None:
        if kind == "pipelined" and _fixed_shape(doc["config"]) is None:
            return ["pipeline: missing, but the config leaves stages × replicas to the planner (the section says them)"]
        return []
    if kind in _REPLICA_PER_RANK:
        return [f"pipeline: a pipeline section in a dump of {framework}, which runs no pipeline"]
    reasons = _pipeline_types(section)
    if reasons or not checked:
        return reasons[:_LISTED]
    section = {**nulls_filled(section, _PIPELINE), "predicted": nulls_filled(section["predicted"], _PIPELINE_PREDICTED),
               "measured": nulls_filled(section["measured"], _PIPELINE_MEASURED)}  # fmt: skip
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
