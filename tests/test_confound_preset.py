"""The study's confound on purpose (`+sweep=confound_cpu`): flagged first, then attributed.

Real cells, real jemalloc: the pipeline runs in `env=jemalloc` and DDP in `env=current`, as the
original study ran its frameworks each in its own environment. The results must say that the two
effects are confounded and print the commands that add the missing cells; after those cells ran
(the commands as printed), the same folder gives the environment effect within each framework,
the framework effect within each environment and their interaction, with CIs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
SMALL = ["steps=4", "warmup_steps=1", "val_steps=2", "repeats=1"]
DNNBENCH = [sys.executable, "-m", "orchestrator.cli"]

pytestmark = pytest.mark.slow


def _sweep(arguments: list[str], cwd: Path) -> None:
    done = subprocess.run([*DNNBENCH, "sweep", *arguments], capture_output=True, text=True, timeout=600, cwd=cwd)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_the_confound_preset_is_flagged_then_attributed(tmp_path: Path) -> None:
    if not JEMALLOC.exists():
        assert os.environ.get("DNNBENCH_REQUIRE_JEMALLOC") != "1", f"{JEMALLOC} is missing"
        pytest.skip("libjemalloc2 is not installed (apt install libjemalloc2)")
    project = Path(__file__).resolve().parents[1]
    sweep = tmp_path / "study"
    _sweep(["+sweep=confound_cpu", "framework=ddp", "env=current", *SMALL, "--sweep-dir", str(sweep)], project)
    _sweep(["+sweep=confound_cpu", "framework=pipeline", "env=jemalloc", *SMALL, "--sweep-dir", str(sweep)], project)

    results = sweep / "results"
    first = pd.read_csv(results / "env_effect.csv", keep_default_na=False)
    assert set(first["kind"]) >= {"throughput", "missing"} and "interaction" not in set(first["kind"])
    assert "are confounded" in (results / "results.md").read_text()
    assert "are confounded" in (results / "report.html").read_text()
    missing = first[first["kind"] == "missing"]
    assert {(r.framework, r.env) for r in missing.itertuples()} == {("ddp", "jemalloc"), ("pipeline", "current")}

    # The pipeline's ranks really ran under jemalloc, DDP's did not.
    for cell in (sweep / "cells").iterdir():
        config = json.loads((cell / "cell.json").read_text())["config"]
        dump = json.loads(next(cell.glob("attempt_*/rank_0.json")).read_text())
        preloaded = dump["environment"]["variables"].get("LD_PRELOAD")
        assert (preloaded == str(JEMALLOC)) == (config["env"]["name"] == "jemalloc")

    for command in sorted(set(missing["command"])):  # exactly as printed
        words = shlex.split(command)
        assert words[:2] == ["dnnbench", "sweep"]
        _sweep(words[2:], project)

    table = pd.read_csv(results / "env_effect.csv", keep_default_na=False, na_values=[""])
    assert "missing" not in set(table["kind"])
    train = table[table["phase"] == "train"]
    for kind in ("env_effect", "framework_effect", "interaction"):
        rows = train[train["kind"] == kind]
        assert len(rows) == (1 if kind == "interaction" else 2), kind
        assert (rows["ratio"] > 0).all()
    throughput = train[train["kind"] == "throughput"].set_index(["framework", "env"])["throughput"]
    interaction = train[train["kind"] == "interaction"].iloc[0]
    # current is the reference environment: the ratio in jemalloc over the ratio in current
    expected = (throughput["pipeline", "jemalloc"] / throughput["ddp", "jemalloc"]) / (
        throughput["pipeline", "current"] / throughput["ddp", "current"]
    )
    assert interaction["ratio"] == pytest.approx(expected, rel=1e-9)
    assert interaction["ranking_flips"] in (True, False, "True", "False")
    assert list(results.glob("env_effect_*.png"))
