"""The dump's ``pipeline`` section, from the plan and every rank's record (docs/pipeline.md lists it).

Pure Python (no torch): the runtime (jobs/strategies/pipeline.py) and tests/synthetic_sweeps.py
build their sections with the same function, so a synthetic dump is shaped like a real one.

A rank's record, gathered from every rank of the cell::

    {"rank", "pp_rank", "replica", "step_s", "allreduce_s", "busy_s", "peak_memory_bytes",
     "stages": [{"stage", "forward_s", "backward_s", "max_inflight_microbatches"}, …],
     "versions": {"weight_versions", "staleness_updates", "stashed_weight_bytes"}}

times per step or per micro-batch over the timed training steps (None when none was timed);
``versions`` (weight stashing: peak versions held, gradient staleness in updates, stashed bytes)
is absent from records of runtimes that did not record it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobs.pipeline.planner import Layout, Plan, StagePlan

Record = Mapping[str, Any]


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _stage_entry(sp: StagePlan, records: Sequence[Record], microbatches: int) -> dict[str, Any]:
    """One stage: measured means over its replicas' ranks beside the plan's prediction."""
    mine = [(rec, st) for rec in records for st in rec["stages"] if st["stage"] == sp.index]
    forward = _mean([st["forward_s"] for _, st in mine])
    backward = _mean([st["backward_s"] for _, st in mine])
    allreduce = _mean([rec["allreduce_s"] for rec, _ in mine]) or 0.0
    measured = microbatches * (forward + backward) + allreduce if forward is not None and backward is not None else None
    peaks = [rec["peak_memory_bytes"] for rec, _ in mine if rec["peak_memory_bytes"] is not None]
    return {
        "stage": sp.index, "pp_rank": sp.pp_rank, "first_block": sp.start,
        "last_block": sp.stop - 1, "block_names": sp.blocks,
        "forward_s": forward, "backward_s": backward,
        "predicted_forward_s": sp.forward_s, "predicted_backward_s": sp.backward_s,
        "measured_stage_s": measured, "predicted_stage_s": sp.time_s,
        "predicted_link_in_s": sp.link_in_s,
        "peak_memory_bytes": max(peaks) if peaks else None,
        "predicted_memory_bytes": sp.memory_bytes,
        "parameter_bytes": sp.parameter_bytes,
        "max_inflight_microbatches": max((st["max_inflight_microbatches"] for _, st in mine), default=0),
        "predicted_inflight_microbatches": sp.inflight_microbatches,
    }  # fmt: skip


# What weight stashing cost a stage: per stage, the most over its ranks (jobs/pipeline/async_schedules.py).
VERSION_FIELDS = ("weight_versions", "staleness_updates", "stashed_weight_bytes")


def _version_entry(sp: StagePlan, records: Sequence[Record]) -> dict[str, Any]:
    """The stage's weight versions, staleness and stash bytes beside the plan's; {} where not recorded."""
    mine = [
        rec["versions"] for rec in records if "versions" in rec and any(st["stage"] == sp.index for st in rec["stages"])
    ]
    if not mine:
        return {}
    return {
        **{key: max(v[key] for v in mine) for key in VERSION_FIELDS},
        "predicted_weight_versions": sp.weight_versions,
        "predicted_staleness_updates": sp.staleness_updates,
    }


def pipeline_section(
    plan: Plan,
    layout: Layout,
    records: Sequence[Record],
    *,
    batch_size: int,
    stage: int,
    replica: int,
    shape_chosen_by: str,
    stage_extra: Mapping[int, Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``pipeline`` section of the dump of the rank at pipeline rank ``stage`` of ``replica``.

    ``stage_extra`` (stage index → fields) and ``extra`` add schedule-specific fields to a
    stage's entry and to the section; they never replace a field this function writes.
    """
    m = layout.microbatches
    per_stage = []
    for sp in plan.stage_plans:
        entry = {**_version_entry(sp, records), **_stage_entry(sp, records, m)}
        per_stage.append({**(stage_extra or {}).get(sp.index, {}), **entry})
    measured_times = [s["measured_stage_s"] for s in per_stage if s["measured_stage_s"] is not None]
    bottleneck = max(per_stage, key=lambda s: s["measured_stage_s"] or 0.0)
    bubbles = [1.0 - rec["busy_s"] / rec["step_s"] for rec in records if rec["step_s"]]
    return {
        **(extra or {}),
        "schedule": layout.schedule,
        "microbatches": m,
        "microbatch_size": batch_size // m,
        "stages": layout.stages,
        "virtual_stages": layout.virtual_stages,
        "replicas": layout.replicas,
        "stage": stage,
        "replica": replica,
        "is_last_stage": stage == layout.stages - 1,
        "split": plan.split,
        "plan_source": plan.source,
        "shape_chosen_by": shape_chosen_by,
        "predicted": {
            "bottleneck": plan.bottleneck,
            "bottleneck_s": plan.bottleneck_s,
            "step_s": plan.step_s,
            "bubble_fraction": plan.bubble_fraction,
            "plan_seconds": plan.plan_seconds,
            # The bandwidth the plan weighed links by, and whether the cell measured it.
            "bandwidth_source": plan.bandwidth.get("source"),
            "intranode_gbps": plan.bandwidth.get("intranode_gbps"),
            "interconnect_gbps": plan.bandwidth.get("interconnect_gbps"),
            # Every replica finishes a batch per step.
            "samples_per_s": layout.replicas * batch_size / plan.step_s if plan.step_s > 0 else None,
        },
        "measured": {
            "step_s": _mean([rec["step_s"] for rec in records]),
            "bottleneck_stage": bottleneck["stage"] if measured_times else None,
            "bottleneck_s": max(measured_times) if measured_times else None,
            "bubble_fraction": _mean(bubbles),
        },
        "per_stage": per_stage,
    }
