"""Figures (seaborn/matplotlib, PNG + SVG): throughput, scaling, memory, stage balance.

Each ``*_figure`` function takes the results table (or the stage table) and returns a
matplotlib Figure or None when there is nothing to draw; :func:`write_figures` saves
them. Colours are fixed per framework across every figure. Confound warnings go
into each figure's caption (bottom text).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from analysis.atomic_outputs import write_figure
from jobs.frameworks import FRAMEWORKS, foreign_knobs

FORMATS = ("png", "svg")


def framework_colors(frameworks: Any) -> dict[str, Any]:
    """The same colour for a framework in every figure: its row's (jobs/frameworks.py); names no row
    declares (dumps of a framework since removed) get greys, in name order."""
    others = sorted(set(frameworks) - set(FRAMEWORKS))
    greys = [f"#{shade:02x}{shade:02x}{shade:02x}" for shade in range(0x30, 0xC0, 0x18)]
    colours = {name: row.colour for name, row in FRAMEWORKS.items()}
    colours.update({name: greys[i % len(greys)] for i, name in enumerate(others)})
    return colours


def _setup() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt


def _caption(fig: Any, lines: list[str]) -> None:
    if not lines:
        return
    width_chars = int(fig.get_figwidth() * 16)
    text = "\n".join(textwrap.fill(line, width_chars) for line in lines)
    # Caption below the axes: reserve its height (about 0.13 in a line at 7 pt) in inches.
    needed = (0.13 * (text.count("\n") + 1) + 0.55) / fig.get_figheight()
    fig.subplots_adjust(bottom=max(fig.subplotpars.bottom, needed))
    fig.text(0.01, 0.005, text, ha="left", va="bottom", fontsize=7, color="#a00000")


def _grid(plt: Any, rows: list[Any], cols: list[Any], width: float = 4.0, height: float = 3.2):
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(width * len(cols), height * len(rows)), squeeze=False)
    return fig, axes


# Bars of one framework's further series (batch sizes, knobs, sweeps) are hatched; its first is plain.
HATCHES = ("", "//", "..", "xx", "\\\\", "oo")


def _series(frame: Any):
    """(label, framework, rows sorted by world size) per series to draw: framework, batch size, sweep
    and the swept knobs the framework reads (a ddp cell's config still holds the default
    ``pipeline.*``, which it ignores: it names no series of its own)."""
    knobs = [c for c in frame.columns if c.startswith("cfg.")]
    multi_batch, multi_sweep = frame["batch_size"].nunique() > 1, frame["sweep"].nunique() > 1
    read = frame.assign(**{knob: _read_only(frame, knob) for knob in knobs})
    for values, rows in read.groupby(["sweep", "framework", "batch_size", *knobs], sort=True, dropna=False):
        sweep, framework, batch, *settings = values
        parts = [str(framework), *([f"batch {batch}"] if multi_batch else [])]
        parts += [f"{k.removeprefix('cfg.')}={v}" for k, v in zip(knobs, settings, strict=True) if v != ""]
        label = _wrapped(([f"{sweep}:"] if multi_sweep else []) + parts)
        yield label, framework, frame.loc[rows.index].sort_values("world_size")


LABEL_WIDTH = 40  # characters per legend line: a label of many swept knobs stays narrower than its axes


def _wrapped(parts: list[str]) -> str:
    """``parts`` joined by ", ", a new line wherever the next part would pass :data:`LABEL_WIDTH`: a legend of
    long labels outgrew its axes, and tight_layout gave up on the whole figure ("Tight layout not applied")."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 2 + len(part) <= LABEL_WIDTH:
            lines[-1] += f" {part}" if lines[-1].endswith(":") else f", {part}"
            continue
        if lines and not lines[-1].endswith(":"):
            lines[-1] += ","
        lines.append(part)
    return "\n".join(lines)


def _read_only(frame: Any, knob: str) -> Any:
    """The knob's values as text, blank where the row's framework does not read its section."""
    section = knob.removeprefix("cfg.").split(".")[0]
    ignored = frame["framework"].map(lambda name: section in foreign_knobs(name))
    return frame[knob].astype(str).where(~ignored, "")


def _hatches(series: list[tuple[str, str, Any]]) -> list[str]:
    """One hatch per series: plain for a framework's first, patterned for its further ones."""
    seen: dict[str, int] = {}
    hatches = []
    for _, framework, _ in series:
        hatches.append(HATCHES[seen.get(framework, 0) % len(HATCHES)])
        seen[framework] = seen.get(framework, 0) + 1
    return hatches


