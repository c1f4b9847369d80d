"""Compose cell configs with Hydra and check them before anything runs.

Hydra's structured configs catch unknown keys and wrong types; :func:`validate`
catches what spans several fields. Every message names the override that fixes it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from orchestrator.cell_identity import cell_id  # noqa: F401 - re-exported: the plan names cells by it
from orchestrator.errors import ConfigError
from orchestrator.shell_safety import check_cluster


@contextmanager
def hydra_context():
    from hydra import initialize_config_module
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    from conf.structured import register

    if "base_config.yaml" not in ConfigStore.instance().repo:  # storing the schema again costs ~15 ms a compose
        register()
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_module(config_module="conf", version_base="1.3"):
        yield


def compose(overrides: Sequence[str], *, with_hydra: bool = False) -> DictConfig:
    """The composed config for ``overrides``; Hydra's errors become :class:`ConfigError`."""
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    with hydra_context():
        try:
            return hydra_compose("config", overrides=[*overrides, *_quiet(overrides)], return_hydra_config=with_hydra)
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(_explain(err)) from err


# A compose configures no logging, yet Hydra composes its logging configs: a third of each compose.
_NO_LOGGING = ("hydra/job_logging=none", "hydra/hydra_logging=none")


def _quiet(overrides: Sequence[str]) -> list[str]:
    """The logging choices to add: those the user's overrides do not make themselves."""
    return [o for o in _NO_LOGGING if not any(u.lstrip("+~").startswith(o.split("=")[0]) for u in overrides)]


def _explain(err: Exception) -> str:
    text = str(err).strip()
    if err.__cause__ is not None and str(err.__cause__).strip():
        # Hydra wraps OmegaConf's reason ("Value 'a' … could not be converted to Integer").
        text = f"{text}: {str(err.__cause__).strip().splitlines()[0]}"
    if "Could not find 'model/" in text:
        return (
            f"{text.splitlines()[0]}\nPresets: {', '.join(preset_names('model'))}. "
            "Any other torchvision classification model: model.name=<name>."
        )
    if "Could not override" in text:
        # Hydra suggests `+key=value`, which the structured config rejects as well.
        key = text.split("'")[1] if text.count("'") >= 2 else ""
        section, _, _ = key.rpartition(".")
        return f"{text.splitlines()[0]} No such key. {_valid_keys(section)} (see conf/structured.py)."
    if "Key '" in text:
        return text.splitlines()[0] + ("\n" + "\n".join(text.splitlines()[1:3]) if len(text.splitlines()) > 1 else "")
    return text


def _valid_keys(section: str) -> str:
    from dataclasses import fields, is_dataclass

    from conf.structured import BenchConfig

    node: Any = BenchConfig
    for part in filter(None, section.split(".")):
        match = next((f for f in fields(node) if f.name == part), None)
        node = match.default_factory if match and is_dataclass(match.default_factory) else None  # type: ignore[misc]
        if node is None:
            return f"'{section}' is not a section"
    names = ", ".join(f.name for f in fields(node))
    return f"Keys of {section}: {names}" if section else f"Top-level keys: {names}"


