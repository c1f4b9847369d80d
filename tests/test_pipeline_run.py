"""A whole pipeline cell through the runner: torchrun, two ranks, valid dumps with the pipeline section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import jobs.checks.pipeline  # noqa: F401 - registers the checkers
from jobs import schema
from orchestrator import sweep
from orchestrator.runner import run_cell

STAGE_FIELDS = {
    "forward_s", "backward_s", "measured_stage_s", "predicted_stage_s", "peak_memory_bytes",
    "predicted_memory_bytes", "max_inflight_microbatches", "predicted_inflight_microbatches",
}  # fmt: skip


def _run(tmp_path: Path, monkeypatch, *overrides: str) -> list[dict]:
    monkeypatch.setenv("DNNBENCH_CACHE", str(tmp_path / "cache"))
    cell = sweep.plan(["gpus=2", "model=resnet18", "device=cpu", *overrides]).cells[0]
    cell_file = tmp_path / "cell.json"
    cell_file.write_text(json.dumps({"cell_id": cell.id, "attempt": 0, "config": cell.config}))
    run_cell(str(cell_file), str(tmp_path / "attempt_0"))
    return [schema.load(tmp_path / "attempt_0" / schema.dump_filename(r)) for r in range(2)]


def test_pipeline_cell_writes_valid_dumps_with_pipeline_section(tmp_path, monkeypatch):
    first, last = _run(tmp_path, monkeypatch, "framework=pipeline", "pipeline.stages=2", "batch_size=8", "steps=3",
                       "warmup_steps=1", "val_steps=2")  # fmt: skip
    assert (first["counts_samples"], last["counts_samples"]) == (False, True)
    assert first["phases"]["train"]["samples"] == 0
    assert last["phases"]["train"]["samples"] == 3 * 8
    assert last["phases"]["val"]["evaluated"] == 8 * 2 and first["phases"]["val"]["evaluated"] == 0
    for doc in (first, last):
        section = doc["pipeline"]
        assert section["stages"] == 2 and section["microbatches"] == 4
        assert section["schedule"] == "1f1b" and len(section["split"]) == 1
        assert len(section["per_stage"]) == 2
        assert set(section["per_stage"][0]) >= STAGE_FIELDS
        assert 0 <= section["measured"]["bubble_fraction"] < 1
    stages = last["pipeline"]["per_stage"]
    # 1F1B: the first stage holds two micro-batches' activations, the last one.
    assert [s["max_inflight_microbatches"] for s in stages] == [2, 1]
    assert [s["stage"] for s in stages] == [0, 1] and last["pipeline"]["stage"] == 1


@pytest.mark.slow
def test_pipeline_learns_mnist(tmp_path, monkeypatch, mnist_root: Path):
    _, last = _run(tmp_path, monkeypatch, "framework=pipeline", "pipeline.stages=2", "dataset=mnist",
                   "dataset.on_device=true", f"dataset.root={mnist_root}", "batch_size=64", "steps=150",
                   "val_steps=20", "lr=0.02")  # fmt: skip
    assert last["phases"]["val"]["accuracy"] > 0.5  # chance is 0.1
