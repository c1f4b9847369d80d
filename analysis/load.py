"""Sweep folders → one row per cell × phase, plus the cells that could not be used and why.

Which attempt counts for a cell: the newest attempt whose ``outcome.json`` says
``completed`` or, without ``outcome.json``, whose dumps are all present and valid.
Earlier attempts are ignored, never mixed. Every dump of the chosen attempt is read
and validated against :mod:`jobs.schema`, for meaning as well as type, and against the
cell's ``cell.json`` (:func:`jobs.schema.read_attempt`); one missing, corrupt, truncated,
foreign-version, nonsensical or foreign-config dump excludes the whole cell (listed with
every reason), it never crashes the aggregation and never averages in.

Global throughput of a cell and phase: :func:`jobs.throughput.global_throughput` (the
conservative definition, the same number `dnnbench run` prints). Sweeps, cells and attempts
are found through :mod:`jobs.layout`, as the orchestrator finds them.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import statistics
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis import allocation, breakdown, colocation
from analysis.errors import AnalysisError
from analysis.row_table import RowTable
from analysis.stats import summarize
from jobs import schema
from jobs.layout import CELL_FILE, AttemptPaths, CellPaths, SweepLayout, has_cells, sweep_folders
from jobs.schema.memo import ExactMemo
from jobs.throughput import global_throughput
from orchestrator.cell_identity import digest, identity

# The keys that make two environments comparable; jobs.environment owns the list.
COMPARABLE_KEYS = schema.COMPARABLE_KEYS
_PARALLEL_MIN_CELLS = 400


@dataclass
class CellRows:
    """What one cell folder yields: phase rows, per-rank memory rows, problems, context."""

    sweep: str
    cell_id: str
    attempt: int | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    ranks: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] | None = None
    config_key: str | None = None
    flat_config: dict[str, Any] | None = None

    def problem(self, attempt: int | None, reason: str, excluded: bool = True) -> None:
        self.problems.append(
            {
                "sweep": self.sweep,
                "cell_id": self.cell_id,
                "attempt": attempt,
                "status": "excluded" if excluded else "note",
                "reason": reason,
            }
        )


@dataclass
class Loaded:
    """Everything read from one or more sweeps, as DataFrames (see docs/analysis.md)."""

    cells: Any  # pandas.DataFrame: a row per cell × phase
    ranks: Any  # pandas.DataFrame: a row per cell × phase × rank (memory, throughput)
    stages: Any  # pandas.DataFrame: pipeline stage balance (may be empty)
    problems: Any  # pandas.DataFrame: sweep, cell_id, attempt, status, reason
    environments: dict[str, dict[str, Any]]  # environment_hash → comparable fields
    configs: dict[str, dict[str, Any]]  # config_key → flattened config (minus repeat)
    sweeps: dict[str, str]  # sweep name → path


# --------------------------------------------------------------------------- discovery


def find_sweeps(paths: Iterable[str | os.PathLike[str]]) -> dict[str, Path]:
    """Sweep name → root for each path: a sweep (has ``cells/``) or a folder of sweeps."""
    found: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        roots = [root for root in sweep_folders(path) if has_cells(root)] if path.is_dir() else []
        if not roots:
            raise AnalysisError(
                f"{raw}: not a sweep folder (no cells/ inside, nor sweeps below it). "
                "Pass the SWEEP_DIR that `dnnbench sweep` printed."
            )
        for root in roots:
            name = root.resolve().name
            if name in found and found[name].resolve() != root.resolve():
                name = f"{root.resolve().parent.name}/{name}"
            found[name] = root
    return found


# --------------------------------------------------------------------------- one cell


@dataclass
class CellDeclaration:
    """What a cell's ``cell.json`` says its dumps must be (nothing when it is unreadable)."""

    config: dict[str, Any] | None = None
    cell_id: str | None = None
    world_size: int | None = None
    reasons: list[str] = field(default_factory=list)


def read_cell_file(cell_dir: Path) -> CellDeclaration:
    """The cell's ``cell.json``; an unreadable one is a reason to exclude the cell (its dumps cannot be checked)."""
    doc, error = schema.read_json(CellPaths(cell_dir).cell_file)
    if error:
        return CellDeclaration(reasons=[f"{CELL_FILE} {error}: the dumps cannot be checked against their cell"])
    config = doc.get("config") if isinstance(doc, dict) else None
    world = schema.world_size_of(config)
    if not isinstance(config, dict) or world is None:
        return CellDeclaration(reasons=[f"{CELL_FILE} holds no config with positive gpus and nodes"])
    cell_id = doc.get("cell_id")
    return CellDeclaration(config=config, cell_id=cell_id if isinstance(cell_id, str) else None, world_size=world)


