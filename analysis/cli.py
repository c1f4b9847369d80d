"""The analysis subcommands of ``dnnbench``: aggregate, plot, report, compare, check, pull.

A thin layer over :mod:`analysis.aggregate` and friends. ``orchestrator/cli.py`` calls
:func:`add_parsers`; every handler returns an exit code and raises
:class:`analysis.errors.AnalysisError` (a ``DnnbenchError``) for what the user can fix.
Nothing here imports torch, submitit or hydra.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisError, NoResultsError
from orchestrator.errors import ExitCode

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
    paths: list[str],
    out: str | None,
    *,
    figures: bool = True,
    progress: bool = True,
    workers: int | None = None,
    straggler_threshold: float | None = None,
    reference: str | None = None,
) -> int:
    """Aggregate sweeps into tables, figures and report.html; 0 when there are results.

    ``reference``: a reference file, read and validated before any sweep is: its values are
    drawn on reference.png, listed in reference_check.csv and in the report.
    """
    from analysis.aggregate import aggregate, default_out
    from analysis.results_folder import check_out_folder

    references = _read_references(reference) if reference else None
    _check_inputs(paths, results=False)
    target = Path(out) if out else default_out(paths)
    check_out_folder(target, paths)  # before anything is read or written: aggregate replaces this folder whole
    extra: dict[str, Any] = {} if straggler_threshold is None else {"straggler_threshold": straggler_threshold}
    if references is not None:
        def with_references(folder: Path, done: Any) -> None:
            if not done.results.empty:  # no result: NoResultsError below, nothing to check
                _write_reference_outputs(folder, done, references, figures=figures)

        extra["also"] = with_references
    done = aggregate(paths, target, figures=figures, report=figures, progress=progress, workers=workers, **extra)
    _summarize(done, target)
    if done.results.empty:
        raise NoResultsError(f"no complete cell in {', '.join(paths)}: see {target}/incomplete.csv")
    return 0


def _read_references(path: str) -> Any:
    from analysis.references import read_references

    return read_references(path)


def _write_reference_outputs(target: Path, done: Any, references: Any, *, figures: bool) -> None:
    """reference_check.csv, reference.png/.svg and report.html again, now with its reference section."""
    from analysis.atomic_outputs import write_csv
    from analysis.references import check

    table = check(done.results, references)
    write_csv(table, target / "reference_check.csv")
    written = [target / "reference_check.csv"]
    if figures:
        from analysis.figures import write_reference_figure
        from analysis.report import add_reference_section

        written += write_reference_figure(target, done.results, references)
        written.append(add_reference_section(target / "report.html", table, target / "reference.png"))
    passed, failed = (table["status"] == "pass").sum(), (table["status"] == "fail").sum()
    _say(f"Reference: {passed} check(s) pass, {failed} fail; wrote " + ", ".join(p.name for p in written))


def plot_command(paths: list[str], out: str | None = None) -> int:
    """Figures (PNG + SVG) from a sweep folder or an existing results folder."""
    from analysis.aggregate import collect, default_out, is_results_path, read_results
    from analysis.figures import write_figures
    from orchestrator.paths import CELLS_DIR

    _check_inputs(paths, results=True)
    if out is not None:  # an --out as aggregate's: never a sweep's own files, the checkout or home
        from analysis.results_folder import check_out_folder

        check_out_folder(Path(out), paths, replaced=False)
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
    if out is not None:  # an --out as aggregate's: never a sweep's own files, the checkout or home
        from analysis.results_folder import check_out_folder

        check_out_folder(Path(out), paths, replaced=False)
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


def _compared(a: str, b: str) -> tuple[Any, list[str], tuple[Any, Any]]:
    """The comparison table of A and B, the environment fields that differ between matched rows, and
    what A and B hold (their :class:`analysis.aggregate.Aggregated`)."""
    from analysis.aggregate import load_any
    from analysis.compare import compare, environment_fields

    _check_inputs([a, b], results=True)
    first, second = load_any(a), load_any(b)
    if first.results.empty or second.results.empty:
        raise NoResultsError(f"no results in {a if first.results.empty else b}")
    table = compare(first.results, second.results)
    return table, environment_fields(table, first.environments, second.environments), (first, second)


def _say_confounds(table: Any, fields: list[str]) -> None:
    if not table["environment_differs"].any():
        return
    _say(
        "\nConfound: some matched rows ran in different environments (environment_hash differs)"
        + (": " + "; ".join(fields) if fields else "; see each side's report for the fields.")
    )


def _say_env_effect(first: Any, second: Any) -> None:
    """Framework × environment over A and B together, when the two span environments (A's first)."""
    import pandas as pd

    from analysis import env_effect

    sweeps = {**getattr(first.loaded, "sweeps", {}), **getattr(second.loaded, "sweeps", {})}
    both = pd.concat([first.results, second.results], ignore_index=True)
    words = env_effect.markdown(env_effect.effect_table(both, sweeps))
    if words:
        _say("\n" + words.rstrip())


def compare_command(a: str, b: str, out: str | None = None, fail_below: float | None = None) -> int:
    """Per-configuration throughput ratio B/A, its 95 % CI (Fieller) and significance (CIs overlap or not).

    ``fail_below``: exit CHECK_FAILED when a row's whole ratio CI lies below it.
    """
    from analysis.atomic_outputs import write_csv
    from analysis.compare import below, judgeable, markdown

    if fail_below is not None and not (math.isfinite(fail_below) and fail_below > 0):
        raise AnalysisError(f"--fail-below must be a positive ratio such as 0.95, got {fail_below}")
    table, fields, pair = _compared(a, b)
    _say(f"A = {a}\nB = {b}\n")
    _say(markdown(table))
    _say_confounds(table, fields)
    _say_env_effect(*pair)
    if out:
        write_csv(table, out)
        _say(f"\nWrote {out}")
    if fail_below is None:
        return 0
    if not judgeable(table).any():  # a gate that judged nothing must not read as passed (as in `check`)
        _say(
            f"\nNOTHING CHECKED: no configuration is in both A and B with a B/A 95% CI, so --fail-below "
            f"{fail_below:g} judged no row; that is not a pass"
        )
        return int(ExitCode.CHECK_FAILED)
    failing = below(table, fail_below)
    if failing.empty:
        _say(f"\nNo row's B/A 95% CI lies below {fail_below:g}.")
        return 0
    _say(f"\n{len(failing)} row(s) with the whole B/A 95% CI below {fail_below:g}:")
    for r in failing.itertuples(index=False):
        _say(f"  {_row_name(r)}: {r.ratio_ci95_low:.3f} – {r.ratio_ci95_high:.3f}")
    return int(ExitCode.CHECK_FAILED)


def _row_name(r: Any) -> str:
    return f"{r.framework} {r.model} batch {r.batch_size} × {r.world_size} {r.phase}"


def parse_drop(text: str) -> float:
    """``5%`` or ``0.05`` → 0.05; anything else (``5``, ``-1%``, ``100%``) is an AnalysisError."""
    stripped = text.strip()
    try:
        value = float(stripped.removesuffix("%")) / (100 if stripped.endswith("%") else 1)
    except ValueError:
        raise AnalysisError(f"--max-drop must look like 5% or 0.05, got {text!r}") from None
    if not 0 <= value < 1:
        raise AnalysisError(f"--max-drop must be from 0 up to (not including) 100% (5% or 0.05), got {text!r}")
    return value


def check_command(path: str, reference: str | None = None, baseline: str | None = None, max_drop: str = "5%") -> int:
    """Gate a sweep: against a reference file, and/or against a baseline sweep's throughput.

    Exit 0 when every checked row passes, CHECK_FAILED (7) when any fails or when a gate checked
    nothing (no result row matches a reference, no row has a baseline interval): a gate that judged
    nothing must not read as passed. Bad input (a bad reference file, a bad --max-drop, neither
    --reference nor --baseline) is an error (exit 1) before any sweep is read.
    """
    if reference is None and baseline is None:
        raise AnalysisError("check needs --reference FILE, --baseline OTHER_SWEEP, or both")
    references = _read_references(reference) if reference else None
    drop = parse_drop(max_drop) if baseline else 0.0
    _check_inputs([path, *([baseline] if baseline else [])], results=True)
    verdicts: list[tuple[bool, int]] = []
    if references is not None:
        verdicts.append(_check_reference(path, references))
    if baseline is not None:
        verdicts.append(_check_baseline(path, baseline, drop))
    failed = any(failed for failed, _ in verdicts)
    unjudged = [checked for _, checked in verdicts if checked == 0]
    if unjudged and not failed:
        _say(
            "\nNOTHING CHECKED: no row of this sweep could be judged by "
            + ("either gate" if len(verdicts) > 1 and len(unjudged) == len(verdicts) else "a gate it was given")
            + "; that is not a pass"
        )
        return int(ExitCode.CHECK_FAILED)
    _say("\nFAILED" if failed else "\nPASSED")
    return int(ExitCode.CHECK_FAILED) if failed else 0


def _check_reference(path: str, references: Any) -> tuple[bool, int]:
    """(any row failed, rows judged pass or fail)."""
    from analysis.aggregate import load_any
    from analysis.references import check, markdown, unmatched

    results = load_any(path).results
    if results.empty:
        raise NoResultsError(f"no results in {path}")
    table = check(results, references)
    counts = table["status"].value_counts()
    _say(f"Reference check of {path}:\n")
    _say(markdown(table))
    missed = unmatched(results, references)
    _say(
        f"\n{counts.get('pass', 0)} pass, {counts.get('fail', 0)} fail, {counts.get('no reference', 0)} result "
        f"row(s) without a reference; {len(missed)} reference row(s) name a configuration this sweep did not run."
    )
    return bool(counts.get("fail", 0)), int(counts.get("pass", 0) + counts.get("fail", 0))


def _baseline_verdict(r: Any, gate: float) -> tuple[str, str]:
    if r.significant.startswith("only in"):
        return ("no baseline" if r.significant == "only in B" else "not rerun"), ""
    if r.ratio_ci95_high != r.ratio_ci95_high:
        return "no interval (fewer than 2 values)", f" B/A {r.ratio:.3f}"
    ci = f" B/A {r.ratio:.3f}, 95% CI {r.ratio_ci95_low:.3f} – {r.ratio_ci95_high:.3f}"
    return ("FAIL" if r.ratio_ci95_high < gate else "pass"), ci


def _check_baseline(path: str, baseline: str, drop: float) -> tuple[bool, int]:
    """(any row failed, rows judged pass or fail)."""
    table, fields, _ = _compared(baseline, path)
    gate = 1 - drop
    _say(
        f"\nThroughput against the baseline (A = {baseline}, B = {path}); a row fails when its whole "
        f"B/A 95% CI lies below {gate:g}:\n"
    )
    failed, judged = False, 0
    for r in table.itertuples(index=False):
        verdict, ci = _baseline_verdict(r, gate)
        failed |= verdict == "FAIL"
        judged += verdict in ("FAIL", "pass")
        env = " [environment differs]" if r.environment_differs else ""
        _say(f"  {verdict:<5} {_row_name(r)}{ci}{env}")
    _say_confounds(table, fields)
    return failed, judged


def pull_command(remote: str, dest: str, include_logs: bool = False) -> int:
    """rsync a sweep's dumps, ledger, tables and figures (no logs unless asked)."""
    from analysis.pull import pull

    return pull(remote, dest, include_logs)


def _straggler_threshold(text: str) -> float:
    from analysis.stragglers import parse_threshold

    return parse_threshold(text)


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
    p.add_argument(
        "--straggler-threshold",
        type=_straggler_threshold,
        default=None,
        metavar="FRACTION",
        help="a rank straggles above its cell's median step time by more than this (default 10%%)",
    )
    p.add_argument("--reference", metavar="FILE", help="reference values (CSV/YAML) to draw and list in the report")
    p.set_defaults(
        func=lambda ns: aggregate_command(
            ns.paths,
            ns.out,
            figures=not ns.no_figures,
            progress=not ns.no_progress,
            workers=ns.workers,
            straggler_threshold=ns.straggler_threshold,
            reference=ns.reference,
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
        description="Match configurations of A and B and print throughput B/A with its 95% CI\n"
        "(Fieller's method, over repeats or timed steps); significant means the two\n"
        "95% CIs do not overlap.\n\n"
        "Example:\n  dnnbench compare runs/torch24/results runs/torch25/results --fail-below 0.95",
    )
    p.add_argument("a", metavar="A", help="sweep folder, results folder or results table")
    p.add_argument("b", metavar="B", help="sweep folder, results folder or results table")
    p.add_argument("--out", help="also write the comparison as CSV")
    p.add_argument(
        "--fail-below", type=float, metavar="R", help="exit 7 when a row's whole B/A 95%% CI lies below R (e.g. 0.95)"
    )
    p.set_defaults(func=lambda ns: compare_command(ns.a, ns.b, ns.out, ns.fail_below))

    p = subparsers.add_parser(
        "check",
        help="gate a sweep against reference values or a baseline sweep (exit 7 on a miss)",
        formatter_class=_formatter,
        description="Per result row: pass / fail / no reference against a reference file\n"
        '(docs/metrics.md, "Reference files"), and/or fail rows whose throughput fell\n'
        "significantly against a baseline sweep (whole B/A 95% CI below 1 - max drop).\n"
        "Exit 0: every row passed; 7: a row failed; 1: bad input.\n\n"
        "Example:\n  dnnbench check runs/sweep1 --reference docs/reference/thesis_resnet50.csv\n"
        "  dnnbench check runs/after_upgrade --baseline runs/before_upgrade --max-drop 5%",
    )
    p.add_argument("path", metavar="SWEEP", help="sweep folder, results folder or results table")
    p.add_argument("--reference", metavar="FILE", help="reference file (CSV or YAML)")
    p.add_argument("--baseline", metavar="OTHER_SWEEP", help="sweep or results to compare throughput with")
    p.add_argument("--max-drop", default="5%", help="largest tolerated throughput drop vs the baseline (default 5%%)")
    p.set_defaults(func=lambda ns: check_command(ns.path, ns.reference, ns.baseline, ns.max_drop))

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
    from orchestrator.entry_point import run_command  # the same ending as `dnnbench`'s own commands

    def command() -> int:
        parser = argparse.ArgumentParser(prog="dnnbench", description="dnnbench analysis commands")
        add_parsers(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)

    return run_command(command, on_interrupt="files already written are kept; rerun the same command")


__all__ = [
    "AnalysisError",
    "add_parsers",
    "aggregate_command",
    "check_command",
    "compare_command",
    "main",
    "plot_command",
    "pull_command",
    "report_command",
]

if __name__ == "__main__":
    raise SystemExit(main())
