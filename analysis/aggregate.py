"""The aggregation pipeline: sweeps → tables → figures → report, and reading it back.

``aggregate(paths)`` is what ``dnnbench aggregate`` runs; ``read_results(dir)`` reloads
a results folder (for ``plot``, ``report`` and ``compare`` on a pulled copy).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis import confounds, energy_figure, env_effect, stragglers, study
from analysis.errors import AnalysisError
from jobs.atomic import write_atomic_text
from orchestrator.paths import CELLS_DIR, RESULTS_DIR, SweepPaths

ENVIRONMENTS_FILE = "environments.json"


@dataclass
class Aggregated:
    results: Any
    problems: Any
    environments: dict[str, dict[str, Any]]
    warnings: list[str]
    stages: Any
    loaded: Any = None
    written: list[Path] = field(default_factory=list)


def default_out(paths: list[str]) -> Path:
    """SWEEP_DIR/results for one sweep; ./results for several."""
    return SweepPaths(Path(paths[0])).results if len(paths) == 1 else Path(RESULTS_DIR)


def collect(paths: list[str | os.PathLike[str]], progress: bool = True, workers: int | None = None) -> Aggregated:
    """Read and compute; writes nothing."""
    from analysis.load import load_sweeps
    from analysis.table import build_results

    loaded = load_sweeps(paths, progress=progress, workers=workers)
    results = build_results(loaded)
    return Aggregated(
        results=results,
        problems=loaded.problems,
        environments=loaded.environments,
        warnings=confounds.summary(results, loaded.environments),
        stages=loaded.stages,
        loaded=loaded,
    )


def aggregate(
    paths: list[str],
    out: str | os.PathLike[str] | None = None,
    *,
    figures: bool = True,
    report: bool = True,
    progress: bool = True,
    workers: int | None = None,
    straggler_threshold: float = stragglers.DEFAULT_THRESHOLD,
    also: Callable[[Path, Aggregated], None] | None = None,
) -> Aggregated:
    """Tables (+ figures and report.html) for ``paths``, replacing ``out`` as a whole.

    ``also(folder, done)`` writes further outputs (the reference check) into the same new set
    before it replaces the old one: a reader never sees a mix of two runs' files.
    """
    from analysis.results_folder import replaced_whole

    final = Path(out) if out else default_out([str(p) for p in paths])
    done = collect(list(paths), progress=progress, workers=workers)
    with replaced_whole(final) as staging:
        _write_all(staging, done, figures=figures, report=report, straggler_threshold=straggler_threshold)
        if also is not None:
            also(staging, done)
    done.written = [final / p.relative_to(staging) for p in done.written]
    return done


def _add_section(markdown_file: Path, section: str) -> None:
    """``section`` into the results document, before its confounds and incomplete cells."""
    text = markdown_file.read_text()
    for heading in ("## Confounds", "## Incomplete cells"):
        if f"\n{heading}\n" in text:
            head, _, tail = text.partition(f"\n{heading}\n")
            text = f"{head}\n{section}\n{heading}\n{tail}"
            break
    else:
        text += "\n" + section
    write_atomic_text(markdown_file, text)


def _write_all(target: Path, done: Aggregated, *, figures: bool, report: bool, straggler_threshold: float) -> None:
    from analysis.outputs import write_tables
    from analysis.results_folder import fault_point

    done.written += write_tables(target, done.results, done.loaded, done.warnings)
    fault_point("tables_written")
    write_atomic_text(target / ENVIRONMENTS_FILE, json.dumps(done.environments, indent=1, default=str))
    done.written.append(target / ENVIRONMENTS_FILE)
    done.written.append(stragglers.write(target, done.loaded.ranks, straggler_threshold))
    # Before the report: its framework × environment section reads env_effect.csv (commands and all).
    effect_files = env_effect.write(target, done.results, done.loaded.sweeps, figures=figures)
    done.written += effect_files
    if effect_files:  # the table a terminal shows says it too, not only the report
        _add_section(target / "results.md", env_effect.markdown(env_effect.read(target, done.results)))
    if figures:
        from analysis.figures import write_figures

        done.written += write_figures(target, done.results, done.stages, done.warnings)
        done.written += energy_figure.write(target, done.results, done.warnings)
    if report:
        from analysis.report import write_report

        timelines = kept_timelines(done.loaded.cells)
        report_file = write_report(
            target, done.results, done.problems, done.environments, done.warnings, timelines=timelines
        )
        done.written.append(report_file)


def kept_timelines(cells: Any) -> list[tuple[str, str]]:
    """(label, path) of every cell attempt that kept a Horovod timeline."""
    if cells.empty or "timeline" not in cells:
        return []
    kept = cells[(cells["phase"] == "train") & (cells["timeline"] != "")]
    return [
        (f"{r.sweep}/{r.cell_id} attempt {r.attempt}: {r.framework} {r.model} {r.gpus} GPU(s) × {r.nodes} node(s)",
         r.timeline)
        for r in kept.itertuples(index=False)
    ]  # fmt: skip


def is_results_path(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.suffix in (".csv", ".parquet") or (p / "results.parquet").exists() or (p / "results.csv").exists()


def read_results(path: str | os.PathLike[str]) -> Aggregated:
    """Reload a results folder (or a results.csv/.parquet file) written by :func:`aggregate`."""
    import pandas as pd

    p = Path(path)
    folder = p.parent if p.suffix in (".csv", ".parquet") else p
    table = p if p.suffix else (folder / "results.parquet")
    if not table.exists():
        table = folder / "results.csv"
    try:
        results = pd.read_parquet(table) if table.suffix == ".parquet" else pd.read_csv(table)
    except (OSError, ValueError) as err:
        raise AnalysisError(f"cannot read results table {table}: {err}") from err
    for column in ("confound", "rank_environments_differ", "environment_hash"):
        if column in results:
            # A column empty in every row reads back from a CSV as float64 NaN, which cannot hold
            # text: make it text first, then fill (pandas refuses a str fill of a float column).
            results[column] = results[column].astype(object).fillna("").astype(str)
    results = study.derived(results)  # a table written before these columns gets them from its own
    problems_file = folder / "incomplete.csv"
    columns = ["sweep", "cell_id", "attempt", "status", "reason"]
    problems = pd.read_csv(problems_file) if problems_file.exists() else pd.DataFrame(columns=columns)
    env_file = folder / ENVIRONMENTS_FILE
    environments = json.loads(env_file.read_text()) if env_file.exists() else {}
    stages_file = folder / "stages.csv"
    stages = pd.read_csv(stages_file) if stages_file.exists() else pd.DataFrame()
    return Aggregated(
        results=results,
        problems=problems,
        environments=environments,
        warnings=confounds.summary(results, environments),
        stages=stages,
    )


def load_any(path: str | os.PathLike[str], progress: bool = True) -> Aggregated:
    """A sweep folder (aggregated in memory) or a results folder/table (read back)."""
    if is_results_path(path) and not (Path(path) / CELLS_DIR).is_dir():
        return read_results(path)
    return collect([path], progress=progress)
