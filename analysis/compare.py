"""Two sweeps (or result tables) side by side: per-row throughput ratio and significance.

Rows are matched on what they measure (framework, model, dataset, precision, batch size,
processes, phase, any swept ``cfg.*`` knob both tables have, and the partition when both
tables span several), not on the config hash, so that the same grid run on two machines or
two versions lines up. ``significant`` is ``yes`` when the two 95 % CIs do not overlap, ``no``
when they do, ``unknown`` without CIs (non-overlap is a conservative test: overlapping CIs can
still differ at the 5 % level). A row present on one side only says ``only in A`` (or ``B``)
and nothing else: no ratio, and no environment difference.
"""

from __future__ import annotations

from typing import Any

from analysis.stats import intervals_overlap

MATCH = ["framework", "model", "dataset", "precision", "batch_size", "world_size", "phase"]
KEEP = ["throughput", "ci95_low", "ci95_high", "ci_basis", "n", "environment_hash", "partition"]


def _with_partition(table: Any) -> Any:
    """Tables written before the partition column: every row on the cluster's default partition."""
    return table if "partition" in table.columns else table.assign(partition="")


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
    kept = [c for c in KEEP if c not in keys]
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
    # A row on one side only has no environment to compare with (NaN on the other side).
    both = merged["presence"] == "both"
    merged["environment_differs"] = both & (merged["environment_hash_a"] != merged["environment_hash_b"])
    return merged.drop(columns="presence")


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
        "significant (CIs)",
        "env differs",
    ]
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
                    r.significant,
                    "yes" if r.environment_differs else "",
                ]
            )
            + " |"
        )
    return "\n".join(lines)
