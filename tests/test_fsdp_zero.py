"""framework=fsdp (FSDP2) and framework=zero (ZeRO-1): equal to DDP, a share of its model state, through the CLI.

Equality: every variant trains the same cell config (seed, synthetic data, 2 gloo processes, fp32)
through its real strategy and the real training phase; the whole parameters (FSDP's gathered from
the shards) must equal DDP's **bit for bit**. That is the tolerance, and it holds on 2 processes for a
reason: the only arithmetic the frameworks do differently is averaging the gradients over the
processes (DDP: each rank's share divided by 2, then summed; FSDP: summed in a reduce-scatter, then
divided by 2), and a sum of two numbers or a division by a power of two is exact or rounds the same
way; ZeRO steps the same averaged gradient with the same SGD on the rank that owns a parameter, then
broadcasts it. On 3 processes the orders of summation differ and a relative tolerance of ~1e-6 would
be needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from jobs import schema
from orchestrator import cli
from orchestrator.config import _gpu_visible_here

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "sharded_equality_worker.py"
# Tiny on purpose: 2 cores run every variant. resnet18 on 16×16 images, 1 warm-up + 3 timed steps.
TINY = [
    "model=resnet18", "dataset=synthetic", "dataset.image_size=16", "dataset.train_samples=64",
    "dataset.val_samples=32", "batch_size=8", "steps=3", "warmup_steps=1", "val_steps=2", "gpus=2", "device=cpu",
]  # fmt: skip
VARIANTS = {
    "zero": ["framework=zero"],
    "fsdp block": ["framework=fsdp", "fsdp.wrap=block"],
    "fsdp block, keep gathered": ["framework=fsdp", "fsdp.wrap=block", "fsdp.reshard_after_forward=false"],
    "fsdp root_only": ["framework=fsdp", "fsdp.wrap=root_only"],
    "fsdp root_only, keep gathered": ["framework=fsdp", "fsdp.wrap=root_only", "fsdp.reshard_after_forward=false"],
}
THREADS = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def _variant(overrides: list[str]) -> str:
    return ",".join([*overrides, *TINY])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[torch.Tensor]]:
    """Whole parameters after training, DDP's under "ddp" and each variant's under its name."""
    out = tmp_path_factory.mktemp("equality") / "parameters.pt"
    variants = {"ddp": ["framework=ddp"], **VARIANTS}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
         str(out), *(_variant(overrides) for overrides in variants.values())],
        cwd=REPO, env={**os.environ, **THREADS, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = torch.load(out)
    return {name: saved[_variant(overrides)] for name, overrides in variants.items()}


def _initial_parameters() -> list[torch.Tensor]:
    from jobs.models import build_model

    torch.manual_seed(0)  # the cells' seed: what every rank builds before training
    return [p.detach() for p in build_model("resnet18", num_classes=10, in_channels=1).parameters()]


@pytest.mark.slow
def test_ddp_reference_trained(trained: dict[str, list[torch.Tensor]]) -> None:
    """Equal parameters mean something only if training moved them."""
    initial = _initial_parameters()
    assert [p.shape for p in trained["ddp"]] == [p.shape for p in initial]
    assert not any(torch.equal(a, b) for a, b in zip(trained["ddp"], initial, strict=True) if a.dim() > 1)


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.slow
def test_parameters_equal_ddp(trained: dict[str, list[torch.Tensor]], name: str) -> None:
    ddp, theirs = trained["ddp"], trained[name]
    assert [p.shape for p in theirs] == [p.shape for p in ddp]
    differing = [i for i, (a, b) in enumerate(zip(theirs, ddp, strict=True)) if not torch.equal(a, b)]
    worst = max((float((theirs[i] - ddp[i]).abs().max()) for i in differing), default=0.0)
    assert not differing, f"{name}: {len(differing)} parameter tensors differ from DDP's (max |Δ| {worst:.3g})"


# --------------------------------------------------------------------------- real cells through the CLI

FRAMEWORKS = ("ddp", "fsdp", "zero")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three `dnnbench run` folders: the same tiny cell under ddp, fsdp and zero."""
    root = tmp_path_factory.mktemp("runs")
    for framework in FRAMEWORKS:
        assert cli.main(["run", f"framework={framework}", *TINY, "--quiet", "--out", str(root / framework)]) == 0
    return root