def _phase_by_model_grid(results: Any) -> tuple[dict[str, Any], list[str], list[str], Any, Any]:
    """The layout the throughput and memory figures share: rows = phase, columns = model."""
    plt = _setup()
    colors = framework_colors(results["framework"])
    phases = [p for p in ("train", "val") if p in set(results["phase"])]
    models = sorted(results["model"].unique())
    fig, axes = _grid(plt, phases, models)
    return colors, phases, models, fig, axes


def throughput_figure(results: Any, warnings: list[str]) -> Any:
    """Global throughput vs processes; rows = phase, columns = model; CI band and the
    linear-scaling line (1-process throughput × processes, dashed)."""
    if results.empty:
        return None
    colors, phases, models, fig, axes = _phase_by_model_grid(results)
    for i, phase in enumerate(phases):
        for j, model in enumerate(models):
            ax = axes[i][j]
            frame = results[(results["phase"] == phase) & (results["model"] == model)]
            for label, framework, rows in _series(frame):
                color = colors[framework]
                ax.plot(rows["world_size"], rows["throughput"], marker="o", color=color, label=label)
                ax.fill_between(
                    rows["world_size"], rows["ci95_low"], rows["ci95_high"], color=color, alpha=0.2, linewidth=0
                )
                base = rows["throughput"] / rows["speedup"]
                if base.notna().any():
                    ideal = base.dropna().iloc[0] * rows["world_size"]
                    ax.plot(rows["world_size"], ideal, linestyle="--", color=color, alpha=0.6, linewidth=1)
            ax.set_title(f"{model} — {phase}")
            ax.set_xlabel("processes (GPUs)")
            ax.set_ylabel("samples/s (global)")
            # A t-interval over few repeats can reach below zero; throughput cannot.
            ax.set_ylim(bottom=0)
            ax.set_xticks(sorted(frame["world_size"].unique()))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.suptitle("Throughput vs processes (band: 95% CI; dashed: linear scaling from 1 process)")
    fig.tight_layout()
    _caption(fig, warnings)
    return fig


def scaling_figure(results: Any, warnings: list[str]) -> Any:
    """Speedup (with the ideal y = x) and efficiency vs processes, training phase."""
    frame = results[(results["phase"] == "train") & results["speedup"].notna()]
    if frame.empty:
        return None
    plt = _setup()
    colors = framework_colors(results["framework"])
    models = sorted(frame["model"].unique())
    fig, axes = _grid(plt, ["speedup", "efficiency"], models)
    for j, model in enumerate(models):
        sub = frame[frame["model"] == model]
        top = sub["world_size"].max()
        axes[0][j].plot([1, top], [1, top], color="grey", linestyle=":", label="ideal")
        axes[1][j].axhline(1.0, color="grey", linestyle=":")
        for label, framework, rows in _series(sub):
            for i, metric in enumerate(("speedup", "efficiency")):
                axes[i][j].plot(rows["world_size"], rows[metric], marker="o", color=colors[framework], label=label)
        axes[0][j].set_title(f"{model} — train")
        axes[0][j].set_ylabel("speedup vs 1 process")
        axes[1][j].set_ylabel("scaling efficiency")
        for i in range(2):
            axes[i][j].set_xlabel("processes (GPUs)")
            axes[i][j].set_xticks(sorted(sub["world_size"].unique()))
        axes[0][j].legend(fontsize=7)
    fig.suptitle("Speedup and scaling efficiency (training)")
    fig.tight_layout()
    _caption(fig, warnings)
    return fig


