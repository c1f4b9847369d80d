"""breakdown.png/.svg: where the step goes, one stacked bar per framework × processes.

One panel per model and phase; each bar is a configuration's mean step time split into the
parts of analysis/breakdown.py (they add up to the step); ``comm`` (all communication, hidden
or not) is the black tick beside each bar, and ``comm_bound_s`` (the step's lower bound from
the measured bandwidth) the grey tick.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from analysis.breakdown import PARTS
from analysis.figures import _caption, _grid, _setup, save_figure

NAME = "breakdown"
CAPTION = (
    "Where the step goes: mean seconds per step, split into data, forward, backward, exposed "
    "communication, optimizer, waiting and the rest (they add up to the step time); black tick: all "
    "communication, hidden or not; grey tick: its lower bound at the bandwidth the cell measured."
)
PART_COLOURS = {
    "data": "#8c8c8c",
    "forward": "#4c72b0",
    "backward": "#55a868",
    "exposed_comm": "#c44e52",
    "optimizer": "#8172b3",
    "wait": "#ccb974",
    "other": "#dddddd",
}


def breakdown_figure(results: Any, warnings: list[str]) -> Any:
    """The figure, or None when no row has a breakdown."""
    if results.empty or "forward_s" not in results:
        return None
    rows = results[results["forward_s"].map(lambda v: isinstance(v, float) and math.isfinite(v))]
    if rows.empty:
        return None
    plt = _setup()
    panels = list(dict.fromkeys(zip(rows["model"], rows["phase"], strict=True)))
    fig, axes = _grid(plt, [0], panels, width=max(4.0, 0.5 * rows["config_key"].nunique() + 2))
    for ax, (model, phase) in zip(axes[0], panels, strict=True):
        panel = rows[(rows["model"] == model) & (rows["phase"] == phase)].sort_values(["framework", "world_size"])
        labels = [f"{r.framework}\n{int(r.world_size)}p" for r in panel.itertuples(index=False)]
        x = list(range(len(panel)))
        bottom = [0.0] * len(panel)
        for part in PARTS:
            heights = [float(v) if math.isfinite(v) else 0.0 for v in panel[f"{part}_s"]]
            ax.bar(x, heights, bottom=bottom, color=PART_COLOURS[part], label=part, width=0.7)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        for column, colour in (("comm_s", "black"), ("comm_bound_s", "#999999")):
            values = panel.get(column, [])
            for xi, value in zip(x, values, strict=False):
                if isinstance(value, float) and math.isfinite(value):
                    ax.plot([xi + 0.38, xi + 0.5], [value, value], color=colour, linewidth=2)
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_title(f"{model} · {phase}")
        ax.set_ylabel("s per step")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", fontsize=7, ncols=len(PARTS))
    fig.subplots_adjust(top=0.82)
    _caption(fig, warnings)
    return fig


def write(out: Path, results: Any, warnings: list[str]) -> list[Path]:
    return save_figure(breakdown_figure(results, warnings), out, NAME)
