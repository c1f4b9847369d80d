"""analysis/row_table.py: the rows a reader worker hands back make exactly the DataFrame their dicts make."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pandas as pd
import pandas.testing as pdt

from analysis.row_table import RowTable


def _packed(*runs: list[dict[str, Any]]) -> RowTable:
    """The runs packed each in its own table, sent through pickle (as from a worker) and joined in order."""
    joined = RowTable()
    for rows in runs:
        table = RowTable()
        table.add(rows)
        joined.extend(pickle.loads(pickle.dumps(table)))
    return joined


def _same_as_dicts(*runs: list[dict[str, Any]]) -> None:
    rows = [row for run in runs for row in run]
    pdt.assert_frame_equal(_packed(*runs).frame(), pd.DataFrame(rows), check_exact=True)


def test_rows_of_one_shape():
    _same_as_dicts([{"a": 1, "b": 2.5, "c": "x", "d": True}, {"a": 2, "b": math.nan, "c": "y", "d": False}])


def test_columns_come_in_order_of_first_appearance_with_nan_where_a_row_lacks_one():
    first = [{"b": 1, "a": 2.0}, {"a": 3.0, "b": 4}]  # the same columns in another order: another shape
    second = [{"b": 5, "z": "only here"}, {"b": 6, "a": 7.0, "c": None}]
    _same_as_dicts(first, second)
    assert list(_packed(first, second).frame().columns) == ["b", "a", "z", "c"]


def test_values_keep_the_types_pandas_infers_from_the_dicts():
    # Ints with None, a column of None only, bools with None, ints and floats mixed, text with NaN: each is a
    # dtype pandas infers from the objects, so both roads must hand it the same objects.
    runs = [
        [{"n": 1, "none": None, "flag": True, "mixed": 1, "text": "a"}],
        [{"n": None, "none": None, "flag": None, "mixed": 2.5, "text": math.nan}],
        [{"n": 3, "flag": False, "extra": 1}],
    ]
    _same_as_dicts(*runs)


def test_a_table_one_process_sends_another_keeps_its_rows_and_shapes():
    table = RowTable()
    table.add([{"a": 1}, {"a": 2, "b": 3}])
    copy = pickle.loads(pickle.dumps(table))
    assert copy.columns == table.columns and copy.rows == table.rows
    copy.add([{"a": 4, "b": 5}])  # a known shape after the trip: no new column tuple
    assert len(copy.columns) == 2 and len(copy) == 3


def test_no_rows_make_the_empty_frame():
    pdt.assert_frame_equal(_packed([], []).frame(), pd.DataFrame([]))
