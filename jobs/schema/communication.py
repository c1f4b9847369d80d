"""A phase's step-time ``breakdown`` and the dump's ``communication`` section: fields, factors, bounds, rules."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from jobs.schema.fields import _NUM, _NUMBER_TYPES, _RATIO_TOLERANCE, _check_fields, nulls_filled

# --------------------------------------------------------------------------- breakdown, communication

# The parts a step's time splits into (jobs/breakdown.py PARTS), and the clocks that time them.
BREAKDOWN_PARTS = ("data", "forward", "backward", "exposed_comm", "optimizer", "wait", "other")
BREAKDOWN_CLOCKS = ("host", "cuda_events")
# ``other`` is what no part claimed, so the parts add up to the step time up to rounding; the slack
# covers a GPU's parts and step clock being separate events on one stream.
_PARTS_SUM_RELATIVE, _PARTS_SUM_ABSOLUTE_S = 0.02, 1e-3
PROBE_SCOPES = ("intra_node", "inter_node")
COMMUNICATION_TIMED_IN = ("comm", "wait")
_BREAKDOWN: dict[str, tuple[type | None, ...]] = {"clock": (str,), "parts_s": (dict,), "comm_s": (list, None)}
_COMMUNICATION: dict[str, tuple[type | None, ...]] = {
    "probes": (list,),
    "collectives": (list,),
    "bytes_per_step": _NUM,
    "bound_s": (*_NUM, None),
    "timed_in": (list, None),  # absent in dumps written before pipelines counted their sends
}
_PROBE: dict[str, tuple[type | None, ...]] = {
    "collective": (str,), "scope": (str,), "processes": (int,), "sizes": (list,), "bus_gbps": _NUM,
}  # fmt: skip
_PROBE_SIZE: dict[str, tuple[type | None, ...]] = {"bytes": (int,), "seconds": _NUM, "bus_gbps": _NUM}
_COLLECTIVE: dict[str, tuple[type | None, ...]] = {"collective": (str,), "payload_bytes": (int,), "factor": _NUM}


def collective_factor(collective: str, processes: int) -> float:
    """Bytes each process sends per payload byte: ring all-reduce 2(n−1)/n, reduce-scatter and
    all-gather (n−1)/n, a broadcast (n−1)/n (pipelined), point-to-point once."""
    n = processes
    if n <= 1:
        return 0.0
    factors = {
        "all_reduce": 2 * (n - 1) / n,
        "reduce_scatter": (n - 1) / n,
        "all_gather": (n - 1) / n,
        "broadcast": (n - 1) / n,
        "send_recv": 1.0,
    }
    if collective not in factors:
        raise ValueError(f"collective {collective!r}: expected one of {', '.join(factors)}")
    return factors[collective]


COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "send_recv")


def bytes_moved(collectives: list[dict[str, Any]]) -> float:
    """Bytes a step's collectives send from one process: Σ payload × the algorithm's factor."""
    return math.fsum(c["payload_bytes"] * c["factor"] for c in collectives)


def communication_bound_s(collectives: list[dict[str, Any]], probes: list[dict[str, Any]]) -> float | None:
    """A step's communication lower bound: its bytes over the world group's probed bus bandwidth
    (the slowest link the step's collectives cross); None without a probe or a bandwidth."""
    bandwidth = probes[0]["bus_gbps"] if probes else 0
    return bytes_moved(collectives) / (bandwidth * 1e9) if bandwidth > 0 else None


def _non_negative_numbers(values: list[Any], nullable: bool = False) -> bool:
    present = [v for v in values if v is not None] if nullable else values
    return not present or (set(map(type, present)) <= _NUMBER_TYPES and min(present) >= 0)


def _breakdown_reasons(where: str, phase: Mapping[str, Any]) -> list[str]:
    """The phase's ``breakdown`` (absent in older dumps): every part, one non-negative number per timed
    step, adding up to that step's time; ``comm_s`` per step, within the step on the host clock."""
    record = phase.get("breakdown")
    if record is None:
        return []
    at = f"{where}breakdown"
    if not isinstance(record, dict):
        return [f"{at}: expected object, got {type(record).__name__}"]
    reasons = _check_fields(f"{at}.", record, _BREAKDOWN)
    if reasons:
        return reasons
    record = nulls_filled(record, _BREAKDOWN)
    if record["clock"] not in BREAKDOWN_CLOCKS:
        reasons.append(f"{at}.clock: expected one of {BREAKDOWN_CLOCKS}, got {record['clock']!r}")
    parts, steps, times = record["parts_s"], phase["timed_steps"], phase["step_times_s"]
    if set(parts) != set(BREAKDOWN_PARTS):
        return [*reasons, f"{at}.parts_s: parts {sorted(parts)}, expected {list(BREAKDOWN_PARTS)}"]
    for name in BREAKDOWN_PARTS:
        values = parts[name]
        if not isinstance(values, list) or len(values) != steps:
            count = len(values) if isinstance(values, list) else type(values).__name__
            reasons.append(f"{at}.parts_s.{name}: {count} entries for {steps} timed steps")
        elif not _non_negative_numbers(values):
            reasons.append(f"{at}.parts_s.{name}: entries must be non-negative numbers")
    if reasons or len(times) != steps:
        return reasons
    for step, (total, *values) in enumerate(zip(times, *(parts[p] for p in BREAKDOWN_PARTS), strict=True)):
        added = math.fsum(values)
        if abs(added - total) > _PARTS_SUM_RELATIVE * total + _PARTS_SUM_ABSOLUTE_S:
            reasons.append(f"{at}.parts_s: step {step}'s parts add up to {added:.6g} s, its time is {total:.6g} s")
            break
    return reasons + _comm_time_reasons(at, record, times)


def _comm_time_reasons(at: str, record: Mapping[str, Any], times: list[Any]) -> list[str]:
    comm = record["comm_s"]
    if comm is None:
        return []
    if len(comm) != len(times):
        return [f"{at}.comm_s: {len(comm)} entries for {len(times)} timed steps"]
    if not _non_negative_numbers(comm, nullable=True):
        return [f"{at}.comm_s: entries must be non-negative numbers or null"]
    if record["clock"] == "host":  # a GPU's collective intervals are host times beside event times
        for step, (spent, total) in enumerate(zip(comm, times, strict=True)):
            if spent is not None and spent > total * (1 + _PARTS_SUM_RELATIVE) + _PARTS_SUM_ABSOLUTE_S:
                return [f"{at}.comm_s: step {step} communicated {spent:.6g} s of its {total:.6g} s"]
    return []


def _communication_reasons(doc: Mapping[str, Any]) -> list[str]:
    """The ``communication`` section (null on one process, absent in older dumps): probes and
    collectives as jobs/comm_probe.py writes them, and its summaries as recomputed from them."""
    section = doc.get("communication")
    if section is None:
        return []
    if not isinstance(section, dict):
        return [f"communication: expected object, got {type(section).__name__}"]
    reasons = _check_fields("communication.", section, _COMMUNICATION)
    if reasons:
        return reasons
    section = nulls_filled(section, _COMMUNICATION)
    world = doc["world_size"]
    if world < 2:
        return [f"communication: a section in a dump of world_size {world} (one process communicates nothing)"]
    reasons = _probe_reasons(section["probes"], world) + _collective_reasons(section["collectives"], world)
    timed_in = section.get("timed_in")
    if timed_in is not None and (not timed_in or not set(map(str, timed_in)) <= set(COMMUNICATION_TIMED_IN)):
        reasons.append(f"communication.timed_in: {timed_in!r}, expected parts of {list(COMMUNICATION_TIMED_IN)}")
    if reasons:
        return reasons
    moved = bytes_moved(section["collectives"])
    if abs(section["bytes_per_step"] - moved) > _RATIO_TOLERANCE * moved + 1e-6:
        reasons.append(f"communication.bytes_per_step: {section['bytes_per_step']:.6g}, "
                       f"but the collectives move {moved:.6g}")  # fmt: skip
    bound, expected = section["bound_s"], communication_bound_s(section["collectives"], section["probes"]) or 0.0
    if bound is None or abs(bound - expected) > _RATIO_TOLERANCE * expected + 1e-12:
        reasons.append(f"communication.bound_s: {bound!r}, but bytes ÷ the world probe's bandwidth = {expected:.6g}")
    return reasons


def _probe_reasons(probes: list[Any], world: int) -> list[str]:
    if not probes:
        return ["communication.probes: empty (the bound needs the world group's probe)"]
    reasons = []
    for i, entry in enumerate(probes):
        at = f"communication.probes[{i}]"
        if not isinstance(entry, dict):
            reasons.append(f"{at}: expected object, got {type(entry).__name__}")
            continue
        typed = _check_fields(f"{at}.", entry, _PROBE)
        if typed:
            reasons += typed
            continue
        if entry["scope"] not in PROBE_SCOPES or entry["collective"] != "all_reduce":
            reasons.append(f"{at}: {entry['collective']!r} over {entry['scope']!r}, expected an all_reduce "
                           f"over one of {PROBE_SCOPES}")  # fmt: skip
        if not 2 <= entry["processes"] <= world:
            reasons.append(f"{at}.processes: {entry['processes']} outside 2..{world}")
            continue
        reasons += _probe_size_reasons(at, entry)
    return reasons


def _probe_size_reasons(at: str, entry: Mapping[str, Any]) -> list[str]:
    factor, found = collective_factor("all_reduce", entry["processes"]), []
    for j, size in enumerate(entry["sizes"]):
        where = f"{at}.sizes[{j}]"
        typed = _check_fields(f"{where}.", size, _PROBE_SIZE) if isinstance(size, dict) else [f"{where}: not an object"]
        if typed:
            return typed
        if size["bytes"] <= 0 or not size["seconds"] > 0:
            return [f"{where}: {size['bytes']} bytes in {size['seconds']} s"]
        bus = size["bytes"] / size["seconds"] * factor / 1e9
        if abs(size["bus_gbps"] - bus) > _RATIO_TOLERANCE * bus:
            return [f"{where}.bus_gbps: {size['bus_gbps']:.6g}, but bytes ÷ seconds × 2(n−1)/n = {bus:.6g}"]
        found.append(bus)
    if not found or abs(entry["bus_gbps"] - max(found)) > _RATIO_TOLERANCE * max(found):
        return [f"{at}.bus_gbps: {entry['bus_gbps']!r}, but its sizes' best is {max(found, default=None)!r}"]
    return []


def _collective_reasons(collectives: list[Any], world: int) -> list[str]:
    reasons = []
    for i, entry in enumerate(collectives):
        at = f"communication.collectives[{i}]"
        typed = _check_fields(f"{at}.", entry, _COLLECTIVE) if isinstance(entry, dict) else [f"{at}: not an object"]
        if typed:
            reasons += typed
            continue
        name = entry["collective"]
        if name not in COLLECTIVES:
            reasons.append(f"{at}.collective: {name!r}, expected one of {COLLECTIVES}")
            continue
        if entry["payload_bytes"] < 0:
            reasons.append(f"{at}.payload_bytes: {entry['payload_bytes']} < 0")
        # The factor of some group of this world: 2..world processes (a pipeline's replicas are fewer).
        possible = [collective_factor(name, n) for n in range(2, world + 1)]
        if not any(abs(entry["factor"] - f) <= 1e-9 for f in possible):
            reasons.append(f"{at}.factor: {entry['factor']!r}, not the {name} factor of any group of 2..{world}")
    return reasons
