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
    # A column with no text anywhere is simply empty.
    silent = [c for c, agg in how.items() if agg is join_texts and not cells[c].map(_is_text).any()]
    texts = [c for c, agg in how.items() if agg is join_texts and c not in silent]
    numbers = {c: agg for c, agg in how.items() if agg is not join_texts}
    grouped = cells.groupby(KEYS, sort=False, dropna=False)
    # Groups numbered in the order they first appear, as ``agg(sort=False)`` puts its rows.
    codes = grouped.ngroup()
    combined = cells.loc[~codes.duplicated(), KEYS].reset_index(drop=True)
    if numbers:
        combined = combined.join(grouped.agg(numbers).reset_index(drop=True))
    for column in texts:
        combined[column] = texts_per_group(codes, cells[column], len(combined))
    combined = combined.assign(**dict.fromkeys(silent, ""))
    results = results.drop(columns=[c for c in how if c in results])
    return results.merge(combined, on=KEYS, how="left")


def texts_per_group(codes: Any, values: Any, groups: int) -> list[str]:
    """:func:`join_texts` of each group's ``values`` (``codes``: each row's group, 0 to ``groups`` - 1), in one
    pass over the rows: pandas' per-group Python fallback built a Series per group and cost 20 times this."""
    members: list[dict[str, None]] = [{} for _ in range(groups)]
    for code, value in zip(codes.tolist(), values.tolist(), strict=True):
        if isinstance(value, str) and value:
            members[code][value] = None
    return [" | ".join(texts) for texts in members]


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)
