"""The analysis subcommands of ``dnnbench``: aggregate, plot, report, compare, pull.

A thin layer over :mod:`analysis.aggregate` and friends. ``orchestrator/cli.py`` calls
:func:`add_parsers`; every handler returns an exit code and raises
:class:`analysis.errors.AnalysisError` (a ``DnnbenchError``) for what the user can fix.
Nothing here imports torch, submitit or hydra.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisError, NoResultsError

_MAX_LISTED = 20


def _say(text: str) -> None:
    print(text, file=sys.stdout)


def _summarize(done: Any, out: Path | None) -> None:
    excluded = done.problems[done.problems["status"] == "excluded"] if not done.problems.empty else done.problems
    cells = done.loaded.cells["cell_id"].nunique() if done.loaded is not None and not done.loaded.cells.empty else 0
    _say(
        f"{cells} complete cell(s) → {len(done.results)} result row(s) "
        f"(configuration × phase); {len(excluded)} incomplete cell(s)."
    )
    for row in excluded.head(_MAX_LISTED).itertuples(index=False):
        _say(f"  incomplete {row.sweep}/{row.cell_id} (attempt {row.attempt}): {row.reason}")
    if len(excluded) > _MAX_LISTED:
        _say(f"  … and {len(excluded) - _MAX_LISTED} more (see incomplete.csv)")
    for warning in done.warnings:
        _say(f"  {warning}")
    if out is not None:
        _say(
            f"Wrote {out}/results.csv, results.parquet, results.md"
            + (", report.html and figures" if (out / "report.html").exists() else "")
        )


def _check_inputs(paths: list[str], *, results: bool) -> None:
    """Every path names sweeps (or, where ``results``, a results folder or table) before anything is read.

    Raises :class:`orchestrator.errors.NotASweepError` (exit 4) for a missing path, a file, a folder
    of other things, or a damaged or foreign ``ledger.sqlite``; creates nothing.
    """
    from analysis.aggregate import is_results_path
    from orchestrator.paths import CELLS_DIR, sweep_roots

    for path in paths:
        if results and Path(path).exists() and is_results_path(path) and not (Path(path) / CELLS_DIR).is_dir():
            continue
        sweep_roots(path)


def aggregate_command(
    paths: list[str], out: str | None, *, figures: bool = True, progress: bool = True, workers: int | None = None
) -> int:
    """Aggregate sweeps into tables, figures and report.html; 0 when there are results."""
    from analysis.aggregate import aggregate, default_out

    _check_inputs(paths, results=False)
    target = Path(out) if out else default_out(paths)
    done = aggregate(paths, target, figures=figures, report=figures, progress=progress, workers=workers)
    _summarize(done, target)
    if done.results.empty:
        raise NoResultsError(f"no complete cell in {', '.join(paths)}: see {target}/incomplete.csv")
    return 0


def plot_command(paths: list[str], out: str | None = None) -> int:
    """Figures (PNG + SVG) from a sweep folder or an existing results folder."""
    from analysis.aggregate import collect, default_out, is_results_path, read_results
    from analysis.figures import write_figures
    from orchestrator.paths import CELLS_DIR

    _check_inputs(paths, results=True)
    if len(paths) == 1 and is_results_path(paths[0]) and not (Path(paths[0]) / CELLS_DIR).is_dir():
        done = read_results(paths[0])
        target = Path(out) if out else Path(paths[0])
    else:
        done = collect(paths)
        target = Path(out) if out else default_out(paths)
    if done.results.empty:
        raise NoResultsError(f"nothing to plot in {', '.join(paths)}")
    written = write_figures(target, done.results, done.stages, done.warnings)
    _say("Wrote " + ", ".join(str(p) for p in written))
    return 0


def report_command(paths: list[str], out: str | None = None) -> int:
    """report.html from a results folder (with its figures) or from sweep folders."""
    from analysis.aggregate import is_results_path, read_results
    from orchestrator.paths import CELLS_DIR

    _check_inputs(paths, results=True)
    if len(paths) == 1 and is_results_path(paths[0]) and not (Path(paths[0]) / CELLS_DIR).is_dir():
        from analysis.figures import write_figures
        from analysis.report import write_report

        done = read_results(paths[0])
        target = Path(out) if out else Path(paths[0])
        target.mkdir(parents=True, exist_ok=True)
        if not (target / "throughput.png").exists():
            write_figures(target, done.results, done.stages, done.warnings)
        path = write_report(target, done.results, done.problems, done.environments, done.warnings)
        _say(f"Wrote {path}")
        return 0
    return aggregate_command(paths, out)


def compare_command(a: str, b: str, out: str | None = None) -> int:
    """Per-configuration throughput ratio B/A with significance (95 % CIs overlap or not)."""
    from analysis.aggregate import load_any
    from analysis.compare import compare, markdown

    _check_inputs([a, b], results=True)
    first, second = load_any(a), load_any(b)
    if first.results.empty or second.results.empty:
        raise NoResultsError(f"no results in {a if first.results.empty else b}")
    table = compare(first.results, second.results)
    _say(f"A = {a}\nB = {b}\n")
    _say(markdown(table))
    if table["environment_differs"].any():
        _say(
            "\nConfound: some matched rows ran in different environments (environment_hash "
            "differs); see each side's report for the fields."
        )
    if out:
        table.to_csv(out, index=False)
        _say(f"\nWrote {out}")
    return 0


def pull_command(remote: str, dest: str, include_logs: bool = False) -> int:
    """rsync a sweep's dumps, ledger, tables and figures (no logs unless asked)."""
    from analysis.pull import pull

    return pull(remote, dest, include_logs)


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def add_parsers(subparsers: Any) -> None:
    """Register aggregate, plot, report, compare and pull on an argparse subparsers object.

    Each parser sets ``func`` (a callable taking the parsed Namespace, returning an
    exit code) as its default.
    """
    p = subparsers.add_parser(
        "aggregate",
        help="rank dumps of sweep(s) → tables, figures and report.html",
        formatter_class=_formatter,
        description="Read every rank dump of one or more sweeps, validate it, and write\n"
        "results.csv/.parquet/.md, cells.*, incomplete.csv, figures and report.html.\n\n"
        "Example:\n  dnnbench aggregate runs/2026-11-26_resnet --out /tmp/results",
    )
    p.add_argument("paths", nargs="+", metavar="SWEEP_DIR", help="sweep folder(s), or a folder of sweeps")
    p.add_argument("--out", help="output folder (default: SWEEP_DIR/results)")
    p.add_argument("--no-figures", action="store_true", help="tables only (no figures, report)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, default=None, help="processes reading dumps (default: CPU count, max 8)")
    p.set_defaults(
        func=lambda ns: aggregate_command(
            ns.paths, ns.out, figures=not ns.no_figures, progress=not ns.no_progress, workers=ns.workers
        )
    )

    p = subparsers.add_parser(
        "plot",
        help="figures from a sweep or a results folder",
        formatter_class=_formatter,
        description="Draw throughput, scaling, memory (and pipeline stage-balance) figures,\n"
        "PNG and SVG.\n\nExample:\n  dnnbench plot ~/pulled/sweep1/results",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="sweep folder(s) or a results folder")
    p.add_argument("--out", help="output folder (default: the results folder)")
    p.set_defaults(func=lambda ns: plot_command(ns.paths, ns.out))

    p = subparsers.add_parser(
        "report",
        help="self-contained report.html",
        formatter_class=_formatter,
        description="Write report.html (figures inlined) from a results folder, or aggregate\n"
        "sweep folders first.\n\nExample:\n  dnnbench report runs/sweep1/results",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="results folder or sweep folder(s)")
    p.add_argument("--out", help="output folder")
    p.set_defaults(func=lambda ns: report_command(ns.paths, ns.out))

    p = subparsers.add_parser(
        "compare",
        help="two sweeps or result tables: ratio B/A and significance",
        formatter_class=_formatter,
        description="Match configurations of A and B and print throughput B/A; significant\n"
        "means the two 95% CIs do not overlap.\n\n"
        "Example:\n  dnnbench compare runs/torch24/results runs/torch25/results",
    )
    p.add_argument("a", metavar="A", help="sweep folder, results folder or results table")
    p.add_argument("b", metavar="B", help="sweep folder, results folder or results table")
    p.add_argument("--out", help="also write the comparison as CSV")
    p.set_defaults(func=lambda ns: compare_command(ns.a, ns.b, ns.out))

    p = subparsers.add_parser(
        "pull",
        help="copy a sweep's dumps, ledger, tables and figures (rsync over ssh)",
        formatter_class=_formatter,
        description="Copy only what analysis needs; logs and checkpoints stay behind.\n\n"
        "Example:\n  dnnbench pull alice@login.cluster:/scratch/alice/runs/sweep1 "
        "~/sweeps/sweep1\n  dnnbench aggregate ~/sweeps/sweep1",
    )
    p.add_argument("remote", metavar="USER@HOST:SWEEP_DIR")
    p.add_argument("dest", metavar="DEST")
    p.add_argument("--include-logs", action="store_true", help="also copy launcher logs, error files and job scripts")
    p.set_defaults(func=lambda ns: pull_command(ns.remote, ns.dest, ns.include_logs))


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m analysis.cli``) for machines without the orchestrator."""
    from orchestrator.errors import DnnbenchError

    parser = argparse.ArgumentParser(prog="dnnbench", description="dnnbench analysis commands")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DnnbenchError as err:
        print(f"Error: {err}", file=sys.stderr)
        return int(err.exit_code)


__all__ = [
    "AnalysisError",
    "add_parsers",
    "aggregate_command",
    "compare_command",
    "main",
    "plot_command",
    "pull_command",
    "report_command",
]

if __name__ == "__main__":
    raise SystemExit(main())
