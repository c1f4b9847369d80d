"""The study's own views: per-process rate, seconds per epoch, summed memory, and its figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import synthetic_sweeps as synthetic
from conftest import TINY_DDP

from analysis import study, study_figures
from analysis.aggregate import aggregate
from jobs import schema
from orchestrator.cli import main

GIB = 2**30
SLOWEST = (0.5, 0.55)


def _cell(root: Path, cfg: dict[str, Any], step_times: list[list[float]], peaks: list[int], **options: Any) -> Path:
    """A cell whose ranks peak at ``peaks[rank]`` bytes (write_cell gives every rank the same)."""
    folder = synthetic.write_cell(root, cfg, step_times=step_times, peak_bytes=peaks[0], **options)
    for rank, peak in enumerate(peaks):
        doc = synthetic.make_dump(cfg, rank, train_step_times=step_times[rank], peak_bytes=peak, **options)
        (folder / schema.dump_filename(rank)).write_text(json.dumps(doc))
    return folder


def _row(results: Any, phase: str, **match: Any) -> Any:
    rows = results[results["phase"] == phase]
    for key, value in match.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def _sweep(root: Path) -> Path:
    """ddp on 1 and 2 processes, two repeats; the 2-process ranks peak at different sizes and
    their slower rank steps in ``SLOWEST[repeat]`` seconds."""
    for repeat in (0, 1):
        one = synthetic.config(gpus=1, repeat=repeat, repeats=2)
        _cell(root, one, [[0.25 + 0.02 * repeat] * 6], [GIB])
        two = synthetic.config(gpus=2, repeat=repeat, repeats=2)
        _cell(root, two, [[SLOWEST[repeat]] * 6, [0.4] * 6], [GIB, (2 + repeat) * GIB])
    return root


def test_columns_from_synthetic_dumps(tmp_path):
    results = aggregate([str(_sweep(tmp_path / "s"))], progress=False, figures=False, report=False).results
    train = _row(results, "train", world_size=2)
    # Each repeat: 2 ranks × 32 samples × 6 steps over the slower rank's 6 steps (× 1.002, synthetic's overhead).
    throughput = sum(2 * 32 * 6 / (6 * slowest * 1.002) for slowest in SLOWEST) / 2
    assert train["throughput"] == pytest.approx(throughput)
    assert train["samples_per_s_per_process"] == pytest.approx(throughput / 2)
    assert train["split_samples"] == 4096  # the synthetic split's size, as the ranks recorded it
    assert train["epoch_s"] == pytest.approx(4096 / throughput)
    # 1 GiB + 3 GiB in repeat 1 beats 1 GiB + 2 GiB in repeat 0; the per-process maximum is 3 GiB.
    assert train["peak_mem_sum_gib"] == pytest.approx(4.0)
    assert train["peak_mem_gib"] == pytest.approx(3.0)
    val = _row(results, "val", world_size=2)
    assert val["split_samples"] == 1024
    assert val["epoch_s"] == pytest.approx(1024 / val["throughput"])
    single = _row(results, "train", world_size=1)
    assert single["samples_per_s_per_process"] == pytest.approx(single["throughput"])
    assert single["peak_mem_sum_gib"] == pytest.approx(1.0)


def test_split_size_from_the_config_when_the_dumps_did_not_record_it(tmp_path):
    cfg = synthetic.config(gpus=2, **{"dataset.train_samples": 2048})
    folder = synthetic.write_cell(tmp_path / "s", cfg, step_times=[[0.3] * 6] * 2)
    for rank in (0, 1):  # dumps from before extra.data was recorded
        path = folder / schema.dump_filename(rank)
        doc = json.loads(path.read_text())
        del doc["extra"]["data"]
        path.write_text(json.dumps(doc))
    results = aggregate([str(tmp_path / "s")], progress=False, figures=False, report=False).results
    train = _row(results, "train")
    assert train["split_samples"] == 2048
    assert train["epoch_s"] == pytest.approx(2048 / train["throughput"])


@pytest.mark.parametrize(
    ("config", "phase", "size"),
    [
        ({"dataset.name": "mnist"}, "train", 60_000),
        ({"dataset.name": "mnist"}, "val", 10_000),
        ({"dataset.name": "mnist", "dataset.train_samples": 5000}, "train", 5000),
        ({"dataset.name": "mnist", "dataset.val_samples": 50_000}, "val", 10_000),  # a cap above the split
        ({"dataset.name": "synthetic"}, "train", 4096),
        ({"dataset.name": "synthetic", "dataset.val_samples": 300}, "val", 300),
        ({"dataset.name": "imagenet"}, "train", None),
        ({}, "val", None),
    ],
)
def test_split_size(config, phase, size):
    assert study.split_size(config, phase) == size


def test_memory_sum_is_unknown_when_a_rank_has_none():
    ranks = pd.DataFrame(
        {
            "sweep": ["s"] * 4,
            "cell_id": ["a", "a", "b", "b"],
            "phase": ["train"] * 4,
            "memory_kind": ["cuda", "cuda", "rss", "rss"],
            "peak_reserved_bytes": [2 * GIB, 3 * GIB, None, None],
            "peak_rss_bytes": [None, None, GIB, None],
        }
    )
    sums = study.cell_memory_sums(ranks).set_index("cell_id")["peak_mem_sum_bytes"]
    assert sums["a"] == 5 * GIB  # reserved, the per-process figure on CUDA
    assert math.isnan(sums["b"])  # one rank unrecorded: not a smaller sum


def test_columns_from_real_dumps(tmp_path, run_cell_here):
    pytest.importorskip("torch")
    docs = run_cell_here(TINY_DDP, tmp_path)
    assert main(["aggregate", str(tmp_path), "--no-figures"]) == 0
    results = pd.read_csv(tmp_path / "results" / "results.csv")
    for phase, split in (("train", 128), ("val", 64)):  # dataset.train_samples / val_samples of TINY_DDP
        row = _row(results, phase)
        samples = sum(d["phases"][phase]["samples"] for d in docs)
        seconds = max(d["phases"][phase]["seconds"] for d in docs)
        assert row["epoch_s"] == pytest.approx(split / (samples / seconds))
        assert row["samples_per_s_per_process"] == pytest.approx(samples / seconds / 2)
        peaks = [d["phases"][phase]["memory"]["peak_rss_bytes"] for d in docs]
        assert row["peak_mem_sum_gib"] == pytest.approx(sum(peaks) / GIB)
        assert row["peak_mem_gib"] == pytest.approx(max(peaks) / GIB)


def _bars(ax: Any) -> list[float]:
    return [patch.get_height() for patch in ax.patches]


def _flat(pairs: list[tuple[float, float]]) -> list[float]:
    return [value for pair in pairs for value in pair]


def _intervals(ax: Any) -> list[float]:
    """low, high, low, high… of the error bars drawn on ``ax``, by interval."""
    found = []
    for container in ax.containers:
        if type(container).__name__ == "ErrorbarContainer":
            (segment,) = container.lines[2][0].get_segments()
            found.append((float(segment[0][1]), float(segment[1][1])))
    return _flat(sorted(found))


def test_figure_panels_hold_the_columns(tmp_path):
    results = aggregate([str(_sweep(tmp_path / "s"))], progress=False, figures=False, report=False).results
    fig = study_figures.study_figure(results, "resnet18", [])
    epoch, per_process, train_memory, val_memory, reserved = fig.axes[:5]
    train = results[results["phase"] == "train"].sort_values("world_size")
    assert _bars(epoch) == pytest.approx(list(train["epoch_s"]))
    assert _bars(per_process) == pytest.approx(list(train["samples_per_s_per_process"]))
    assert _bars(train_memory) == pytest.approx(list(train["peak_rss_bytes"] / GIB))
    assert len(_bars(val_memory)) == 2
    # Two repeats: the throughput's interval on every bar of the rate panels, where it lies; none on memory.
    assert (train["ci95_high"] > train["ci95_low"]).all()
    low, high = train["ci95_low"], train["ci95_high"]
    per_process_ci = sorted(zip(low / train["world_size"], high / train["world_size"], strict=True))
    assert _intervals(per_process) == pytest.approx(_flat(per_process_ci))
    assert _intervals(epoch) == pytest.approx(_flat(sorted(zip(4096 / high, 4096 / low, strict=True))))
    assert _intervals(train_memory) == []
    # CPU: no reserved memory, said in words, no zero bars.
    assert _bars(reserved) == []
    assert any("No reserved memory on CPU" in text.get_text() for text in reserved.texts)


def test_reserved_panel_on_cuda(tmp_path):
    synthetic.scaling_sweep(tmp_path / "s", frameworks=("ddp", "horovod"), gpus=(1, 2), repeats=1,
                            memory_kind="cuda")  # fmt: skip
    results = aggregate([str(tmp_path / "s")], progress=False, figures=False, report=False).results
    fig = study_figures.study_figure(results, "resnet18", [])
    reserved = fig.axes[4]
    expected = results.groupby(["framework", "world_size"])["peak_reserved_bytes"].max() / GIB
    assert sorted(_bars(reserved)) == pytest.approx(sorted(expected))
    assert not reserved.texts


def test_aggregate_writes_the_figures_and_the_report_shows_them(tmp_path):
    synthetic.scaling_sweep(tmp_path / "s", frameworks=("ddp", "horovod"), models=("resnet18", "resnet50"),
                            gpus=(1, 2), repeats=2)  # fmt: skip
    assert main(["aggregate", str(tmp_path / "s")]) == 0
    out = tmp_path / "s" / "results"
    page = (out / "report.html").read_text()
    for model in ("resnet18", "resnet50"):
        for fmt in ("png", "svg"):
            assert (out / f"study_{model}.{fmt}").stat().st_size > 0
        assert f'alt="study_{model}"' in page
    assert "s/epoch" in (out / "results.md").read_text()


def test_report_from_results_written_before_the_columns(tmp_path):
    synthetic.scaling_sweep(tmp_path / "s", frameworks=("ddp",), gpus=(1, 2), repeats=2)
    assert main(["aggregate", str(tmp_path / "s"), "--no-figures"]) == 0
    out = tmp_path / "s" / "results"
    older = pd.read_csv(out / "results.csv").drop(columns=[*study.COLUMNS])
    older.to_csv(out / "results.csv", index=False)
    (out / "results.parquet").unlink()
    assert main(["report", str(out)]) == 0
    assert 'alt="study_resnet18"' in (out / "report.html").read_text()
    train = older[(older["phase"] == "train") & (older["world_size"] == 2)].iloc[0]
    drawn = study.derived(older)
    assert drawn.loc[train.name, "epoch_s"] == pytest.approx(4096 / train["throughput"])


def _legend(fig: Any) -> list[str]:
    (legend,) = fig.legends
    return [text.get_text() for text in legend.get_texts()]


def test_series_are_frameworks_and_real_knobs_not_the_stage_count(tmp_path):
    """pipeline.stages follows the processes (one value per count): no series of its own. A swept
    schedule is one: each gets its bars, the further ones hatched in the framework's colour."""
    for gpus in (1, 2):
        for schedule in ("1f1b", "gpipe"):
            cfg = synthetic.config(**{"framework.name": "pipeline", "gpus": gpus, "pipeline.stages": gpus,
                                      "pipeline.schedule": schedule})  # fmt: skip
            synthetic.write_cell(tmp_path / "s", cfg, step_times=[[0.3] * 6] * gpus, counting_ranks={gpus - 1})
        synthetic.write_cell(tmp_path / "s", synthetic.config(gpus=gpus), step_times=[[0.3] * 6] * gpus)
    results = aggregate([str(tmp_path / "s")], progress=False, figures=False, report=False).results
    assert results["cfg.pipeline.stages"].nunique() > 1  # swept, so a knob column the figures see
    fig = study_figures.study_figure(results, "resnet18", [])
    assert sorted(_legend(fig)) == ["ddp", "pipeline, pipeline.schedule=1f1b", "pipeline, pipeline.schedule=gpipe"]
    epoch = fig.axes[0]
    assert len(epoch.patches) == 3 * 2  # three series × two process counts
    assert sorted({patch.get_hatch() or "" for patch in epoch.patches}) == ["", "//"]


