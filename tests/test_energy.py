"""Energy per phase: RAPL counters from a tree the test builds, and the absent counters of this machine.

The CPU path reads a RAPL tree under ``DNNBENCH_RAPL_ROOT`` whose counters a thread advances while
a real two-rank cell runs, so the dumps, the results' ``energy_j`` and ``samples_per_j`` come from
the code the cluster runs. Where no counter exists (no /sys/class/powercap, no nvidia-ml-py) the
fields are null with the reason, checked for real on this machine.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from analysis.cli import aggregate_command
from jobs import energy, schema

UJ_PER_TICK = 1_000  # 1 mJ per tick of the counter thread (a tick a millisecond: about 1 W)
# Wraps every 10 J, about 10 s: a run wraps it about once, a phase (the reader undoes one wrap per
# phase) never twice, and no phase's difference is a whole number of ranges (which would read as 0 J).
RANGE_UJ = 10_000_000


def _domain(root: Path, name: str, label: str, value: int, max_range: int = RANGE_UJ) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "name").write_text(label)
    (folder / "energy_uj").write_text(str(value))
    (folder / "max_energy_range_uj").write_text(str(max_range))
    return folder


def rapl_tree(root: Path) -> list[Path]:
    """Two packages and a core subdomain (which must not be counted: it lies inside package 0)."""
    packages = [_domain(root, "intel-rapl:0", "package-0", 1_000), _domain(root, "intel-rapl:1", "package-1", 5_000)]
    _domain(root, "intel-rapl:0:0", "core", 0)
    return packages


def set_counter(domain: Path, value: int) -> None:
    # Replaced whole, as sysfs reads are: a reader never sees a half-written value.
    fresh = domain / "energy_uj.new"
    fresh.write_text(str(value))
    os.replace(fresh, domain / "energy_uj")


def test_package_energy_is_the_sum_of_package_differences(tmp_path: Path) -> None:
    zero, one = rapl_tree(tmp_path)
    meter = energy.PhaseEnergy(device=None, rapl_root=tmp_path)
    meter.start()
    set_counter(zero, 3_001_000)  # +3 J
    set_counter(one, 500_000)  # +0.495 J
    set_counter(tmp_path / "intel-rapl:0:0", 9_000_000)  # core: inside package 0, ignored
    record = meter.stop()
    assert record["cpu_package_j"] == pytest.approx(3.495) and record["cpu_reason"] is None
    assert record["gpu_j"] is None and record["gpu_reason"] == "not a CUDA device"


def test_one_wrap_of_the_counter_is_undone(tmp_path: Path) -> None:
    zero, _ = rapl_tree(tmp_path)
    set_counter(zero, RANGE_UJ - 1_000_000)  # 1 J before the wrap
    meter = energy.PhaseEnergy(device=None, rapl_root=tmp_path)
    meter.start()
    set_counter(zero, 2_000_000)  # wrapped: 1 J + 2 J
    record = meter.stop()
    assert record["cpu_package_j"] == pytest.approx(3.0)


def test_unreadable_counter_is_null_with_the_reason(tmp_path: Path) -> None:
    zero, _ = rapl_tree(tmp_path)
    (zero / "energy_uj").unlink()
    (zero / "energy_uj").mkdir()  # unreadable as a file even for root (chmod would not stop root)
    meter = energy.PhaseEnergy(device=None, rapl_root=tmp_path)
    meter.start()
    record = meter.stop()
    assert record["cpu_package_j"] is None and "RAPL counter unreadable" in record["cpu_reason"]


def test_counter_garbage_is_null_with_the_reason(tmp_path: Path) -> None:
    zero, _ = rapl_tree(tmp_path)
    (zero / "energy_uj").write_text("not a number\n")
    meter = energy.PhaseEnergy(device=None, rapl_root=tmp_path)
    meter.start()
    assert "ValueError" in meter.stop()["cpu_reason"]


@pytest.mark.skipif(Path(energy.DEFAULT_RAPL_ROOT).exists(), reason="this machine has RAPL: not the absent path")
def test_absent_rapl_for_real(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(energy.RAPL_ROOT_ENV, raising=False)
    meter = energy.PhaseEnergy(device=None)
    meter.start()
    record = meter.stop()
    assert record["cpu_package_j"] is None
    assert "no RAPL package domain under /sys/class/powercap" in record["cpu_reason"]


def test_absent_nvml_for_real() -> None:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        counter = energy.NvmlCounter(device=None)
        assert counter.read().value is None and "nvidia-ml-py is not installed" in (counter.reason or "")
    else:
        pytest.skip("nvidia-ml-py is installed here: not the absent path")


@pytest.fixture(scope="module")
def measured_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real 2-rank CPU cell whose RAPL packages (a built tree) advance while it runs."""
    pytest.importorskip("torch")
    base = tmp_path_factory.mktemp("energy")
    packages = rapl_tree(base / "powercap")
    stop = threading.Event()

    def advance() -> None:
        value = 1_000
        while not stop.wait(0.001):  # far shorter than any timed phase below, even on a loaded machine
            value = (value + UJ_PER_TICK) % RANGE_UJ
            for domain in packages:
                set_counter(domain, value)

    ticker = threading.Thread(target=advance, daemon=True)
    ticker.start()
    overrides = [
        "framework=ddp", "model=resnet18", "gpus=2", "dataset=synthetic", "batch_size=8", "steps=4",
        "warmup_steps=1", "val_steps=9", "dataset.train_samples=64", "dataset.val_samples=256", "device=cpu",
    ]  # fmt: skip
    env = {**os.environ, energy.RAPL_ROOT_ENV: str(base / "powercap")}
    dnnbench = str(Path(sys.executable).parent / "dnnbench")
    command = [dnnbench, "sweep", *overrides, "--sweep-dir", str(base / "sweep"), "--no-aggregate"]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    finally:
        stop.set()
        ticker.join()
    assert done.returncode == 0, done.stdout + done.stderr
    yield base / "sweep"


