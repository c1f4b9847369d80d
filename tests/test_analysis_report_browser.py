"""report.html renders in headless Chromium: non-blank screenshot, no console messages.

Skipped (with the reason) when no Chromium binary is installed; CI installs Debian's
``chromium``. The report has no scripts, so any console message counts as an error
(Chromium logs console.error at INFO level, so levels cannot be told apart).
"""

import shutil
import subprocess
from pathlib import Path

import pytest
import synthetic_sweeps as synthetic

from analysis import cli

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
BROWSER = next((b for b in BROWSERS if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no headless Chromium here (apt-get install -y chromium)")


def render(page: Path, shot: Path) -> list[str]:
    """Screenshot ``page``; returns the console lines Chromium logged."""
    result = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            "--window-size=1280,2400",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.exists(), result.stderr[-2000:]
    return [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


def non_white_fraction(png: Path) -> float:
    from matplotlib.image import imread

    pixels = imread(png)[..., :3]
    return float((pixels.min(axis=-1) < 0.95).mean())


def test_console_errors_are_detected(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<html><body><h1>x</h1><script>console.error("boom")</script></body></html>')
    assert any("boom" in line for line in render(page, tmp_path / "bad.png"))


def test_report_renders(tmp_path):
    synthetic.scaling_sweep(tmp_path / "sweep", frameworks=("ddp", "pipeline"), gpus=(1, 2), repeats=2)
    cfg = synthetic.config(**{"gpus": 2, "model.name": "broken"})
    folder = synthetic.write_cell(tmp_path / "sweep", cfg, step_times=[[0.5] * 3] * 2)
    (folder / "rank_1.json").write_text("{")
    cli.aggregate_command([str(tmp_path / "sweep")], str(tmp_path / "out"), progress=False)
    report = tmp_path / "out" / "report.html"
    shot = tmp_path / "report.png"
    assert render(report, shot) == []
    assert non_white_fraction(shot) > 0.02, "screenshot is (nearly) blank"
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")
    render(blank, tmp_path / "blank.png")
    assert non_white_fraction(tmp_path / "blank.png") < 0.001
