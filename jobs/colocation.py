"""What else ran on a rank's node while it measured: the record behind ``extra.colocation``.

A cell measures a different machine when other work shares its node: a 1-GPU cell beside three
others is not a 4-GPU node's quarter. Each rank samples, at the start and the end of each phase:

- the node's CPU time (``/proc/stat``: busy, steal) and the 1-minute load average;
- every process's CPU time (``/proc/<pid>/stat``), split into the cell's own processes and the
  rest. The cell's own: the processes whose command line names the attempt folder (the launcher,
  the ranks), their descendants (data loader workers) and their ancestors (the runner, the
  Slurm task); work outside the cell is the node's busy time minus the cell's own;
- the other processes on its GPU (NVML through ``pynvml``, when it imports).

Once per node, the Slurm task also asks ``squeue`` which other jobs run on its node, before and
after the cell (:func:`write_node_jobs`, one file per node in the attempt folder). The analysis
reads both (analysis/colocation.py) and flags a cell measured beside other work.

No torch import at module level: the Slurm task imports this on nodes where only the launcher runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from jobs.atomic import write_atomic_text

RECORD_VERSION = 1
# Processes named in a phase's record: the busiest few outside the cell.
TOP_PROCESSES = 8
# A process outside the cell is named when it used at least this many CPUs on average.
NAMED_CPUS = 0.05
NODE_JOBS_FILE = "colocation_node{node}.json"
SQUEUE_TIMEOUT_S = 20
PROC = Path("/proc")
T = TypeVar("T")


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    comm: str
    start_ticks: int  # when it started: a pid reused in between is another process
    cpu_ticks: int  # its CPU time and its waited-for children's


@dataclass
class Snapshot:
    at: float  # time.monotonic()
    load_1m: float | None
    cpu: dict[str, int] | None  # /proc/stat's node totals, in clock ticks
    processes: dict[tuple[int, int], Process] = field(default_factory=dict)
    ours: set[tuple[int, int]] = field(default_factory=set)
    gpu_pids: dict[int, int] | None = None  # pid -> GPU memory bytes (None: not known)
    gpu_reason: str | None = None


# ----------------------------------------------------------------------------- /proc readers


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:  # gone, or not ours to read (hidepid)
        return None


def read_load_1m(proc: Path = PROC) -> float | None:
    text = _read(proc / "loadavg")
    try:
        return float(text.split()[0]) if text else None
    except (ValueError, IndexError):
        return None


_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def read_node_cpu(proc: Path = PROC) -> dict[str, int] | None:
    """The node's CPU time since boot (``cpu`` line of /proc/stat), clock ticks per kind."""
    text = _read(proc / "stat")
    if not text:
        return None
    first = text.split(b"\n", 1)[0].split()
    if not first or first[0] != b"cpu":
        return None
    values = [int(v) for v in first[1 : 1 + len(_CPU_FIELDS)]]
    return dict(zip(_CPU_FIELDS, values + [0] * (len(_CPU_FIELDS) - len(values)), strict=True))


def _parse_stat(pid: int, raw: bytes) -> Process | None:
    # The name sits in parentheses and may hold spaces and ')': the fields follow the last ')'.
    head, _, tail = raw.rpartition(b")")
    fields = tail.split()
    if not head or len(fields) < 20:
        return None
    comm = head.partition(b"(")[2].decode(errors="replace")
    # After the name: state ppid … utime(12th) stime cutime cstime … starttime(20th).
    ticks = sum(int(v) for v in fields[11:15])
    return Process(pid=pid, ppid=int(fields[1]), comm=comm, start_ticks=int(fields[19]), cpu_ticks=ticks)


def read_processes(proc: Path = PROC) -> dict[int, Process]:
    found = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return {}
    for name in names:
        if not name.isdigit():
            continue
        raw = _read(proc / name / "stat")
        try:
            parsed = _parse_stat(int(name), raw) if raw else None
        except ValueError:  # a kernel whose stat line this does not know: that process is not counted
            parsed = None
        if parsed is not None:
            found[parsed.pid] = parsed
    return found


def cell_processes(processes: dict[int, Process], marker: str, proc: Path = PROC) -> set[int]:
    """The cell's own pids: those whose command line holds ``marker`` (the attempt folder), their
    descendants, and the ancestors of all of them (not the ancestors' other children: a process
    started beside the cell by the same shell is other work)."""
    needle = marker.encode()
    core = {pid for pid in processes if needle in (_read(proc / str(pid) / "cmdline") or b"")}
    children: dict[int, list[int]] = {}
    for process in processes.values():
        children.setdefault(process.ppid, []).append(process.pid)
    stack = list(core)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in core:
                core.add(child)
                stack.append(child)
    ours = set(core)
    for pid in core:
        parent = processes[pid].ppid
        while parent > 1 and parent in processes and parent not in ours:
            ours.add(parent)
            parent = processes[parent].ppid
    return ours


