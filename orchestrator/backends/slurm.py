"""Slurm: one array job per resource shape (split at MaxArraySize), from sbatch_templates/array.sh.

Submission writes the ledger row first (unique job name), then calls ``sbatch
--parsable``, then records the job id. States come from one ``squeue`` call and one
``sacct`` call per refresh for all jobs; without ``sacct`` (no accounting) the files
and ``squeue`` still give an answer, and no call may hang (timeouts on every call).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from jobs.atomic import write_atomic_text
from jobs.schema import open_regular
from orchestrator.backends.base import Backend, CellJob, SchedulerState, Shape, ShapeGroup, SubmitOutcome
from orchestrator.backends.slurm_limits import read_limits
from orchestrator.errors import SubmissionError
from orchestrator.ledger import Ledger
from orchestrator.paths import SweepPaths
from orchestrator.shell_safety import (
    SAFE_GPU_TYPE,
    check_safe,
    check_sweep_folder,
    render_setup,
    sbatch_filename,
)

CALL_TIMEOUT_S = 30
_ARRAY_RANGE = re.compile(r"^(\d+)_\[(.+)\]$")
# A job name is a label: what Slurm or its commands read specially becomes `_` (see job_name).
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_.+\-]")
_HETJOB_IN_NAME = re.compile(r"hetjob|packjob", re.IGNORECASE)
# Cluster keys the batch script itself uses (beyond the shape's resource request): arrays differ when they do.
_SCRIPT_KEYS = ("setup", "signal_delay_s", "max_requeues", "array_parallelism", "exclusive")


def _time(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def job_name(root: Path, suffix: str) -> str:
    """``dnnbench-<sweep folder name>-<suffix>``: a label, not the folder. What Slurm or its commands
    read specially (``,`` separates names in ``squeue --name``, spaces and quotes end an #SBATCH
    argument, ``hetjob`` splits a job) becomes ``_``. Lookups use the whole name, which the ledger
    records with its random suffix, so two folders with one label never mix."""
    plain = _UNSAFE_IN_NAME.sub("_", root.name)
    label = _HETJOB_IN_NAME.sub(lambda word: word.group()[:3] + "_" + word.group()[3:], plain)
    return f"dnnbench-{label}-{suffix}"


def _script_settings(cell: CellJob) -> tuple[Any, ...]:
    cluster = cell.config.get("cluster") or {}
    return tuple(json.dumps(cluster.get(key), sort_keys=True) for key in _SCRIPT_KEYS)


def _gpu_request(shape: Shape) -> list[str]:
    if not (shape.request_gpus and shape.gpus_per_node):
        return []
    typed = f"{shape.gpu_type}:{shape.gpus_per_node}" if shape.gpu_type else str(shape.gpus_per_node)
    return [f"#SBATCH --gpus-per-node={typed}"]


def render_script(
    paths: SweepPaths, group: ShapeGroup, name: str, cells_file: Path, exclude_nodes: str | None = None
) -> str:
    """The array's batch script; every value is checked or quoted for where it lands (shell_safety).

    ``exclude_nodes``: a host list (``node2,node[5-7]``) the array's tasks must not run on.
    """
    shape = group.shape
    cluster = group.cells[0].config["cluster"]  # the script keys are equal within a group (split_groups)
    check_sweep_folder(paths.root, {"slurm"})  # and the interpreter's path
    for key in ("partition", "account", "qos", "constraint"):
        check_safe(f"cluster.{key}", getattr(shape, key))
    check_safe("cluster.gpu_type", shape.gpu_type, pattern=SAFE_GPU_TYPE)
    resource_lines = _gpu_request(shape)
    if cluster.get("exclusive"):
        # Whole nodes: no other job (another cell of this sweep included) shares a node with a cell.
        resource_lines.append("#SBATCH --exclusive")
    if shape.mem_gb:
        resource_lines.append(f"#SBATCH --mem={shape.mem_gb}G")
    if exclude_nodes:
        check_safe("--exclude-nodes", exclude_nodes, where="sbatch's --exclude")
        resource_lines.append(f"#SBATCH --exclude={exclude_nodes}")
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(shape, key)
        if value:
            resource_lines.append(f"#SBATCH --{key}={value}")
    template = Template((resources.files("sbatch_templates") / "array.sh").read_text())
    script_path = paths.jobs / f"{name}.sh"
    return template.substitute(
        script_path=shlex.quote(str(script_path)),
        cells_file=shlex.quote(str(cells_file)),
        job_name=name,
        last_index=len(group.cells) - 1,
        parallelism=max(1, int(cluster.get("array_parallelism") or 1)),
        nodes=int(shape.nodes),
        cpus_per_task=int(shape.cpus_per_task),
        time_limit=_time(int(shape.time_min)),
        output_log=sbatch_filename(paths.jobs, "%A_%a.out"),
        error_log=sbatch_filename(paths.jobs, "%A_%a.err"),
        signal_delay_s=int(cluster.get("signal_delay_s", 90)),
        max_requeues=int(cluster.get("max_requeues", 0)),
        resource_lines="\n".join(resource_lines),
        setup_lines=render_setup(list(cluster.get("setup") or [])),
        python=shlex.quote(sys.executable),
    )


def _run(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    """Run a scheduler command; None when it is absent or does not answer in time."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=CALL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return None


