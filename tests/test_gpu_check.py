"""scripts/gpu-check.sh keeps working where CI runs: on a CPU it runs its subset and passes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
