"""Rows of one table as a reader worker hands them to the parent: each row's values, and its columns once.

A sweep of 10,000 cells makes 100,000 row dicts in the workers. Pickled as dicts, every row repeats its column
names and the parent spends longer unpickling them than the workers took to tabulate them; as value tuples
under a few shared column tuples they pickle in a fraction of the bytes and time, and the parent's DataFrame is
built from the tuples without a dict in between. :meth:`RowTable.frame` is exactly ``pandas.DataFrame(rows)``
of the dicts (columns in order of first appearance, NaN where a row lacks one), which
``tests/test_row_table.py`` holds it to.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RowTable:
    """Rows as (index into ``columns``, values in those columns' order)."""

    columns: list[tuple[str, ...]] = field(default_factory=list)
    rows: list[tuple[int, tuple[Any, ...]]] = field(default_factory=list)
    _index: dict[tuple[str, ...], int] = field(default_factory=dict, repr=False, compare=False)

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows += [(self._shape_of(tuple(row)), tuple(row.values())) for row in rows]

    def extend(self, other: RowTable) -> None:
        """``other``'s rows after this table's (``other`` may come from another process)."""
        shapes = [self._shape_of(names) for names in other.columns]
        self.rows += [(shapes[shape], values) for shape, values in other.rows]

    def _shape_of(self, names: tuple[str, ...]) -> int:
        shape = self._index.get(names)
        if shape is None:
            shape = self._index[names] = len(self.columns)
            self.columns.append(names)
        return shape

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows}  # the index is the columns', rebuilt on arrival

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.columns, self.rows = state["columns"], state["rows"]
        self._index = {names: shape for shape, names in enumerate(self.columns)}

    def frame(self) -> Any:
        """The rows as a DataFrame, as ``pandas.DataFrame`` makes it of the same rows as dicts."""
        import pandas as pd

        if not self.rows:
            return pd.DataFrame()
        if len(self.columns) == 1:  # every row has the same columns: the common case
            return pd.DataFrame([values for _, values in self.rows], columns=list(self.columns[0]))
        # Shapes are numbered in the order their first row came, so their names in that order are pandas' order.
        names = list(dict.fromkeys(name for shape in self.columns for name in shape))
        # Where each shape's values go among all the columns, and NaN (what pandas fills in) where a row has none.
        positions = {name: position for position, name in enumerate(names)}
        placed = [[positions[name] for name in shape] for shape in self.columns]
        full = []
        for shape, values in self.rows:
            cells = [math.nan] * len(names)
            for position, value in zip(placed[shape], values, strict=True):
                cells[position] = value
            full.append(tuple(cells))
        return pd.DataFrame(full, columns=names)
