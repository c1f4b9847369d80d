"""docs/architecture.md's promise: a framework is one strategy module, one row, one preset.

A copy of the project gains a framework in exactly those three places, and one real cell of it
runs end to end (planned, launched by torchrun, dumps validated, aggregated): if a fourth place
were needed, this cell would not complete. A framework with knobs of its own adds one light
module beside its checks (their dataclass and checks), which its row names; conf/ is untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from orchestrator.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("conf", "jobs", "orchestrator", "analysis")
NOOP_ROW = '        Framework("noop", "noop", None, "untimed", "#949494"),\n'

STRATEGY = '''"""A framework that trains as DDP does, under its own name."""

from jobs.strategies.ddp import DDPStrategy


class TinyStrategy(DDPStrategy):
    name = "tiny"
'''
ROW = '        Framework("tiny", "torchrun", "jobs.strategies.tiny:TinyStrategy", "data_parallel", "#101010"),\n'
PRESET = "name: tiny\nlauncher: torchrun\n"

KNOBS = '''"""The tiny framework's knobs and their plan-time checks."""

from dataclasses import dataclass
from typing import Any


@dataclass
class TinyConfig:
    level: int = 1


def check_tiny(config: dict[str, Any]) -> list[str]:
    level = config["tiny"]["level"]
    return [] if level >= 0 else [f"tiny.level={level}: must be >= 0"]
'''
ROW_WITH_KNOBS = (
    '        Framework("tiny", "torchrun", "jobs.strategies.tiny:TinyStrategy", "data_parallel", "#101010",\n'
    '                  knobs={"tiny": "jobs.checks.tiny:TinyConfig"}, checks="jobs.checks.tiny:check_tiny"),\n'
)
CELL = [
    "framework=tiny", "model=resnet18", "gpus=2", "dataset=synthetic", "batch_size=16", "steps=3",
    "warmup_steps=1", "val_steps=2", "dataset.train_samples=128", "dataset.val_samples=64", "device=cpu",
]  # fmt: skip


def _project_with_a_new_framework(root: Path, *, knobs: bool = False) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "jobs" / "strategies" / "tiny.py").write_text(STRATEGY)  # 1. the strategy
    table = root / "jobs" / "frameworks.py"
    text = table.read_text()
    assert text.count(NOOP_ROW) == 1, "the framework table's last row moved: update NOOP_ROW"
    table.write_text(text.replace(NOOP_ROW, NOOP_ROW + (ROW_WITH_KNOBS if knobs else ROW)))  # 2. the row
    (root / "conf" / "framework" / "tiny.yaml").write_text(PRESET)  # 3. the preset
    if knobs:
        (root / "jobs" / "checks" / "tiny.py").write_text(KNOBS)
    return root


def _dnnbench(project: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from orchestrator.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(project)}  # the copy first, for every process the cell starts
    return subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


def test_a_framework_added_in_three_places_runs_a_real_cell_end_to_end(tmp_path):
    project = _project_with_a_new_framework(tmp_path / "project")
    sweep_dir = tmp_path / "sweep"
    done = _dnnbench(project, "sweep", "--sweep-dir", str(sweep_dir), *CELL)
    assert done.returncode == ExitCode.OK, done.stdout[-3000:] + done.stderr[-3000:]
    results = pd.read_csv(sweep_dir / "results" / "results.csv")
    rows = results[results["framework"] == "tiny"]
    # Exit code OK: every planned cell completed; the analysis tells its phases apart under its name.
    assert sorted(rows["phase"]) == ["train", "val"], results.to_string()
    assert (rows["throughput"] > 0).all()


def test_a_frameworks_knobs_are_declared_beside_its_checks_and_named_by_its_row(tmp_path):
    project = _project_with_a_new_framework(tmp_path / "project", knobs=True)
    sweep_dir = ["--sweep-dir", str(tmp_path / "sweep")]
    shown = _dnnbench(project, "sweep", *sweep_dir, "--cfg", "framework=tiny", "tiny.level=3")
    assert shown.returncode == ExitCode.OK, shown.stderr[-3000:]
    assert yaml.safe_load(shown.stdout)["tiny"] == {"level": 3}
    refused = _dnnbench(project, "sweep", *sweep_dir, "--dry-run", "framework=tiny", "tiny.level=-1")
    assert refused.returncode == ExitCode.ERROR and "tiny.level=-1: must be >= 0" in refused.stderr
    # Another framework's cell leaves the section out of its id, as with horovod's and fsdp's.
    ids = []
    for level in (1, 5):
        listed = _dnnbench(project, "sweep", *sweep_dir, "--dry-run", "--list", "--json", "framework=ddp",
                           f"tiny.level={level}")  # fmt: skip
        assert listed.returncode == ExitCode.OK, listed.stderr[-3000:]
        ids.append(json.loads(listed.stdout)["id"])
    assert ids[0] == ids[1]
    assert not (tmp_path / "sweep").exists()


def test_a_knob_section_is_one_dataclass_and_never_a_key_every_cell_has(monkeypatch):
    from conf.structured import bench_config
    from jobs import frameworks
    from jobs.frameworks import Framework
    from jobs.registry import Registry

    rows = [
        Framework("a", "torchrun", None, "data_parallel", "#000001", knobs={"pipeline": frameworks.PIPELINE_KNOBS}),
        Framework("b", "torchrun", None, "data_parallel", "#000002", knobs={"pipeline": "jobs.checks.fsdp:FsdpConfig"}),
    ]
    monkeypatch.setattr(frameworks, "FRAMEWORKS", Registry("framework.name", {row.name: row for row in rows}))
    with pytest.raises(ValueError, match="knob section pipeline: framework rows name"):
        frameworks.knob_configs()
    with pytest.raises(ValueError, match=r"knob section\(s\) gpus: already keys of every cell's config"):
        bench_config({"gpus": dict})
