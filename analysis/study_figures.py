"""The study's own figures: per model, grouped bars over processes, one colour per framework.

``study_<model>.png``/``.svg``, one per model, five panels in the study's order: seconds per
epoch (training), samples/s per process (training), memory allocated in training, memory
allocated in validation, memory reserved ("cached" by the CUDA caching allocator). Bars stand
side by side per process count, one per framework (and per batch size, sweep or swept knob
when there are several: hatched). Error bars are the throughput's 95 % CI carried over
(``analysis.study``); memory is the peak over ranks and repeats and has none. On CPU the
allocated panels show peak RSS, and the reserved panel says that there is no reserved memory
instead of drawing zeros. The columns come from :mod:`analysis.study`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis import study
from analysis.figures import _caption, _hatches, _series, _setup, framework_colors, save_figure

PREFIX = "study_"
CPU_RESERVED = "No reserved memory on CPU:\nmemory_kind=rss has no\ncaching allocator\n(allocated panels: peak RSS)"


@dataclass(frozen=True)
class Panel:
    title: str
    ylabel: str
    phase: str
    value: Callable[[Any], float]
    interval: Callable[[Any], tuple[float, float]] | None = None
    cuda_only: bool = False


def _per_process_interval(row: Any) -> tuple[float, float]:
    if getattr(row, "ci_basis", "none") == "none":
        return math.nan, math.nan
    return row.ci95_low / row.world_size, row.ci95_high / row.world_size


def _epoch_interval(row: Any) -> tuple[float, float]:
    return study.epoch_interval(row) if getattr(row, "ci_basis", "none") != "none" else (math.nan, math.nan)


def _allocated(row: Any) -> float:
    value = row.peak_allocated_bytes if row.memory_kind == "cuda" else row.peak_rss_bytes
    return study.headline_bytes("rss", None, value) / study.GIB


def _reserved(row: Any) -> float:
    return study.headline_bytes("cuda", row.peak_reserved_bytes, None) / study.GIB


PANELS = (
    Panel("seconds per epoch (train)", "s / epoch", "train", lambda r: float(r.epoch_s), _epoch_interval),
    Panel("samples/s per process (train)", "samples/s per process", "train",
          lambda r: float(r.samples_per_s_per_process), _per_process_interval),
    Panel("allocated, training", "GiB per process", "train", _allocated),
    Panel("allocated, validation", "GiB per process", "val", _allocated),
    Panel("reserved (cached), train + val", "GiB per process", "reserved", _reserved, cuda_only=True),
)  # fmt: skip


def slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(model))


def captions(results: Any) -> dict[str, str]:
    """Figure name → caption, per model in the results (what the report shows, in order)."""
    if results.empty:
        return {}
    return {
        f"{PREFIX}{slug(model)}": f"{model}, as the study showed it: seconds per epoch, samples/s per process "
        "(training; error bars: 95 % CI), memory allocated in training and in validation and memory reserved, "
        "per process, grouped over processes, one colour per framework."
        for model in sorted(results["model"].astype(str).unique())
    }


def _reserved_rows(results: Any) -> Any:
    """Training rows carrying the larger of the train and validation reserved peaks of their configuration."""
    keys = ["sweep", "config_key"]
    import pandas as pd

    reserved = pd.to_numeric(results["peak_reserved_bytes"], errors="coerce")
    peak = reserved.groupby([results[k] for k in keys], dropna=False).max().rename("peak_reserved_both")
    train = results[results["phase"] == "train"].join(peak, on=keys)
    return train.assign(peak_reserved_bytes=train["peak_reserved_both"], phase="reserved")


def _draw_panel(ax: Any, frame: Any, panel: Panel, sizes: list[int], colors: dict[str, Any]) -> int:
    """Grouped bars of one panel; returns how many bars it drew."""
    series = list(_series(frame)) if not frame.empty else []
    width = 0.8 / max(len(series), 1)
    drawn = 0
    for k, ((label, framework, rows), hatch) in enumerate(zip(series, _hatches(series), strict=True)):
        offset = (k - (len(series) - 1) / 2) * width
        for row in rows.itertuples(index=False):
            value = panel.value(row)
            if not math.isfinite(value):
                continue
            x = sizes.index(row.world_size) + offset
            ax.bar(x, value, width, color=colors[framework], hatch=hatch, edgecolor="white" if hatch else None,
                   label=label)  # fmt: skip
            low, high = panel.interval(row) if panel.interval else (math.nan, math.nan)
            if math.isfinite(low) and math.isfinite(high):
                # Drawn where the interval lies: with one repeat it is the per-step mean's, which need
                # not contain the bar (samples over the slowest rank's whole phase).
                ax.errorbar(x, (low + high) / 2, yerr=(high - low) / 2, fmt="none", ecolor="black", capsize=3)
            drawn += 1
    return drawn


def _knobs_that_follow_processes(rows: Any) -> list[str]:
    """Swept knobs with one value per framework and process count (``pipeline.stages`` = processes):
    they name no series of their own, and splitting by them would scatter one framework's bars."""
    knobs = [c for c in rows.columns if c.startswith("cfg.")]
    if not knobs:
        return []
    keys = ["framework", "world_size", "phase"]
    counts = rows[[*keys, *knobs]].astype(str).groupby(keys)
    return [knob for knob in knobs if counts[knob].nunique().max() <= 1]


