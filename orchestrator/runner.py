"""Run one cell on the node(s) it was given: start the launcher, then judge the dumps.

This is the function every backend executes (a local subprocess, a Slurm array
task). It never decides from the exit code alone: a cell is completed only when
every rank's dump is present and valid.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jobs import schema
from jobs.atomic import write_atomic_text
from jobs.failures import rank_failure
from jobs.launchers import LaunchSpec, get_launcher
from orchestrator.containers import CONTAINER_VARIABLE, environment_container_variables, node_container_problems
from orchestrator.entry_point import no_room_reason
from orchestrator.environments import interpreter, rank_variables, setup_wrapped
from orchestrator.errors import CellFailedError
from orchestrator.paths import AttemptPaths

# A write refused for lack of room, as a rank's traceback prints it: "[Errno 28] No space left on device: 'P'".
_NO_ROOM_IN_OUTPUT = re.compile(r"\[Errno (?:28|122|30)\] ([^:'\n]+?)(?:: '([^'\n]*)')?\s*$")
# Writes this cell's launcher and ranks could not make for lack of room ("no space left on device: P"), in
# order; module state, not an argument, so that _run_logged keeps the signature test hooks wrap.
_NO_ROOM_SEEN: list[str] = []

# Set for every framework alike (torchrun would set OMP_NUM_THREADS=1, horovodrun nothing).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class NodeContext:
    """Where this copy of the runner is: which node of how many, and the job's hosts."""

    node_rank: int = 0
    nnodes: int = 1
    hosts: tuple[str, ...] = ("127.0.0.1",)
    job_id: str = field(default_factory=lambda: str(os.getpid()))
    restart_count: int = 0


@dataclass
class Outcome:
    state: str  # completed | failed
    failure_class: str | None = None
    returncode: int | None = None
    ranks_expected: int = 0
    ranks_valid: int = 0
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0


def write_outcome(path: Path, outcome: Outcome, *, durable: bool = True) -> None:
    """An attempt's outcome.json. ``durable=False``: no fsyncs, for fixtures of thousands of attempts."""
    schema.write_atomic(path, asdict(outcome), durable=durable)


def rank_environment(config: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(config["threads_per_process"])
    for name in THREAD_ENV:
        env[name] = threads
    env["PYTHONUNBUFFERED"] = "1"
    # The cell's environment last: what it declares is what its ranks get (horovodrun forwards them all).
    env.update(rank_variables(config.get("env") or {}))
    # What this cell declares, never a value inherited from the shell that started dnnbench.
    env.pop(CONTAINER_VARIABLE, None)
    env.update(environment_container_variables(config.get("env") or {}))
    # Ranks import jobs/ from this checkout even when dnnbench is not installed on the node.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def judge_attempt(
    out_dir: Path, world_size: int, cell_config: dict[str, Any] | None = None, cell_id: str | None = None
) -> tuple[int, list[str]]:
    """(valid rank dumps, every reason the attempt is not complete and meaningful; [] when it is).

    The reader's rules (:func:`jobs.schema.read_attempt`): each dump valid in type and meaning,
    of this cell's config, and the ranks consistent with each other. Reasons can exist with
    every dump valid (ranks that disagree): the attempt has failed then too.
    """
    docs, reasons = schema.read_attempt(out_dir, world_size, cell_config, cell_id)
    return len(docs), reasons


def _set_aside_interrupted(out_dir: Path, restart: int) -> None:
    """A requeued attempt starts clean; what the interrupted run left is kept beside it."""
    if out_dir.exists() and any(out_dir.iterdir()):
        shutil.move(str(out_dir), str(AttemptPaths(out_dir).set_aside(restart)))


