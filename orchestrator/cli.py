"""``dnnbench``: one command line, a thin layer over the library.

Heavy imports (torch, hydra, submitit) happen inside the commands, so ``dnnbench
--help`` and the analysis commands work on a laptop without them. Errors the user
can fix print ``Error: …`` and exit with the code of :class:`orchestrator.errors.ExitCode`
(the README's table); ``DNNBENCH_FULL_ERROR=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConfigError, DnnbenchError, ExitCode

if TYPE_CHECKING:  # the commands import these themselves: `dnnbench --help` stays light
    from orchestrator.paths import SweepPaths
    from orchestrator.status import CellStatus
    from orchestrator.submit import SubmitReport
    from orchestrator.sweep import Cell, SweepPlan

EPILOG_OVERRIDES = "Overrides use Hydra's grammar: key=value, a,b,c, range(1,4), glob(resnet*)."


def _progress(total: int | None, description: str, *, on_stderr: bool = False):
    """A progress bar; ``total`` None: known once the work starts (the bar shows from then on).

    ``on_stderr``: stdout holds output another program reads (JSON, YAML), and nothing else.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    progress = Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), transient=False, disable=total is not None and total < 2,
        console=Console(stderr=True) if on_stderr else None,
    )  # fmt: skip
    return progress, progress.add_task(description, total=total)


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrator import sweep
    from orchestrator.backends.local import begin_here, interruption, settle_interrupted, signals_held
    from orchestrator.ledger import Ledger
    from orchestrator.lock import sweep_lock
    from orchestrator.paths import SweepPaths
    from orchestrator.submit import prepare, sweep_folder

    if args.out is not None and not args.out.strip():
        raise ConfigError("--out is empty: name a folder, or leave the option out for the default")
    if args.out:  # a wrong --out is refused before the cell is planned
        SweepPaths.writable(args.out)
    plan = sweep.plan(args.overrides)
    if len(plan.cells) != 1:
        raise DnnbenchError(
            f"run takes one cell, these overrides give {len(plan.cells)} (sweep values or repeats>1): "
            "use `dnnbench sweep` for grids"
        )
    (cell,) = plan.cells
    if cell.unavailable:
        raise DnnbenchError(cell.unavailable)
    root = Path(args.out or Path("outputs") / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{cell.id}").resolve()
    with sweep_lock(_created(sweep_folder(plan, root)), "dnnbench run"):  # status sees the cell run, never twice
        paths, ledger = prepare(plan, root)
        with ledger:
            job, attempt = begin_here(ledger, cell.id)
        try:
            return _run_here(paths, cell, attempt, echo=not args.quiet)
        except KeyboardInterrupt as err:  # the user's stop: `status` says interrupted, not failed
            with signals_held(), Ledger(paths.ledger) as ledger:
                settle_interrupted(ledger, job, interruption(err))
            raise


def _created(paths: SweepPaths) -> SweepPaths:
    paths.root.mkdir(parents=True, exist_ok=True)
    return paths


def _run_here(paths: SweepPaths, cell: Cell, attempt: int, *, echo: bool) -> int:
    from orchestrator.runner import run_cell

    out_dir = paths.cell(cell.id).attempt(attempt)
    print(f"dnnbench run: {cell.label} (cell {cell.id}) → {out_dir}", flush=True)
    # A failed cell raises CellFailedError: exit 3, with the outcome's reasons and the log's tail.
    outcome = run_cell(str(paths.cell(cell.id).cell_file), str(out_dir), echo=echo)
    print(_run_summary(out_dir, outcome))
    return ExitCode.OK


def _run_summary(out_dir: Path, outcome: dict) -> str:
    from jobs import schema
    from jobs.throughput import global_throughput
    from orchestrator.paths import AttemptPaths

    docs = [schema.load(p) for p in AttemptPaths(out_dir).rank_dumps()]
    lines = [f"completed in {outcome['seconds']:.1f} s: {len(docs)} rank dumps in {out_dir}"]
    for phase in ("train", "val"):
        rate = global_throughput(docs, phase).samples_per_s  # the analysis's number for these dumps
        lines.append(f"  {phase:5s} global throughput {rate:9.1f} samples/s over {len(docs)} ranks")
    evaluated = sum(d["phases"]["val"]["evaluated"] or 0 for d in docs)
    if evaluated:
        correct = sum(d["phases"]["val"]["correct"] or 0 for d in docs)
        lines.append(f"  val accuracy {correct / evaluated:.4f} ({evaluated} predictions)")
    return "\n".join(lines)


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator import sweep
    from orchestrator.cell_identity import merge_notes
    from orchestrator.paths import SweepPaths
    from orchestrator.submit import default_sweep_dir, preview, submit

    _check_output_options(args)  # the command line alone says it: before the folder is looked at
    if args.sweep_dir is not None and not args.sweep_dir.strip():
        raise ConfigError("--sweep-dir is empty: name a folder, or leave the option out for the default")
    sweep_dir = Path(args.sweep_dir).resolve() if args.sweep_dir else default_sweep_dir(args.overrides)
    SweepPaths.writable(sweep_dir)  # a wrong folder is refused before a long plan, and nothing is written
    machine_output = args.json or args.cfg is not None
    progress, task = _progress(None, "planning cells", on_stderr=machine_output)

    def planned(done: int, total: int) -> None:
        if done % 500 == 0 or done == total:  # a redraw per cell would cost more than planning it
            progress.update(task, completed=done, total=total)

    with progress:
        plan = sweep.plan(args.overrides, progress=planned, check_data=not (args.dry_run or args.cfg is not None))
    for note in merge_notes(plan.merged):  # never a silent merge of grid points
        print(f"note: {note}", file=sys.stderr if machine_output else sys.stdout)
    if args.cfg is not None:
        return _print_cell_config(plan, args.cfg)
    if args.dry_run:
        return _dry_run(plan, preview(plan, sweep_dir), listing=args.list, as_json=args.json)
    submitted, task = _progress(len(plan.cells), "running cells")
    with submitted:
        report = submit(plan, sweep_dir, progress=lambda n: submitted.advance(task, n))
    _print_unavailable(report.unavailable, listing=False, more=f"`dnnbench status {report.paths.root}` lists them")
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
    if report.detached:  # queued: `dnnbench wait` gives the cells' verdict
        print(f"check progress: dnnbench status {report.paths.root}")
        print(report.paths.root)
        return ExitCode.OK
    statuses = _print_status(report.paths.root)
    if not args.no_aggregate:
        _aggregate(report.paths.root)
    print(report.paths.root)
    planned_ids = {cell.id for cell in plan.cells}
    return _verdict([s for s in statuses if s.cell_id in planned_ids])


def _verdict(statuses: list[CellStatus]) -> int:
    """0 when every cell completed; 3 when one failed, is missing, or was never planned to run."""
    return ExitCode.OK if all(s.state == "completed" for s in statuses) else ExitCode.CELLS_FAILED


class OptionsError(ConfigError):
    """Options that cannot all be honoured: a wrong command line, as argparse's own errors are."""

    exit_code = ExitCode.USAGE


def _check_output_options(args: argparse.Namespace) -> None:
    """--list, --json and --cfg print what a dry run plans; refused (exit 2) where they would be ignored.

    Refused rather than ignored because an ignored ``--list`` made ``sweep --list`` plan and submit
    the whole grid, when the user asked to see it; checked before anything is planned or written.
    ``--cfg`` with ``--dry-run`` is accepted: both promise that nothing is submitted, and --cfg keeps it.
    """
    if args.cfg is not None and "=" in args.cfg:
        # `--cfg key=value …`: an override, never a cell id (12 hex digits); --cfg then takes the grid's one cell.
        args.overrides.insert(0, args.cfg)
        args.cfg = ""
    if args.json and not (args.dry_run and args.list):
        raise OptionsError("--json prints the planned cells: use it as --dry-run --list --json")
    if args.cfg is not None and (args.json or args.list):
        raise OptionsError("--cfg prints one cell's config as YAML; --list (--json) prints every cell: choose one")
    if args.list and not args.dry_run:
        raise OptionsError("--list prints the cells a dry run plans: use it as --dry-run --list (without --dry-run "
                           "the sweep is submitted)")  # fmt: skip


def _cell_record(cell: Cell) -> dict[str, Any]:
    """A planned cell as ``--dry-run --list --json`` prints it: everything that says what it runs."""
    return {"id": cell.id, "label": cell.label, "unavailable": cell.unavailable,
            "overrides": cell.overrides, "config": cell.config}  # fmt: skip


def _print_cell_config(plan: SweepPlan, wanted: str) -> int:
    """``--cfg [CELL_ID]``: one planned cell's resolved config as YAML (Hydra's ``--cfg job``); nothing is written."""
    import yaml

    if not plan.cells:
        raise ConfigError("--cfg: the grid plans no cell")
    if not wanted and len(plan.cells) > 1:
        raise ConfigError(
            f"--cfg: the grid plans {len(plan.cells)} cells; name one (--cfg CELL_ID), "
            "`--dry-run --list` shows their ids"
        )
    chosen = [cell for cell in plan.cells if cell.id == wanted] if wanted else plan.cells
    if not chosen:
        raise ConfigError(f"--cfg {wanted}: no cell of this grid has that id (`--dry-run --list` shows them)")
    cell = chosen[0]
    print(f"# cell {cell.id}: {cell.label}")
    print(yaml.safe_dump(cell.config, sort_keys=False, default_flow_style=False), end="")
    return ExitCode.OK


def _dry_run(plan: SweepPlan, report: SubmitReport, *, listing: bool, as_json: bool = False) -> int:
    """A dry run's summary (every cell only with --list): 100,000 cells must not be 100,000 lines.

    ``as_json``: stdout holds the cells alone, one JSON object a line; the summary goes to stderr.
    """
    if not as_json:
        return _dry_run_summary(plan, report, listing=listing)
    for cell in plan.cells:
        print(json.dumps(_cell_record(cell)))
    with contextlib.redirect_stdout(sys.stderr):
        return _dry_run_summary(plan, report, listing=True, cells_printed=True)


def _dry_run_summary(plan: SweepPlan, report: SubmitReport, *, listing: bool, cells_printed: bool = False) -> int:
    from orchestrator.config import data_problems

    for problem in sorted({p for cell in plan.cells for p in data_problems(cell.config)}):
        print(f"warning (dry run): {problem}", file=sys.stderr)
    if listing and not cells_printed:
        for cell in plan.cells:
            print(f"{cell.id}  {cell.label}" + (f"  [unavailable: {cell.unavailable}]" if cell.unavailable else ""))
    _print_unavailable(report.unavailable, listing=listing, more="--list prints every cell")
    shapes = [f"{len(g.cells)} × [{g.shape.describe()}]" for g in report.groups]
    listed = "; ".join(shapes[:_SHAPES_SHOWN])
    if len(shapes) > _SHAPES_SHOWN:
        listed += f"; … {len(shapes) - _SHAPES_SHOWN} more"
    arrays = len(report.scripts) or len(report.groups)
    print(f"dry run: {len(plan.cells)} cells, {arrays} array(s) in {len(report.groups)} shape(s): {listed or '-'}")
    frameworks = Counter(cell.config["framework"]["name"] for cell in plan.cells)
    print("  by framework: " + ", ".join(f"{name} {n}" for name, n in sorted(frameworks.items())))
    to_submit = sum(len(g.cells) for g in report.groups)
    print(f"  to submit: {to_submit}; unavailable here: {len(report.unavailable)}; "
          f"already submitted earlier: {report.already_submitted}")  # fmt: skip
    if not listing:
        print("  (--list prints every cell)")
    if report.scripts:
        print(f"nothing submitted; {len(report.scripts)} script(s) under {report.paths.jobs}")
    else:
        print("nothing submitted, nothing written")
    print(report.paths.root)
    return ExitCode.OK


_SHAPES_SHOWN = 12
_UNAVAILABLE_SHOWN = 10


def _print_unavailable(cells: list[Cell], *, listing: bool, more: str) -> None:
    """One line per reason a cell cannot run here, with its cells (the first few unless ``listing``)."""
    by_reason: dict[str | None, list[Cell]] = {}
    for cell in cells:
        by_reason.setdefault(cell.unavailable, []).append(cell)
    for reason, group in by_reason.items():
        print(f"{len(group)} cell(s) not submitted: {reason}", file=sys.stderr)
        shown = group if listing else group[:_UNAVAILABLE_SHOWN]
        for cell in shown:
            print(f"  {cell.id} ({cell.label})", file=sys.stderr)
        if len(shown) < len(group):
            print(f"  … and {len(group) - len(shown)} more ({more})", file=sys.stderr)


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
    from orchestrator.paths import SweepPaths

    table = SweepPaths(Path(sweep_dir)).results / "results.md"
    if table.exists():  # the results table itself, as the README promises
        print(table.read_text())


def _print_status(sweep_dir: Path, as_json: bool = False) -> list:
    from rich.console import Console
    from rich.table import Table

    from orchestrator.paths import SweepPaths
    from orchestrator.status import collect, summary

    paths = SweepPaths.existing(sweep_dir)
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


class _DeadlinePassed(Exception):
    """``wait --timeout`` ran out while a read was still under way."""


@contextmanager
def _bounded(seconds: float | None) -> Iterator[None]:
    """Raise :class:`_DeadlinePassed` in whatever this process is doing ``seconds`` from now.

    The alarm interrupts a read blocked in the kernel (PEP 475: the handler's exception ends the
    call). Code that never returns to Python (SQLite's own wait on a lock) is bounded by a backstop
    that ends the process with the timeout's exit code a little later.
    """
    if seconds is None:
        yield
        return

    def passed(signum: int, frame: Any) -> None:
        raise _DeadlinePassed

    previous = signal.signal(signal.SIGALRM, passed)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    backstop = threading.Timer(seconds + WAIT_BACKSTOP_S, _timed_out_hard)
    backstop.daemon = True
    backstop.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        backstop.cancel()


# How long past its --timeout a `wait` stuck outside Python (a lock wait in SQLite) may take.
WAIT_BACKSTOP_S = 5.0


def _timed_out_hard() -> None:
    print("timeout: a read did not return by the deadline", file=sys.stderr, flush=True)
    os._exit(ExitCode.TIMEOUT)


def cmd_wait(args: argparse.Namespace) -> int:
    from orchestrator.paths import SweepPaths
    from orchestrator.status import TERMINAL, collect, summary

    paths = SweepPaths.existing(args.sweep_dir)
    deadline = time.monotonic() + args.timeout if args.timeout is not None else None  # 0: look once
    statuses: list[Any] = []
    try:
        # --timeout bounds the whole command: every read of every round, and every sleep.
        with _bounded(args.timeout if args.timeout else None):
            while True:
                statuses = collect(paths)
                # No cell recorded yet: the sweep is still being prepared, not "all completed".
                if statuses and all(s.state in TERMINAL for s in statuses):
                    print(summary(statuses))
                    return _verdict(statuses)
                if deadline is not None and time.monotonic() >= deadline:
                    break
                left = deadline - time.monotonic() if deadline is not None else args.interval
                time.sleep(max(min(args.interval, left), 0))
    except _DeadlinePassed:
        pass
    print(f"timeout: {summary(statuses) or 'no cell recorded yet'}", file=sys.stderr)
    return ExitCode.TIMEOUT


def cmd_resubmit(args: argparse.Namespace) -> int:
    from orchestrator.paths import SweepPaths
    from orchestrator.resubmit import resubmit

    paths = SweepPaths.existing(args.sweep_dir)
    report = resubmit(
        paths,
        force=args.force,
        include_unretryable=args.include_unretryable,
        dry_run=args.dry_run,
        exclude_nodes=args.exclude_nodes,
    )
    for status, why in report.skipped:
        print(f"not retried: {status.cell_id} {status.label} ({status.failure_class or status.state}): {why}")
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


def cmd_env_create(args: argparse.Namespace) -> int:
    from orchestrator import environments_create

    specs = [word for text in args.pip or [] for word in text.split()]
    environments_create.create(args.name, specs, base=args.base, preload=args.preload,
                               variables=environments_create.parse_variables(args.variable or []))  # fmt: skip
    return 0


def cmd_env_list(args: argparse.Namespace) -> int:
    from orchestrator import environments_create

    for name in environments_create.definitions():
        facts = environments_create.summary(name)
        torch = f"torch {facts['torch']}, {facts['packages']} packages" if "torch" in facts else "no lock"
        print(f"{name:16s} {facts['python'] or sys.executable}  ({torch}; {len(facts['variables'])} variables)")
    return 0


def cmd_env_show(args: argparse.Namespace) -> int:
    from orchestrator import environments_create

    facts = environments_create.summary(args.name)
    if args.json:
        print(json.dumps(facts, indent=1))
        return 0
    for key, value in facts.items():
        print(f"{key:14s} {value}")
    return 0


def add_env_parsers(env: argparse.ArgumentParser) -> None:
    """`dnnbench env create|list|show` (docs/environments.md); `dnnbench env` alone prints the fingerprint."""
    actions = env.add_subparsers(dest="env_command", metavar="ACTION")
    create = actions.add_parser("create", help="build a venv, write its definition and lock",
                                description="Example: dnnbench env create numpy2 --base current --pip 'numpy==2.3.1'\n"
                                "Example: dnnbench env create jem --base current "
                                "--preload /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 --variable MALLOC_CONF=narenas:1",
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    create.add_argument("name")
    create.add_argument("--pip", action="append", metavar="SPECS", help="pip requirement specs (repeatable)")
    create.add_argument("--base", choices=["current"],
                        help="see the current packages and install only --pip on top (fast)")  # fmt: skip
    create.add_argument("--variable", action="append", metavar="NAME=VALUE", help="set for every rank (repeatable)")
    create.add_argument("--preload", metavar="LIB", help="LD_PRELOAD for every rank (e.g. libjemalloc.so.2)")
    create.set_defaults(func=cmd_env_create)
    listing = actions.add_parser("list", help="every environment env=NAME finds",
                                 description="Example: dnnbench env list")  # fmt: skip
    listing.set_defaults(func=cmd_env_list)
    show = actions.add_parser("show", help="an environment's definition and lock summary",
                              description="Example: dnnbench env show numpy2")  # fmt: skip
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_env_show)


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
    sw.add_argument("--dry-run", action="store_true",
                    help="count cells and arrays, write batch scripts (Slurm); no cell folders")  # fmt: skip
    sw.add_argument("--list", action="store_true", help="only with --dry-run: also print every cell")
    sw.add_argument("--json", action="store_true",
                    help="only with --dry-run --list: every cell as one JSON object a line "
                         "(id, label, full config)")  # fmt: skip
    sw.add_argument("--cfg", nargs="?", const="", metavar="CELL_ID",
                    help="print one planned cell's full config as YAML and stop (the grid's only cell "
                         "when no id is given); nothing is written")  # fmt: skip
    sw.add_argument("--no-aggregate", action="store_true", help="local sweeps: skip the results table")
    sw.set_defaults(func=cmd_sweep)

    st = sub.add_parser("status", help="table of cell states of a sweep",
                        description="Cell states from the cell files and one batched scheduler query. "
                        "Exit 0 (it reports), 4 when the path is not a sweep.\n"
                        "Example: dnnbench status outputs/sweeps/quickstart-1a2b3c4d --watch 10",
                        formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    st.add_argument("sweep_dir")
    st.add_argument("--watch", type=float, metavar="SECONDS", help="refresh until every cell is terminal")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    wt = sub.add_parser("wait", help="block until every cell of a sweep is terminal",
                        description="Exit 0 when all cells completed, 3 when some failed or are missing, "
                        "5 on timeout, 4 when the path is not a sweep.\n"
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
    rs.add_argument("--exclude-nodes", metavar="NODES",
                    help="Slurm: keep new attempts off these nodes (sbatch --exclude: node2,node[5-7])")  # fmt: skip
    rs.set_defaults(func=cmd_resubmit)

    env = sub.add_parser("env", help="print this machine's environment fingerprint",
                         description="The fingerprint every rank records.\nExample: dnnbench env --json",
                         formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    env.add_argument("--json", action="store_true")
    env.set_defaults(func=cmd_env)
    add_env_parsers(env)

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


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Overrides may come before and after options (`run model=x --out D seed=1`), as in Hydra's CLI.

    argparse alone stops the overrides at the first option and calls the rest unrecognised.
    """
    args, rest = parser.parse_known_args(argv)
    if rest and isinstance(getattr(args, "overrides", None), list) and not any(a.startswith("-") for a in rest):
        args.overrides += rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def main(argv: list[str] | None = None) -> int:
    from orchestrator.entry_point import run_command

    def command() -> int:
        args = _parse(build_parser(), argv)  # inside: `--help | head -1` is pipe-safe too
        return int(args.func(args) or 0)

    return run_command(command, on_interrupt=INTERRUPTED_HINT)


INTERRUPTED_HINT = "the ledger keeps what was submitted; rerun the same command to continue"


if __name__ == "__main__":
    sys.exit(main())
