"""Cells → results: repeats combined, statistics, speedup and scaling efficiency.

A configuration is a set of cells of one sweep that differ only in ``config.repeat``.
Per configuration and phase:

- ``throughput``: mean over repeats of each repeat's global throughput (samples/s);
  ``repeats`` counts the repeats that have one (a phase without timed steps has none).
- ``mean, median, std, n, ci95_low, ci95_high, cv``: statistics of the values named by
  ``ci_basis``: ``repeats`` (each repeat's global throughput; ``mean == throughput``) or,
  with a single repeat, ``timed_steps`` (per-step global throughput: samples per step of
  the counting ranks / the slowest rank's step time). ``none`` when fewer than two values.
  The interval is a t-based 95 % confidence interval of the mean.
- ``speedup = throughput / throughput of the 1-process configuration`` of the same
  framework, model, dataset, precision, batch size and phase (same sweep preferred);
  ``efficiency = speedup / world_size``.
"""

from __future__ import annotations

import math
from typing import Any

from analysis import allocation, breakdown, colocation, confounds, study
from analysis.load import MODEL_STATE_COLUMNS
from analysis.stats import t_quantile_975

# What a configuration is, in the order tables show it (the results table starts with these too).
CONFIG_COLUMNS = [
    "framework",
    "model",
    "dataset",
    "data_on_device",
    "precision",
    "batch_size",
    "gpus",
    "nodes",
    "world_size",
    "partition",  # hardware: rows of two partitions are two configurations (confounds flags them)
    "env",  # the named environment (conf/env, `dnnbench env create`): what the cell's software was declared to be
    # A pipeline's stages × replicas as it ran (the planner's choice, or the config's); empty without a
    # pipeline. Repeats that ran another shape (planned on another machine) are another row.
    "pp_stages",
    "pp_replicas",
]
IDENTITY = ["sweep", "config_key", *CONFIG_COLUMNS, "device_type", "memory_kind", "phase"]
BASELINE_KEY = ["framework", "model", "dataset", "data_on_device", "precision", "batch_size", "phase"]
STAT_COLUMNS = ["mean", "median", "std", "n", "ci95_low", "ci95_high", "cv", "ci_basis"]
# Config fields that are not swept knobs even when they vary.
_NOT_KNOBS = {
    "gpus", "nodes", "framework.name", "model.name", "dataset.name", "dataset.on_device", "precision", "batch_size",
    "repeats",
    # Follows from the framework (ddp→torchrun, horovod→horovodrun): not a knob of its own.
    "framework.launcher",
    "cluster.partition",  # the partition column
}  # fmt: skip


# Text columns a configuration's row joins over its repeats: each distinct value once, sorted, ";"-separated.
JOINED_COLUMNS = {
    "energy_reason": "energy_reason",
    "energy_sources": "energy_sources",
    "environment_hash": "environment_hash",
    "rank_environments_differ": "rank_environments_differ",
    "cells": "cell_attempt",
}


def _joined_per_group(codes: Any, values: Any, groups: int) -> list[str]:
    """For each group, its distinct ``values`` as text, sorted and joined with ";". One pass over the rows:
    pandas' per-group Python fallback built a Series per group and cost 20 times this."""
    members: list[set[str]] = [set() for _ in range(groups)]
    for code, value in zip(codes.tolist(), values.tolist(), strict=True):
        members[code].add(str(value))
    return [";".join(sorted(texts)) for texts in members]


def combine_repeats(cells: Any) -> Any:
    """One row per configuration × phase with the statistics of the module docstring."""
    import numpy as np
    import pandas as pd

    if cells.empty:
        return pd.DataFrame(columns=[*IDENTITY, "throughput", *STAT_COLUMNS])
    cells = cells.assign(cell_attempt=cells["cell_id"] + ":" + cells["attempt"].astype(str))
    grouped = cells.groupby(IDENTITY, sort=True, dropna=False)
    out = grouped.agg(
        # Repeats whose throughput is a number: the ones the mean is taken over, never more.
        repeats=("throughput", "count"),
        throughput=("throughput", "mean"),
        mean=("throughput", "mean"),
        median=("throughput", "median"),
        std=("throughput", "std"),
        step_mean=("step_mean", "first"),
        step_median=("step_median", "first"),
        step_std=("step_std", "first"),
        step_n=("step_n", "first"),
        seconds=("seconds", "mean"),
        samples=("samples", "mean"),
        split_samples=("split_samples", "first"),
        timed_steps=("timed_steps", "first"),
        peak_allocated_bytes=("peak_allocated_bytes", "max"),
        peak_reserved_bytes=("peak_reserved_bytes", "max"),
        peak_rss_bytes=("peak_rss_bytes", "max"),
        **{column: (column, "max") for column in MODEL_STATE_COLUMNS},
        accuracy=("accuracy", "mean"),
        loss=("loss", "mean"),
        energy_j=("energy_j", "mean"),  # per repeat's phase (analysis/load.py: energy_columns)
        samples_per_j=("samples_per_j", "mean"),
    ).reset_index()
    # Numbered as the rows above come out (sorted keys, missing ones last): row i of ``out`` is group i.
    codes = grouped.ngroup()
    for column, source in JOINED_COLUMNS.items():
        out[column] = _joined_per_group(codes, cells[source], len(out))
    single = out["repeats"] < 2
    out["n"] = out["repeats"].where(~single, out["step_n"]).astype(int)
    for stat in ("mean", "median", "std"):
        out[stat] = out[stat].where(~single, out[f"step_{stat}"])
    out["ci_basis"] = np.where(single, "timed_steps", "repeats")
    out.loc[out["n"] < 2, "ci_basis"] = "none"
    t = out["n"].map(lambda n: t_quantile_975(n - 1) if n >= 2 else math.nan)
    half = t * out["std"] / np.sqrt(out["n"].clip(lower=1))
    out["ci95_low"] = out["mean"] - half
    out["ci95_high"] = out["mean"] + half
    out["cv"] = out["std"] / out["mean"]
    return out.drop(columns=["step_mean", "step_median", "step_std", "step_n"])


