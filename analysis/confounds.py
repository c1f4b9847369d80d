"""Environment differences between cells that one table or figure compares.

Every row's environment is compared with the table's reference environment (the one
most rows ran in) and with its speedup baseline; each difference is named
(``torch: 2.5.1 vs 2.4.0``) in the row's ``confound`` column. :func:`summary` gives
the sentences that figure captions and the report show.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

Environment = dict[str, Any]


def differences(a: Environment | None, b: Environment | None) -> list[str]:
    """``key: a vs b`` for every comparable field in which two environments differ."""
    if a is None or b is None:
        return [] if a is b else ["environment unknown"]
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)} vs {b.get(k)}" for k in keys if a.get(k) != b.get(k)]


def _hashes(value: str) -> list[str]:
    return [h for h in str(value).split(";") if h]


def flag(results: Any, environments: dict[str, Environment]) -> Any:
    """Add ``confound`` (text naming each difference; empty when none) to ``results``."""
    results = results.copy()
    if results.empty:
        results["confound"] = []
        return results
    counts = Counter(h for value in results["environment_hash"] for h in _hashes(value))
    reference = counts.most_common(1)[0][0]
    ref_env = environments.get(reference)
    flags = []
    for row in results.itertuples(index=False):
        notes = []
        own = _hashes(row.environment_hash)
        if len(own) > 1:
            diff = differences(environments.get(own[0]), environments.get(own[1]))
            notes.append("repeats differ: " + ", ".join(diff))
        if own and own[0] != reference:
            diff = differences(environments.get(own[0]), ref_env)
            notes.append("vs most cells: " + ", ".join(diff))
        baseline_hash = getattr(row, "baseline_environment_hash", "") or ""
        if baseline_hash and own and baseline_hash != own[0]:
            diff = differences(environments.get(own[0]), environments.get(baseline_hash))
            notes.append("vs speedup baseline: " + ", ".join(diff))
        ranks = getattr(row, "rank_environments_differ", "") or ""
        if ranks:
            notes.append("ranks differ: " + ranks)
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
            sentences.append(f"Confound: {key} differs between compared cells: {listed}.")
    if any(results.get("rank_environments_differ", [""] * len(results)).astype(bool)):
        sentences.append("Confound: some cells ran with different environments on different ranks.")
    return sentences
