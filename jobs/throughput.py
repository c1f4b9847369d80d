"""The global throughput of a cell's phase: one formula for `dnnbench run`'s summary and the analysis.

The conservative definition::

    samples of the ranks with counts_samples=true  /  the longest phase time over all ranks

Data parallel: every rank counts, so this is the sum of the ranks' samples over the slowest
rank's time. Pipeline: only the last stage counts samples. Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple


class GlobalThroughput(NamedTuple):
    samples: int  # of the ranks that count samples
    seconds: float  # the slowest rank's phase time
    samples_per_s: float  # NaN when no time was measured: never a rate made up


def global_throughput(docs: Sequence[Mapping[str, Any]], phase: str) -> GlobalThroughput:
    """The cell's throughput in ``phase`` from its rank dumps (all of one attempt)."""
    samples = sum(doc["phases"][phase]["samples"] for doc in docs if doc["counts_samples"])
    seconds = max((doc["phases"][phase]["seconds"] for doc in docs), default=0.0)
    return GlobalThroughput(samples, seconds, samples / seconds if seconds > 0 else math.nan)