def memory_figure(results: Any, warnings: list[str]) -> Any:
    """Peak memory per process (max over ranks); rows = phase, columns = model. CUDA: solid
    bar = peak allocated, light bar behind it = peak reserved. CPU: peak RSS. A black line across
    each bar: the model state one process holds (parameters + gradients + optimizer state)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if results.empty:
        return None
    colors, phases, models, fig, axes = _phase_by_model_grid(results)
    # One bar per series (a framework's configurations side by side, never drawn over each other).
    series = list(_series(results))
    hatches = _hatches(series)
    width = 0.8 / max(len(series), 1)
    model_state_drawn = False
    for i, phase in enumerate(phases):
        for j, model in enumerate(models):
            ax = axes[i][j]
            sizes = sorted(results[(results["phase"] == phase) & (results["model"] == model)]["world_size"].unique())
            for k, (_, framework, rows) in enumerate(series):
                look = {"color": colors[framework], "hatch": hatches[k], "edgecolor": "white" if hatches[k] else None}
                mine = rows[(rows["phase"] == phase) & (rows["model"] == model)]
                for row in mine.itertuples(index=False):
                    x = sizes.index(row.world_size) + (k - (len(series) - 1) / 2) * width
                    if row.memory_kind == "cuda":
                        ax.bar(x, _gib(row.peak_reserved_bytes), width, alpha=0.35, **look)
                        ax.bar(x, _gib(row.peak_allocated_bytes), width, **look)
                    else:
                        ax.bar(x, _gib(row.peak_rss_bytes), width, **look)
                    model_state_drawn |= _model_state_line(ax, x, width, row)
            ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
            ax.set_xlabel("processes (GPUs)")
            ax.set_ylabel("GiB per process")
            ax.set_title(f"{model} — {phase}")
    kinds = set(results["memory_kind"])
    handles = [
        Patch(facecolor=colors[framework], hatch=hatches[k], edgecolor="white" if hatches[k] else None, label=label)
        for k, (label, framework, _) in enumerate(series)
    ]
    if "cuda" in kinds:
        handles += [
            Patch(color="grey", label="allocated (solid)"),
            Patch(color="grey", alpha=0.35, label="reserved (light)"),
        ]
    if model_state_drawn:
        handles.append(Line2D([], [], color="black", label="model state (line)"))
    legend = axes[0][-1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    # Beside the axes, outside the grid tight_layout packs (a one-column grid cannot make room for
    # it: "Tight layout not applied"); the saved image grows to hold it (savefig's bbox_inches="tight").
    legend.set_in_layout(False)
    note = (
        "CPU run: memory_kind=rss, so bars are the peak resident set size per process, not GPU memory."
        if kinds == {"rss"}
        else "Mixed memory kinds: CUDA cells show allocated/reserved, CPU cells peak RSS."
        if len(kinds) > 1
        else "CUDA memory per GPU: peak allocated vs peak reserved by the caching allocator."
    )
    title = "Peak RSS per process (CPU)" if kinds == {"rss"} else "Peak GPU memory per process"
    fig.suptitle(f"{title}, max over ranks")
    fig.tight_layout()
    state_note = (
        "Black line: model state per process (parameters + gradients + optimizer state this rank owns, "
        "max over ranks): what sharding (fsdp, zero) divides; the rest of the bar is activations, "
        "communication buffers and the runtime."
    )
    _caption(fig, [note, *([state_note] if model_state_drawn else []), *warnings])
    return fig


def _model_state_line(ax: Any, x: float, width: float, row: Any) -> bool:
    """The model state one process holds, a line across its bar; False where the cell did not record it."""
    value = getattr(row, "model_state_gib", None)
    if value is None or value != value:  # absent (older results), or NaN (dumps from before the section)
        return False
    ax.hlines(value, x - width / 2, x + width / 2, colors="black", linewidth=1.5)
    return True


def _gib(value: Any) -> float:
    try:
        return float(value) / 2**30
    except (TypeError, ValueError):
        return 0.0


def stage_balance_figure(stages: Any, warnings: list[str], limit: int = 6) -> Any:
    """Pipeline stage times, predicted vs measured, for up to ``limit`` cells."""
    if stages is None or stages.empty:
        return None
    import pandas as pd
    import seaborn as sns

    plt = _setup()
    cells = list(dict.fromkeys(stages["cell_id"]))[:limit]
    fig, axes = _grid(plt, [0], cells)
    for j, cell in enumerate(cells):
        sub = stages[stages["cell_id"] == cell]
        long = pd.melt(
            sub, id_vars=["stage"], value_vars=["predicted_s", "measured_s"], var_name="kind", value_name="seconds"
        ).dropna()
        ax = axes[0][j]
        sns.barplot(data=long, x="stage", y="seconds", hue="kind", ax=ax, errorbar=None)
        first = sub.iloc[0]
        ax.set_title(f"{first['model']} {first['framework']} ×{first['world_size']}\n{cell}", fontsize=8)
    fig.suptitle("Pipeline stage balance: predicted vs measured time per stage")
    fig.tight_layout()
    _caption(fig, warnings)
    return fig


def write_figures(out: Path, results: Any, stages: Any, warnings: list[str]) -> list[Path]:
    """Draw and save every figure that has data; returns the files written."""
    figures = {
        "throughput": throughput_figure(results, warnings),
        "scaling": scaling_figure(results, warnings),
        "memory": memory_figure(results, warnings),
        "stage_balance": stage_balance_figure(stages, warnings),
    }
    written = [path for name, fig in figures.items() for path in save_figure(fig, out, name)]
    from analysis import breakdown_figure, study_figures  # imported here: they build on this module

    return written + study_figures.write(out, results, warnings) + breakdown_figure.write(out, results, warnings)


def save_figure(fig: Any, out: Path, name: str) -> list[Path]:
    """``out/<name>.png`` and ``.svg`` of ``fig`` (closed after); [] when there is no figure."""
    if fig is None:
        return []
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in FORMATS:
        path = out / f"{name}.{fmt}"
        write_figure(fig, path, dpi=120, bbox_inches="tight")
        written.append(path)
    plt.close(fig)
    return written


def reference_figure(results: Any, references: list[Any]) -> Any:
    """Reference values (dashed, ×) against this run's values (solid, ●) of the same metrics, one
    panel per metric and phase, x = processes; the caption names each reference's source and what
    was measured (models, devices), so a GPU reference beside a CPU-scale run says so."""
    from analysis.references import UNITS

    panels = list(dict.fromkeys((ref.metric, ref.keys["phase"]) for ref in references))
    if not panels:
        return None
    plt = _setup()
    colors = framework_colors([*results["framework"], *(ref.keys["framework"] for ref in references)])
    fig, axes = _grid(plt, [0], panels)
    for j, (metric, phase) in enumerate(panels):
        ax = axes[0][j]
        chosen = [ref for ref in references if ref.metric == metric and ref.keys["phase"] == phase]
        for framework in dict.fromkeys(ref.keys["framework"] for ref in chosen):
            refs = sorted((r for r in chosen if r.keys["framework"] == framework), key=_processes)
            ax.plot([int(r.keys["processes"]) for r in refs], [r.value for r in refs], linestyle="--", marker="x",
                    color=colors[framework], label=f"{framework} reference")  # fmt: skip
            measured = results[(results["framework"] == framework) & (results["phase"] == phase)]
            _measured_lines(ax, measured, metric, colors[framework], framework)
        ax.set_title(f"{metric} — {phase}")
        ax.set_xlabel("processes (GPUs)")
        ax.set_ylabel(UNITS[metric])
        ax.set_ylim(bottom=0)
        ax.set_xticks(sorted({*(int(r.keys["processes"]) for r in chosen), *results["world_size"].astype(int)}))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle("Reference values (dashed ×) vs this run (solid ●)")
    fig.tight_layout()
    _caption(fig, _reference_caption(results, references))
    return fig


def _processes(ref: Any) -> int:
    return int(ref.keys["processes"])


def _measured_lines(ax: Any, measured: Any, metric: str, color: Any, framework: str) -> None:
    """This run's value of ``metric`` per model and batch size, against processes."""
    from analysis.references import METRICS

    for (model, batch), rows in measured.groupby(["model", "batch_size"], sort=True):
        rows = rows.sort_values("world_size")
        values = [METRICS[metric][1](row) for row in rows.itertuples(index=False)]
        if any(v == v for v in values):
            ax.plot(rows["world_size"], values, marker="o", color=color,
                    label=f"{framework} measured ({model}, batch {batch})")  # fmt: skip


def _reference_caption(results: Any, references: list[Any]) -> list[str]:
    ref_models = ", ".join(sorted({ref.keys["model"] for ref in references}))
    devices = ", ".join(sorted({str(d) for d in results.get("device_type", [])})) or "unknown"
    models = ", ".join(sorted({str(m) for m in results["model"]}))
    lines = [f"Reference ({ref_models}): {source}" for source in dict.fromkeys(ref.source for ref in references)]
    return [*lines, f"Measured here: {models} on {devices}."]


def write_reference_figure(out: Path, results: Any, references: list[Any]) -> list[Path]:
    """reference.png and reference.svg; [] when no reference row names a metric to draw."""
    return save_figure(reference_figure(results, references), out, "reference")
