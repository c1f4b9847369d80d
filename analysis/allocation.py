"""What each cell was given, against what it asked for: CPUs, GPUs and the Horovod build.

Every rank records the CPUs it may run on and the GPUs it sees (``environment.resources``,
jobs/environment.py), and Horovod ranks what their Horovod was built with
(``extra.framework_knobs.*_built``). None of it is in the environment hash (cells are given
different CPUs and GPUs by design); what matters is whether a rank got what its cell asked
for. A rank with fewer CPUs than its threads, or a GPU cell whose rank sees no GPU or whose
Horovod reduces CUDA tensors without NCCL, measured something else: :func:`shortfalls` says
so, the results carry it in ``allocation`` and :mod:`analysis.confounds` flags the row.
"""

from __future__ import annotations

from typing import Any

from analysis import per_config

# The columns this module adds to the cells and the results tables.
COLUMNS = ("cpus_per_rank", "gpus_per_rank", "horovod_nccl", "allocation")


def _resources(doc: dict[str, Any]) -> dict[str, Any]:
    found = (doc.get("environment") or {}).get("resources")
    return found if isinstance(found, dict) else {}


def _count(value: Any) -> int | None:
    return value if type(value) is int else None


def _horovod_builds(doc: dict[str, Any]) -> dict[str, Any]:
    knobs = (doc.get("extra") or {}).get("framework_knobs")
    return {k: v for k, v in knobs.items() if k.endswith("_built")} if isinstance(knobs, dict) else {}


def shortfalls(docs: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """What ranks lacked of what the cell asked for ([] when nothing, or nothing was recorded)."""
    threads = config.get("threads_per_process")
    found = []
    for doc in docs:
        rank, given = doc.get("rank"), _resources(doc)
        cpus = _count(given.get("cpus_allowed_count"))
        if cpus is not None and isinstance(threads, int) and cpus < threads:
            found.append(f"rank {rank}: {cpus} CPU(s) for {threads} threads")
        if doc.get("device_type") == "cuda" and _count(given.get("gpus_visible")) == 0:
            found.append(f"rank {rank}: a GPU cell that sees no GPU")
        builds = _horovod_builds(doc)
        if doc.get("device_type") == "cuda" and builds and not builds.get("nccl_built"):
            found.append(f"rank {rank}: Horovod without NCCL on a GPU")
    return found


def cell_columns(docs: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """The cell's fewest CPUs and GPUs given to a rank, its Horovod's NCCL, and what fell short."""
    cpus = [c for d in docs if (c := _count(_resources(d).get("cpus_allowed_count"))) is not None]
    gpus = [g for d in docs if (g := _count(_resources(d).get("gpus_visible"))) is not None]
    nccl = {_horovod_builds(d).get("nccl_built") for d in docs if _horovod_builds(d)}
    return {
        "cpus_per_rank": min(cpus) if cpus else None,
        "gpus_per_rank": min(gpus) if gpus else None,
        # NCCL's version as Horovod reports it (0: built without); empty for other frameworks.
        "horovod_nccl": str(min(nccl)) if nccl and None not in nccl else "",
        "allocation": "; ".join(shortfalls(docs, config)[:4]),
    }


def attach(results: Any, cells: Any) -> Any:
    """Add :data:`COLUMNS` to the results: the fewest CPUs and GPUs over the repeats, every shortfall."""
    return per_config.attach(
        results,
        cells,
        {"cpus_per_rank": "min", "gpus_per_rank": "min", "horovod_nccl": per_config.join_texts,
         "allocation": per_config.join_texts},
    )  # fmt: skip
