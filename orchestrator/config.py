"""Compose cell configs with Hydra and check them before anything runs.

Hydra's structured configs catch unknown keys and wrong types; :func:`validate`
catches what spans several fields. Every message names the override that fixes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf

from jobs.checks.hardware import gpu_visible_here
from orchestrator.cell_identity import cell_id  # noqa: F401 - re-exported: the plan names cells by it
from orchestrator.environments import environment_problems
from orchestrator.errors import ConfigError
from orchestrator.shell_safety import check_cluster


@contextmanager
def hydra_context():
    from hydra import initialize_config_module
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    from conf.structured import register
    from jobs.frameworks import knob_configs

    if "base_config.yaml" not in ConfigStore.instance().repo:  # storing the schema again costs ~15 ms a compose
        register(knob_configs())
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
            return hydra_compose(
                "config", overrides=[*overrides, *_quiet(overrides), *_user_envs(overrides)],
                return_hydra_config=with_hydra,
            )  # fmt: skip
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(_explain(err)) from err


# A compose configures no logging, yet Hydra composes its logging configs: a third of each compose.
_NO_LOGGING = ("hydra/job_logging=none", "hydra/hydra_logging=none")


def _quiet(overrides: Sequence[str]) -> list[str]:
    """The logging choices to add: those the user's overrides do not make themselves."""
    return [o for o in _NO_LOGGING if not any(u.lstrip("+~").startswith(o.split("=")[0]) for u in overrides)]


def _user_envs(overrides: Sequence[str]) -> list[str]:
    """The user environment folder on Hydra's search path (`env=NAME` of `dnnbench env create`)."""
    from orchestrator.environments import search_path_override

    return [] if any(o.startswith("hydra.searchpath") for o in overrides) else search_path_override()


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

    from conf.structured import bench_config
    from jobs.frameworks import knob_configs

    node: Any = bench_config(knob_configs())
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


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Every number of a config is finite, fits int64 and is ≥ 0 (a count, a size, a time, a rate, a
# bandwidth) unless named here; the keys below must be ≥ 1 (ints) or > 0 (floats): a zero there is
# no measurement (`dataset.train_samples=0` read as "the default size"), or divides by it.
_MAY_BE_NEGATIVE = frozenset({"seed"})
_POSITIVE = frozenset({
    "gpus", "nodes", "batch_size", "repeats", "threads_per_process", "steps", "epochs",
    "model.time_limit_min", "dataset.channels", "dataset.image_size", "dataset.num_classes",
    "dataset.train_samples", "dataset.val_samples", "cluster.gpus_per_node", "cluster.cpus_per_gpu",
    "cluster.mem_per_gpu_gb", "cluster.time_limit_min", "cluster.array_parallelism",
    "cluster.interconnect_gbps", "cluster.intranode_gbps", "cluster.ssh_port", "pipeline.microbatches",
})  # fmt: skip
_MAXIMUM = {"cluster.ssh_port": 65535}


def _numbers(node: Any, key: str = "") -> list[tuple[str, int | float]]:
    """(dotted key, value) of every number in a resolved config, lists included (``pipeline.split[0]``)."""
    if isinstance(node, dict):
        return [found for name, value in node.items() for found in _numbers(value, f"{key}.{name}" if key else name)]
    if isinstance(node, list):
        return [found for index, value in enumerate(node) for found in _numbers(value, f"{key}[{index}]")]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return [(key, node)]
    return []


def _unrepresentable(key: str, value: int | float) -> str | None:
    """Why no cell can run with this number whatever the key means: not finite, or beyond int64."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{key}={value}: not a finite number"
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        return f"{key}={value}: beyond int64 ({INT64_MIN} … {INT64_MAX})"
    return None


def _out_of_range(key: str, value: int | float) -> str | None:
    setting = key.split("[")[0]  # a list's items follow their list's rule
    if setting in _POSITIVE and value <= 0:
        return f"{key}={value}: must be ≥ 1" if isinstance(value, int) else f"{key}={value}: must be > 0"
    if setting not in _MAY_BE_NEGATIVE and value < 0:
        return f"{key}={value}: must be ≥ 0"
    if setting in _MAXIMUM and value > _MAXIMUM[setting]:
        return f"{key}={value}: must be ≤ {_MAXIMUM[setting]}"
    return None


def number_problems(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(numbers no cell can hold, numbers out of their key's range), over every key of the config."""
    unrepresentable, out_of_range = [], []
    for key, value in _numbers(config):
        if (problem := _unrepresentable(key, value)) is not None:
            unrepresentable.append(problem)
        elif (problem := _out_of_range(key, value)) is not None:
            out_of_range.append(problem)
    return unrepresentable, out_of_range


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


_gpu_visible_here = gpu_visible_here  # the name the tests and the local checks use


def validate(config: dict[str, Any], *, check_model_name: bool = True, check_data: bool = True) -> None:
    """Raise :class:`ConfigError` listing every problem of a resolved cell config.

    ``check_data=False`` leaves out whether the dataset's files exist here (a dry run
    planned on a machine that does not hold the data); :func:`data_problems` says it.
    """
    unrepresentable, out_of_range = number_problems(config)
    if unrepresentable:  # before the checks below, which would compute with them (int(inf) raises)
        raise ConfigError("invalid config:\n  " + "\n  ".join(unrepresentable + out_of_range))
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
    from conf.structured import DATASETS, DEVICES

    if config["device"] not in DEVICES:
        problems.append(f"device={config['device']}: expected one of {', '.join(DEVICES)}")
    dataset = config["dataset"]
    if dataset["name"] not in DATASETS:
        problems.append(f"dataset.name={dataset['name']}: expected one of {', '.join(DATASETS)}")
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
    problems += environment_problems(config)
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
    # A key another check named already (`gpus=0: must be ≥ 1`) is said once.
    problems += [p for p in out_of_range if not any(q.startswith(_key_of(p)) for q in problems)]
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def _key_of(problem: str) -> tuple[str, str]:
    key = problem.split("=", 1)[0]
    return f"{key}=", f"{key}:"


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
    from orchestrator.framework_checks import check_framework

    return check_framework(config)
