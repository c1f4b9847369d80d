"""Outputs and CLI: tables, figures, report, compare, pull, help text, no heavy imports."""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import synthetic_sweeps as synthetic

from analysis import cli
from analysis.aggregate import read_results
from analysis.errors import NoResultsError
from analysis.pull import rsync_command

COMMANDS = ("aggregate", "plot", "compare", "check", "pull", "report")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    synthetic.scaling_sweep(
        root, frameworks=("ddp", "horovod", "pipeline"), gpus=(1, 2, 4), repeats=2, memory_kind="cuda"
    )
    assert cli.aggregate_command([str(root)], None, progress=False) == 0
    return root


def test_aggregate_writes_every_output(sweep):
    out = sweep / "results"
    for name in (
        "results.csv",
        "results.parquet",
        "results.md",
        "cells.csv",
        "cells.parquet",
        "ranks.parquet",
        "incomplete.csv",
        "report.html",
        "environments.json",
        "stages.csv",
    ):
        assert (out / name).exists(), name
    for figure in ("throughput", "scaling", "memory", "stage_balance"):
        for fmt in ("png", "svg"):
            assert (out / f"{figure}.{fmt}").stat().st_size > 1000, figure
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 3 * 3 * 2
    assert {
        "ci95_low",
        "ci95_high",
        "ci_basis",
        "speedup",
        "efficiency",
        "confound",
        "environment_hash",
        "cells",
        "n",
    } <= set(table.columns)
    csv = pd.read_csv(out / "results.csv")
    assert list(csv.columns) == list(table.columns)


def test_report_is_self_contained(sweep):
    html = (sweep / "results" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 + 1  # and the study's view of its one model
    assert "<script" not in html and 'src="http' not in html
    assert "Incomplete cells" in html and "Environment" in html


def test_read_results_roundtrip_and_plot_from_copy(sweep, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sweep / "results", copy)
    for png in copy.glob("*.png"):
        png.unlink()
    back = read_results(copy)
    assert len(back.results) == 18
    assert cli.plot_command([str(copy)]) == 0
    assert (copy / "throughput.png").exists() and (copy / "memory.png").exists()
    assert cli.report_command([str(copy)]) == 0


def test_compare_same_sweep_is_not_significant(sweep, capsys):
    assert cli.compare_command(str(sweep / "results"), str(sweep)) == 0
    text = capsys.readouterr().out
    assert "| ddp | resnet18 | 32 | 4 | train |" in text
    assert "| no |" in text and "| yes |" not in text


def test_compare_detects_a_real_difference(tmp_path):
    from analysis.aggregate import collect
    from analysis.compare import compare

    synthetic.scaling_sweep(tmp_path / "a", frameworks=("ddp",), gpus=(1, 2), repeats=3)
    synthetic.scaling_sweep(tmp_path / "b", frameworks=("ddp",), gpus=(1, 2), repeats=3)
    # make B twice as fast: halve every step time of B's 2-process cells
    for dump in (tmp_path / "b").glob("cells/*/attempt_0/rank_*.json"):
        doc = json.loads(dump.read_text())
        if doc["world_size"] == 2:
            for phase in doc["phases"].values():
                phase["step_times_s"] = [t / 2 for t in phase["step_times_s"]]
                phase["seconds"] /= 2
                phase["throughput_samples_per_s"] *= 2  # a dump's own throughput must stay samples / seconds
            dump.write_text(json.dumps(doc))
    table = compare(
        collect([tmp_path / "a"], progress=False).results, collect([tmp_path / "b"], progress=False).results
    )
    two = table[(table["world_size"] == "2") & (table["phase"] == "train")].iloc[0]
    one = table[(table["world_size"] == "1") & (table["phase"] == "train")].iloc[0]
    assert two["ratio"] == pytest.approx(2.0, rel=0.05) and two["significant"] == "yes"
    assert one["ratio"] == pytest.approx(1.0, rel=0.05) and one["significant"] == "no"


def test_no_results_is_a_user_error(tmp_path):
    cfg = synthetic.config(gpus=1)
    synthetic.write_cell(tmp_path, cfg, step_times=[[0.5] * 3], outcome="failed")
    with pytest.raises(NoResultsError, match="no complete cell"):
        cli.aggregate_command([str(tmp_path)], None, progress=False)


def test_every_command_has_help_and_an_example():
    parser = argparse.ArgumentParser(prog="dnnbench")
    sub = parser.add_subparsers(dest="command")
    cli.add_parsers(sub)
    for name in COMMANDS:
        command = sub.choices[name]
        assert "Example:" in (command.description or ""), name
        assert command.format_help().strip()
    actions = [a for a in sub._choices_actions]
    assert {a.dest for a in actions} == set(COMMANDS)
    assert all(a.help for a in actions)


def test_main_prints_error_without_traceback(tmp_path, capsys):
    assert cli.main(["aggregate", str(tmp_path), "--no-progress"]) == 4  # not a sweep folder
    assert capsys.readouterr().err.startswith("Error: ")


def test_rsync_filters_copy_only_what_analysis_needs(sweep, tmp_path):
    if shutil.which("rsync") is None:
        pytest.skip("rsync not installed")
    source = tmp_path / "remote"
    shutil.copytree(sweep, source)
    cell = next((source / "cells").iterdir())
    (cell / "attempt_0" / "launcher_node0.log").write_text("log")
    (cell / "attempt_0" / "checkpoint.pt").write_bytes(b"x" * 100)
    (source / "jobs").mkdir()
    (source / "jobs" / "array.sbatch").write_text("#!/bin/bash")
    (source / "sweep.json").write_text("{}")
    dest = tmp_path / "dest"
    assert cli.pull_command(str(source), str(dest)) == 0
    copied = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert "sweep.json" in copied and "results/results.parquet" in copied
    assert any(p.endswith("rank_0.json") for p in copied)
    assert any(p.endswith("outcome.json") for p in copied)
    assert not any(p.endswith((".log", ".pt")) or p.startswith("jobs/") for p in copied)
    with_logs = tmp_path / "with_logs"
    cli.pull_command(str(source), str(with_logs), include_logs=True)
    logs = {p.name for p in with_logs.rglob("*") if p.is_file()}
    assert "launcher_node0.log" in logs and "array.sbatch" in logs and "checkpoint.pt" not in logs
    # the copy aggregates
    assert cli.aggregate_command([str(dest)], str(tmp_path / "out"), figures=False, progress=False) == 0


def test_rsync_command_uses_ssh_for_remote():
    argv = rsync_command("alice@host:/runs/s1", "/tmp/s1")
    assert argv[:2] == ["rsync", "-a"] and "ssh" in argv
    assert argv[-2:] == ["alice@host:/runs/s1/", "/tmp/s1/"]
    assert argv.index("--include=*/") < argv.index("--exclude=*")


def test_analysis_never_imports_torch_submitit_or_hydra(sweep, tmp_path):
    code = (
        "import sys, argparse\n"
        "from analysis import cli\n"
        f"cli.aggregate_command([{str(sweep)!r}], {str(tmp_path)!r}, progress=False)\n"
        f"cli.compare_command({str(tmp_path)!r}, {str(sweep)!r})\n"
        "heavy = [m for m in ('torch', 'submitit', 'hydra', 'omegaconf', 'horovod') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
