"""A real 2-process CPU cell (jobs/ + runner) aggregates: the reader matches the writer."""

import json

import pytest

pytestmark = pytest.mark.slow


def test_real_cell_aggregates(tmp_path):
    pytest.importorskip("torch")
    from analysis.aggregate import aggregate
    from orchestrator import sweep
    from orchestrator.runner import run_cell

    cell = sweep.plan(["gpus=2", "steps=6", "val_steps=3"]).cells[0]
    folder = tmp_path / "cells" / cell.id
    folder.mkdir(parents=True)
    (folder / "cell.json").write_text(json.dumps({"cell_id": cell.id, "attempt": 0, "config": cell.config}))
    run_cell(str(folder / "cell.json"), str(folder / "attempt_0"))
    done = aggregate([str(tmp_path)], progress=False)
    train = done.results[done.results["phase"] == "train"].iloc[0]
    dumps = [json.loads((folder / "attempt_0" / f"rank_{r}.json").read_text()) for r in (0, 1)]
    samples = sum(d["phases"]["train"]["samples"] for d in dumps)
    seconds = max(d["phases"]["train"]["seconds"] for d in dumps)
    assert train["throughput"] == pytest.approx(samples / seconds)
    assert train["world_size"] == 2 and train["ci_basis"] == "timed_steps" and train["n"] == 6
    assert train["memory_kind"] == "rss" and train["peak_rss_bytes"] > 0
    assert done.problems.empty
    assert (tmp_path / "results" / "report.html").exists()
