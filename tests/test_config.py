"""conf/ and orchestrator/config.py + sweep.py: composing, the sweep grid, and bad input refused early."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobs import schema
from orchestrator import cli
from orchestrator import config as config_module
from orchestrator.config import compose, preset_names, resolved, validate
from orchestrator.errors import ConfigError
from orchestrator.sweep import grid, plan

REPO = Path(__file__).resolve().parents[1]
# The installed console script when there is one (it is what users run), else the module.
_SCRIPT = Path(sys.executable).parent / "dnnbench"
DNNBENCH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "orchestrator.cli"]
CELL_LINE = re.compile(r"^([0-9a-f]{12})  (\S+)$", re.MULTILINE)


def dnnbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*DNNBENCH, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


# composing -------------------------------------------------------------------------------------


def test_defaults_compose_to_a_small_local_ddp_cell():
    config = resolved(compose([]))
    assert config["framework"] == {"name": "ddp", "launcher": "torchrun", "backend": "auto"}
    assert config["model"]["name"] == "resnet18"
    assert config["dataset"]["name"] == "synthetic"
    assert config["cluster"]["name"] == "local" and config["cluster"]["backend"] == "local"
    assert {k: config[k] for k in ("gpus", "nodes", "batch_size", "steps", "epochs", "threads_per_process")} == {
        "gpus": 1, "nodes": 1, "batch_size": 32, "steps": 20, "epochs": None, "threads_per_process": 1,
    }  # fmt: skip
    validate(config)


def test_every_model_preset_composes_and_names_a_torchvision_model():
    from jobs.models import classification_model_names

    presets = preset_names("model")
    assert {"resnet18", "resnet50", "efficientnet_b0", "resnext50_32x4d"} <= set(presets)
    for preset in presets:
        config = resolved(compose([f"model={preset}"]))
        assert config["model"]["name"] == preset, f"conf/model/{preset}.yaml names {config['model']['name']}"
        assert preset in classification_model_names()
        assert config["model"]["time_limit_min"] > 0
        validate(config)


def test_a_torchvision_model_without_preset_is_accepted_by_name():
    config = resolved(compose(["model.name=mobilenet_v3_small"]))
    validate(config)


def test_cell_id_ignores_scheduling_but_not_hardware_or_what_is_measured():
    (a,) = plan(["steps=3"]).cells
    (b,) = plan(["steps=3", "cluster.time_limit_min=5", "cluster.max_requeues=0"]).cells
    (c,) = plan(["steps=4"]).cells
    (d,) = plan(["steps=3", "cluster.partition=gpu_a100"]).cells
    assert a.id == b.id and len({a.id, c.id, d.id}) == 3


def test_a_key_added_later_keeps_existing_cell_ids_while_at_its_default():
    from orchestrator.config import cell_id

    config = resolved(compose(["steps=3"]))
    assert config["cudnn_benchmark"] is False
    before_the_key = {k: v for k, v in config.items() if k != "cudnn_benchmark"}
    assert cell_id(config) == cell_id(before_the_key)
    assert cell_id({**config, "cudnn_benchmark": True}) != cell_id(config)


# Every config key the first release wrote (its dumps and cell files hold exactly these).
FIRST_RELEASE_KEYS = {
    "batch_size", "device", "epochs", "gpus", "lr", "momentum", "nodes", "precision", "repeat", "repeats", "seed",
    "steps", "threads_per_process", "val_steps", "warmup_steps",
    "cluster.account", "cluster.array_parallelism", "cluster.backend", "cluster.constraint", "cluster.cpus_per_gpu",
    "cluster.gpus_per_node", "cluster.interconnect_gbps", "cluster.intranode_gbps", "cluster.max_requeues",
    "cluster.mem_per_gpu_gb", "cluster.name", "cluster.partition", "cluster.qos", "cluster.request_gpus",
    "cluster.scratch", "cluster.setup", "cluster.signal_delay_s", "cluster.time_limit_min",
    "dataset.channels", "dataset.copy_to_scratch", "dataset.download", "dataset.image_size", "dataset.name",
    "dataset.num_classes", "dataset.num_workers", "dataset.on_device", "dataset.root", "dataset.train_samples",
    "dataset.val_samples",
    "framework.backend", "framework.launcher", "framework.name",
    "horovod.autotune", "horovod.compression", "horovod.cycle_time_ms", "horovod.fusion_threshold_mb",
    "horovod.timeline",
    "model.name", "model.time_limit_min",
    "pipeline.microbatches", "pipeline.replicas", "pipeline.schedule", "pipeline.split", "pipeline.stages",
}  # fmt: skip


FIRST_RELEASE_FRAMEWORKS = {"ddp", "horovod", "pipeline", "model_parallel", "noop"}


def test_every_key_added_since_the_first_release_has_its_old_value_recorded():
    def leaves(doc: dict, prefix: str = "") -> set[str]:
        return set().union(
            *(leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k} for k, v in doc.items())
        )

    from jobs.frameworks import FRAMEWORKS

    # A section only a framework added since reads is in no earlier cell's id (cell-id scheme 3).
    new_sections = {s for name, row in FRAMEWORKS.items() if name not in FIRST_RELEASE_FRAMEWORKS for s in row.knobs}
    added = {key for key in leaves(resolved(compose([]))) - FIRST_RELEASE_KEYS if key.split(".")[0] not in new_sections}
    # A whole section added later (`env`) is recorded as one key: its old value is the section's default.
    added = {key.split(".")[0] if key.split(".")[0] in schema.ADDED_CONFIG_DEFAULTS else key for key in added}
    # Without it, cells of sweeps planned before the key existed would get new ids.
    assert added == set(schema.ADDED_CONFIG_DEFAULTS), "add the new key to jobs.schema.ADDED_CONFIG_DEFAULTS"


def test_a_cell_file_written_before_a_key_existed_is_the_same_cell(tmp_path):
    from orchestrator.submit import write_cell_file

    (cell,) = plan(["steps=3"]).cells
    path = tmp_path / "cell.json"
    old = schema.without_added_defaults(cell.config)  # as the release before those keys wrote it
    assert "cudnn_benchmark" not in old and "ssh_port" not in old["cluster"]
    path.write_text(json.dumps({"cell_id": cell.id, "config": old}))
    write_cell_file(path, cell)  # the same cell: accepted, and the file is left as it was
    assert "cudnn_benchmark" not in json.loads(path.read_text())["config"]
    other = dataclasses.replace(cell, config={**cell.config, "steps": 4})
    with pytest.raises(ConfigError, match="holds another config"):
        write_cell_file(path, other)


def test_every_precision_the_plan_allows_runs_on_the_ranks():
    from conf.structured import PRECISIONS
    from jobs.precision import precision

    assert [precision(name).name for name in PRECISIONS] == list(PRECISIONS)


@pytest.mark.skipif(config_module._gpu_visible_here(), reason="this machine has a GPU")
@pytest.mark.parametrize("name", ["amp", "bf16"])
def test_mixed_precision_on_a_machine_without_gpu_is_refused_for_local_runs(name):
    with pytest.raises(ConfigError, match=f"precision={name} runs on a GPU only and this machine has none"):
        plan([f"precision={name}"])
    # A Slurm cluster's nodes have GPUs this login node lacks: planned (dry-run), not refused.
    (cell,) = plan([f"precision={name}", "cluster=slurm"], check_data=False).cells
    assert cell.config["precision"] == name


def test_two_spellings_of_one_config_are_one_cell():
    cells = plan(["model=resnet18", "model.name=resnet18,resnet18"]).cells
    assert len(cells) == 1


# the sweep grid ----------------------------------------------------------------------------------


HYDRA_APP = textwrap.dedent(
    """
    import json, sys
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from conf.structured import register
    from jobs.frameworks import knob_configs

    register(knob_configs())
    OUT = sys.argv.pop(1)

    @hydra.main(config_path="pkg://conf", config_name="config", version_base="1.3")
    def task(cfg):
        with open(OUT, "a") as sink:
            sink.write(json.dumps(list(HydraConfig.get().overrides.task)) + "\\n")

    task()
    """
)


@pytest.mark.parametrize(
    "arguments",
    [
        ["model=glob(resnet*)", "gpus=range(1,4)", "steps=3"],
        ["+sweep=quickstart", "batch_size=16,32"],
        ["model=resnet18,efficientnet_b0", "framework=ddp", "seed=range(0,6,2)"],
    ],
    ids=["glob-range", "preset-params", "list-range-step"],
)
def test_grid_is_hydras_multirun_grid(arguments, tmp_path):
    app = tmp_path / "app.py"
    app.write_text(HYDRA_APP)
    out = tmp_path / "jobs.jsonl"
    hydra_args = [f"hydra.sweep.dir={tmp_path / 'multirun'}", "hydra/job_logging=disabled",
                  "hydra/hydra_logging=disabled"]  # fmt: skip
    run = subprocess.run(
        [sys.executable, str(app), str(out), "--multirun", *arguments, *hydra_args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    hydra_grid = [json.loads(line) for line in out.read_text().splitlines()]
    ours = grid(arguments)
    assert [[o for o in job if not o.startswith("hydra")] for job in hydra_grid] == ours


def test_glob_and_range_expand_in_hydra_order():
    assert grid(["model=glob(resnet*)", "gpus=range(1,3)"]) == [
        [f"model={model}", f"gpus={gpus}"]
        for model in ("resnet101", "resnet152", "resnet18", "resnet34", "resnet50")
        for gpus in (1, 2)
    ]


def test_repeats_multiply_cells_with_distinct_ids():
    cells = plan(["steps=3", "repeats=3"]).cells
    assert [c.config["repeat"] for c in cells] == [0, 1, 2]
    assert len({c.id for c in cells}) == 3


def _dry_run_ids(sweep_dir: Path, tmp_path: Path) -> list[tuple[str, str]]:
    run = dnnbench(
        "sweep", "model=resnet18,resnet50,efficientnet_b0", "gpus=1,2,3", "batch_size=16,32,64,128",
        "--dry-run", "--list", "--sweep-dir", str(sweep_dir), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "dry run: 36 cells" in run.stdout
    return CELL_LINE.findall(run.stdout)


@pytest.mark.slow
def test_dry_run_lists_36_cells_with_stable_ids(tmp_path):
    first = _dry_run_ids(tmp_path / "a", tmp_path)
    assert len(first) == 36 and len({cell_id for cell_id, _ in first}) == 36
    labels = {label for _, label in first}
    assert "ddp/efficientnet_b0/synthetic/n1xg3/b128/r0" in labels
    assert "ddp/resnet18/synthetic/n1xg1/b16/r0" in labels
    second = _dry_run_ids(tmp_path / "b", tmp_path)  # another folder: nothing remembered from the first
    assert second == first
    assert not list((tmp_path / "a").glob("cells/*/attempt_*")), "a dry run started a cell"


# bad input: a clear message, nothing started -----------------------------------------------------


BAD_INPUT = {
    "model=nosuch": [
        "Error: In 'config': Could not find 'model/nosuch'",
        "Presets: efficientnet_b0, ",
        "Any other torchvision classification model: model.name=<name>.",
    ],
    "model.name=nosuch": ["model.name=nosuch: not a torchvision classification model"],
    "nosuch=1": ["Error: Could not override 'nosuch'."],
    "gpus=0": ["gpus=0: must be ≥ 1"],
    "batch_size=-1": ["batch_size=-1: must be ≥ 1"],
    "precision=fp16": ["precision=fp16: expected one of fp32, amp, bf16"],
    "cluster.ssh_identity_file='k;touch'": ["cluster.ssh_identity_file='k;touch': only letters, digits"],
    "device=cpu precision=amp": ["precision=amp runs on a GPU only: use precision=fp32 with device=cpu"],
}


@pytest.fixture
def no_process_may_start(monkeypatch):
    """Fail the test if anything starts a subprocess (torchrun, submitit's local jobs, sbatch)."""
    # Importing torch may probe for libraries with `ldconfig -p`: not a job. Import it first.
    import torchvision  # noqa: F401

    started = []

    def refused(args, *rest, **kwargs):
        started.append(args)
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", refused)
    yield started
    assert started == []


@pytest.mark.parametrize("command", ["sweep", "run"])
@pytest.mark.parametrize("override", list(BAD_INPUT))
def test_bad_input_is_refused_before_anything_starts(command, override, tmp_path, capsys, no_process_may_start):
    folder = tmp_path / "out"
    where = ["--sweep-dir", str(folder)] if command == "sweep" else ["--out", str(folder)]
    assert cli.main([command, "steps=3", *override.split(), *where]) == 1
    err = capsys.readouterr().err
    for text in BAD_INPUT[override]:
        assert text in err
    assert err.startswith("Error: ")
    assert "Traceback" not in err
    assert not folder.exists(), "a sweep folder or ledger was created for bad input"


def test_missing_mnist_names_the_path_and_the_fix(tmp_path, capsys, no_process_may_start):
    empty = tmp_path / "empty"
    empty.mkdir()
    folder = tmp_path / "sweep"
    code = cli.main(["sweep", "dataset=mnist", f"dataset.root={empty}", "dataset.download=false",
                     "--sweep-dir", str(folder)])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert f"MNIST not found under {empty}/MNIST/raw (missing train-images-idx3-ubyte.gz" in err
    assert "point dataset.root at the folder holding MNIST/raw" in err
    assert "dataset.download=true" in err
    assert not folder.exists()


def test_every_problem_of_a_cell_is_listed_at_once():
    with pytest.raises(ConfigError, match=r"gpus=0: must be ≥ 1\n  batch_size=-1: must be ≥ 1"):
        plan(["gpus=0", "batch_size=-1"])


def test_bad_input_from_the_real_command_line_exits_1_with_no_folder(tmp_path):
    folder = tmp_path / "sweep"
    run = dnnbench("sweep", "gpus=0,1", "--sweep-dir", str(folder), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.startswith("Error: cell gpus=0: invalid config:\n  gpus=0: must be ≥ 1")
    assert not folder.exists()
    assert not (tmp_path / "outputs").exists()


# help ------------------------------------------------------------------------------------------


def _subcommands() -> list[str]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


def test_top_level_help_has_an_example(tmp_path):
    run = dnnbench("--help", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Example" in run.stdout
    for command in ("run", "sweep", "status", "wait", "env"):
        assert command in run.stdout


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    assert "Example" in capsys.readouterr().out