def study_figure(results: Any, model: str, warnings: list[str]) -> Any:
    """The five panels of one model, or None when the model has no row."""
    sub = study.derived(results[results["model"].astype(str) == str(model)])
    if sub.empty:
        return None
    sub = sub.drop(columns=_knobs_that_follow_processes(sub))
    plt = _setup()
    colors = framework_colors(results["framework"])
    sizes = sorted(int(s) for s in sub["world_size"].unique())
    fig, axes = plt.subplots(1, len(PANELS), figsize=(3.6 * len(PANELS), 3.6), squeeze=False)
    frames = {"train": sub[sub["phase"] == "train"], "val": sub[sub["phase"] == "val"]}
    kinds = set(sub["memory_kind"])
    for ax, panel in zip(axes[0], PANELS, strict=True):
        frame = _reserved_rows(sub) if panel.phase == "reserved" else frames[panel.phase]
        if panel.cuda_only:
            frame = frame[frame["memory_kind"] == "cuda"]
        drawn = _draw_panel(ax, frame, panel, sizes, colors)
        _label(ax, panel, sizes, kinds, drawn)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        more = ax.get_legend_handles_labels()
        handles += [h for h, lab in zip(*more, strict=True) if lab not in labels]
        labels += [lab for lab in more[1] if lab not in labels]
    if handles:
        unique = dict(zip(labels, handles, strict=True))
        fig.legend(unique.values(), unique.keys(), fontsize=7, loc="upper right", bbox_to_anchor=(1.0, 1.0))
    datasets = ", ".join(sorted(sub["dataset"].astype(str).unique()))
    fig.suptitle(f"{model} ({datasets}): seconds per epoch, samples/s per process and memory over processes")
    fig.tight_layout(rect=(0, 0, 0.9 if handles else 1, 0.95))
    _caption(fig, _notes(kinds) + warnings)
    return fig


def _label(ax: Any, panel: Panel, sizes: list[int], kinds: set[str], drawn: int) -> None:
    title = panel.title + (" (CPU: peak RSS)" if panel.phase in ("train", "val") and "GiB" in panel.ylabel
                           and "rss" in kinds else "")  # fmt: skip
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
    ax.set_xlabel("processes (GPUs)")
    ax.set_ylabel(panel.ylabel)
    if drawn:
        ax.set_ylim(bottom=0)
        return
    ax.set_yticks([])
    ax.set_xlim(-0.5, len(sizes) - 0.5)
    ax.grid(False)
    text = CPU_RESERVED if panel.cuda_only and "cuda" not in kinds else "not measured"
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="#555555")


def _notes(kinds: set[str]) -> list[str]:
    notes = [
        "Error bars: the throughput's 95 % CI (over repeats, or timed steps with one repeat) carried to s/epoch "
        "(split size / CI bounds) and samples/s per process; memory: the peak over ranks and repeats, no interval."
    ]
    if "rss" in kinds:
        notes.append("CPU rows: allocated panels show the peak resident set size per process; there is no "
                     "reserved (cached) memory without the CUDA caching allocator.")  # fmt: skip
    return notes


def write(out: Path, results: Any, warnings: list[str]) -> list[Path]:
    """``study_<model>.png``/``.svg`` for every model in ``results``; the files written."""
    written: list[Path] = []
    if results.empty:
        return written
    for model in sorted(results["model"].astype(str).unique()):
        written += save_figure(study_figure(results, model, warnings), out, f"{PREFIX}{slug(model)}")
    return written
