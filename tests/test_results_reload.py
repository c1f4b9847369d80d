"""A results folder read back from its CSV alone: text columns stay text, without pandas deprecations."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
import synthetic_sweeps as synthetic

from analysis import cli
from analysis.aggregate import read_results

TEXT_COLUMNS = ("confound", "rank_environments_differ", "environment_hash")


def test_a_csv_whose_text_columns_are_all_empty_reads_back_as_text(tmp_path):
    root = tmp_path / "sweep"
    synthetic.scaling_sweep(root, frameworks=("ddp",), gpus=(1, 2), repeats=1)
    assert cli.aggregate_command([str(root)], None, progress=False) == 0
    results = root / "results"
    (results / "results.parquet").unlink()  # a copy holding the CSV only
    table = pd.read_csv(results / "results.csv")
    for column in TEXT_COLUMNS:
        table[column] = float("nan")  # every row empty: the CSV reader types it float64
    table.to_csv(results / "results.csv", index=False)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fill pandas deprecates is an error, not a line in the log
        back = read_results(results).results
    for column in TEXT_COLUMNS:
        assert back[column].tolist() == [""] * len(back), column


def test_the_test_run_makes_the_fill_value_deprecation_an_error():
    """pyproject.toml's filterwarnings, as pytest applies it to every test."""
    with pytest.raises(DeprecationWarning, match="fill value"):
        warnings.warn("'str' is not supported as a fill value for float64 dtype.", DeprecationWarning, stacklevel=1)
