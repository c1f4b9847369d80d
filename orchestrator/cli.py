"""``dnnbench``: one command line, a thin layer over the library.

Heavy imports (torch, hydra, submitit) happen inside the commands, so ``dnnbench
--help`` and the analysis commands work on a laptop without them. Errors the user
can fix print ``Error: …`` and exit 1; ``DNNBENCH_FULL_ERROR=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from orchestrator.errors import DnnbenchError, ExitCode

EPILOG_OVERRIDES = "Overrides use Hydra's grammar: key=value, a,b,c, range(1,4), glob(resnet*)."


def _progress(total: int, description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    progress = Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), transient=False, disable=total < 2,
    )  # fmt: skip
    return progress, progress.add_task(description, total=total)


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrator import sweep
    from orchestrator.runner import run_cell
    from orchestrator.submit import prepare

    plan = sweep.plan(args.overrides)
    if len(plan.cells) != 1:
        raise DnnbenchError(
            f"run takes one cell, these overrides give {len(plan.cells)} (sweep values or repeats>1): "
            "use `dnnbench sweep` for grids"
        )
    (cell,) = plan.cells
    if cell.unavailable:
        raise DnnbenchError(cell.unavailable)
    root = Path(args.out or Path("outputs") / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{cell.id}")
    paths, ledger = prepare(plan, root.resolve())
    with ledger:
        submission, (attempt,) = ledger.begin_submission(
            f"run-{cell.id}-{time.time_ns()}", "local", "this machine", [cell.id], None
        )
        ledger.finish_submission(submission, str(os.getpid()), "submitted")
    out_dir = paths.cell(cell.id).attempt(attempt)
    print(f"dnnbench run: {cell.label} (cell {cell.id}) → {out_dir}", flush=True)
    outcome = run_cell(str(paths.cell(cell.id).cell_file), str(out_dir), echo=not args.quiet)
    print(_run_summary(out_dir, outcome))
    return 0


def _run_summary(out_dir: Path, outcome: dict) -> str:
    from jobs import schema

    docs = [schema.load(p) for p in sorted(out_dir.glob("rank_*.json"))]
    lines = [f"completed in {outcome['seconds']:.1f} s: {len(docs)} rank dumps in {out_dir}"]
    for phase in ("train", "val"):
        counting = [d for d in docs if d["counts_samples"]]
        samples = sum(d["phases"][phase]["samples"] for d in counting)
        seconds = max((d["phases"][phase]["seconds"] for d in docs), default=0.0)
        rate = samples / seconds if seconds else 0.0
        lines.append(f"  {phase:5s} global throughput {rate:9.1f} samples/s over {len(docs)} ranks")
    evaluated = sum(d["phases"]["val"]["evaluated"] or 0 for d in docs)
    if evaluated:
        correct = sum(d["phases"]["val"]["correct"] or 0 for d in docs)
        lines.append(f"  val accuracy {correct / evaluated:.4f} ({evaluated} predictions)")
    return "\n".join(lines)


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator import sweep
    from orchestrator.submit import default_sweep_dir, submit

    points = sweep.grid(args.overrides)
    progress, task = _progress(len(points), "planning cells")
    with progress:
        plan = sweep.plan(
            args.overrides,
            progress=lambda done, total: progress.update(task, completed=done),
            check_data=not args.dry_run,
        )
    sweep_dir = Path(args.sweep_dir).resolve() if args.sweep_dir else default_sweep_dir(args.overrides)
    if args.dry_run:
        from orchestrator.config import data_problems

        for problem in sorted({p for cell in plan.cells for p in data_problems(cell.config)}):
            print(f"warning (dry run): {problem}", file=sys.stderr)
        for cell in plan.cells:
            print(f"{cell.id}  {cell.label}" + (f"  [unavailable: {cell.unavailable}]" if cell.unavailable else ""))
    submitted, task = _progress(0 if args.dry_run else len(plan.cells), "running cells")
    with submitted:
        report = submit(plan, sweep_dir, dry_run=args.dry_run, progress=lambda n: submitted.advance(task, n))
    for cell in report.unavailable:
        print(f"cell {cell.id} ({cell.label}) not submitted: {cell.unavailable}", file=sys.stderr)
    shapes = "; ".join(f"{len(g.cells)} × [{g.shape.describe()}]" for g in report.groups)
    if args.dry_run:
        arrays = len(report.scripts) or len(report.groups)
        print(f"dry run: {len(plan.cells)} cells, {arrays} array(s) in {len(report.groups)} shape(s): {shapes or '-'}")
        print(f"nothing submitted; scripts (if any) under {report.paths.jobs}")
        print(report.paths.root)
        return 0
    if report.already_submitted:
        print(f"{report.already_submitted} cell(s) already submitted earlier: left alone")
    if report.job_ids:
        submitted_cells = sum(len(g.cells) for g in report.groups) - report.not_submitted
        print(f"submitted {submitted_cells} cell(s) as job(s) "
              f"{', '.join(report.job_ids[:20])}{' …' if len(report.job_ids) > 20 else ''}")  # fmt: skip
    if report.not_submitted:
        print(
            f"{report.not_submitted} cell(s) not submitted: {report.not_submitted_reason}. They stay 'missing'; "
            f"rerun the same command, or `dnnbench resubmit {report.paths.root}`, once the queue has room."
        )
    if not report.detached:
        _print_status(report.paths.root)
        if not args.no_aggregate:
            _aggregate(report.paths.root)
    else:
        print(f"check progress: dnnbench status {report.paths.root}")
    print(report.paths.root)
    return 0


def _aggregate(sweep_dir: Path) -> None:
    try:
        from analysis.cli import aggregate_command
    except ImportError as err:  # analysis not installed in this environment
        print(f"aggregation skipped: {err}", file=sys.stderr)
        return
    try:
        aggregate_command([str(sweep_dir)], None)
    except DnnbenchError as err:  # e.g. no completed cell: the status table above says why
        print(f"aggregation: {err}", file=sys.stderr)
        return
    table = Path(sweep_dir) / "results" / "results.md"
    if table.exists():  # the results table itself, as the README promises
        print(table.read_text())


def _print_status(sweep_dir: Path, as_json: bool = False) -> list:
    from rich.console import Console
    from rich.table import Table

    from orchestrator.paths import SweepPaths
    from orchestrator.status import collect, summary

    paths = SweepPaths(Path(sweep_dir))
    if not paths.ledger.exists():
        raise DnnbenchError(f"{sweep_dir} is not a sweep folder (no ledger.sqlite)")
    statuses = collect(paths)
    if as_json:
        print(json.dumps([s.__dict__ for s in statuses], indent=1))
        return statuses
    table = Table(title=f"{paths.root}")
    for column in ("cell", "label", "state", "class", "attempt", "job", "detail"):
        table.add_column(column, overflow="fold")
    for s in statuses:
        attempt = "" if s.attempt is None else str(s.attempt)
        table.add_row(s.cell_id, s.label, s.state, s.failure_class or "", attempt, s.job or "", s.detail[:200])
    # Piped or logged output gets a width that fits the cell labels (rich would use 80).
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    print(summary(statuses))
    return statuses


def cmd_status(args: argparse.Namespace) -> int:
    if not args.watch:
        _print_status(args.sweep_dir, args.json)
        return 0
    while True:
        statuses = _print_status(args.sweep_dir)
        if all(s.state in ("completed", "failed", "missing") for s in statuses):
            return 0
        time.sleep(args.watch)


def cmd_wait(args: argparse.Namespace) -> int:
    from orchestrator.paths import SweepPaths
    from orchestrator.status import TERMINAL, collect, summary

    deadline = time.monotonic() + args.timeout if args.timeout else None
    while True:
        statuses = collect(SweepPaths(Path(args.sweep_dir)))
        if all(s.state in TERMINAL for s in statuses):
            print(summary(statuses))
            return 0 if all(s.state == "completed" for s in statuses) else 1
        if deadline is not None and time.monotonic() > deadline:
            print(f"timeout: {summary(statuses)}", file=sys.stderr)
            return 2
        time.sleep(args.interval)


def cmd_resubmit(args: argparse.Namespace) -> int:
    from orchestrator.paths import SweepPaths
    from orchestrator.resubmit import resubmit

    paths = SweepPaths(Path(args.sweep_dir).resolve())
    if not paths.ledger.exists():
        raise DnnbenchError(f"{args.sweep_dir} is not a sweep folder (no ledger.sqlite)")
    report = resubmit(paths, force=args.force, include_unretryable=args.include_unretryable, dry_run=args.dry_run)
    for status, why in report.skipped:
        print(f"not retried: {status.cell_id} {status.label} ({status.failure_class}): {why}")
    if not report.chosen:
        print("nothing to resubmit: no failed or missing cells")
        return 0
    print(
        f"resubmitting {len(report.chosen)} cell(s): "
        + ", ".join(f"{s.cell_id} ({s.state}{':' + s.failure_class if s.failure_class else ''})" for s in report.chosen)
    )
    submitted = report.submitted
    if submitted is not None:
        for cell in submitted.unavailable:
            print(f"still unavailable: {cell.id}: {cell.unavailable}", file=sys.stderr)
        if submitted.job_ids:
            print(f"submitted as job(s) {', '.join(submitted.job_ids)}")
        if submitted.not_submitted:
            print(f"{submitted.not_submitted} cell(s) not submitted: {submitted.not_submitted_reason}; "
                  "run resubmit again once the queue has room")  # fmt: skip
        if not submitted.detached:
            _print_status(paths.root)
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from orchestrator import pipeline_commands

    command = {"plan": pipeline_commands.plan_command, "profile": pipeline_commands.profile_command}
    print(command[args.pipeline_command](args.overrides, refresh=args.refresh))
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from jobs.environment import fingerprint
    from jobs.schema import environment_hash

    env = fingerprint()
    if args.json:
        print(json.dumps({"environment": env, "environment_hash": environment_hash(env)}, indent=1))
        return 0
    for key, value in env.items():
        print(f"{key:22s} {value}")
    print(f"{'environment_hash':22s} {environment_hash(env)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dnnbench",
        description="Benchmark distributed deep-learning training frameworks on SLURM.",
        epilog="Example: dnnbench run model=resnet18 gpus=2 steps=20   (each COMMAND --help has more)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run one cell on this machine",
                         description="Run one cell here (torchrun/horovodrun as a subprocess).\n"
                         "Example: dnnbench run framework=ddp model=resnet18 gpus=2 dataset=synthetic steps=20",
                         epilog=EPILOG_OVERRIDES, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    run.add_argument("overrides", nargs="*")
    run.add_argument("--out", help="folder for this run (default outputs/runs/<time>-<cell id>)")
    run.add_argument("--quiet", action="store_true", help="do not echo the ranks' output")
    run.set_defaults(func=cmd_run)

    sw = sub.add_parser("sweep", help="expand a grid and run or submit every cell",
                        description="Expand Hydra overrides into cells and run them (cluster=local) or submit "
                        "them as Slurm arrays (cluster=slurm|lisa|snellius).\n"
                        "Example: dnnbench sweep +sweep=quickstart\n"
                        "Example: dnnbench sweep framework=ddp model=resnet18,resnet50 gpus=1,2 cluster=slurm",
                        epilog=EPILOG_OVERRIDES, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sw.add_argument("overrides", nargs="*")
    sw.add_argument("--sweep-dir", help="sweep folder (default outputs/sweeps/<preset>-<hash of the arguments>)")
    sw.add_argument("--dry-run", action="store_true", help="list cells and arrays, write scripts, submit nothing")
    sw.add_argument("--no-aggregate", action="store_true", help="local sweeps: skip the results table")
    sw.set_defaults(func=cmd_sweep)

    st = sub.add_parser("status", help="table of cell states of a sweep",
                        description="Cell states from the cell files and one batched scheduler query.\n"
                        "Example: dnnbench status outputs/sweeps/quickstart-1a2b3c4d --watch 10",
                        formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    st.add_argument("sweep_dir")
    st.add_argument("--watch", type=float, metavar="SECONDS", help="refresh until every cell is terminal")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    wt = sub.add_parser("wait", help="block until every cell of a sweep is terminal",
                        description="Exit 0 when all cells completed, 1 when some failed, 2 on timeout.\n"
                        "Example: dnnbench wait outputs/sweeps/quickstart-1a2b3c4d --timeout 3600",
                        formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    wt.add_argument("sweep_dir")
    wt.add_argument("--timeout", type=float, help="seconds")
    wt.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    wt.set_defaults(func=cmd_wait)

    rs = sub.add_parser("resubmit", help="resubmit failed and missing cells only",
                        description="New attempts for failed and missing cells; completed cells are left alone "
                        "unless --force names them. Earlier attempts' files are kept.\n"
                        "Example: dnnbench resubmit outputs/sweeps/quickstart-1a2b3c4d",
                        formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    rs.add_argument("sweep_dir")
    rs.add_argument("--force", action="append", metavar="CELL_ID", help="also rerun this cell (repeatable)")
    rs.add_argument("--include-unretryable", action="store_true", help="also retry oom/unavailable cells")
    rs.add_argument("--dry-run", action="store_true", help="say what would be resubmitted, submit nothing")
    rs.set_defaults(func=cmd_resubmit)

    env = sub.add_parser("env", help="print this machine's environment fingerprint",
                         description="The fingerprint every rank records.\nExample: dnnbench env --json",
                         formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    env.add_argument("--json", action="store_true")
    env.set_defaults(func=cmd_env)

    for name, text, example in (
        ("plan", "print the pipeline plan for a config", "dnnbench plan model=resnet50 gpus=4"),
        ("profile", "profile a model's blocks (cached)", "dnnbench profile model=resnet50 batch_size=32"),
    ):
        cmd = sub.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}.\nExample: {example}",
                             epilog=EPILOG_OVERRIDES, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        cmd.add_argument("overrides", nargs="*")
        cmd.add_argument("--refresh", action="store_true",
                         help="measure the profile again and replace the cached one")  # fmt: skip
        cmd.set_defaults(func=cmd_pipeline, pipeline_command=name)

    try:
        from analysis.cli import add_parsers as add_analysis_parsers
    except ImportError:
        pass
    else:
        add_analysis_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DnnbenchError, FileNotFoundError, ValueError) as err:
        if os.environ.get("DNNBENCH_FULL_ERROR") == "1":
            raise
        print(f"Error: {err}", file=sys.stderr)
        return int(getattr(err, "exit_code", ExitCode.ERROR))
    except KeyboardInterrupt:
        print("interrupted: the ledger keeps what was submitted; rerun the same command to continue",
              file=sys.stderr)  # fmt: skip
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
