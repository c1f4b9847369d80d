"""Two sweeps (or result tables) side by side: per-row throughput ratio and significance.

Rows are matched on what they measure (framework, model, dataset, precision, batch size,
processes, phase, any swept ``cfg.*`` knob both tables have, and the partition when both
tables span several), not on the config hash, so that the same grid run on two machines or
two versions lines up. ``significant`` is ``yes`` when the two 95 % CIs do not overlap, ``no``
when they do, ``unknown`` without CIs (non-overlap is a conservative test: overlapping CIs can
still differ at the 5 % level). ``ratio_ci95_low/high`` is the 95 % CI of the ratio of the two
means (Fieller's method, :func:`analysis.stats.ratio_ci95`) over the values each side's
``ci_basis`` names (repeats, or timed steps for a single repeat), ``ratio_ci_basis`` says which.
A row present on one side only says ``only in A`` (or ``B``) and nothing else: no ratio, no
interval, and no environment difference.

Where both tables have the step breakdown (analysis/breakdown.py), each matched row also says
which part of the step changed: ``step_change_s`` (B's mean step minus A's, the parts' sum) and
``changed_part`` / ``changed_part_s`` / ``changed_part_share``, the part whose seconds per step
moved most and its share of the step's change. ``comm_s`` is not a part (it overlaps the others).
"""

from __future__ import annotations

import math
from typing import Any

from analysis import confounds
from analysis.breakdown import PART_COLUMNS, PARTS
from analysis.stats import intervals_overlap, ratio_ci95

MATCH = ["framework", "model", "dataset", "precision", "batch_size", "world_size", "phase"]
KEEP = ["throughput", "mean", "std", "ci95_low", "ci95_high", "ci_basis", "n", "environment_hash", "partition"]


def _with_partition(table: Any) -> Any:
    """Tables written before the partition column: every row on the cluster's default partition."""
    return table if "partition" in table.columns else table.assign(partition="")


def _row_ratio_ci(row: Any) -> tuple[float, float, str]:
    if row.presence != "both":
        return math.nan, math.nan, ""
    ci = ratio_ci95(row.mean_a, row.std_a, int(row.n_a), row.mean_b, row.std_b, int(row.n_b))
    if ci is None:
        return math.nan, math.nan, "none"
    basis = row.ci_basis_a if row.ci_basis_a == row.ci_basis_b else f"{row.ci_basis_a}/{row.ci_basis_b}"
    return ci[0], ci[1], basis


def _add_ratio_ci(merged: Any) -> None:
    cis = [_row_ratio_ci(row) for row in merged.itertuples(index=False)]
    merged["ratio_ci95_low"] = [c[0] for c in cis]
    merged["ratio_ci95_high"] = [c[1] for c in cis]
    merged["ratio_ci_basis"] = [c[2] for c in cis]


def _part_columns(a: Any, b: Any) -> list[str]:
    """The breakdown's part columns when both sides have them all (tables from before have none)."""
    return list(PART_COLUMNS) if all(c in a.columns and c in b.columns for c in PART_COLUMNS) else []


def _changed_part(row: Any) -> tuple[float, str, float, float]:
    """(B − A seconds per step, the part that moved most, its change, its share of the step's change)."""
    a = [getattr(row, f"{c}_a") for c in PART_COLUMNS]
    b = [getattr(row, f"{c}_b") for c in PART_COLUMNS]
    if row.presence != "both" or not all(math.isfinite(x) for x in (*a, *b)):
        return math.nan, "", math.nan, math.nan
    deltas = [y - x for x, y in zip(a, b, strict=True)]
    step = sum(deltas)
    biggest = max(range(len(deltas)), key=lambda i: abs(deltas[i]))
    share = deltas[biggest] / step if step else math.nan
    return step, PARTS[biggest], deltas[biggest], share


def _add_changed_part(merged: Any) -> None:
    found = [_changed_part(row) for row in merged.itertuples(index=False)]
    merged["step_change_s"] = [f[0] for f in found]
    merged["changed_part"] = [f[1] for f in found]
    merged["changed_part_s"] = [f[2] for f in found]
    merged["changed_part_share"] = [f[3] for f in found]


def judgeable(table: Any) -> Any:
    """Per row: whether a ratio gate can judge it (in both A and B, with a finite B/A 95 % CI)."""
    import numpy as np

    return np.isfinite(table["ratio_ci95_low"].astype(float)) & np.isfinite(table["ratio_ci95_high"].astype(float))


