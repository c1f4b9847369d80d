"""Write the tables: results.{csv,parquet,md}, cells.*, ranks.parquet, stages.csv, incomplete.csv."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from analysis.atomic_outputs import write_csv, write_parquet
from analysis.errors import AnalysisError
from analysis.table import CONFIG_COLUMNS
from jobs.atomic import write_atomic_text

# The results table's column order (knob columns ``cfg.*`` follow the identity columns).
RESULT_COLUMNS = [
    "sweep",
    *CONFIG_COLUMNS,
    "phase",
    "repeats",
    "throughput",
    "mean",
    "median",
    "std",
    "n",
    "ci95_low",
    "ci95_high",
    "cv",
    "ci_basis",
    "speedup",
    "efficiency",
    "samples_per_s_per_process",
    "epoch_s",
    "memory_kind",
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "peak_rss_bytes",
    "peak_mem_gib",
    "peak_mem_sum_gib",
    "model_state_gib",
    "accuracy",
    "loss",
    "seconds",
    "samples",
    "timed_steps",
    "device_type",
    "environment_hash",
    "confound",
    "config_key",
    "cells",
    "baseline_config_key",
]
# What results.md shows (a reader's summary; the CSV/Parquet hold everything).
MARKDOWN_COLUMNS = {
    "framework": "framework",
    "model": "model",
    "batch_size": "batch",
    "world_size": "procs",
    "phase": "phase",
    "repeats": "repeats",
    "throughput": "samples/s",
    "ci": "95% CI",
    "ci_basis": "CI over",
    "samples_per_s_per_process": "samples/s/proc",
    "epoch_s": "s/epoch",
    "speedup": "speedup",
    "efficiency": "efficiency",
    "memory": "peak mem/proc (GiB)",
    "peak_mem_sum_gib": "peak mem sum (GiB)",
    "accuracy": "accuracy",
    "confound": "confound",
}


def ordered(results: Any) -> Any:
    knobs = [c for c in results.columns if c.startswith("cfg.")]
    front = [c for c in RESULT_COLUMNS if c in results.columns]
    rest = [c for c in results.columns if c not in front and c not in knobs]
    return results[front[: front.index("phase")] + knobs + front[front.index("phase") :] + rest]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value).replace("|", "\\|")


def memory_gib(row: Any) -> float:
    """The per-process peak shown to readers: reserved (CUDA) or RSS (CPU)."""
    value = row.peak_reserved_bytes if row.memory_kind == "cuda" else row.peak_rss_bytes
    try:
        return float(value) / 2**30
    except (TypeError, ValueError):
        return math.nan


def markdown_table(results: Any) -> str:
    """A GitHub-flavoured Markdown table of the key columns (no tabulate needed)."""
    header = list(MARKDOWN_COLUMNS.values())
    knobs = [c for c in results.columns if c.startswith("cfg.")]
    multi = "sweep" in results and results["sweep"].nunique() > 1
    header = (["sweep"] if multi else []) + header[:3] + knobs + header[3:]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    knob_values = results[knobs]
    for row in results.itertuples(index=True):
        ci = f"{_fmt(row.ci95_low)} – {_fmt(row.ci95_high)}" if not math.isnan(row.ci95_low) else "–"
        cells = [_fmt(row.framework), _fmt(row.model), _fmt(row.batch_size)]
        cells += [_fmt(value) for value in knob_values.loc[row.Index]] if knobs else []
        cells += [
            _fmt(row.world_size),
            _fmt(row.phase),
            _fmt(row.repeats),
            _fmt(row.throughput),
            ci,
            _fmt(row.ci_basis),
            _fmt(row.samples_per_s_per_process),
            _fmt(row.epoch_s, 2),
            _fmt(row.speedup, 2),
            _fmt(row.efficiency, 2),
            _fmt(memory_gib(row), 2),
            _fmt(row.peak_mem_sum_gib, 2),
            _fmt(row.accuracy, 3),
            _fmt(row.confound) if row.confound else "",
        ]
        lines.append("| " + " | ".join(([_fmt(row.sweep)] if multi else []) + cells) + " |")
    return "\n".join(lines)


def markdown_document(results: Any, problems: Any, warnings: list[str]) -> str:
    parts = [
        "# dnnbench results",
        "",
        "Throughput is global samples/s (samples of the counting ranks / the slowest "
        "rank's time). The 95 % CI is t-based, of the mean over what `CI over` names. "
        "Memory is the peak per process (max over ranks): reserved for CUDA, RSS on CPU; the sum is "
        "over the processes. samples/s/proc = samples/s / processes; s/epoch = samples in the phase's "
        "split / samples/s.",
        "",
        markdown_table(results),
        "",
    ]
    if warnings:
        parts += ["## Confounds", "", *[f"- {w}" for w in warnings], ""]
    excluded = problems[problems["status"] == "excluded"] if not problems.empty else problems
    parts += ["## Incomplete cells", ""]
    if excluded.empty:
        parts.append("None.")
    else:
        parts += [
            f"- `{r.sweep}/{r.cell_id}` attempt {_fmt(r.attempt)}: {r.reason}" for r in excluded.itertuples(index=False)
        ]
    notes = problems[problems["status"] == "note"] if not problems.empty else problems
    if not notes.empty:
        parts += ["", "## Notes", ""]
        parts += [f"- `{r.sweep}/{r.cell_id}`: {r.reason}" for r in notes.itertuples(index=False)]
    return "\n".join(parts) + "\n"


def write_tables(out: Path, results: Any, loaded: Any, warnings: list[str]) -> list[Path]:
    """Write every table under ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        table = ordered(results)
        for name, frame in (("results", table), ("cells", loaded.cells)):
            write_csv(frame, out / f"{name}.csv")
            write_parquet(frame, out / f"{name}.parquet")
            written += [out / f"{name}.csv", out / f"{name}.parquet"]
        if not loaded.ranks.empty:
            write_parquet(loaded.ranks, out / "ranks.parquet")
            written.append(out / "ranks.parquet")
        if not loaded.stages.empty:
            write_csv(loaded.stages, out / "stages.csv")
            written.append(out / "stages.csv")
        write_csv(loaded.problems, out / "incomplete.csv")
        write_atomic_text(out / "results.md", markdown_document(table, loaded.problems, warnings))
        written += [out / "incomplete.csv", out / "results.md"]
    except OSError as err:
        raise AnalysisError(f"cannot write results to {out}: {err}") from err
    return written