def run_cell(cell_file: str, out_dir: str, node: NodeContext | None = None, echo: bool = False) -> dict[str, Any]:
    """Run the cell described by ``cell_file`` writing into ``out_dir``; returns the outcome."""
    node = node or NodeContext()
    cell = json.loads(Path(cell_file).read_text())
    config = cell["config"]
    out = Path(out_dir)
    attempt = AttemptPaths(out)
    if node.node_rank == 0:
        if node.restart_count > 0:
            _set_aside_interrupted(out, node.restart_count)
        elif attempt.outcome.exists():
            raise CellFailedError(f"{out} already holds an outcome: refusing to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    launcher = get_launcher(config["framework"]["launcher"])
    spec = LaunchSpec(
        python=interpreter(config.get("env") or {}),
        cell_file=str(Path(cell_file).resolve()),
        out_dir=str(out.resolve()),
        nnodes=node.nnodes,
        nproc_per_node=config["gpus"],
        node_rank=node.node_rank,
        hosts=node.hosts,
        job_id=node.job_id,
        config=config,
    )
    started = time.perf_counter()
    returncode = 0
    _NO_ROOM_SEEN.clear()
    no_container: list[str] = []
    if launcher.per_node or node.node_rank == 0:
        log = attempt.launcher_log(node.node_rank)
        try:
            argv = setup_wrapped(config.get("env") or {}, launcher.command(spec))
        except ValueError as err:  # e.g. a host list the launcher cannot use: a failed outcome, not a crash
            write_atomic_text(log, f"launcher {launcher.name} refused this allocation: {err}\n")
            argv, returncode = None, 2
        # Named here, before anything starts: else a missing runtime crashes the runner without an
        # outcome (or is a shell's "command not found"), and an image without /etc/hosts hangs the rendezvous.
        no_container = node_container_problems(config.get("env") or {}) if argv is not None else []
        if no_container:
            write_atomic_text(log, "the container cannot start on this node: " + "; ".join(no_container) + "\n")
            argv, returncode = None, 2
        if argv is not None:
            returncode = _run_logged(argv, rank_environment(config), log, echo)
    if node.node_rank != 0:
        return {"state": "node_done", "returncode": returncode}
    world = config["gpus"] * node.nnodes
    valid, reasons = judge_attempt(out, world, config, cell["cell_id"])
    outcome = Outcome(
        state="completed" if returncode == 0 and valid == world and not reasons else "failed",
        returncode=returncode,
        ranks_expected=world,
        ranks_valid=valid,
        reasons=reasons,
        seconds=time.perf_counter() - started,
    )
    if outcome.state == "failed" and _NO_ROOM_SEEN:  # the cause, named, rather than "rank 0: no dump"
        outcome.failure_class = "no_space"
        outcome.reasons = [*dict.fromkeys(_NO_ROOM_SEEN), *outcome.reasons]
    elif outcome.state == "failed" and no_container:
        outcome.failure_class = "no_container"
        outcome.reasons = [*no_container, *outcome.reasons]
    elif outcome.state == "failed":
        outcome.failure_class = _failure_class(out, returncode)
    try:
        write_outcome(attempt.outcome, outcome)
    except OSError as err:
        if no_room_reason(err) is None:
            raise
        raise CellFailedError(f"cell {cell['cell_id']}: its outcome cannot be written: {no_room_reason(err)}") from err
    if outcome.state != "completed":
        raise CellFailedError(
            f"cell {cell['cell_id']} failed ({outcome.failure_class}, exit {returncode}): "
            + "; ".join(reasons[:4])
            + f"\n{_tail(out)}"
        )
    return asdict(outcome)


def _failure_class(out: Path, returncode: int) -> str:
    """A rank's own word on why it failed (no GPU, no NCCL…) before the launcher's exit code."""
    if returncode == 0:
        return "bad_metrics"
    recognised = rank_failure(out)
    return recognised[0] if recognised else "launcher_error"


def _run_logged(argv: list[str], env: dict[str, str], log: Path, echo: bool) -> int:
    """Run the launcher, its output into ``log``; a full disk stops the log, never the cell's judgement."""
    sink = _LogSink(log)
    sink.write(("$ " + " ".join(argv) + "\n").encode())
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    for line in process.stdout:
        _NO_ROOM_SEEN.extend(_no_room_lines(line, log.parent))
        sink.write(line)
        if echo:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
    sink.close()
    return process.wait()


def _no_room_lines(line: bytes, out_dir: Path) -> list[str]:
    """A rank's "[Errno 28] No space left on device[: 'P']" as a reason; without a path, its attempt folder."""
    found = _NO_ROOM_IN_OUTPUT.search(line.decode(errors="replace"))
    if found is None:
        return []
    what, path = found.groups()
    return [f"{what.lower()}: {path or out_dir} (a rank's write)"]


class _LogSink:
    """The launcher log; once a write is refused for lack of room it says so and writes no more."""

    def __init__(self, path: Path):
        self.handle = None
        try:
            # Appended line by line while the launcher runs, so a reader sees its output as it comes:
            # the one kind of file dnnbench writes that is not replaced whole (jobs.atomic).
            self.handle = open(path, "ab")  # noqa: SIM115 - closed by close(), after the launcher's last line
        except OSError as err:
            self._refused(err)

    def _refused(self, err: OSError) -> None:
        reason = no_room_reason(err)
        if reason is None:
            raise err
        _NO_ROOM_SEEN.append(reason)
        self.close()

    def write(self, data: bytes) -> None:
        if self.handle is None:
            return
        try:
            self.handle.write(data)
            self.handle.flush()
        except OSError as err:
            self._refused(err)

    def close(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError as err:
                if no_room_reason(err) is None:
                    raise


def _tail(out: Path, lines: int = 30) -> str:
    attempt = AttemptPaths(out)
    source = next(iter(attempt.error_files() or attempt.launcher_logs()), None)
    if source is None:
        return ""
    text = source.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {source} (last {len(text)} lines) ---\n" + "\n".join(text)