def add_scaling(results: Any) -> Any:
    """Add ``speedup``, ``efficiency`` and the baseline used (``baseline_config_key``)."""
    import numpy as np

    results = results.copy()
    results["speedup"] = np.nan
    results["efficiency"] = np.nan
    results["baseline_config_key"] = ""
    results["baseline_environment_hash"] = ""
    if results.empty:
        return results
    ones = results[results["world_size"] == 1]
    best: dict[tuple[Any, ...], list[Any]] = {}
    for row in ones.sort_values("repeats", ascending=False).itertuples(index=False):
        best.setdefault(tuple(getattr(row, k) for k in BASELINE_KEY), []).append(row)
    speedup, baseline_key, baseline_env = [], [], []
    for row in results.itertuples(index=False):
        candidates = best.get(tuple(getattr(row, k) for k in BASELINE_KEY), [])
        # The same sweep first, and in it the same partition: a speedup across hardware is no speedup.
        ranked = sorted(candidates, key=lambda c: (c.sweep != row.sweep, c.partition != row.partition))
        chosen = (ranked or [None])[0]
        if chosen is None or not chosen.throughput:
            speedup.append(math.nan)
            baseline_key.append("")
            baseline_env.append("")
            continue
        speedup.append(row.throughput / chosen.throughput)
        baseline_key.append(chosen.config_key)
        baseline_env.append(chosen.environment_hash.split(";")[0])
    results["speedup"] = speedup
    results["efficiency"] = results["speedup"] / results["world_size"]
    results["baseline_config_key"] = baseline_key
    results["baseline_environment_hash"] = baseline_env
    return results


def swept_knobs(results: Any, configs: dict[str, dict[str, Any]]) -> Any:
    """Add a column per config field that varies between configurations (other than the
    identity columns), so that rows differing only in such a knob stay distinguishable."""
    import pandas as pd

    keys = list(dict.fromkeys(results["config_key"])) if not results.empty else []
    if len(keys) < 2:
        return results
    frame = pd.DataFrame([configs.get(k, {}) for k in keys], index=keys)
    varying = [c for c in frame.columns if c not in _NOT_KNOBS and frame[c].astype(str).nunique() > 1]
    if not varying:
        return results
    knobs = frame[varying].add_prefix("cfg.")
    # A knob holding text beside numbers (pipeline.stages: auto or 2) is written as text: a column of
    # one type is what the Parquet and CSV readers need.
    mixed = [c for c in knobs if len({type(v) for v in knobs[c] if not _missing(v)}) > 1]
    knobs[mixed] = knobs[mixed].map(lambda v: None if _missing(v) else str(v))
    return results.join(knobs, on="config_key")


def _missing(value: Any) -> bool:
    """A config value a configuration does not have (None, or pandas' NaN for an absent key)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def build_results(loaded: Any) -> Any:
    """The results table: repeats combined, scaling, swept knobs and confound flags."""
    results = combine_repeats(loaded.cells)
    results = add_scaling(results)
    results = breakdown.attach(results, loaded.cells)  # where the step goes, and the scaling loss's parts
    results = swept_knobs(results, loaded.configs)
    results = colocation.attach(results, loaded.cells)  # how busy the nodes were: confounds flags it
    results = allocation.attach(results, loaded.cells)  # what the ranks were given: likewise
    results = study.attach(results, loaded)  # the study's own measures: per process, per epoch, summed memory
    results = confounds.flag(results, loaded.environments)
    return results.sort_values(
        ["sweep", "phase", "framework", "model", "batch_size", "world_size"], kind="stable"
    ).reset_index(drop=True)
