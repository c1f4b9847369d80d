"""The laptop workflow: a fresh venv with only ``.[analysis]`` aggregates and plots a sweep.

Slow (builds a venv and installs from PyPI). Uses a real fresh venv, no system
site-packages, so torch is really absent.
"""

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import synthetic_sweeps as synthetic

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("orchestrator", "jobs", "analysis", "conf", "sbatch_templates")

pytestmark = pytest.mark.slow


def _source_copy(target: Path) -> Path:
    """The project's sources only (no .venv, no build outputs) so the build stays out of ROOT."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, target / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, target / name)
    if not (target / "README.md").exists():
        (target / "README.md").write_text("dnnbench\n")
    return target


def test_fresh_analysis_venv_aggregates_and_plots(tmp_path):
    sweep = tmp_path / "pulled_sweep"
    synthetic.scaling_sweep(sweep, frameworks=("ddp", "horovod"), gpus=(1, 2), repeats=2)
    env_dir = tmp_path / "laptop"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = env_dir / "bin" / "python"
    source = _source_copy(tmp_path / "src")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", f"{source}[analysis]"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True, check=False, cwd=tmp_path)
    assert probe.returncode != 0, "torch must not be installed by .[analysis]"
    out = tmp_path / "out"
    code = (
        "import sys\n"
        "from analysis import cli\n"
        f"assert cli.main(['aggregate', {str(sweep)!r}, '--out', {str(out)!r}, "
        "'--no-progress']) == 0\n"
        f"assert cli.main(['plot', {str(out)!r}]) == 0\n"
        "heavy = [m for m in ('torch', 'submitit', 'hydra', 'horovod') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    run = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    for name in ("results.csv", "results.parquet", "results.md", "report.html", "throughput.png", "memory.png"):
        assert (out / name).exists(), name
    assert sys.executable != str(python)
