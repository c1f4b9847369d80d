"""The bandwidth a pipeline cell's planner assumes: its own probe's, not the config's guess.

Every rank of a pipelined cell probes the bandwidth between the cell's processes before it plans
(jobs/comm_probe.py: the world group, and each node's own where the cell spans nodes); the planner
then weighs links by what was measured (``intra_node`` between processes of a node,
``inter_node`` between nodes) and falls back to ``cluster.intranode_gbps`` /
``cluster.interconnect_gbps`` only for a link the cell could not measure (one process, or one
node: no inter-node link).

A probe is noisy, and a shape chosen on a noisy figure would differ between repeats of one
configuration. So the first measurement of a set of nodes is cached beside the profiles (keyed by
the hosts, process counts, device and backend) and every later cell on the same nodes plans with
it, as the profile cache does for compute times; ``dnnbench plan --refresh`` and a new cache
folder measure again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from jobs.pipeline.planner import Topology
from jobs.schema import write_atomic

# `pipeline.bandwidth`: declared where the ranks read it; the plan-time check (jobs/checks/pipeline.py) reads the same.
PipelineBandwidth = Literal["measured", "config"]
BANDWIDTH_SOURCES: tuple[str, ...] = get_args(PipelineBandwidth)


@dataclass(frozen=True)
class PlannedBandwidth:
    """The links the planner weighs, and where each figure came from (``measured`` or ``config``)."""

    intranode_gbps: float
    interconnect_gbps: float
    source: str

    def topology(self, processes: int, per_node: int) -> Topology:
        return Topology(processes=processes, per_node=per_node, intranode_gbps=self.intranode_gbps,
                        interconnect_gbps=self.interconnect_gbps)  # fmt: skip


def from_probes(probes: Sequence[dict[str, Any]], nodes: int, per_node: int, intranode_gbps: float,
                interconnect_gbps: float) -> PlannedBandwidth:  # fmt: skip
    """Each link's probe where there is one, else the configured figure; ``source`` says whether
    the links this cell crosses (within a node, between nodes) were measured, configured, or both."""
    measured = {p["scope"]: float(p["bus_gbps"]) for p in probes if p.get("bus_gbps", 0) > 0}
    crossed = {"intra_node"} if nodes <= 1 else ({"inter_node"} if per_node <= 1 else {"intra_node", "inter_node"})
    found = crossed & set(measured)
    source = "measured" if found == crossed else ("config" if not found else "measured+config")
    return PlannedBandwidth(measured.get("intra_node", intranode_gbps), measured.get("inter_node", interconnect_gbps),
                            source)  # fmt: skip


def cache_key(hosts: Sequence[str], processes: int, per_node: int, device: str, backend: str) -> str:
    text = json.dumps([sorted(set(hosts)), processes, per_node, device, backend])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_path(key: str) -> Path:
    from jobs.pipeline.profiler import cache_dir  # torch: only a job reads the cache

    return cache_dir() / f"bandwidth-{key}.json"


def cached(key: str, measured: PlannedBandwidth, *, refresh: bool = False) -> PlannedBandwidth:
    """The bandwidth first measured for ``key`` (stored now if none was, or on ``refresh``)."""
    path = _cache_path(key)
    if path.exists() and not refresh:
        try:
            stored = json.loads(path.read_text())
            return PlannedBandwidth(float(stored["intranode_gbps"]), float(stored["interconnect_gbps"]),
                                    str(stored["source"]))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged cache entry is measured again, never trusted
    write_atomic(path, measured.__dict__)  # concurrent cells: the last complete file wins, never half of one
    return measured