def _expand_array(key: str) -> list[str]:
    """``12_[0-3,7%2]`` (a pending array as squeue/sacct print it) → 12_0 … 12_3, 12_7."""
    match = _ARRAY_RANGE.match(key)
    if not match:
        return [key]
    job, spec = match.group(1), match.group(2).split("%")[0]
    keys = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        keys += [f"{job}_{i}" for i in range(int(low), int(high or low) + 1)]
    return keys


def split_groups(groups: list[ShapeGroup], limit: int) -> list[ShapeGroup]:
    """One array per shape and script settings (setup lines, signal, requeues, parallelism: each cell
    runs with its own), split again at the cluster's MaxArraySize."""
    arrays = []
    for group in groups:
        by_settings: dict[tuple[Any, ...], list[CellJob]] = {}
        for cell in group.cells:
            by_settings.setdefault(_script_settings(cell), []).append(cell)
        for cells in by_settings.values():
            arrays += [ShapeGroup(group.shape, cells[start : start + limit]) for start in range(0, len(cells), limit)]
    return arrays


# Lines of a task's logs that say nothing of why it failed: blank, bash traces, and srun's
# echo of an exit code or of its own clean-up (the reason comes before them).
_NOISE = re.compile(
    r"\+|srun: error: \S+: tasks? [\d,\-]+: (Exited with exit code \d+|Killed|Terminated)"
    r"|srun: (Job step aborted|launch/slurm: _step_signal|Force Terminated)"
)
_REASON = re.compile(r"error|fatal|exception|unable|invalid|denied|cancelled|killed|not found|no such", re.I)
LOG_TAIL_BYTES = 64 * 1024


def task_logs(log_dir: Path, job_key: str) -> list[Path]:
    """An array task's scheduler logs (``%A_%a.err``, ``.out``, see array.sh), error log first."""
    return [log_dir / f"{job_key}.err", log_dir / f"{job_key}.out"]


def _tail_lines(path: Path) -> list[str]:
    try:
        with os.fdopen(open_regular(path), "rb") as handle:  # never blocks on a FIFO
            handle.seek(max(0, handle.seek(0, 2) - LOG_TAIL_BYTES))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    # A progress bar redraws its line with \r: what was last drawn is what was seen.
    return [line.rsplit("\r", 1)[-1].strip() for line in text.splitlines()]


def scheduler_log_reason(paths_or_log_dir: SweepPaths | Path, job_key: str) -> tuple[str, Path] | None:
    """The line of an array task's logs that best says why it failed, and the log it is in.

    Searched from the end, error log first: the last line that names an error (``srun: error:
    Unable to create step …``, a traceback's last line), else the last line that is not noise
    (see ``_NOISE``). None when the logs are absent or hold nothing but noise.
    """
    log_dir = paths_or_log_dir.jobs if isinstance(paths_or_log_dir, SweepPaths) else Path(paths_or_log_dir)
    fallback: tuple[str, Path] | None = None
    for path in task_logs(log_dir, job_key):
        lines = [line for line in _tail_lines(path) if line and not _NOISE.match(line)]
        reason = next((line for line in reversed(lines) if _REASON.search(line)), None)
        if reason is not None:
            return reason[:500], path
        if lines and fallback is None:
            fallback = lines[-1][:500], path
    return fallback


