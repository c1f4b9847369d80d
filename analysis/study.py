"""The study's own measures, as results columns: per-process rate, seconds per epoch, summed memory.

The study reported, per model and framework over 1–4 GPUs, seconds per epoch, samples/s per
GPU and memory; dnnbench's headline numbers are global. Per configuration and phase:

- ``samples_per_s_per_process`` = global throughput / processes (world size);
- ``epoch_s`` = samples in the phase's split / global throughput: the time one pass over the
  training (or validation) split takes at the measured rate. The split's size is the one the
  ranks recorded (``extra.data.<phase>_samples``: the cap ``dataset.train_samples`` /
  ``val_samples`` already applied); for dumps from before that record, it follows from the
  config as ``jobs/data.py`` builds it (:func:`split_size`);
- ``peak_mem_sum_gib``: each rank's peak of the memory the tables show per process (reserved
  on CUDA, RSS on CPU), summed over the ranks of a cell, the largest over repeats; NaN when a
  rank did not record it. ``peak_mem_gib`` beside it is the per-process maximum of the same.
"""

from __future__ import annotations

import math
from typing import Any

from analysis import per_config

COLUMNS = ("samples_per_s_per_process", "epoch_s", "peak_mem_gib", "peak_mem_sum_gib")
GIB = 2**30
# jobs/data.py: MNIST's split sizes, and the synthetic splits' sizes when the config gives none.
MNIST_SPLITS = {"train": 60_000, "val": 10_000}
SYNTHETIC_DEFAULTS = {"train": 4096, "val": 1024}
_SUM = "peak_mem_sum_bytes"


def split_size(flat_config: dict[str, Any], phase: str) -> int | None:
    """Samples in ``phase``'s split as ``jobs/data.py`` builds it from the (flattened) config; None if unknown."""
    cap = flat_config.get(f"dataset.{phase}_samples")
    cap = cap if type(cap) is int and cap > 0 else None
    name = flat_config.get("dataset.name")
    if name == "synthetic":
        return cap or SYNTHETIC_DEFAULTS.get(phase)
    if name == "mnist" and phase in MNIST_SPLITS:
        return min(cap or MNIST_SPLITS[phase], MNIST_SPLITS[phase])
    return None


def headline_bytes(kind: Any, reserved: Any, rss: Any) -> float:
    """The per-process memory the tables show: reserved on CUDA, RSS otherwise; NaN when absent."""
    value = reserved if kind == "cuda" else rss
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if number == number else math.nan


def cell_memory_sums(ranks: Any) -> Any:
    """Per cell and phase, the ranks' headline peaks summed (NaN when a rank has none)."""
    import pandas as pd

    keys = ["sweep", "cell_id", "phase"]
    if ranks is None or ranks.empty:
        return pd.DataFrame(columns=[*keys, _SUM])
    per_rank = ranks[keys].assign(
        **{
            _SUM: [
                headline_bytes(kind, reserved, rss)
                for kind, reserved, rss in zip(
                    ranks["memory_kind"], ranks["peak_reserved_bytes"], ranks["peak_rss_bytes"], strict=True
                )
            ]
        }
    )
    # min_count = the group's size: one rank without a number leaves the sum unknown, not smaller.
    grouped = per_rank.groupby(keys, sort=False, dropna=False)[_SUM]
    sums = grouped.sum(min_count=1).where(grouped.count() == grouped.size())
    return sums.reset_index()


def _fill_split(results: Any, configs: dict[str, dict[str, Any]]) -> Any:
    """``split_samples`` where the dumps did not record it, from each row's config."""
    if "split_samples" not in results:
        results["split_samples"] = math.nan
    missing = results["split_samples"].isna()
    if missing.any():
        results.loc[missing, "split_samples"] = [
            split_size(configs.get(key, {}), phase)
            for key, phase in zip(results.loc[missing, "config_key"], results.loc[missing, "phase"], strict=True)
        ]
    results["split_samples"] = results["split_samples"].astype(float)
    return results


def derived(results: Any) -> Any:
    """Add the per-process rate, seconds per epoch and per-process memory peak from a results table's
    own columns (also to a table read back from an older results.csv)."""
    results = results.copy()
    if results.empty:  # no complete cell: the columns, and nothing in them
        return results.assign(**{column: math.nan for column in COLUMNS if column not in results})
    processes = results["world_size"].astype(float)
    throughput = results["throughput"].astype(float)
    results["samples_per_s_per_process"] = throughput / processes
    split = results["split_samples"].astype(float) if "split_samples" in results else math.nan
    results["epoch_s"] = (split / throughput).where(throughput > 0)
    results["peak_mem_gib"] = [
        headline_bytes(kind, reserved, rss) / GIB
        for kind, reserved, rss in zip(
            results["memory_kind"], results["peak_reserved_bytes"], results["peak_rss_bytes"], strict=True
        )
    ]
    if "peak_mem_sum_gib" not in results:
        results["peak_mem_sum_gib"] = math.nan
    return results


def attach(results: Any, loaded: Any) -> Any:
    """The results table with :data:`COLUMNS` (and ``split_samples`` filled from configs where unrecorded)."""
    results = _fill_split(results.copy(), loaded.configs)
    cells = loaded.cells
    if not cells.empty:
        cells = cells.merge(cell_memory_sums(loaded.ranks), on=["sweep", "cell_id", "phase"], how="left")
    results = per_config.attach(results, cells, {_SUM: "max"})
    results["peak_mem_sum_gib"] = results.pop(_SUM).astype(float) / GIB
    return derived(results)


def epoch_interval(row: Any) -> tuple[float, float]:
    """The 95 % interval of ``epoch_s``: the split over the throughput interval's ends (NaN without one)."""
    low, high, split = (_number(getattr(row, name, math.nan)) for name in ("ci95_low", "ci95_high", "split_samples"))
    if not (low > 0 and high > 0 and split > 0):
        return math.nan, math.nan
    return split / high, split / low


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