def _dumps(run: Path) -> list[dict[str, Any]]:
    (attempt,) = run.glob("cells/*/attempt_0")
    assert json.loads((attempt / "outcome.json").read_text())["state"] == "completed"
    return [schema.load(attempt / schema.dump_filename(rank)) for rank in range(2)]


@pytest.mark.slow
def test_cells_complete_with_valid_dumps_and_ddps_digests(runs: Path) -> None:
    dumps = {framework: _dumps(runs / framework) for framework in FRAMEWORKS}
    digests = {framework: docs[0]["extra"]["parameter_digests"] for framework, docs in dumps.items()}
    assert digests["fsdp"] == digests["zero"] == digests["ddp"]  # exact: see the module docstring
    knobs = dumps["fsdp"][0]["extra"]["framework_knobs"]
    assert {k: knobs[k] for k in ("wrap", "reshard_after_forward", "param_dtype", "reduce_dtype", "backend")} == {
        "wrap": "block", "reshard_after_forward": True, "param_dtype": "fp32", "reduce_dtype": "fp32", "backend": "gloo"
    }  # fmt: skip
    assert knobs["mesh_device"] == "cpu"  # device=cpu: not FSDP's default CUDA mesh, even where CUDA works
    assert knobs["units"] == 11  # resnet18's 10 blocks (stem, 8 residual blocks, head) and the root
    assert all(d["counts_samples"] and d["phases"]["train"]["samples"] == 3 * 8 for d in dumps["fsdp"])


@pytest.mark.slow
def test_sharded_frameworks_hold_half_of_ddps_model_state(runs: Path) -> None:
    """On 2 processes: ZeRO holds half of DDP's optimizer state, FSDP half of everything; the halves add
    up to DDP's whole (FSDP's shards hold no padding; ZeRO's split is by parameter, greedy by size)."""
    held = {framework: [d["model_state"] for d in _dumps(runs / framework)] for framework in FRAMEWORKS}
    ddp = held["ddp"][0]
    assert held["ddp"][1] == ddp and ddp["parameter_bytes"] == 11_175_370 * 4  # resnet18, 1 channel, 10 classes
    assert ddp["gradient_bytes"] == ddp["optimizer_state_bytes"] == ddp["parameter_bytes"]  # SGD momentum: 1×
    sharded = {"fsdp": schema.MODEL_STATE_FIELDS, "zero": ("optimizer_state_bytes",)}
    for framework, fields in sharded.items():
        for field in schema.MODEL_STATE_FIELDS:
            ranks = [state[field] for state in held[framework]]
            if field not in fields:
                assert ranks == [ddp[field]] * 2, (framework, field)
                continue
            assert sum(ranks) == ddp[field], (framework, field, ranks)
            assert all(0.45 <= share / ddp[field] <= 0.55 for share in ranks), (framework, field, ranks)


@pytest.mark.slow
def test_aggregate_reads_them_with_model_state_columns(runs: Path, tmp_path: Path) -> None:
    import pandas as pd

    out = tmp_path / "results"
    assert cli.main(["aggregate", str(runs), "--out", str(out), "--no-progress"]) == 0
    results = pd.read_csv(out / "results.csv")
    train = results[results["phase"] == "train"].set_index("framework")
    assert sorted(train.index) == sorted(FRAMEWORKS)
    assert train.loc["ddp", "model_state_gib"] == pytest.approx(3 * 11_175_370 * 4 / 2**30)
    assert train.loc["fsdp", "model_state_gib"] == pytest.approx(train.loc["ddp", "model_state_gib"] / 2, rel=0.05)
    assert train.loc["zero", "model_state_optimizer_gib"] == pytest.approx(
        train.loc["ddp", "model_state_optimizer_gib"] / 2, rel=0.1
    )
    assert (out / "memory.png").exists()


