"""What this Slurm cluster lets one submission queue, read once per submission.

- ``MaxArraySize`` (scontrol show config): an array holds at most that many tasks.
- ``MaxJobCount`` (scontrol show config): job records the controller keeps, all users.
- ``MaxSubmitJobs`` / ``MaxSubmitJobsPerUser`` of the user's association and QOS
  (sacctmgr, where it answers): jobs one user may have queued.
Each array task counts as a job against the last two, as Slurm counts them. MaxJobCount
counts every record the controller keeps, ended jobs too (for MinJobAge s after they end);
MaxSubmitJobs counts the user's jobs not ended. A limit that cannot be read is taken as
absent, never guessed.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
from dataclasses import dataclass

DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default: indices 0..1000
# Job states that no longer count against MaxSubmitJobs (the record may still count against MaxJobCount).
ENDED_STATES = frozenset({"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
                          "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "TIMEOUT"})  # fmt: skip
TIMEOUT_S = 30


def _run(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return None
    return result.stdout if result.returncode == 0 else None


@dataclass(frozen=True)
class ClusterLimits:
    max_array_size: int = DEFAULT_MAX_ARRAY_SIZE
    max_job_count: int | None = None
    max_submit_jobs: int | None = None  # per user (association or QOS), the smaller
    jobs_in_system: int = 0
    jobs_of_user: int = 0

    @property
    def room(self) -> int | None:
        """How many more jobs (array tasks) may be queued now; None when unlimited."""
        rooms = []
        if self.max_job_count is not None:
            # slurmctld refuses a job that would make its record count reach MaxJobCount (>=).
            rooms.append(self.max_job_count - 1 - self.jobs_in_system)
        if self.max_submit_jobs is not None:
            rooms.append(self.max_submit_jobs - self.jobs_of_user)
        return max(0, min(rooms)) if rooms else None

    def describe(self) -> str:
        parts = [f"MaxArraySize={self.max_array_size}"]
        if self.max_job_count is not None:
            parts.append(f"MaxJobCount={self.max_job_count} ({self.jobs_in_system} job records on the cluster)")
        if self.max_submit_jobs is not None:
            parts.append(f"MaxSubmitJobs={self.max_submit_jobs} ({self.jobs_of_user} yours queued)")
        return ", ".join(parts)


def parse_config(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _int(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isdigit() else None


def submit_limit(user: str) -> int | None:
    """The smallest MaxSubmit of the user's associations and QOSes that sacctmgr reports."""
    found: list[int] = []
    assoc = _run(["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", "format=MaxSubmit,QOS"])
    qos_names: set[str] = set()
    for line in (assoc or "").splitlines():
        limit, _, qos = line.partition("|")
        if (value := _int(limit)) is not None:
            found.append(value)
        qos_names.update(q for q in qos.split(",") if q)
    qos_table = _run(["sacctmgr", "-n", "-P", "show", "qos", "format=Name,MaxSubmitPU"])
    for line in (qos_table or "").splitlines():
        name, _, limit = line.partition("|")
        if name in qos_names and (value := _int(limit)) is not None:
            found.append(value)
    return min(found) if found else None


def read_limits() -> ClusterLimits:
    config = parse_config(_run(["scontrol", "show", "config"]) or "")
    user = getpass.getuser()
    # --states=all: the ended jobs the controller still keeps count against MaxJobCount too.
    all_jobs = _run(["squeue", "-h", "-r", "--states=all", "-o", "%u|%T"])
    jobs = [line.split("|", 1) for line in (all_jobs or "").splitlines() if "|" in line]
    return ClusterLimits(
        max_array_size=_int(config.get("MaxArraySize")) or DEFAULT_MAX_ARRAY_SIZE,
        max_job_count=_int(config.get("MaxJobCount")),
        max_submit_jobs=submit_limit(user),
        jobs_in_system=len(jobs),
        jobs_of_user=sum(1 for u, state in jobs if u == user and state.strip() not in ENDED_STATES),
    )
