"""What makes a cell itself: its id, which keys may differ within one cell, and the id scheme.

A cell's id hashes its resolved config, hardware included (the cluster profile, partition,
constraint, GPU type and count, CPUs and memory per GPU, setup lines): a sweep over partitions
keeps one cell per partition. Only :data:`SCHEDULING_KEYS` and the knob sections of frameworks
other than the cell's (jobs/frameworks.py) are left out; grid points that differ
in nothing else are one cell, and the plan reports every such merge (:func:`merge_notes`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.frameworks import foreign_knobs
from jobs.schema import value_at, without_added_defaults
from orchestrator.errors import ConfigError

# What cell_id hashes. A sweep folder planned under another scheme holds its cells under ids this
# version would not give them: continuing it would run them a second time (check_cell_id_scheme).
#   1: the config without `cluster` (two partitions were one cell).
#   2: the config without SCHEDULING_KEYS only.
#   3: also without the knob sections of other frameworks (a ddp cell's id ignores `horovod:`,
#      `pipeline:`, `fsdp:`), so adding a framework's section or changing its defaults leaves every
#      other framework's cells where they were.
CELL_ID_SCHEME = 3

# Keys that say how a cell is queued or reached, never what it runs on or what it measures:
# time limits, account, QOS, requeues, the signal before the limit, how many tasks run at once,
# and how horovodrun's ssh reaches the other nodes. `cluster.scratch` is a node-local folder
# resolved from the submitting shell's $TMPDIR: were it identity, the same command rerun from
# another shell would give every cell a new id. Every other key, now or added later, is identity.
SCHEDULING_KEYS = (
    "model.time_limit_min",
    "cluster.time_limit_min",
    "cluster.account",
    "cluster.qos",
    "cluster.max_requeues",
    "cluster.signal_delay_s",
    "cluster.array_parallelism",
    "cluster.ssh_port",
    "cluster.ssh_identity_file",
    "cluster.scratch",
)


def _by_section(keys: tuple[str, ...]) -> dict[str, frozenset[str]]:
    sections: dict[str, set[str]] = {}
    for key in keys:
        section, _, leaf = key.partition(".")
        sections.setdefault(section, set()).add(leaf)
    return {section: frozenset(leaves) for section, leaves in sections.items()}


_SCHEDULING_BY_SECTION = _by_section(SCHEDULING_KEYS)


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that a cell id hashes (one pass: sweeps plan 100,000 cells)."""
    kept = without_added_defaults(config)  # a copy: its sections may be replaced
    for section in foreign_knobs(value_at(kept, "framework.name")):
        kept.pop(section, None)
    for section, leaves in _SCHEDULING_BY_SECTION.items():
        node = kept.get(section)
        if isinstance(node, dict):
            kept[section] = {k: v for k, v in node.items() if k not in leaves}
    return kept


def cell_id(config: dict[str, Any]) -> str:
    """A stable id from what the cell runs on and measures (the resolved config minus scheduling).

    Keys added later (``jobs.schema.ADDED_CONFIG_DEFAULTS``) are left out while at their default,
    so rerunning an existing sweep finds its cells, and their results, under the same ids.
    """
    return digest(identity(config))


def digest(identified: dict[str, Any]) -> str:
    """12 hex digits of the SHA-256 of ``identified``'s sorted, compact JSON text: a cell's id (of its
    :func:`identity`) and, of the identity less ``repeat``, its configuration's key (``analysis.load``)."""
    text = json.dumps(identified, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class MergedPoint:
    """A grid point that gave the id of an earlier one: it runs as that cell, with its values."""

    kept: tuple[str, ...]  # the earlier point's overrides
    dropped: tuple[str, ...]  # this point's overrides
    # The keys whose values differ: scheduling keys, or knobs of frameworks other than the cell's
    # (empty: the same config spelled twice).
    keys: tuple[str, ...]
    example: str  # one differing key, as `key=kept value (not dropped value)`

    @classmethod
    def of(cls, kept: Any, dropped: Any) -> MergedPoint:
        """From two planned cells (anything with ``overrides`` and ``config``) of one id."""
        keys = _differing_keys(kept.config, dropped.config)
        example = f"{keys[0]}={value_at(kept.config, keys[0])}, not {value_at(dropped.config, keys[0])}" if keys else ""
        return cls(tuple(kept.overrides), tuple(dropped.overrides), keys, example)


def _differing_keys(kept: dict[str, Any], dropped: dict[str, Any]) -> tuple[str, ...]:
    keys = [k for k in SCHEDULING_KEYS if value_at(kept, k) != value_at(dropped, k)]
    for section in sorted(foreign_knobs(value_at(kept, "framework.name"))):
        ours, theirs = kept.get(section) or {}, dropped.get(section) or {}
        keys += [f"{section}.{leaf}" for leaf in sorted({*ours, *theirs}) if ours.get(leaf) != theirs.get(leaf)]
    return tuple(keys)


def merge_notes(merged: list[MergedPoint]) -> list[str]:
    """One sentence per kind of merge: how many grid points became how many cells, and why."""
    by_keys: dict[tuple[str, ...], list[MergedPoint]] = {}
    for point in merged:
        by_keys.setdefault(point.keys, []).append(point)
    notes = []
    for keys, points in by_keys.items():
        kept = {p.kept for p in points}
        total = len(kept) + len(set(points))  # each repeat of a point merges on its own: counted once
        cells = f"{len(kept)} cell" + ("s" if len(kept) > 1 else "")
        if keys:
            notes.append(
                f"{total} grid points differ only in scheduling keys or knobs their framework does not read "
                f"({', '.join(keys)}): merged into {cells}; each runs with its first point's values "
                f"(here {points[0].example})"
            )
        else:
            notes.append(f"{total} grid points are the same config written differently: merged into {cells}")
    return notes


def backend_problem(configs: list[dict[str, Any]]) -> str | None:
    """Why these cells cannot be one sweep: it runs on one backend (local or one Slurm cluster)."""
    backends = sorted({str(c["cluster"]["backend"]) for c in configs})
    if len(backends) < 2:
        return None
    return (
        f"the cells run on different backends ({', '.join(backends)}): a sweep runs on one; "
        "run one sweep per cluster.backend (each with its own --sweep-dir)"
    )


def check_cell_id_scheme(manifest: Path) -> None:
    """Refuse to continue a sweep folder whose cells were given ids by another scheme."""
    if not manifest.is_file():
        return
    try:
        scheme = json.loads(manifest.read_text()).get("cell_id_scheme", 1)
    except (OSError, ValueError, AttributeError) as err:
        raise ConfigError(
            f"{manifest} cannot be read ({err}), so which cell ids its cells have cannot be told: use a new --sweep-dir"
        ) from err
    if scheme == CELL_ID_SCHEME:
        return
    older = isinstance(scheme, int) and scheme < CELL_ID_SCHEME
    raise ConfigError(
        f"{manifest.parent} was planned by {'an older' if older else 'another'} dnnbench (cell id scheme "
        f"{scheme}; this one uses {CELL_ID_SCHEME}): its cells would get other ids here and run a second time. "
        f"Plan new cells in a new --sweep-dir; `dnnbench resubmit {manifest.parent}` still reruns its failed "
        "and missing cells, and status and aggregate read it as before."
    )
