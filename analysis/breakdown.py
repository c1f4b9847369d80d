"""Where the step goes, per configuration, and each row's scaling loss in parts that add up.

Per cell and phase (from each rank's ``phases.<phase>.breakdown``, jobs/breakdown.py): the mean
seconds per step of every part (``data_s``, ``forward_s``, ``backward_s``, ``exposed_comm_s``,
``optimizer_s``, ``wait_s``, ``other_s``: they add up to the mean step time), ``comm_s`` beside
them (all communication, hidden or not), averaged over the cell's ranks; in training also the
step's communication lower bound ``comm_bound_s`` (the ``communication`` section: bytes moved ÷
the bandwidth the cell's own probe measured, recomputed) and ``comm_efficiency`` = bound ÷
``comm_s`` (a pipeline's sends and receives block inside its ``wait``: bound ÷ ``comm_s`` +
``wait_s``, a lower bound of its efficiency, since the bubble waits there too).

The scaling loss of a row with a baseline (``1 − efficiency``) splits into the parts of the
step that grew beyond what perfect scaling allows. With ``t`` the row's step time and ``E`` its
efficiency, perfect scaling would have taken ``E·t``; the baseline's parts, scaled to that time,
are what each part would have been, and each part's excess over it, divided by ``t``, is its
share of the loss: ``loss_comm`` (exposed communication), ``loss_wait`` (waiting: stragglers,
a pipeline's bubble), ``loss_compute`` (slower compute per process: data, forward, backward,
optimizer and the rest — contention for cores and memory bandwidth). The three add up to
``1 − efficiency`` exactly.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from analysis import per_config
from jobs import schema

PARTS = ("data", "forward", "backward", "exposed_comm", "optimizer", "wait", "other")  # jobs.breakdown.PARTS
PART_COLUMNS = tuple(f"{part}_s" for part in PARTS)
COLUMNS = (*PART_COLUMNS, "comm_s", "comm_bound_s", "comm_efficiency")
# The loss's parts, and the step parts each gathers.
LOSS_PARTS = {
    "loss_comm": ("exposed_comm",),
    "loss_wait": ("wait",),
    "loss_compute": ("data", "forward", "backward", "optimizer", "other"),
}
LOSS_WORDS = {"loss_comm": "exposed communication", "loss_wait": "waiting", "loss_compute": "slower compute"}


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def phase_columns(docs: list[dict[str, Any]], phase: str) -> dict[str, float]:
    """:data:`COLUMNS` of one cell and phase; NaN where its dumps carry no breakdown (older dumps)."""
    per_rank: dict[str, list[float]] = {column: [] for column in (*PART_COLUMNS, "comm_s")}
    for doc in docs:
        record = (doc["phases"][phase] or {}).get("breakdown")
        if not record:
            continue
        for part, values in record["parts_s"].items():
            if f"{part}_s" in per_rank and values:
                per_rank[f"{part}_s"].append(_mean(values))
        comm = record.get("comm_s")
        if comm:
            per_rank["comm_s"].append(_mean(comm))
    out = {column: _mean(values) for column, values in per_rank.items()}
    bound = math.nan
    if phase == "train":
        bounds = [b for d in docs if (b := _bound_s(d.get("communication"))) is not None]
        bound = max(bounds) if bounds else math.nan
    out["comm_bound_s"] = bound
    timed = _communication_time(out, docs)
    out["comm_efficiency"] = bound / timed if timed > 0 and math.isfinite(bound) else math.nan
    return out


def _bound_s(section: dict[str, Any] | None) -> float | None:
    """The step's bound recomputed from the section's collectives and probes, never its ``bound_s``."""
    return schema.communication_bound_s(section["collectives"], section["probes"]) if section else None


def _communication_time(out: dict[str, float], docs: list[dict[str, Any]]) -> float:
    """The time the bound is held against: ``comm_s``, plus ``wait_s`` for a strategy whose sends
    and receives block inside its wait (a pipeline: its efficiency is then a lower bound)."""
    timed_in = {part for d in docs for part in ((d.get("communication") or {}).get("timed_in") or ("comm",))}
    parts = [out["comm_s"]] + ([out["wait_s"]] if "wait" in timed_in else [])
    return sum(p for p in parts if math.isfinite(p))


def attach(results: Any, cells: Any) -> Any:
    """The breakdown columns per configuration (the mean over its repeats), then the loss's parts."""
    results = per_config.attach(results, cells, dict.fromkeys(COLUMNS, "mean"))
    return add_scaling_loss(results)


def _step_parts(row: Any) -> dict[str, float]:
    return {part: float(row[f"{part}_s"]) for part in PARTS}


def add_scaling_loss(results: Any) -> Any:
    """Add :data:`LOSS_PARTS` to every row with an efficiency and a broken-down baseline."""
    results = results.copy()
    for column in LOSS_PARTS:
        results[column] = math.nan
    if results.empty or "baseline_config_key" not in results or "data_s" not in results:
        return results
    by_key: dict[tuple[str, str], list[Any]] = {}
    for _, row in results.iterrows():
        by_key.setdefault((row["config_key"], row["phase"]), []).append(row)
    shares: dict[str, list[float]] = {column: [] for column in LOSS_PARTS}
    for _, row in results.iterrows():
        found = _loss_shares(row, by_key)
        for column in LOSS_PARTS:
            shares[column].append(found.get(column, math.nan))
    for column, values in shares.items():
        results[column] = values
    return results


def _loss_shares(row: Any, by_key: dict[tuple[str, str], list[Any]]) -> dict[str, float]:
    efficiency = row.get("efficiency")
    if not row.get("baseline_config_key") or efficiency is None or not math.isfinite(efficiency):
        return {}
    candidates = by_key.get((row["baseline_config_key"], row["phase"]), [])
    baseline = next((c for c in candidates if c["sweep"] == row["sweep"]), candidates[0] if candidates else None)
    if baseline is None:
        return {}
    own, base = _step_parts(row), _step_parts(baseline)
    step, base_step = sum(own.values()), sum(base.values())
    if not (math.isfinite(step) and math.isfinite(base_step)) or step <= 0 or base_step <= 0:
        return {}
    ideal = efficiency * step  # the step time at which this row would have scaled perfectly
    scale = ideal / base_step
    return {column: sum(own[p] - base[p] * scale for p in parts) / step for column, parts in LOSS_PARTS.items()}


def sentences(results: Any) -> dict[str, list[str]]:
    """Per model, one sentence per framework and scale with a loss, in training, e.g. ``horovod,
    2 processes: efficiency 0.47; 0.31 lost to exposed communication, 0.15 to slower compute``."""
    found: dict[str, list[str]] = {}
    if results.empty or "loss_comm" not in results:
        return found
    rows = results[(results["phase"] == "train") & results["loss_comm"].notna() & (results["world_size"] > 1)]
    for _, row in rows.sort_values(["model", "framework", "world_size"]).iterrows():
        shares = sorted(((row[c], c) for c in LOSS_PARTS), reverse=True)
        told = [f"{value:.2f} {'lost to ' if i == 0 else 'to '}{LOSS_WORDS[c]}" for i, (value, c) in enumerate(shares)]
        found.setdefault(str(row["model"]), []).append(
            f"{row['framework']}, {int(row['world_size'])} processes: efficiency {row['efficiency']:.2f}; "
            + ", ".join(told)
        )
    return found
