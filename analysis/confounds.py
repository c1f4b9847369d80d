"""Environment and hardware differences between cells that one table or figure compares.

Every row's environment and Slurm partition are compared with the table's reference (the
environment and the partition most rows ran on) and with its speedup baseline's; each
difference is named (``torch: 2.5.1 vs 2.4.0``, ``partition: gpu_a100 vs gpu``) in the row's
``confound`` column. The partition is treated like the GPU model: two partitions are two
kinds of node. A row measured beside other work on its nodes (analysis/colocation.py: other
processes' CPU load, CPU steal, other processes on its GPUs, other Slurm jobs) is flagged too.
:func:`summary` gives the sentences that figure captions and the report show.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from analysis import colocation

Environment = dict[str, Any]


# Groups of the fingerprint whose members are named alone (``LD_PRELOAD``, ``numpy``,
# ``libjemalloc.so.2``): each member is its own difference. Dumps from before a group was
# recorded have none of it: that is one difference ("not recorded"), not one per member.
NAMED_ALONE = ("variables", "libraries", "packages")
ABSENT = "–"


def shown_key(key: str) -> str:
    """``variables.LD_PRELOAD`` → ``LD_PRELOAD``: a group member by its own name."""
    group, _, member = key.partition(".")
    return member if group in NAMED_ALONE and member else key


def _shown_value(value: Any) -> str:
    return ABSENT if value is None else str(value)


def _recorded(env: Environment) -> bool:
    """Whether a dump recorded the groups at all (every new one does: ``packages`` is never
    empty), as flattened by analysis.load (an empty group leaves no key)."""
    return any(key.partition(".")[0] in NAMED_ALONE and "." in key for key in env)


def differences(a: Environment | None, b: Environment | None) -> list[str]:
    """``key: a vs b`` for every comparable field in which two environments differ (``–``:
    absent on that side), e.g. ``LD_PRELOAD: libjemalloc.so.2 vs –``, ``numpy: 2.3.1 vs 2.4.0``."""
    if a is None or b is None:
        return [] if a is b else ["environment unknown"]
    found = []
    both_recorded = _recorded(a) == _recorded(b)
    if not both_recorded:
        side = "not recorded vs recorded" if _recorded(b) else "recorded vs not recorded"
        found.append(f"{', '.join(NAMED_ALONE)}: {side} (a dump from before they were)")
    for key in sorted(set(a) | set(b)):
        group = key.partition(".")[0]
        if a.get(key) == b.get(key) or (group in NAMED_ALONE and (not both_recorded or key == group)):
            continue
        found.append(f"{shown_key(key)}: {_shown_value(a.get(key))} vs {_shown_value(b.get(key))}")
    return found


def _hashes(value: str) -> list[str]:
    return [h for h in str(value).split(";") if h]


def _partition_name(value: Any) -> str:
    return str(value) if value else "(default)"


def _partition_difference(own: Any, other: Any) -> list[str]:
    """``partition: a vs b`` when two rows asked for different partitions ("" = the default one)."""
    own, other = own or "", other or ""
    return [] if own == other else [f"partition: {_partition_name(own)} vs {_partition_name(other)}"]


def flag(results: Any, environments: dict[str, Environment]) -> Any:
    """Add ``confound`` (text naming each difference; empty when none) to ``results``."""
    results = results.copy()
    if results.empty:
        results["confound"] = []
        return results
    counts = Counter(h for value in results["environment_hash"] for h in _hashes(value))
    reference = counts.most_common(1)[0][0]
    ref_env = environments.get(reference)
    partitions = results["partition"] if "partition" in results else [""] * len(results)
    ref_partition = Counter(partitions).most_common(1)[0][0]
    partition_of = dict(zip(results["config_key"], partitions, strict=True)) if "config_key" in results else {}
    flags = []
    for row, partition in zip(results.itertuples(index=False), partitions, strict=True):
        notes = []
        own = _hashes(row.environment_hash)
        if len(own) > 1:
            diff = differences(environments.get(own[0]), environments.get(own[1]))
            notes.append("repeats differ: " + ", ".join(diff))
        diff = differences(environments.get(own[0]), ref_env) if own and own[0] != reference else []
        diff += _partition_difference(partition, ref_partition)
        if diff:
            notes.append("vs most cells: " + ", ".join(diff))
        baseline_hash = getattr(row, "baseline_environment_hash", "") or ""
        diff = []
        if baseline_hash and own and baseline_hash != own[0]:
            diff = differences(environments.get(own[0]), environments.get(baseline_hash))
        baseline_key = getattr(row, "baseline_config_key", "") or ""
        if baseline_key in partition_of:
            diff += _partition_difference(partition, partition_of[baseline_key])
        if diff:
            notes.append("vs speedup baseline: " + ", ".join(diff))
        ranks = getattr(row, "rank_environments_differ", "") or ""
        if ranks:
            notes.append("ranks differ: " + ranks)
        busy = colocation.text(getattr(row, "busy", ""))
        if busy:
            notes.append("measured beside other work: " + busy)
        short = colocation.text(getattr(row, "allocation", ""))
        if short:
            notes.append("given less than it asked for: " + short)
        flags.append("; ".join(notes))
    results["confound"] = flags
    return results


def summary(results: Any, environments: dict[str, Environment]) -> list[str]:
    """One sentence per comparable field that differs among the rows of ``results``."""
    if results.empty or "environment_hash" not in results:
        return []
    used = Counter(h for value in results["environment_hash"] for h in _hashes(value))
    values: dict[str, Counter[str]] = {}
    for digest, rows in used.items():
        env = environments.get(digest) or {}
        for key, value in env.items():
            values.setdefault(key, Counter())[str(value)] += rows
    sentences = []
    for key, counter in sorted(values.items()):
        if len(counter) > 1:
            listed = ", ".join(f"{v} ({n} rows)" for v, n in counter.most_common())
            sentences.append(f"Confound: {shown_key(key)} differs between compared cells: {listed}.")
    if "partition" in results and results["partition"].nunique() > 1:
        listed = ", ".join(f"{_partition_name(p)} ({n} rows)" for p, n in Counter(results["partition"]).most_common())
        sentences.append(f"Confound: partition (the kind of node) differs between compared cells: {listed}.")
    if any(results.get("rank_environments_differ", [""] * len(results)).astype(bool)):
        sentences.append("Confound: some cells ran with different environments on different ranks.")
    short = [v for v in results.get("allocation", []) if colocation.text(v)]
    if short:
        sentences.append(
            f"Confound: {len(short)} rows had ranks given less than their cell asked for (fewer CPUs than "
            "threads, no GPU, Horovod without NCCL on a GPU): see the allocation column."
        )
    return sentences + colocation.summary(results)