def below(table: Any, threshold: float) -> Any:
    """Rows whose whole ratio CI lies below ``threshold`` (B significantly under threshold × A)."""
    return table[table["ratio_ci95_high"] < threshold]


def compare(a: Any, b: Any) -> Any:
    """One row per configuration of either side: throughput A and B, ratio B/A, significance."""
    a, b = _with_partition(a), _with_partition(b)
    knobs = sorted(
        set(c for c in a.columns if c.startswith("cfg.")) & set(c for c in b.columns if c.startswith("cfg."))
    )
    # Like a knob: a partition axis that both sides swept pairs its rows; a sweep per partition
    # (A100 nodes in A, H100 nodes in B) is the comparison itself.
    by_partition = ["partition"] if a["partition"].nunique() > 1 and b["partition"].nunique() > 1 else []
    keys = MATCH + knobs + by_partition
    parts = _part_columns(a, b)
    kept = [c for c in KEEP if c not in keys] + parts
    left = a[keys + kept].astype({k: str for k in keys})
    right = b[keys + kept].astype({k: str for k in keys})
    merged = left.merge(right, on=keys, how="outer", suffixes=("_a", "_b"), indicator="presence")
    merged["ratio"] = merged["throughput_b"] / merged["throughput_a"]
    significant = []
    for row in merged.itertuples(index=False):
        overlap = intervals_overlap(row.ci95_low_a, row.ci95_high_a, row.ci95_low_b, row.ci95_high_b)
        if row.presence != "both":
            significant.append("only in " + ("A" if row.presence == "left_only" else "B"))
        else:
            significant.append("unknown" if overlap is None else ("no" if overlap else "yes"))
    merged["significant"] = significant
    _add_ratio_ci(merged)
    if parts:
        _add_changed_part(merged)
    # A row on one side only has no environment to compare with (NaN on the other side).
    both = merged["presence"] == "both"
    merged["environment_differs"] = both & (merged["environment_hash_a"] != merged["environment_hash_b"])
    return merged.drop(columns="presence")


def _interval(low: float, high: float) -> str:
    return "–" if low != low else f"{low:.3f} – {high:.3f}"


def _changed_words(row: Any) -> str:
    """``exposed_comm +12.3 ms of +15.0 ms``: the part that moved most and the step's whole change."""
    if not row.changed_part:
        return "–"
    return f"{row.changed_part} {row.changed_part_s * 1e3:+.1f} ms of {row.step_change_s * 1e3:+.1f} ms"


def markdown(table: Any) -> str:
    head = [
        "framework",
        "model",
        "batch",
        "procs",
        "phase",
        "A samples/s",
        "B samples/s",
        "B/A",
        "B/A 95% CI",
        "significant (CIs)",
        "env differs",
    ]
    with_parts = "changed_part" in table.columns
    if with_parts:
        head.append("what changed (per step)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def num(x: float, digits: int = 1) -> str:
        return "–" if x != x else f"{x:,.{digits}f}"

    for r in table.itertuples(index=False):
        lines.append(
            "| "
            + " | ".join(
                [
                    r.framework,
                    r.model,
                    r.batch_size,
                    r.world_size,
                    r.phase,
                    num(r.throughput_a),
                    num(r.throughput_b),
                    num(r.ratio, 3),
                    _interval(r.ratio_ci95_low, r.ratio_ci95_high),
                    r.significant,
                    "yes" if r.environment_differs else "",
                    *([_changed_words(r)] if with_parts else []),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def environment_fields(table: Any, environments_a: dict[str, Any], environments_b: dict[str, Any]) -> list[str]:
    """The environment fields whose values differ between the two sides of the matched rows that
    ran in different environments (``torch: 2.4.0 → 2.5.1``), for naming the confound."""
    rows = table[table["environment_differs"]]
    if rows.empty:
        return []

    def values(environments: dict[str, Any], hashes: Any) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for joined in hashes:
            for h in str(joined).split(";"):
                for key, value in (environments.get(h) or {}).items():
                    found.setdefault(key, set()).add(str(value))
        return found

    a = values(environments_a, rows["environment_hash_a"])
    b = values(environments_b, rows["environment_hash_b"])
    return [
        f"{confounds.shown_key(key)}: {', '.join(sorted(a.get(key, {'–'})))} → {', '.join(sorted(b.get(key, {'–'})))}"
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]
