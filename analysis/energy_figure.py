"""energy.png/.svg: samples per joule against processes, one panel per model and phase.

Drawn only where some result row has a measured ``samples_per_j`` (analysis/load.py:
energy_columns); rows without one are left out, and the caption says which counters the
drawn rows summed, since GPU-only and CPU-package-only joules do not compare.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from analysis.figures import _caption, _grid, _setup, framework_colors, save_figure

NAME = "energy"


def energy_figure(results: Any, warnings: list[str]) -> Any:
    """The figure, or None when no row has a measured samples/J."""
    if results.empty or "samples_per_j" not in results:
        return None
    measured = results[results["samples_per_j"].apply(lambda v: isinstance(v, (int, float)) and math.isfinite(v))]
    if measured.empty:
        return None
    plt = _setup()
    panels = list(dict.fromkeys(zip(measured["model"], measured["phase"], strict=True)))
    fig, axes = _grid(plt, [0], panels)
    colors = framework_colors(measured["framework"])
    for ax, (model, phase) in zip(axes[0], panels, strict=True):
        panel = measured[(measured["model"] == model) & (measured["phase"] == phase)]
        for framework, rows in panel.groupby("framework", sort=True):
            rows = rows.sort_values("world_size")
            ax.plot(rows["world_size"], rows["samples_per_j"], marker="o", color=colors[framework], label=framework)
        ax.set_title(f"{model} · {phase}")
        ax.set_xlabel("processes")
        ax.set_ylabel("samples / J")
        ax.legend(fontsize=7)
    sources = sorted({str(s) for s in measured.get("energy_sources", []) if str(s) not in ("", "nan")})
    note = [f"Joules summed: {', '.join(sources)}."] if sources else []
    _caption(fig, note + warnings)
    return fig


def write(out: Path, results: Any, warnings: list[str]) -> list[Path]:
    """Save the figure as PNG and SVG under ``out``; [] when there is nothing to draw."""
    return save_figure(energy_figure(results, warnings), out, NAME)
