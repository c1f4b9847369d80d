"""Block counts without torch: the table equals the real split, and planning imports no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobs.pipeline import block_counts

REPO = Path(__file__).resolve().parents[1]
PRESET_MODELS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
SWEEP_PRESETS = sorted(p.stem for p in (REPO / "conf" / "sweep").glob("*.yaml"))


def test_every_model_preset_is_in_the_table():
    """A preset the table lacks would send every plan of it back to building the model with torch."""
    assert set(PRESET_MODELS) <= set(block_counts.known_models())


@pytest.mark.parametrize("name", sorted({*PRESET_MODELS, *block_counts.known_models()}))
def test_table_equals_the_real_split(name):
    torch = pytest.importorskip("torch")
    from jobs.models import build_model
    from jobs.pipeline.blocks import split_blocks

    # The meta device builds the same module tree without weights: a count needs no values.
    with torch.device("meta"):
        model = build_model(name, num_classes=10, in_channels=1)
    assert block_counts.block_count(name) == len(split_blocks(model))


def test_unknown_models_are_left_to_the_torch_count():
    assert block_counts.block_count("vgg11") is None
    assert block_counts.block_count("resnet18_but_not_really") is None


# Plans a sweep through the CLI, then names every torch module planning imported.
_PLAN_AND_LIST_TORCH = """
import sys
from orchestrator.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
print("TORCH:" + ",".join(loaded[:5]))
sys.exit(code)
"""


def _plan(tmp_path: Path, *overrides: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PLAN_AND_LIST_TORCH, "sweep", *overrides, "--dry-run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (line,) = [text for text in done.stdout.splitlines() if text.startswith("TORCH:")]
    return [name for name in line.removeprefix("TORCH:").split(",") if name]


@pytest.mark.parametrize("preset", SWEEP_PRESETS)
def test_planning_a_preset_imports_no_torch(tmp_path, preset):
    assert _plan(tmp_path, f"+sweep={preset}") == []


@pytest.mark.parametrize(
    "overrides",
    [
        # Pipelined cells of every family, a model named outside the presets, the Slurm backend's scripts.
        ("framework=pipeline,model_parallel", "model=resnet18,efficientnet_b7", "gpus=2"),
        ("framework=pipeline", "model.name=wide_resnet50_2,efficientnet_v2_s", "gpus=4", "pipeline.stages=2",
         "pipeline.replicas=2"),
        ("framework=pipeline,ddp", "gpus=2", "cluster=slurm"),
    ],
)  # fmt: skip
def test_planning_pipeline_cells_imports_no_torch(tmp_path, overrides):
    assert _plan(tmp_path, *overrides) == []
