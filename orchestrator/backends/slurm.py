"""Slurm: one array job per resource shape (split at MaxArraySize), from sbatch_templates/array.sh.

Submission writes the ledger row first (unique job name), then calls ``sbatch
--parsable``, then records the job id. States come from one ``squeue`` call and one
``sacct`` call per refresh for all jobs; without ``sacct`` (no accounting) the files
and ``squeue`` still give an answer, and no call may hang (timeouts on every call).
"""

from __future__ import annotations

import json
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

from orchestrator.backends.base import Backend, SchedulerState, ShapeGroup, SubmitOutcome, register
from orchestrator.backends.slurm_limits import read_limits
from orchestrator.errors import SubmissionError
from orchestrator.ledger import Ledger
from orchestrator.paths import SweepPaths
from orchestrator.shell_safety import check_safe, render_setup

CALL_TIMEOUT_S = 30
_ARRAY_RANGE = re.compile(r"^(\d+)_\[(.+)\]$")


def _time(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def render_script(
    paths: SweepPaths, group: ShapeGroup, job_name: str, cells_file: Path, cluster: dict[str, Any]
) -> str:
    shape = group.shape
    check_safe("sweep folder", str(paths.root))
    for key in ("partition", "account", "qos", "constraint"):
        check_safe(f"cluster.{key}", getattr(shape, key))
    resource_lines = []
    if shape.request_gpus and shape.gpus_per_node:
        resource_lines.append(f"#SBATCH --gpus-per-node={shape.gpus_per_node}")
    if shape.mem_gb:
        resource_lines.append(f"#SBATCH --mem={shape.mem_gb}G")
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(shape, key)
        if value:
            resource_lines.append(f"#SBATCH --{key}={value}")
    template = Template((resources.files("sbatch_templates") / "array.sh").read_text())
    script_path = paths.jobs / f"{job_name}.sh"
    return template.substitute(
        script_path=shlex.quote(str(script_path)),
        cells_file=shlex.quote(str(cells_file)),
        job_name=job_name,
        last_index=len(group.cells) - 1,
        parallelism=max(1, int(cluster.get("array_parallelism") or 1)),
        nodes=shape.nodes,
        cpus_per_task=shape.cpus_per_task,
        time_limit=_time(shape.time_min),
        log_dir=shlex.quote(str(paths.jobs)),
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
    """Shape groups larger than the cluster's MaxArraySize become several arrays of that shape."""
    return [
        ShapeGroup(group.shape, group.cells[start : start + limit])
        for group in groups
        for start in range(0, len(group.cells), limit)
    ]


@register
class SlurmBackend(Backend):
    name = "slurm"
    detached = True

    def write_scripts(self, paths: SweepPaths, groups: list[ShapeGroup]) -> list[Path]:
        """Dry run: the exact scripts a submission would use, nothing submitted."""
        written = []
        for number, group in enumerate(split_groups(groups, read_limits().max_array_size)):
            job_name = f"dnnbench-{paths.root.name}-dryrun{number}"
            cells_file = paths.jobs / f"{job_name}.cells.json"
            out_dirs = [str(paths.cell(c.cell_id).attempt(0)) for c in group.cells]
            written.append(self._write(paths, group, job_name, cells_file, out_dirs))
        return written

    def _write(
        self, paths: SweepPaths, group: ShapeGroup, job_name: str, cells_file: Path, out_dirs: list[str]
    ) -> Path:
        paths.jobs.mkdir(parents=True, exist_ok=True)
        script = render_script(paths, group, job_name, cells_file, self.cluster)
        cells_file.write_text(json.dumps([[c.cell_file, o] for c, o in zip(group.cells, out_dirs, strict=True)]))
        script_path = paths.jobs / f"{job_name}.sh"
        script_path.write_text(script)
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
            render_script(paths, group, "check", paths.jobs / "check.cells.json", self.cluster)
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
            job_name = f"dnnbench-{paths.root.name}-{uuid.uuid4().hex[:10]}"
            cells_file = paths.jobs / f"{job_name}.cells.json"
            script_path = paths.jobs / f"{job_name}.sh"
            submission, attempts = ledger.begin_submission(
                job_name, self.name, group.shape.describe(), [c.cell_id for c in group.cells], str(script_path)
            )
            out_dirs = [str(paths.cell(c.cell_id).attempt(a)) for c, a in zip(group.cells, attempts, strict=True)]
            self._write(paths, group, job_name, cells_file, out_dirs)
            result = _run(["sbatch", "--parsable", str(script_path)])
            if result is None:  # no answer: the job may exist; the next run asks Slurm by job name
                raise SubmissionError(
                    f"sbatch did not answer in {CALL_TIMEOUT_S} s for {script_path} (job name {job_name}); "
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
        """A crash between the ledger write and sbatch's answer: ask Slurm by job name."""
        for row in ledger.submissions("submitting"):
            job_id = self._find_job_by_name(row["job_name"])
            if job_id is not None:
                ledger.finish_submission(row["submission_id"], job_id, "submitted", "recovered by job name")
            else:
                ledger.finish_submission(row["submission_id"], None, "refused", "never reached Slurm")

    @staticmethod
    def _find_job_by_name(job_name: str) -> str | None:
        for argv in (
            ["squeue", "-h", "--name", job_name, "-o", "%F"],
            ["sacct", "-n", "-X", "-P", "--name", job_name, "-o", "JobID", "-S", "now-30days"],
        ):
            result = _run(argv)
            if result is not None and result.returncode == 0:
                for line in result.stdout.split():
                    return line.split("_")[0]
        return None

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