class SlurmBackend(Backend):
    name = "slurm"
    detached = True
    exclude_nodes: str | None = None

    def exclude(self, nodes: str) -> None:
        check_safe("--exclude-nodes", nodes, where="sbatch's --exclude")
        self.exclude_nodes = nodes

    def write_scripts(self, paths: SweepPaths, groups: list[ShapeGroup]) -> list[Path]:
        """Dry run: the exact scripts a submission would use, nothing submitted."""
        written = []
        for number, group in enumerate(split_groups(groups, read_limits().max_array_size)):
            name = job_name(paths.root, f"dryrun{number}")
            cells_file = paths.jobs / f"{name}.cells.json"
            out_dirs = [str(paths.cell(c.cell_id).attempt(0)) for c in group.cells]
            written.append(self._write(paths, group, name, cells_file, out_dirs))
        return written

    def _write(self, paths: SweepPaths, group: ShapeGroup, name: str, cells_file: Path, out_dirs: list[str]) -> Path:
        paths.jobs.mkdir(parents=True, exist_ok=True)
        script = render_script(paths, group, name, cells_file, self.exclude_nodes)
        cells = [[c.cell_file, o] for c, o in zip(group.cells, out_dirs, strict=True)]
        write_atomic_text(cells_file, json.dumps(cells))
        script_path = paths.jobs / f"{name}.sh"
        write_atomic_text(script_path, script)
        return script_path

    def submit(
        self,
        paths: SweepPaths,
        ledger: Ledger,
        groups: list[ShapeGroup],
        progress: Callable[[int], None] | None = None,
    ) -> SubmitOutcome:
        if shutil.which("sbatch") is None:
            raise SubmissionError("sbatch not found on PATH: submit from a Slurm login node, or use cluster=local")
        limits = read_limits()
        groups = split_groups(groups, limits.max_array_size)
        for group in groups:  # every script renders (and is checked) before the first sbatch
            render_script(paths, group, "check", paths.jobs / "check.cells.json", self.exclude_nodes)
        outcome = SubmitOutcome()
        room = limits.room
        for index, whole in enumerate(groups):
            fits = len(whole.cells) if room is None else min(room, len(whole.cells))
            if fits < len(whole.cells):
                outcome.not_submitted += whole.cells[fits:] + [c for g in groups[index + 1 :] for c in g.cells]
                outcome.reason = f"the queue is full ({limits.describe()})"
                if fits == 0:
                    break
            group = ShapeGroup(whole.shape, whole.cells[:fits])
            if room is not None:
                room -= fits
            name = job_name(paths.root, uuid.uuid4().hex[:10])
            cells_file = paths.jobs / f"{name}.cells.json"
            script_path = paths.jobs / f"{name}.sh"
            cell_ids = [c.cell_id for c in group.cells]
            submission, attempts = ledger.begin_submission(
                name, self.name, group.shape.describe(), cell_ids, str(script_path), exclude_nodes=self.exclude_nodes
            )
            out_dirs = [str(paths.cell(c.cell_id).attempt(a)) for c, a in zip(group.cells, attempts, strict=True)]
            self._write(paths, group, name, cells_file, out_dirs)
            result = _run(["sbatch", "--parsable", "--", str(script_path)])
            if result is None:  # no answer: the job may exist; the next run asks Slurm by job name
                raise SubmissionError(
                    f"sbatch did not answer in {CALL_TIMEOUT_S} s for {script_path} (job name {name}); "
                    "rerun the same command: it asks Slurm whether that job exists before submitting the rest"
                )
            if result.returncode != 0:
                message = result.stderr.strip()
                ledger.finish_submission(submission, None, "refused", message)
                if not outcome.job_ids:
                    raise SubmissionError(f"sbatch refused {script_path}: {message}")
                # A limit met half-way (QOS, association): keep what was queued, report the rest.
                outcome.not_submitted = list(group.cells) + [c for g in groups[index + 1 :] for c in g.cells]
                outcome.reason = f"sbatch refused the next array: {message}"
                break
            job_id = result.stdout.strip().split(";")[0]
            ledger.finish_submission(submission, job_id, "submitted")
            outcome.job_ids.append(job_id)
            if progress:
                progress(len(group.cells))
            if outcome.not_submitted:
                break
        return outcome

    def resolve_pending(self, ledger: Ledger) -> None:
        """A crash between the ledger write and sbatch's answer: ask Slurm by job name.

        "Never submitted" needs evidence: sacct knows no such job, or squeue answered without it
        and none of its cells left an attempt folder (a job that started makes one; a queued one
        is in squeue). Without either the row stays unconfirmed and this command stops: guessing
        would submit the cells a second time beside a job that may be running.
        """
        paths = SweepPaths(ledger.path.parent)  # the ledger lives at the top of its sweep folder
        for row in ledger.submissions("submitting", self.name):
            submission = row["submission_id"]
            found, sacct_says_none, squeue_says_none = self._find_job_by_name(row["job_name"])
            started = any(
                paths.cell(cell).attempt(attempt).exists() for cell, attempt, _ in ledger.submission_cells(submission)
            )
            if found is not None:
                ledger.finish_submission(submission, found, "submitted", "recovered by job name")
            elif sacct_says_none or (squeue_says_none and not started):
                ledger.finish_submission(submission, None, "refused", "never reached Slurm")
            elif started:
                ledger.finish_submission(submission, None, "submitted", "ran (attempt folders exist); job id unknown")
            else:
                raise SubmissionError(
                    f"cannot tell whether job {row['job_name']} reached Slurm (squeue and sacct did not answer): "
                    "nothing was submitted; run the command again when Slurm answers"
                )

    @staticmethod
    def _find_job_by_name(job_name: str) -> tuple[str | None, bool, bool]:
        """(job id of ``job_name`` or None, sacct answered without it, squeue answered without it)."""
        says_none = {"squeue": False, "sacct": False}
        for argv in (
            ["squeue", "-h", "--name", job_name, "-o", "%F"],
            ["sacct", "-n", "-X", "-P", "--name", job_name, "-o", "JobID", "-S", "now-30days"],
        ):
            result = _run(argv)
            # sacct without its database prints an error and exits 0 with no rows: no answer.
            if result is None or result.returncode != 0 or result.stderr.strip():
                continue
            for line in result.stdout.split():
                return line.split("_")[0], False, False
            says_none[argv[0]] = True
        return None, says_none["sacct"], says_none["squeue"]

    def query(self, keys: list[str]) -> dict[str, SchedulerState]:
        if not keys:
            return {}
        jobs = sorted({k.split("_")[0] for k in keys})
        states: dict[str, SchedulerState] = {}
        sacct = _run(["sacct", "-n", "-X", "-P", "-j", ",".join(jobs), "-o", "JobID,State,ExitCode,Reason"])
        if sacct is not None and sacct.returncode == 0:
            for line in sacct.stdout.splitlines():
                fields = line.split("|")
                if len(fields) < 3:
                    continue
                for key in _expand_array(fields[0]):
                    states[key] = SchedulerState(fields[1], fields[2], fields[3] if len(fields) > 3 else None)
        # squeue is the fresher word for live jobs (sacct lags a few seconds behind).
        squeue = _run(["squeue", "-h", "-r", "-j", ",".join(jobs), "-o", "%i|%T|%r"])
        squeue_ok = squeue is not None and squeue.returncode == 0
        queued_jobs: set[str] = set()
        if squeue is not None and squeue.returncode == 0:
            for line in squeue.stdout.splitlines():
                fields = line.split("|")
                if len(fields) >= 2:
                    queued_jobs.add(fields[0].split("_")[0])
                    for key in _expand_array(fields[0]):
                        states[key] = SchedulerState(fields[1], None, fields[2] if len(fields) > 2 else None)
        # Array tasks cancelled while pending get no record of their own: sacct prints the array
        # job's plain id for them (all tasks cancelled together), or nothing once the array left
        # the queue (some tasks had run). Without this they would read "pending" for ever.
        recorded_jobs = {k.split("_")[0] for k in states}
        for key in keys:
            job = key.split("_")[0]
            if key in states or "_" not in key:
                continue
            if job in states:
                states[key] = states[job]
            elif squeue_ok and job in recorded_jobs and job not in queued_jobs:
                states[key] = SchedulerState("ENDED", None, "array task left the queue without a record")
        accounting = sacct is not None and sacct.returncode == 0 and bool(sacct.stdout.strip())
        if squeue is not None and squeue.returncode == 0 and not accounting:
            # No accounting: a job squeue no longer lists has ended, we can't say how.
            for key in keys:
                states.setdefault(key, SchedulerState("ENDED", None, "no sacct record"))
        return states