@pytest.mark.slow
def test_memory_figure_draws_model_state_beside_peak(runs: Path, tmp_path: Path) -> None:
    import pandas as pd
    from matplotlib.collections import LineCollection

    from analysis.figures import memory_figure

    assert cli.main(["aggregate", str(runs), "--out", str(tmp_path), "--no-figures", "--no-progress"]) == 0
    results = pd.read_csv(tmp_path / "results.csv")
    fig = memory_figure(results, [])
    (ax,) = [ax for ax in fig.axes if ax.get_title() == "resnet18 — train"]
    heights = sorted(
        float(seg[0][1]) for c in ax.collections if isinstance(c, LineCollection) for seg in c.get_segments()
    )
    train = results[results["phase"] == "train"]
    assert heights == pytest.approx(sorted(train["model_state_gib"]))
    labels = [t.get_text() for legend in fig.legends + [a.get_legend() for a in fig.axes if a.get_legend()]
              for t in legend.get_texts()]  # fmt: skip
    assert "model state (line)" in labels
    assert any("Black line: model state per process" in text.get_text() for text in fig.texts)


@pytest.fixture(scope="module")
def noop_dump(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real rank dump, fast: a noop cell through `dnnbench run`."""
    folder = tmp_path_factory.mktemp("noop") / "run"
    assert cli.main(["run", "framework=noop", *TINY, "--quiet", "--out", str(folder)]) == 0
    return _dumps(folder)[0]


def test_old_dump_without_model_state_still_validates(noop_dump: dict[str, Any]) -> None:
    doc = dict(noop_dump)
    del doc["model_state"]
    assert schema.validate(doc) == []
    doc["model_state"] = None  # a strategy that cannot tell
    assert schema.validate(doc) == []


@pytest.mark.parametrize(
    ("section", "reason"),
    [
        ({"parameter_bytes": 1, "gradient_bytes": 1}, "model_state.optimizer_state_bytes: missing"),
        ({"parameter_bytes": -1, "gradient_bytes": 0, "optimizer_state_bytes": 0}, "parameter_bytes: -1 < 0"),
        ({"parameter_bytes": 1.5, "gradient_bytes": 0, "optimizer_state_bytes": 0}, "expected int, got float"),
        ({"parameter_bytes": True, "gradient_bytes": 0, "optimizer_state_bytes": 0}, "expected int, got bool"),
        ({"parameter_bytes": 2**63, "gradient_bytes": 0, "optimizer_state_bytes": 0}, "out of range"),
        ("44 MB", "model_state: expected dict, got str"),
    ],
)
def test_bad_model_state_is_refused(noop_dump: dict[str, Any], section: Any, reason: str) -> None:
    doc = dict(noop_dump)
    doc["model_state"] = section
    assert any(reason in r for r in schema.validate(doc)), schema.validate(doc)


# --------------------------------------------------------------------------- refused at plan time


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["fsdp.wrap=blocks"], "fsdp.wrap=blocks: expected one of block, root_only"),
        (["fsdp.param_dtype=int8"], "fsdp.param_dtype=int8: expected one of fp32, bf16, fp16"),
        (["fsdp.reduce_dtype=fp8"], "fsdp.reduce_dtype=fp8: expected one of fp32, bf16, fp16"),
        (["fsdp.param_dtype=bf16", "device=cpu"], "fsdp.param_dtype=bf16: FSDP mixed precision runs on a GPU only"),
        (["fsdp.reduce_dtype=fp16", "fsdp.param_dtype=bf16", "device=cpu"],
         "fsdp.param_dtype=bf16, fsdp.reduce_dtype=fp16: FSDP mixed precision runs on a GPU only, and device=cpu"),
        (["fsdp.reduce_dtype=bf16", "cluster=slurm", "cluster.request_gpus=false"],
         "requests no GPU (cluster.request_gpus=false)"),
        (["model.name=mobilenet_v2"], "fsdp.wrap=block with model.name=mobilenet_v2: MobileNetV2 has no"),
        (["precision=amp", "device=cuda"], "precision=amp with framework=fsdp"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["sweep", "run"])
def test_bad_fsdp_knobs_are_refused_before_anything_runs(
    command: str, overrides: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--dry-run", "--sweep-dir", str(tmp_path / "s")] if command == "sweep" else ["--out", str(tmp_path / "r")]
    assert cli.main([command, "framework=fsdp", "dataset=synthetic", *overrides, *where]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


@pytest.mark.skipif(_gpu_visible_here(), reason="this machine shows a GPU: device=auto would use it")
def test_mixed_precision_refused_on_a_local_cpu_machine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["sweep", "framework=fsdp", "fsdp.param_dtype=bf16", "--dry-run", "--sweep-dir", str(tmp_path)])
    assert code == 1
    assert "cluster=local runs the cell here and this machine shows no GPU" in capsys.readouterr().err


def test_a_root_only_wrap_of_a_model_without_blocks_plans(tmp_path: Path) -> None:
    assert cli.main(["sweep", "framework=fsdp", "fsdp.wrap=root_only", "model.name=mobilenet_v2", "device=cpu",
                     "dataset=synthetic", "--dry-run", "--sweep-dir", str(tmp_path)]) == 0  # fmt: skip


def test_zero_plans_in_every_precision_it_may_run(tmp_path: Path) -> None:
    for precision in ("fp32", "bf16", "amp"):
        device = "cpu" if precision == "fp32" else "cuda"
        overrides = ["framework=zero", f"precision={precision}", f"device={device}", "dataset=synthetic"]
        assert cli.main(["sweep", *overrides, "--dry-run", "--sweep-dir", str(tmp_path / precision)]) == 0


# --------------------------------------------------------------------------- every framework fills model_state

RESNET18_BYTES = 11_175_370 * 4  # fp32 parameters of resnet18 with 1 input channel and 10 classes


def _run_alone(framework: str, extra: list[str], folder: Path) -> list[dict[str, Any]]:
    assert cli.main(["run", f"framework={framework}", *TINY, *extra, "--quiet", "--out", str(folder)]) == 0
    return _dumps(folder)


@pytest.mark.slow
def test_pipeline_stages_hold_their_blocks_only(tmp_path: Path) -> None:
    docs = _run_alone("pipeline", ["pipeline.stages=2", "pipeline.replicas=1"], tmp_path / "pipeline")
    held = [d["model_state"] for d in docs]
    for field in schema.MODEL_STATE_FIELDS:
        assert sum(state[field] for state in held) == RESNET18_BYTES, field
        assert all(0 < state[field] < RESNET18_BYTES for state in held), field


@pytest.mark.slow
@pytest.mark.horovod
def test_horovod_holds_the_whole_model_like_ddp(tmp_path: Path) -> None:
    pytest.importorskip("horovod.torch")
    docs = _run_alone("horovod", [], tmp_path / "horovod")
    assert [d["model_state"] for d in docs] == [dict.fromkeys(schema.MODEL_STATE_FIELDS, RESNET18_BYTES)] * 2


def test_noop_dumps_hold_nothing(noop_dump: dict[str, Any]) -> None:
    assert noop_dump["model_state"] == dict.fromkeys(schema.MODEL_STATE_FIELDS, 0)


def test_a_shared_tensor_counts_once() -> None:
    from torch import nn

    from jobs.model_state import measure

    encoder, decoder = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)
    decoder.weight = encoder.weight  # tied: one tensor reachable from two modules
    model = nn.Sequential(encoder, decoder)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 8)).sum().backward()
    optimizer.step()
    one = 8 * 8 * 4
    assert measure([encoder.weight, decoder.weight, *model.parameters()], optimizer) == {
        "parameter_bytes": one, "gradient_bytes": one, "optimizer_state_bytes": one,
    }  # fmt: skip
    assert measure(model.parameters(), None)["optimizer_state_bytes"] == 0