# ----------------------------------------------------------------------------- GPUs (NVML)


def _nvml() -> Any:
    import pynvml  # nvidia-ml-py; optional

    pynvml.nvmlInit()  # cheap after the first call
    return pynvml


def gpu_processes(device: Any) -> tuple[dict[int, int] | None, str | None]:
    """(pid -> GPU memory bytes of every compute process on ``device``, None) or (None, why not)."""
    if getattr(device, "type", "cpu") != "cuda":
        return None, "the rank ran on CPU"
    try:
        nvml = _nvml()
    except ImportError:
        return None, "pynvml is not installed (pip install nvidia-ml-py): other processes on the GPU are not seen"
    except Exception as err:  # NVMLError_*: a driver NVML cannot reach
        return None, f"NVML did not start: {err}"
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(device).uuid)
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        listed = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception as err:  # any NVML or lookup failure is the fact we report
        return None, f"NVML could not list the GPU's processes: {err}"
    return {int(p.pid): int(p.usedGpuMemory or 0) for p in listed}, None


# ----------------------------------------------------------------------------- one rank


def take_snapshot(marker: str, device: Any = None, proc: Path = PROC) -> Snapshot:
    processes = read_processes(proc)
    ours = cell_processes(processes, marker, proc)
    gpu_pids, gpu_reason = gpu_processes(device)
    return Snapshot(
        at=time.monotonic(),
        load_1m=read_load_1m(proc),
        cpu=read_node_cpu(proc),
        processes={(p.pid, p.start_ticks): p for p in processes.values()},
        ours={(pid, processes[pid].start_ticks) for pid in ours},
        gpu_pids=gpu_pids,
        gpu_reason=gpu_reason,
    )


def _ticks_per_s() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100


def _node_cpu(start: Snapshot, end: Snapshot, seconds: float, tick: float) -> dict[str, Any]:
    if start.cpu is None or end.cpu is None or seconds <= 0:
        return {"busy_cpus": None, "steal_fraction": None}
    delta = {k: end.cpu[k] - start.cpu[k] for k in _CPU_FIELDS}
    busy = sum(delta[k] for k in ("user", "nice", "system", "irq", "softirq"))
    total = busy + delta["idle"] + delta["iowait"] + delta["steal"]
    return {"busy_cpus": busy * tick / seconds, "steal_fraction": delta["steal"] / total if total > 0 else 0.0}


def _cpu_used(start: Snapshot, end: Snapshot, key: tuple[int, int]) -> int:
    before = start.processes.get(key)
    return end.processes[key].cpu_ticks - (before.cpu_ticks if before else 0)


def _gpu_others(start: Snapshot, end: Snapshot, own_pid: int) -> dict[str, Any]:
    reason = end.gpu_reason or start.gpu_reason
    if start.gpu_pids is None or end.gpu_pids is None:
        return {"other_processes": None, "reason": reason}
    seen = {**start.gpu_pids, **end.gpu_pids}
    others = {pid: used for pid, used in seen.items() if pid != own_pid}
    note = None
    if own_pid not in seen and others:
        # NVML lists host pids; in a container the rank's own pid differs, so one of them is the rank.
        note = f"the rank's own pid {own_pid} is not among NVML's (another pid namespace): one of them is the rank"
    listed = [{"pid": pid, "gpu_memory_bytes": used} for pid, used in sorted(others.items())]
    return {"other_processes": listed, "reason": note}


def compare(start: Snapshot, end: Snapshot, own_pid: int | None = None) -> dict[str, Any]:
    """What ran on the node between two snapshots, beside the cell."""
    seconds = max(end.at - start.at, 0.0)
    tick = 1.0 / _ticks_per_s()
    node = _node_cpu(start, end, seconds, tick)
    ours = start.ours | end.ours
    own_s = sum(_cpu_used(start, end, key) for key in end.processes if key in ours) * tick
    foreign = sorted(
        ((_cpu_used(start, end, key) * tick, end.processes[key]) for key in end.processes if key not in ours),
        key=lambda item: -item[0],
    )
    named = [
        {"pid": p.pid, "name": p.comm, "cpus": round(used / seconds, 3)}
        for used, p in foreign[:TOP_PROCESSES]
        if seconds > 0 and used / seconds >= NAMED_CPUS
    ]
    busy = node["busy_cpus"]
    return {
        "seconds": round(seconds, 3),
        "load_1m": [start.load_1m, end.load_1m],
        "node_busy_cpus": None if busy is None else round(busy, 3),
        "cell_cpus": round(own_s / seconds, 3) if seconds > 0 else None,
        # Busy time the cell's own processes do not account for: other work (and the kernel's).
        "other_cpus": None if busy is None or seconds <= 0 else round(max(busy - own_s / seconds, 0.0), 3),
        "steal_fraction": None if node["steal_fraction"] is None else round(node["steal_fraction"], 4),
        "cell_processes": len(end.ours),
        "other_processes_named": named,
        "gpu": _gpu_others(start, end, own_pid if own_pid is not None else os.getpid()),
    }


