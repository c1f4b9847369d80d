"""How busy each cell's nodes were while it measured, and whether that makes it a confound.

Reads what jobs/colocation.py recorded: per rank and phase the dump's ``extra.colocation``
(CPU time of other processes on the node, CPU steal, load average, other processes on its GPU),
and per node the attempt's ``colocation_node<N>.json`` (other Slurm jobs on the node, from
``squeue``). A phase was measured **beside other work** when any of these holds on any of its
nodes (:func:`busy_reasons`):

- other processes used at least :data:`OTHER_CPUS_BUSY` CPUs on average (the node's busy time
  minus the cell's own processes);
- the hypervisor stole at least :data:`STEAL_BUSY` of the CPU time;
- another process ran on one of its GPUs;
- another Slurm job was running on one of its nodes.

The ``busy`` column names what it was (empty: nothing seen, or nothing recorded); the numeric
columns say how much. ``analysis.confounds`` flags busy rows like other confounds.
"""

from __future__ import annotations

import fnmatch
import math
import os
from pathlib import Path
from typing import Any

from analysis import per_config
from jobs import schema

OTHER_CPUS_BUSY = 0.5
STEAL_BUSY = 0.05
NODE_FILES = "colocation_node*.json"
# The columns this module adds to the cells and the results tables.
COLUMNS = ("other_cpus", "cpu_steal", "load_1m", "other_gpu_processes", "other_slurm_jobs", "busy")
_NAMED = 3  # other processes named in the busy text
_UNREAD = object()  # phase_columns: the caller did not read node_jobs


def _phase_records(docs: list[dict[str, Any]], phase: str) -> list[dict[str, Any]]:
    records = []
    for doc in docs:
        section = (doc.get("extra") or {}).get("colocation")
        record = section.get("phases", {}).get(phase) if isinstance(section, dict) else None
        if isinstance(record, dict):
            records.append(record)
    return records


def _numbers(records: list[dict[str, Any]], key: str) -> list[float]:
    values = [r.get(key) for r in records]
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _peak(values: list[float]) -> float:
    return max(values) if values else math.nan


def node_jobs(attempt_dir: Path) -> dict[str, dict[str, Any]] | None:
    """Other Slurm jobs seen on the attempt's nodes (job id -> squeue's line); None when none was asked."""
    seen: dict[str, dict[str, Any]] = {}
    asked = False
    for path in _node_files(attempt_dir):
        record, error = schema.read_json(path)  # a regular file of bounded size only: never blocks on a FIFO
        if error:
            continue
        for moment in ("before", "after"):
            jobs = (record.get(moment) or {}).get("jobs") if isinstance(record, dict) else None
            if isinstance(jobs, list):
                asked = True
                seen.update({str(j.get("job_id")): j for j in jobs if isinstance(j, dict)})
    return seen if asked else None


def _node_files(attempt_dir: Path) -> list[Path]:
    """The attempt's node records, sorted (``os.scandir`` and ``fnmatch``: Path.glob cost more than reading
    the cell's dumps)."""
    try:
        with os.scandir(attempt_dir) as entries:
            names = sorted(entry.name for entry in entries if fnmatch.fnmatchcase(entry.name, NODE_FILES))
    except OSError:  # as Path.glob: an attempt folder that cannot be listed holds no node record
        return []
    return [attempt_dir / name for name in names]


def _named_processes(records: list[dict[str, Any]]) -> str:
    busiest: dict[str, float] = {}
    for record in records:
        for process in record.get("other_processes_named") or []:
            name = f"{process.get('name')} (pid {process.get('pid')})"
            busiest[name] = max(busiest.get(name, 0.0), float(process.get("cpus") or 0.0))
    top = sorted(busiest.items(), key=lambda item: -item[1])[:_NAMED]
    return ", ".join(f"{name} {cpus:.2f}" for name, cpus in top)


def busy_reasons(row: dict[str, Any], records: list[dict[str, Any]], jobs: dict[str, Any] | None) -> list[str]:
    reasons = []
    if row["other_cpus"] >= OTHER_CPUS_BUSY:
        named = _named_processes(records)
        reasons.append(f"{row['other_cpus']:.2f} CPUs of other processes" + (f" ({named})" if named else ""))
    if row["cpu_steal"] >= STEAL_BUSY:
        reasons.append(f"{100 * row['cpu_steal']:.0f}% CPU steal")
    if row["other_gpu_processes"] > 0:
        reasons.append(f"{int(row['other_gpu_processes'])} other process(es) on its GPU(s)")
    if jobs:
        listed = ", ".join(sorted(jobs)[:5]) + (", …" if len(jobs) > 5 else "")
        reasons.append(f"{len(jobs)} other Slurm job(s) on its node(s) ({listed})")
    return reasons


def phase_columns(
    docs: list[dict[str, Any]], attempt_dir: Path, phase: str, jobs: Any = _UNREAD
) -> dict[str, Any]:
    """The cell's colocation columns for one phase (NaN and "" where nothing was recorded); ``jobs``:
    :func:`node_jobs` of the attempt, read once by a caller that asks for every phase."""
    records = _phase_records(docs, phase)
    gpu_counts = [
        len(r["gpu"]["other_processes"])
        for r in records
        if isinstance(r.get("gpu"), dict) and isinstance(r["gpu"].get("other_processes"), list)
    ]
    if jobs is _UNREAD:
        jobs = node_jobs(attempt_dir)
    row: dict[str, Any] = {
        "other_cpus": _peak(_numbers(records, "other_cpus")),
        "cpu_steal": _peak(_numbers(records, "steal_fraction")),
        "load_1m": _peak([v for r in records for v in (r.get("load_1m") or []) if isinstance(v, (int, float))]),
        "other_gpu_processes": _peak([float(n) for n in gpu_counts]),
        "other_slurm_jobs": math.nan if jobs is None else float(len(jobs)),
    }
    row["busy"] = "; ".join(busy_reasons(row, records, jobs))
    return row


def attach(results: Any, cells: Any) -> Any:
    """Add :data:`COLUMNS` to the results: over a configuration's repeats, the busiest value and
    every distinct ``busy`` text."""
    how = {c: "max" for c in COLUMNS if c != "busy"}
    return per_config.attach(results, cells, {**how, "busy": per_config.join_texts})


def text(value: Any) -> str:
    """A ``busy`` value as text (a results table read back from CSV holds NaN for empty)."""
    return value if isinstance(value, str) else ""


def summary(results: Any) -> list[str]:
    """One sentence when rows were measured beside other work (for captions and the report)."""
    if "busy" not in results or results.empty:
        return []
    busy = [text(v) for v in results["busy"]]
    count = sum(1 for v in busy if v)
    if not count:
        return []
    return [
        f"Confound: {count} of {len(busy)} rows were measured beside other work on their nodes (other "
        "processes' CPU load, CPU steal, other processes on their GPUs or other Slurm jobs): see the busy column. "
        "cluster.exclusive=true keeps other jobs off a cell's nodes."
    ]