def _read_attempt(
    attempt_dir: Path, cell: CellDeclaration, expected: Any = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """(valid dumps sorted by rank, every reason the attempt is not complete and valid).

    How many ranks: the cell's ``gpus × nodes``; without a readable ``cell.json``, the
    outcome's ``ranks_expected``, else the rank files present (the cell is excluded then).
    """
    world = cell.world_size
    if world is None:
        world = expected if type(expected) is int and expected > 0 else AttemptPaths(attempt_dir).ranks_present()
    if not world:
        return [], [*cell.reasons, "no rank dumps"]
    docs, reasons = schema.read_attempt(attempt_dir, world, cell.config, cell.cell_id)
    return docs, [*cell.reasons, *reasons]


def _timeline(attempt_dir: Path, first: dict[str, Any]) -> str:
    """The Horovod timeline the attempt kept (``horovod.timeline=true``), else ''."""
    name = ((first.get("extra") or {}).get("framework_knobs") or {}).get("timeline")
    return str(attempt_dir / name) if name and (attempt_dir / name).is_file() else ""


def _choose_attempt(cell: CellRows, cell_dir: Path):
    """(attempt number, its dumps) of the attempt that counts, or (None, None)."""
    attempts = CellPaths(cell_dir).numbered_attempts()
    if not attempts:
        cell.problem(None, "no attempt folder (never started)")
        return None, None
    cell_file = read_cell_file(cell_dir)
    skipped: list[tuple[int, str]] = []
    for number, path in reversed(attempts):
        outcome, error = schema.read_json(AttemptPaths(path).outcome)
        if isinstance(outcome, dict) and outcome.get("state") == "completed":
            docs, reasons = _read_attempt(path, cell_file, outcome.get("ranks_expected"))
            if reasons:
                cell.problem(number, f"attempt {number} says completed but: " + "; ".join(reasons))
                return None, None
            chosen = number
        elif outcome is not None or (error and error != "missing"):
            state = outcome.get("state", "?") if isinstance(outcome, dict) else f"outcome {error}"
            why = outcome.get("reasons", []) if isinstance(outcome, dict) else []
            cls = outcome.get("failure_class") if isinstance(outcome, dict) else None
            detail = f"{state}" + (f" ({cls})" if cls else "")
            skipped.append((number, detail + (": " + "; ".join(map(str, why[:3])) if why else "")))
            continue
        else:
            docs, reasons = _read_attempt(path, cell_file)
            if reasons:
                skipped.append((number, "no outcome.json and " + "; ".join(reasons)))
                continue
            chosen = number
        for later, detail in skipped:
            cell.problem(later, f"attempt {later} ignored ({detail}); using attempt {chosen}", excluded=False)
        for older, older_path in attempts:
            if older < chosen:
                previous, _ = schema.read_json(AttemptPaths(older_path).outcome)
                if isinstance(previous, dict) and previous.get("state") == "completed":
                    cell.problem(
                        older,
                        f"attempt {older} also completed: ignored "
                        f"(only the newest completed attempt, {chosen}, counts)",
                        excluded=False,
                    )
        return chosen, docs
    for number, detail in skipped:
        cell.problem(number, f"attempt {number}: {detail}")
    return None, None


def config_key(config: dict[str, Any]) -> str:
    """Identifies a configuration: what identifies its cells (:func:`orchestrator.cell_identity.identity`) minus
    ``repeat``, which its repeats differ in. Keys that never identify a cell (time limits, queues, scratch folder,
    other frameworks' knob sections) never split a configuration's repeats into two rows either."""
    return digest({k: v for k, v in identity(config).items() if k != "repeat"})


def _configuration_of(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(:func:`config_key`, the flattened config minus ``repeat``) of a cell's config, worked out once for all
    the repeats of a configuration (``config`` was parsed from cell.json and dumps: JSON's types only)."""
    measured = {k: v for k, v in config.items() if k != "repeat"}
    key, flat = _CONFIGURATIONS.get(measured, lambda: (config_key(config), flatten(measured)), decoded=True)
    return key, dict(flat)  # a copy: whoever holds the row may change it


_CONFIGURATIONS: ExactMemo[tuple[str, dict[str, Any]]] = ExactMemo()


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def comparable_environment(env: dict[str, Any]) -> dict[str, Any]:
    """The fields of an environment that decide comparability, nested dicts flattened."""
    out: dict[str, Any] = {}
    for key in COMPARABLE_KEYS:
        value = env.get(key)
        if isinstance(value, dict):
            for sub, subvalue in sorted(value.items()):
                out[f"{key}.{sub}"] = subvalue
        else:
            out[key] = value
    return out


def _max_or_none(values: Iterable[Any]) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _phase_row(docs: list[dict[str, Any]], phase: str) -> tuple[dict[str, Any], str | None]:
    records = [d["phases"][phase] for d in docs]
    counting = [p for d, p in zip(docs, records, strict=True) if d["counts_samples"]]
    if not counting:
        return {}, f"{phase}: no rank has counts_samples=true"
    samples, seconds, throughput = global_throughput(docs, phase)
    steps = min(len(p["step_times_s"]) for p in records)
    per_step = math.fsum(p["samples"] / p["timed_steps"] for p in counting if p["timed_steps"])
    # The slowest rank of each step (the lists cut to the shortest): max over zipped lists runs in C.
    slowest_of_step = list(map(max, zip(*(p["step_times_s"][:steps] for p in records), strict=True)))
    # Validated dumps always pass; the guard keeps a step that cannot be a rate out of the statistics.
    step_tp = [per_step / slowest for slowest in slowest_of_step if per_step > 0 and 0 < slowest < math.inf]
    step_stats = summarize(step_tp)
    correct = [p.get("correct") for p in records if p.get("correct") is not None]
    evaluated = [p.get("evaluated") for p in records if p.get("evaluated") is not None]
    losses = [p["loss"] for p in records if p.get("loss") is not None]
    row = {
        "phase": phase,
        "samples": samples,
        "seconds": seconds,
        "throughput": throughput,
        "rank_throughput_min": min(p["throughput_samples_per_s"] for p in counting),
        "rank_throughput_max": max(p["throughput_samples_per_s"] for p in counting),
        "timed_steps": steps,
        "step_time_mean_s": math.fsum(per_step / t for t in step_tp) / len(step_tp) if step_tp else math.nan,
        **{f"step_{k}": v for k, v in step_stats.items()},
        "peak_allocated_bytes": _max_or_none(p["memory"].get("peak_allocated_bytes") for p in records),
        "peak_reserved_bytes": _max_or_none(p["memory"].get("peak_reserved_bytes") for p in records),
        "peak_rss_bytes": _max_or_none(p["memory"].get("peak_rss_bytes") for p in records),
        "accuracy": sum(correct) / sum(evaluated) if evaluated and sum(evaluated) else math.nan,
        "evaluated": sum(evaluated) if evaluated else 0,
        "loss": math.fsum(losses) / len(losses) if losses else math.nan,
        **energy_columns(docs, phase, samples),
    }
    return row, None


def energy_columns(docs: list[dict[str, Any]], phase: str, samples: int) -> dict[str, Any]:
    """``energy_j`` of a cell's phase: every rank's GPU plus each host's CPU package once (the
    package counter covers the node, so ranks sharing a host read the same joules); NaN with
    ``energy_reason`` where no counter was read. ``energy_sources`` names what was summed."""
    gpu = [(d["phases"][phase].get("energy") or {}).get("gpu_j") for d in docs]
    per_host: dict[str, float] = {}
    reasons: set[str] = set()
    for doc in docs:
        energy = doc["phases"][phase].get("energy") or {}
        host = str(doc["environment"].get("hostname"))
        if energy.get("cpu_package_j") is not None:
            per_host[host] = max(per_host.get(host, 0.0), energy["cpu_package_j"])
        reasons.update(str(energy[k]) for k in ("gpu_reason", "cpu_reason") if energy.get(k))
        if not energy:
            reasons.add("not recorded (dump written before energy was measured)")
    sources = (["gpu"] if all(j is not None for j in gpu) else []) + (["cpu_package"] if per_host else [])
    if not sources:
        reason = _joined(reasons)
        return {"energy_j": math.nan, "samples_per_j": math.nan, "energy_sources": "", "energy_reason": reason}
    joules = (math.fsum(gpu) if "gpu" in sources else 0.0) + math.fsum(per_host.values())
    return {
        "energy_j": joules,
        "samples_per_j": samples / joules if joules > 0 else math.nan,
        "energy_sources": "+".join(sources),
        "energy_reason": "",
    }


# Model state per process (analysis column -> the dump's model_state fields it adds up), GiB.
MODEL_STATE_COLUMNS = {
    "model_state_gib": schema.MODEL_STATE_FIELDS,
    "model_state_parameter_gib": ("parameter_bytes",),
    "model_state_gradient_gib": ("gradient_bytes",),
    "model_state_optimizer_gib": ("optimizer_state_bytes",),
}


def model_state_columns(docs: list[dict[str, Any]]) -> dict[str, float]:
    """What one process holds of the model (max over ranks; ``model_state_gib`` = parameters + gradients +
    optimizer state), GiB; NaN when a rank did not record it (dumps from before, or a null section)."""
    sections = [d.get("model_state") for d in docs]
    if not sections or any(not isinstance(section, dict) for section in sections):
        return dict.fromkeys(MODEL_STATE_COLUMNS, math.nan)
    return {
        column: max(sum(section[field] for field in fields) for section in sections) / 2**30
        for column, fields in MODEL_STATE_COLUMNS.items()
    }


def _joined(reasons: set[str]) -> str:
    return "; ".join(sorted(reasons))


def _stage_rows(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pipeline stage balance: predicted and measured time per stage and step (jobs/schema/pipeline_section.py types the
    section; every rank's ``per_stage`` describes every stage, so the first rank's is read)."""
    section = docs[0].get("pipeline")
    if not isinstance(section, dict):
        return []
    return [
        {"stage": stage["stage"], "predicted_s": stage["predicted_stage_s"], "measured_s": stage["measured_stage_s"]}
        for stage in section["per_stage"]
    ]


def pipeline_columns(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """``pp_stages``, ``pp_replicas``: the shape a pipelined cell ran (the planner's or the config's);
    None for a cell without a pipeline."""
    section = docs[0].get("pipeline")
    if not isinstance(section, dict):
        return {"pp_stages": None, "pp_replicas": None}
    return {"pp_stages": section["stages"], "pp_replicas": section["replicas"]}


def read_cell(sweep: str, cell_dir: str) -> CellRows:
    """Read one cell folder; never raises for bad content (problems are recorded)."""
    path = Path(cell_dir)
    cell = CellRows(sweep=sweep, cell_id=path.name)
    try:
        attempt, docs = _choose_attempt(cell, path)
    except OSError as err:
        cell.problem(None, f"unreadable cell folder: {err}")
        return cell
    if attempt is None or not docs:
        return cell
    try:
        _tabulate(cell, path, attempt, docs)
    except (ArithmeticError, LookupError, TypeError, ValueError) as err:
        # Validated dumps never get here; if one does, it costs its cell, never the aggregation.
        failed = CellRows(sweep=sweep, cell_id=path.name, problems=cell.problems)
        failed.problem(attempt, f"could not be tabulated ({type(err).__name__}: {err})")
        return failed
    return cell


def _tabulate(cell: CellRows, path: Path, attempt: int, docs: list[dict[str, Any]]) -> None:
    """Fill ``cell``'s rows, per-rank rows and stage rows from the dumps of its counted attempt."""
    sweep = cell.sweep
    first = docs[0]
    if first["cell_id"] != cell.cell_id:
        cell.problem(attempt, f"folder {path.name} holds dumps of cell {first['cell_id']}", excluded=False)
        cell.cell_id = first["cell_id"]
    cell.attempt = attempt
    config = schema.with_added_defaults(first["config"])
    # Hashes recomputed from each rank's environment (defaults filled in), never the stored summaries.
    # (Every dump was parsed from its file: JSON's types only, which the hash's memo needs no walk to know.)
    rank_hashes = [
        schema.environment_hash(schema.with_environment_defaults(d["environment"]), decoded=True) for d in docs
    ]
    hashes = sorted(set(rank_hashes))
    # Fields recorded only by later versions get the value older dumps ran with, then the
    # hash is taken again: an old and a new dump of one environment compare equal.
    environment = schema.with_environment_defaults(first["environment"])
    cell.environment = comparable_environment(environment)
    cell.config_key, cell.flat_config = _configuration_of(config)
    base = {
        "sweep": sweep,
        "cell_id": cell.cell_id,
        "attempt": attempt,
        "config_key": cell.config_key,
        "framework": first["framework"],
        "model": first["model"],
        "dataset": first["dataset"],
        # Where batches came from: resident on the device, or read through a loader (timed).
        "data_on_device": bool(((first.get("extra") or {}).get("data") or {}).get("on_device", False)),
        "precision": config.get("precision"),
        "batch_size": config.get("batch_size"),
        "gpus": config.get("gpus"),
        "nodes": config.get("nodes"),
        # The Slurm partition the cell asked for ("" = the cluster's default, and local runs).
        "partition": (config.get("cluster") or {}).get("partition") or "",
        # The named environment the cell declared (its ranks were checked against its lock); older dumps: current.
        "env": (config.get("env") or {}).get("name") or "current",
        "world_size": first["world_size"],
        "repeat": first["repeat"],
        "device_type": first["device_type"],
        "memory_kind": first["memory_kind"],
        "environment_hash": rank_hashes[0],  # the first rank's, defaults filled in as above
        "rank_environments_differ": _rank_env_difference(docs) if len(hashes) > 1 else "",
        "timeline": _timeline(CellPaths(path).attempt(attempt), first),
        **allocation.cell_columns(docs, config),  # what each rank was given against what the cell asked
        **pipeline_columns(docs),
        **model_state_columns(docs),
    }
    rows = []
    attempt_dir = CellPaths(path).attempt(attempt)
    jobs = colocation.node_jobs(attempt_dir)  # one read of the node records for every phase
    for phase in schema.PHASES:
        row, error = _phase_row(docs, phase)
        if error:
            cell.problem(attempt, error)
            return
        # The split's size (extra.data.<phase>_samples) turns throughput into seconds per epoch.
        split = ((first.get("extra") or {}).get("data") or {}).get(f"{phase}_samples")
        row["split_samples"] = split if isinstance(split, int) and not isinstance(split, bool) else None
        rows.append(
            {
                **base,
                **row,
                **colocation.phase_columns(docs, attempt_dir, phase, jobs),
                **breakdown.phase_columns(docs, phase),  # where the step went
            }
        )
    cell.rows = rows
    cell.ranks = [
        {
            "sweep": sweep,
            "cell_id": cell.cell_id,
            "phase": phase,
            "rank": d["rank"],
            "node_rank": d["node_rank"],
            "local_rank": d["local_rank"],
            "node": node_name(d["environment"]),
            "hostname": str(d["environment"].get("hostname", "")),
            "device_index": d["environment"].get("device_index"),
            "step_median_s": _median(d["phases"][phase]["step_times_s"]),
            "counts_samples": d["counts_samples"],
            "memory_kind": d["memory_kind"],
            "throughput": d["phases"][phase]["throughput_samples_per_s"],
            "peak_allocated_bytes": d["phases"][phase]["memory"].get("peak_allocated_bytes"),
            "peak_reserved_bytes": d["phases"][phase]["memory"].get("peak_reserved_bytes"),
            "peak_rss_bytes": d["phases"][phase]["memory"].get("peak_rss_bytes"),
        }
        for d in docs
        for phase in schema.PHASES
    ]
    cell.stages = [
        {
            "sweep": sweep,
            "cell_id": cell.cell_id,
            "framework": first["framework"],
            "model": first["model"],
            "world_size": first["world_size"],
            "repeat": first["repeat"],
            **stage,
        }
        for stage in _stage_rows(docs)
    ]


def node_name(environment: dict[str, Any]) -> str:
    """The Slurm node a rank ran on (what ``sbatch --exclude`` takes), else its host name."""
    slurm = environment.get("slurm")
    named = slurm.get("SLURMD_NODENAME") if isinstance(slurm, dict) else None
    return str(named or environment.get("hostname", ""))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _rank_env_difference(docs: list[dict[str, Any]]) -> str:
    reference = comparable_environment(docs[0]["environment"])
    differences = []
    for doc in docs[1:]:
        env = comparable_environment(doc["environment"])
        for key, value in env.items():
            if value != reference.get(key):
                differences.append(f"rank {doc['rank']} {key}={value} vs rank 0 {reference.get(key)}")
    return "; ".join(differences[:5]) or "environment_hash differs between ranks"


# --------------------------------------------------------------------------- many cells


@dataclass
class ChunkRows:
    """What a run of cells yields, as a reader worker hands it back: their tables packed (:mod:`analysis.row_table`),
    their problems, and each environment and configuration the first time one of them has it."""

    cells: int = 0
    rows: RowTable = field(default_factory=RowTable)
    ranks: RowTable = field(default_factory=RowTable)
    stages: RowTable = field(default_factory=RowTable)
    problems: list[dict[str, Any]] = field(default_factory=list)
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, cell: CellRows) -> None:
        self.cells += 1
        self.rows.add(cell.rows)
        self.ranks.add(cell.ranks)
        self.stages.add(cell.stages)
        self.problems += cell.problems
        if cell.rows and cell.environment is not None:
            self.environments.setdefault(cell.rows[0]["environment_hash"], cell.environment)
        if cell.config_key and cell.flat_config is not None:
            self.configs.setdefault(cell.config_key, cell.flat_config)

    def extend(self, later: ChunkRows) -> None:
        """``later``'s cells after these (first seen wins, as cell by cell)."""
        self.cells += later.cells
        self.rows.extend(later.rows)
        self.ranks.extend(later.ranks)
        self.stages.extend(later.stages)
        self.problems += later.problems
        for known, more in ((self.environments, later.environments), (self.configs, later.configs)):
            for key, value in more.items():
                known.setdefault(key, value)


def _read_chunk(jobs: list[tuple[str, str]]) -> ChunkRows:
    chunk = ChunkRows()
    for sweep, cell_dir in jobs:
        chunk.add(read_cell(sweep, cell_dir))
    return chunk


def iter_cells(jobs: list[tuple[str, str]], workers: int | None = None) -> Iterator[ChunkRows]:
    """Read cells, in worker processes when there are many; yields them a run at a time, in order."""
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    if workers <= 1 or len(jobs) < _PARALLEL_MIN_CELLS:
        for job in jobs:
            yield _read_chunk([job])
        return
    size = max(50, len(jobs) // (workers * 8))
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_read_chunk, chunks)  # every worker forked by now: no thread below is copied into one
        # The tables need pandas once the cells are read; importing it while the workers read hides most of its
        # half second (the main thread only waits for their results meanwhile).
        threading.Thread(target=importlib.import_module, args=("pandas",), daemon=True).start()
        yield from results


def load_sweeps(paths: Iterable[str | os.PathLike[str]], progress: bool = True, workers: int | None = None) -> Loaded:
    """Read every cell of every sweep in ``paths`` into DataFrames (see :class:`Loaded`)."""
    sweeps = find_sweeps(paths)
    jobs = [(name, str(d)) for name, root in sweeps.items() for d in SweepLayout(root).cell_folders()]
    read = ChunkRows(problems=_vanished_cells(sweeps, jobs))
    with _progress(progress, len(jobs)) as advance:
        for chunk in iter_cells(jobs, workers):
            read.extend(chunk)
            advance(chunk.cells)
    import pandas as pd  # after the reading (iter_cells imports it meanwhile)

    problem_columns = ["sweep", "cell_id", "attempt", "status", "reason"]
    return Loaded(
        cells=_with_nullable_ints(read.rows.frame()),
        ranks=read.ranks.frame(),
        stages=read.stages.frame(),
        problems=pd.DataFrame(read.problems, columns=problem_columns).astype({"attempt": "Int64"}),
        environments=read.environments,
        configs=read.configs,
        sweeps={name: str(root) for name, root in sweeps.items()},
    )


def _vanished_cells(sweeps: dict[str, Path], jobs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """A problem row per cell the sweep's ledger planned whose folder is gone: counted, never dropped silently."""
    from orchestrator.paths import ledger_cell_ids  # read-only SQLite: the orchestrator owns the ledger

    present = {(sweep, Path(cell_dir).name) for sweep, cell_dir in jobs}
    vanished = []
    for name, root in sweeps.items():
        if not SweepLayout(root).ledger.is_file():  # the dumps alone (a pulled copy): nothing to hold them to
            continue
        for cell_id in ledger_cell_ids(SweepLayout(root).ledger):
            if (name, cell_id) not in present:
                vanished.append(CellRows(name, cell_id))
                vanished[-1].problem(None, f"cell folder missing: the ledger planned cells/{cell_id}, now absent")
    return [row for cell in vanished for row in cell.problems]


# Counts a cell may lack (None), as nullable ints: 2, not 2.0, empty where absent, and combined per configuration
# in C (an object column of ints and Nones took pandas' per-group Python road).
NULLABLE_INT_COLUMNS = ("pp_stages", "pp_replicas", "cpus_per_rank", "gpus_per_rank")


def _with_nullable_ints(cells: Any) -> Any:
    present = [c for c in NULLABLE_INT_COLUMNS if c in cells]
    return cells.astype(dict.fromkeys(present, "Int64")) if present else cells


class _progress:
    """A rich progress bar over cells (to stderr); a no-op when disabled."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.bar, self.task = enabled, total, None, None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self.bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("reading cells", total=self.total)
        return self.advance

    def advance(self, count: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, count)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