class PhaseWatch:
    """Samples the node around each phase of one rank; ``record()`` is ``extra.colocation``."""

    def __init__(self, out_dir: str | Path, device: Any = None, proc: Path = PROC):
        self.marker = str(out_dir)
        self.device = device
        self.proc = proc
        self.phases: dict[str, Any] = {}
        self.unavailable: str | None = None if (proc / "stat").exists() else f"{proc}/stat not readable (not Linux?)"

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.unavailable:
            yield
            return
        start = take_snapshot(self.marker, self.device, self.proc)
        yield
        self.phases[name] = compare(start, take_snapshot(self.marker, self.device, self.proc))

    def measure(self, name: str, run: Callable[..., T], *args: Any) -> T:
        """``run(*args)`` as phase ``name``: the node is sampled just before and just after it."""
        with self.phase(name):
            return run(*args)

    def record(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "pid": os.getpid(),
            "node_cpus": os.cpu_count(),
            "unavailable": self.unavailable,
            "phases": self.phases,
        }


# ----------------------------------------------------------------------------- one node (Slurm)


def _squeue_jobs(node: str, own_job: str | None) -> tuple[list[dict[str, Any]] | None, str | None]:
    argv = ["squeue", "-h", "-w", node, "-t", "RUNNING", "-o", "%A|%i|%u|%C|%b|%j"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"squeue did not answer: {err}"
    if done.returncode != 0:
        return None, f"squeue failed: {done.stderr.strip()[:300]}"
    jobs = []
    for line in done.stdout.splitlines():
        fields = line.split("|", 5)
        if len(fields) < 6 or fields[0] == own_job:
            continue
        job_id, key, user, cpus, gres, name = fields
        jobs.append({"job_id": job_id, "array_task": key, "user": user, "cpus": cpus, "gres": gres, "name": name[:60]})
    return jobs, None


def node_jobs_snapshot(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The other running Slurm jobs on this task's node, now (one ``squeue`` call)."""
    env = os.environ if environ is None else environ
    node, own = env.get("SLURMD_NODENAME"), env.get("SLURM_JOB_ID")
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if not node:
        return {"at": at, "jobs": None, "error": "not in a Slurm task (no SLURMD_NODENAME)"}
    jobs, error = _squeue_jobs(node, own)
    return {"at": at, "jobs": jobs, "error": error}


def write_node_jobs(out_dir: str | Path, before: dict[str, Any], environ: dict[str, str] | None = None) -> Path | None:
    """Write this node's record (``colocation_node<N>.json``): the jobs seen before and after the cell,
    and the CPUs this Slurm step may run on (what the launcher and its ranks inherit).

    Never replaces a record already there, and never raises: a record that cannot be written is
    said on stderr (the Slurm task's log); the cell's measurements do not depend on it.
    """
    env = os.environ if environ is None else environ
    after = node_jobs_snapshot(env)
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = []
    record = {
        "version": RECORD_VERSION,
        "node": env.get("SLURMD_NODENAME"),
        "node_rank": int(env.get("SLURM_NODEID", "0")),
        "job_id": env.get("SLURM_JOB_ID"),
        "step_cpus_allowed": len(cpus) or None,
        "step_cpus_per_task": env.get("SLURM_CPUS_PER_TASK"),
        "before": before,
        "after": after,
    }
    path = Path(out_dir) / NODE_JOBS_FILE.format(node=record["node_rank"])
    try:
        written = write_atomic_text(path, json.dumps(record, indent=1), keep_existing=True)
    except OSError as err:
        print(f"dnnbench: node record {path} not written: {err}", file=sys.stderr, flush=True)
        return None
    if not written:
        print(f"dnnbench: node record {path} not written: one is already there (kept)", file=sys.stderr, flush=True)
        return None
    return path
