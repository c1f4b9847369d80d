"""scripts/gpu-check.sh keeps working where CI runs: on a CPU it runs its subset and passes."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks/ is a folder of scripts, not an installed package


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(REPO / "scripts" / "gpu-check.sh"), "--out", str(tmp_path), "--steps", "2"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    statuses = {name: status for name, status, _ in report["checks"]}
    assert {row["framework"] for row in report["rows"]} == {"ddp", "pipeline"}
    assert all(row["train_img_s"] > 0 for row in report["rows"])
    assert "FAIL" not in statuses.values()
    assert statuses["steps cover the phase ddp/resnet18/synthetic/fp32"] == "PASS"
    if "CPU" in report["device"]:
        assert statuses["step times are the device's (StepClock vs synchronised steps)"] == "SKIP"
    assert "| framework | model |" in result.stdout


def test_gpu_check_refuses_bad_input_before_running_a_cell(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(REPO / "scripts" / "gpu-check.sh"), "--out", str(tmp_path), "--mnist-root", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"MNIST not found under {tmp_path / 'none'}/MNIST/raw" in result.stderr
    assert list(tmp_path.iterdir()) == [], "a cell ran or left files before the bad input was refused"


# ------------------------------------------------------------------ the harness-vs-bare comparison
def test_the_ratio_of_medians_knows_how_well_it_is_resolved() -> None:
    from benchmarks.gpu_check import Comparison, ratio_of_medians

    steady = [1000.0, 1001.0, 999.0, 1000.5, 999.5]
    ratio, half = ratio_of_medians([r * 0.995 for r in steady], steady)
    assert ratio == pytest.approx(0.995) and half < 0.002
    assert ratio_of_medians([990.0], [1000.0]) == (0.99, math.inf)  # one pair: no spread to judge by
    # Within 1 % and resolved: passes; 2 % slower: fails; ±5 % noise: cannot say, and says so.
    assert Comparison([r * 0.995 for r in steady], steady, steps=300).verdict()[0] is True
    assert Comparison([r * 0.98 for r in steady], steady, steps=300).verdict()[0] is False
    noisy = [1000.0, 1080.0, 920.0, 1050.0, 950.0]
    ok, detail = Comparison(noisy, steady, steps=300).verdict()
    assert ok is False and "cannot resolve 1%" in detail, detail


# ------------------------------------------------------------------ a bare GPU machine
def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def bare_python(folder: Path) -> Path:
    """An interpreter that sees only PyTorch, torchvision, pip and what they need: a bare GPU machine's.

    The base interpreter without site-packages (-S), and a site folder of links to those
    distributions only; the pure-Python packages dnnbench adds are not there.
    """
    from packaging.requirements import Requirement

    wanted, todo = {"torch", "torchvision", "pip"}, ["torch", "torchvision", "pip"]
    while todo:
        for text in metadata.requires(todo.pop()) or []:
            requirement = Requirement(text)
            name = _normal(requirement.name)
            if name not in wanted and (requirement.marker is None or requirement.marker.evaluate({"extra": ""})):
                wanted.add(name)
                todo.append(name)
    site = folder / "site"
    site.mkdir(parents=True)
    for dist in metadata.distributions():
        if _normal(dist.metadata["Name"]) not in wanted:
            continue
        for top in {file.parts[0] for file in dist.files or [] if file.parts[0] != ".."}:
            if not (site / top).exists():
                (site / top).symlink_to(Path(str(dist.locate_file(top))))
    python = folder / "python"
    python.write_text(
        f'#!/bin/sh\nPYTHONPATH="{site}${{PYTHONPATH:+:$PYTHONPATH}}" exec {sys._base_executable} -S "$@"\n'
    )
    python.chmod(0o755)
    return python


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bare_python(tmp_path_factory.mktemp("bare"))


def gpu_check(python: Path, wheels: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": str(python), "DNNBENCH_WHEELS": str(wheels), "TMPDIR": str(tmp)}
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(REPO / "scripts" / "gpu-check.sh"), *args], capture_output=True, text=True,
                          timeout=300, env=env, check=False)  # fmt: skip


def test_on_a_bare_machine_without_wheels_it_says_what_is_missing(bare: Path, tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    result = gpu_check(bare, tmp_path / "wheels", tmp_path, "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stdout + result.stderr
    for distribution, module in [("hydra-core", "hydra"), ("omegaconf", "omegaconf"), ("PyYAML", "yaml"),
                                 ("packaging", "packaging"), ("antlr4-python3-runtime", "antlr4")]:  # fmt: skip
        assert f"{distribution} (import {module}) missing" in result.stderr, result.stderr
    assert "torch (import torch)" not in result.stderr and "torchvision" not in result.stderr
    assert f"no wheels in {tmp_path / 'wheels'}/" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_on_a_bare_machine_the_carried_wheels_are_all_it_needs(bare: Path, tmp_path: Path) -> None:
    from benchmarks.gpu_check_preflight import CARRIED

    wheels = tmp_path / "wheels"
    versions = [f"{need.distribution}=={metadata.version(need.distribution)}" for need in CARRIED]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), *versions],
                           capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    if built.returncode != 0:
        pytest.skip(f"no package index here to build the wheels from: {built.stderr.strip()[-300:]}")
    # As `make gpu-wheels` verifies them: alone, with the standard library, they plan a cell.
    assert subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check_preflight.py"), "wheels",
                           str(wheels)], timeout=300, check=False).returncode == 0  # fmt: skip
    # Then the check itself: installs them, checks the imports again, plans its cells (and stops
    # at the bad MNIST root, before any cell runs).
    result = gpu_check(bare, wheels, tmp_path, "--out", str(tmp_path / "out"), "--mnist-root", str(tmp_path / "no"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot run the check" not in result.stderr
    assert f"MNIST not found under {tmp_path / 'no'}/MNIST/raw" in result.stderr


def test_wheels_that_miss_a_dependency_are_refused(tmp_path: Path) -> None:
    from benchmarks.gpu_check_preflight import CARRIED, wheel_problems

    wheels = tmp_path / "wheels"
    without_yaml = [need for need in CARRIED if need.module != "yaml"]
    versions = [f"{need.distribution}=={metadata.version(need.distribution)}" for need in without_yaml]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), *versions],
                           capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    if built.returncode != 0:
        pytest.skip(f"no package index here to build the wheels from: {built.stderr.strip()[-300:]}")
    assert wheel_problems(wheels) == [f"no wheel for PyYAML in {wheels}"]
    # Even when the list forgets it, the bare import finds that omegaconf needs it.
    (problem,) = wheel_problems(wheels, tuple(without_yaml))
    assert "do not import and plan a cell" in problem and "yaml" in problem, problem


def test_torchvision_must_be_built_for_this_torch() -> None:
    from benchmarks.gpu_check_preflight import expected_torchvision, torchvision_problem

    assert expected_torchvision("2.14.1+cu130") == "0.29"
    assert expected_torchvision("2.5.0") == "0.20"
    assert torchvision_problem() is None  # this venv's pair (make venv installs them together)
