"""The bandwidth actually available between a cell's processes, measured before warm-up.

A short all-reduce probe of a few sizes in the cell's own process group (the group the
framework's collectives use, over the same backend), as nccl-tests reports it: the *bus*
bandwidth, ``size / time × 2(n−1)/n``, which for a ring all-reduce is what each link carried.
With that, the lower bound of a step's communication is ``Σ payload × factor / bandwidth``
over the step's collectives (:func:`collective_factor`), and ``comm_efficiency`` in the results
is that bound over the communication time measured (jobs/breakdown.py). A multi-node cell also
probes each node's own processes, so intra- and inter-node bandwidth are recorded apart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from jobs.schema import bytes_moved, collective_factor, communication_bound_s

# 256 KiB to 32 MiB: from latency-bound to bandwidth-bound on every interconnect we target; the
# largest is the size of DDP's default bucket (25 MiB) rounded up.
PROBE_BYTES = (1 << 18, 1 << 22, 1 << 25)
PROBE_REPEATS = 3  # the fastest of these is kept: the link's capability, not its noise
GB = 1e9  # bandwidths in GB/s, as cluster.interconnect_gbps and cluster.intranode_gbps

__all__ = ["GB", "collective", "collective_factor", "probe", "section", "torch_distributed_probes"]


def collective(name: str, payload_bytes: int, processes: int) -> dict[str, Any]:
    """One collective of a step: what it moves, and the factor of its algorithm."""
    return {"collective": name, "payload_bytes": int(payload_bytes), "factor": collective_factor(name, processes)}


def probe(
    allreduce: Callable[[torch.Tensor], None],
    processes: int,
    device: torch.device,
    scope: str,
) -> dict[str, Any]:
    """All-reduce each of :data:`PROBE_BYTES` ``PROBE_REPEATS`` times (after one untimed), keep the fastest."""
    sizes = []
    for size in PROBE_BYTES:
        tensor = torch.ones(size // 4, dtype=torch.float32, device=device)
        allreduce(tensor)
        best = math.inf
        for _ in range(PROBE_REPEATS):
            _sync(device)
            start = time.perf_counter()
            allreduce(tensor)
            _sync(device)
            best = min(best, time.perf_counter() - start)
        bus = size / best * collective_factor("all_reduce", processes) / GB
        sizes.append({"bytes": size, "seconds": best, "bus_gbps": bus})
    return {
        "collective": "all_reduce",
        "scope": scope,
        "processes": processes,
        "sizes": sizes,
        "bus_gbps": max(s["bus_gbps"] for s in sizes),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torch_distributed_probes(device: torch.device, local_world: int) -> list[dict[str, Any]]:
    """The world group's probe, and where it spans nodes, each node's own (every rank takes part)."""
    import torch.distributed as dist

    world = dist.get_world_size()
    if world <= 1:
        return []
    nodes = world // max(local_world, 1)
    scope = "inter_node" if nodes > 1 else "intra_node"
    found = [probe(lambda t: dist.all_reduce(t), world, device, scope)]
    if nodes > 1 and local_world > 1:
        # new_group is collective: every rank creates every node's group, then uses its own.
        groups = [dist.new_group(list(range(n * local_world, (n + 1) * local_world))) for n in range(nodes)]
        own = groups[dist.get_rank() // local_world]
        found.append(probe(lambda t: dist.all_reduce(t, group=own), local_world, device, "intra_node"))
    return found


def section(
    probes: list[dict[str, Any]], collectives: list[dict[str, Any]], timed_in: tuple[str, ...] = ("comm",)
) -> dict[str, Any] | None:
    """The dump's ``communication`` section: the probes, and the collectives of one training step
    with its lower bound, and the breakdown's parts that time them (None on one process: nothing
    is communicated)."""
    if not probes:
        return None
    return {
        "probes": probes,
        "collectives": collectives,
        "bytes_per_step": bytes_moved(collectives),
        "bound_s": communication_bound_s(collectives, probes),
        "timed_in": list(timed_in),
    }
