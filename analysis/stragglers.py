"""Slow ranks and the nodes they ran on: ``stragglers.csv``.

Per cell and phase, a rank straggles when its median step time exceeds the median over
the cell's ranks of those medians by more than the threshold (default 10 %). Medians, not
means: one long step (a checkpoint, a page fault) is noise, a rank slow at every step is a
straggler. Per node across the sweep (the Slurm node name, what ``resubmit --exclude-nodes``
takes; the host name outside Slurm): how many of the rank phases measured on
it straggled, so a bad node shows as the one whose ranks straggle again and again.

Synchronous data-parallel training waits for the slowest rank in every gradient all-reduce,
so in ``train`` the other ranks' step times grow with it and a straggler shows only by what
is left over; phases without a per-step collective (``val``) show it plainly. Cells of one
rank, and ranks without timed steps (noop cells), have nothing to compare and are skipped.

The CSV holds two kinds of rows (column ``kind``): ``rank`` rows, one per straggling rank,
and ``node`` rows, one per node × phase with the counts.
"""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_THRESHOLD = 0.10
FILE = "stragglers.csv"
COLUMNS = [
    "kind", "sweep", "phase", "cell_id", "node", "hostname", "rank", "local_rank", "device_index",
    "step_median_s", "cell_median_s", "excess", "rank_phases", "straggled", "straggled_fraction", "cells",
]  # fmt: skip


_RANK_INPUT = ["sweep", "cell_id", "phase", "rank", "local_rank", "node", "hostname", "device_index", "step_median_s"]
_COUNTS = ("rank", "local_rank", "device_index", "rank_phases", "straggled")


def parse_threshold(text: str) -> float:
    """``10%`` or ``0.1`` → 0.1 (argparse type: a bad value is a usage error, not a traceback)."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction like 0.1 or a percentage like 10%, got {text!r}"
        ) from None
    if not 0 < value < 10:  # 10 = a rank eleven times slower: beyond that "threshold" means something else
        raise argparse.ArgumentTypeError(f"threshold must be above 0 and below 1000%, got {text!r}")
    return value


def _measured(ranks: Any) -> Any:
    """Rank phases with a median step time, in cells of more than one such rank."""
    import pandas as pd

    if ranks.empty or "step_median_s" not in ranks:  # no cell read, or ranks tables from before this
        return pd.DataFrame(columns=_RANK_INPUT)
    timed = ranks[ranks["step_median_s"].notna() & (ranks["step_median_s"] > 0)]
    sizes = timed.groupby(["sweep", "cell_id", "phase"])["rank"].transform("count")
    return timed[sizes > 1]


def rank_table(ranks: Any, threshold: float = DEFAULT_THRESHOLD) -> Any:
    """Every measured rank phase with its cell's median, its excess and whether it straggled."""
    measured = _measured(ranks).copy()
    cell_median = measured.groupby(["sweep", "cell_id", "phase"])["step_median_s"].transform("median")
    measured["cell_median_s"] = cell_median
    measured["excess"] = measured["step_median_s"] / cell_median - 1
    measured["straggler"] = measured["excess"] > threshold
    return measured


def node_table(measured: Any) -> Any:
    """Per sweep × node × phase: rank phases measured there, how many straggled, in which cells."""
    import pandas as pd

    if measured.empty:
        return pd.DataFrame(columns=["sweep", "node", "hostname", "phase", "rank_phases", "straggled", "cells"])
    grouped = measured.groupby(["sweep", "node", "phase"], sort=True)
    nodes = grouped.agg(
        hostname=("hostname", "first"), rank_phases=("rank", "count"), straggled=("straggler", "sum")
    ).reset_index()
    slow = measured[measured["straggler"]].groupby(["sweep", "node", "phase"])["cell_id"]
    cells = slow.agg(lambda ids: ";".join(sorted(set(ids)))).rename("cells")
    nodes = nodes.join(cells, on=["sweep", "node", "phase"]).fillna({"cells": ""})
    nodes["straggled"] = nodes["straggled"].astype(int)
    nodes["straggled_fraction"] = nodes["straggled"] / nodes["rank_phases"]
    return nodes


def stragglers(ranks: Any, threshold: float = DEFAULT_THRESHOLD) -> Any:
    """The ``stragglers.csv`` table: straggling ranks, then every node's counts."""
    import pandas as pd

    measured = rank_table(ranks, threshold)
    slow = measured[measured["straggler"]].assign(kind="rank")
    nodes = node_table(measured).assign(kind="node")
    frames = [frame for frame in (slow, nodes) if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.concat(frames, ignore_index=True).reindex(columns=COLUMNS)
    for column in _COUNTS:  # blank where a row kind has none, an integer where it has one
        table[column] = pd.to_numeric(table[column]).astype("Int64")
    return table.sort_values(["kind", "sweep", "phase", "cell_id", "rank"], kind="stable")


def write(out: Any, ranks: Any, threshold: float = DEFAULT_THRESHOLD) -> Any:
    """Write ``out/stragglers.csv``; returns its path."""
    path = out / FILE
    from analysis.atomic_outputs import write_csv

    write_csv(stragglers(ranks, threshold), path)
    return path