def _dumps(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("cells/*/attempt_0/rank_*.json"))]


@pytest.mark.slow
def test_real_cell_records_package_energy_and_results_get_samples_per_joule(measured_sweep: Path, tmp_path: Path):
    dumps = _dumps(measured_sweep)
    assert len(dumps) == 2
    for doc in dumps:
        assert schema.validate(doc) == []
        for phase in schema.PHASES:
            record = doc["phases"][phase]["energy"]
            assert record["cpu_package_j"] > 0 and record["cpu_reason"] is None
            assert record["gpu_j"] is None and record["gpu_reason"] == "not a CUDA device"
    out = tmp_path / "results"
    assert aggregate_command([str(measured_sweep)], str(out), figures=True, progress=False) == 0
    results = pd.read_csv(out / "results.csv").set_index("phase")
    report = (out / "report.html").read_text()
    for phase in schema.PHASES:
        # Both ranks share one host, so its package counts once: the larger of the two readings.
        joules = max(doc["phases"][phase]["energy"]["cpu_package_j"] for doc in dumps)
        samples = sum(doc["phases"][phase]["samples"] for doc in dumps)
        assert results.loc[phase, "energy_j"] == pytest.approx(joules)
        assert results.loc[phase, "samples_per_j"] == pytest.approx(samples / joules)
        assert results.loc[phase, "energy_sources"] == "cpu_package"
        assert f"<td>{results.loc[phase, 'samples_per_j']:,.2f}</td>" in report
    assert (out / "energy.png").stat().st_size > 0 and 'alt="energy"' in report


@pytest.mark.slow
def test_older_dumps_without_energy_still_validate_and_read_as_unknown(measured_sweep: Path, tmp_path: Path):
    doc = copy.deepcopy(_dumps(measured_sweep)[0])
    for phase in schema.PHASES:
        del doc["phases"][phase]["energy"]
    assert schema.validate(doc) == []
    from analysis.load import energy_columns

    columns = energy_columns([doc], "train", doc["phases"]["train"]["samples"])
    assert columns["energy_j"] != columns["energy_j"] and "not recorded" in columns["energy_reason"]
    broken = copy.deepcopy(_dumps(measured_sweep)[0])
    broken["phases"]["train"]["energy"]["cpu_package_j"] = float("inf")
    assert any("energy.cpu_package_j" in reason for reason in schema.validate(broken))
    broken["phases"]["train"]["energy"] = "lots"
    assert any("phases.train.energy" in reason for reason in schema.validate(broken))