@cache
def preset_names(group: str) -> tuple[str, ...]:
    from importlib import resources

    folder = resources.files("conf") / group
    return tuple(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")))


def resolved(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    return container


def _positive(config: dict[str, Any], key: str, value: Any, minimum: int = 1) -> list[str]:
    if value is not None and value < minimum:
        return [f"{key}={value}: must be ≥ {minimum}"]
    return []


def _precision_problems(config: dict[str, Any]) -> list[str]:
    from conf.structured import PRECISIONS

    name = config["precision"]
    if name not in PRECISIONS:
        return [f"precision={name}: expected one of {', '.join(PRECISIONS)}"]
    if name == "fp32":
        return []
    if config["device"] == "cpu":
        return [f"precision={name} runs on a GPU only: use precision=fp32 with device=cpu"]
    local = config["cluster"].get("backend") == "local"
    if local and config["device"] == "auto" and not _gpu_visible_here():
        # The local backend runs the cell here, and nothing here shows a GPU.
        return [f"precision={name} runs on a GPU only and this machine has none: use precision=fp32"]
    return []


# Any one of these shows a GPU driver without importing torch (sandboxes may lack /proc/driver).
_GPU_SIGNS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0", "/usr/local/nvidia", "/dev/kfd")


def _gpu_visible_here() -> bool:
    return any(Path(sign).exists() for sign in _GPU_SIGNS) or shutil.which("nvidia-smi") is not None


def validate(config: dict[str, Any], *, check_model_name: bool = True, check_data: bool = True) -> None:
    """Raise :class:`ConfigError` listing every problem of a resolved cell config.

    ``check_data=False`` leaves out whether the dataset's files exist here (a dry run
    planned on a machine that does not hold the data); :func:`data_problems` says it.
    """
    problems: list[str] = []
    for key in ("gpus", "nodes", "batch_size", "repeats", "threads_per_process"):
        problems += _positive(config, key, config[key])
    problems += _positive(config, "steps", config["steps"])
    problems += _positive(config, "epochs", config["epochs"])
    problems += _positive(config, "warmup_steps", config["warmup_steps"], minimum=0)
    if config["val_steps"] is not None and config["val_steps"] < 2:
        problems.append(f"val_steps={config['val_steps']}: must be ≥ 2 (the first is warm-up) or null")
    if config["steps"] is None and config["epochs"] is None:
        problems.append("steps and epochs are both null: set steps=N or epochs=N")
    problems += _precision_problems(config)
    if config["device"] not in ("auto", "cpu", "cuda"):
        problems.append(f"device={config['device']}: expected auto, cpu or cuda")
    dataset = config["dataset"]
    if dataset["name"] not in ("mnist", "synthetic"):
        problems.append(f"dataset.name={dataset['name']}: expected mnist or synthetic")
    elif check_data:
        problems += data_problems(config)
    cluster = config["cluster"]
    per_node = cluster.get("gpus_per_node")
    if per_node is not None and config["gpus"] > per_node:
        problems.append(
            f"gpus={config['gpus']}: cluster={cluster['name']} has {per_node} GPUs a node; "
            f"use nodes=N with gpus≤{per_node}"
        )
    problems += check_cluster(cluster)
    if cluster.get("gpu_type") and not cluster.get("request_gpus", True):
        problems.append(
            f"cluster.gpu_type={cluster['gpu_type']} with cluster.request_gpus=false: no GPU is requested, so no "
            "GPU type can be; set cluster.request_gpus=true, or choose the nodes by cluster.constraint or partition"
        )
    if cluster["backend"] == "local" and config["nodes"] != 1:
        problems.append(f"nodes={config['nodes']}: cluster=local runs on this machine only")
    if check_model_name:
        problems += _check_model(config["model"]["name"])
    problems += _check_framework(config)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def _check_model(name: str) -> list[str]:
    if name in preset_names("model"):  # each preset is checked against torchvision by the tests
        return []
    from jobs.pipeline.block_counts import block_count

    if block_count(name) is not None:  # a torchvision name too: its test builds every one
        return []
    try:
        from jobs.models import classification_model_names
    except ImportError:  # no torch on this machine: the job will check
        return []
    names = classification_model_names()
    if name in names:
        return []
    close = [n for n in names if n.startswith(name[:6])][:6]
    hint = f" (close: {', '.join(close)})" if close else ""
    return [f"model.name={name}: not a torchvision classification model{hint}"]


def data_problems(config: dict[str, Any]) -> list[str]:
    """Why the cell's dataset cannot be read from here (empty for synthetic data)."""
    dataset = config["dataset"]
    if dataset["name"] != "mnist":
        return []
    return list(_mnist_problems(str(dataset["root"]), bool(dataset["download"])))


@cache
def _mnist_problems(root: str, download: bool) -> tuple[str, ...]:
    """Checked once per (root, download) in a sweep: thousands of cells share one root."""
    from jobs.dataset_files import DatasetError, check_mnist_root

    try:
        check_mnist_root(root, download)
    except DatasetError as err:
        return (f"dataset.root={root}: {err}",)
    return ()


def _check_framework(config: dict[str, Any]) -> list[str]:
    from orchestrator.frameworks import check_framework

    return check_framework(config)
