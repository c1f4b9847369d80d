"""Columns read per cell, carried to the results table per configuration (over its repeats).

The results table has a row per configuration and phase; what was recorded per cell
(how busy its nodes were, what it was given) is combined over the configuration's repeats
by one aggregation per column: the worst number, and every distinct text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

KEYS = ["sweep", "config_key", "phase"]


def join_texts(values: Any) -> str:
    """Every distinct non-empty text, in order, joined by `` | ``."""
    return " | ".join(dict.fromkeys(str(v) for v in values if isinstance(v, str) and v))


def attach(results: Any, cells: Any, how: dict[str, str | Callable[[Any], Any]]) -> Any:
    """``results`` with a column per key of ``how`` (its aggregation over the cells of a configuration).

    Columns the cells lack come out empty (text) or NaN (numbers), so a table read from older
    dumps has the same columns.
    """
    results = results.copy()
    if results.empty or cells.empty or not set(how) <= set(cells.columns):
        for column, aggregation in how.items():
            results[column] = "" if aggregation is join_texts else math.nan
        return results
    # Joining texts runs in Python per group: a column with no text anywhere is simply empty.
    silent = [c for c, agg in how.items() if agg is join_texts and not cells[c].map(_is_text).any()]
    grouped = cells.groupby(KEYS, sort=False, dropna=False).agg({c: a for c, a in how.items() if c not in silent})
    grouped = grouped.reset_index().assign(**dict.fromkeys(silent, ""))
    results = results.drop(columns=[c for c in how if c in results])
    return results.merge(grouped, on=KEYS, how="left")


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)