def test_an_interval_that_misses_the_bar_is_drawn_where_it_lies(tmp_path):
    """One repeat: the interval is the per-step mean's, and steady steps put the phase's throughput
    (samples over the whole phase, 0.2 % longer than its steps here) just below it."""
    synthetic.write_cell(tmp_path / "s", synthetic.config(gpus=2), step_times=[[0.3] * 6] * 2)
    results = aggregate([str(tmp_path / "s")], progress=False, figures=False, report=False).results
    train = _row(results, "train")
    assert train["ci_basis"] == "timed_steps" and train["throughput"] < train["ci95_low"]
    per_process = study_figures.study_figure(results, "resnet18", []).axes[1]
    assert _bars(per_process) == pytest.approx([train["throughput"] / 2])
    assert _intervals(per_process) == pytest.approx([train["ci95_low"] / 2, train["ci95_high"] / 2])


def test_the_memory_figure_puts_each_configuration_beside_the_others_not_on_top(tmp_path):
    """Two horovod fusion settings and ddp on 1 and 2 processes: three bars per process count, at three
    places, with the larger horovod peak not hiding the smaller one (bars used to overlap per framework)."""
    from analysis.figures import memory_figure

    root = tmp_path / "s"
    for gpus in (1, 2):
        synthetic.write_cell(root, synthetic.config(gpus=gpus), step_times=[[0.25] * 6] * gpus, peak_bytes=GIB)
        for fusion, peak in ((16, 2 * GIB), (64, 3 * GIB)):
            cfg = synthetic.config(**{"gpus": gpus, "framework.name": "horovod", "horovod.fusion_threshold_mb": fusion})
            synthetic.write_cell(root, cfg, step_times=[[0.25] * 6] * gpus, peak_bytes=peak)
    results = aggregate([str(root)], progress=False, figures=False, report=False).results
    figure = memory_figure(results, [])
    axis = figure.axes[0]  # train, the one model
    bars = sorted((round(p.get_x(), 6), round(p.get_height() * 4) / 4) for p in axis.patches)
    assert len(bars) == 6 and len({x for x, _ in bars}) == 6, bars  # 3 series × 2 process counts, no shared place
    assert sorted(h for _, h in bars) == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]  # every peak visible, none drawn over
    labels = [t.get_text() for t in figure.legends[0].get_texts()] if figure.legends else []
    labels += [t.get_text() for ax in figure.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert {"ddp", "horovod, horovod.fusion_threshold_mb=16", "horovod, horovod.fusion_threshold_mb=64"} <= set(labels)
