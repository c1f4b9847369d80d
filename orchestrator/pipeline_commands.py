"""``dnnbench profile`` and ``dnnbench plan``: the pipeline's profiler and planner from the CLI.

Both compose the same config a cell would get (framework=pipeline unless another is
given), validate it, and return printable text. Profiles run on this machine's device
(``device=auto``: the GPU when there is one) and are cached; planning from a cached
profile needs no GPU.
"""

from __future__ import annotations

from typing import Any

from jobs.frameworks import sample_counting_of
from orchestrator import config as compose_config
from orchestrator.errors import ConfigError


def _config(overrides: list[str]) -> dict[str, Any]:
    if not any(o.lstrip("+~").startswith("framework=") for o in overrides):
        overrides = ["framework=pipeline", *overrides]
    config = compose_config.resolved(compose_config.compose(overrides))
    compose_config.validate(config)
    if sample_counting_of(config["framework"]["name"]) != "pipelined":
        raise ConfigError(f"framework={config['framework']['name']}: profile/plan are for pipeline or model_parallel")
    return config


def _profile(config: dict[str, Any], refresh: bool = False):
    import torch

    from jobs.failures import NoGpuError
    from jobs.models import build_model
    from jobs.pipeline.planner import ShapeRequest
    from jobs.pipeline.profiler import cached_profile
    from jobs.strategies.base import resolve_device

    dataset = config["dataset"]
    request = ShapeRequest.of(config["framework"]["name"], config["pipeline"],
                              config["gpus"] * config["nodes"])  # fmt: skip
    torch.set_num_threads(config["threads_per_process"])
    try:
        device = resolve_device(config["device"], 0)
    except NoGpuError as err:  # asked for a GPU this machine cannot give: the user's to fix
        raise ConfigError(str(err)) from err
    return cached_profile(
        lambda: build_model(config["model"]["name"], num_classes=dataset["num_classes"],
                            in_channels=dataset["channels"]),
        config["model"]["name"],
        [dataset["channels"], dataset["image_size"], dataset["image_size"]],
        config["batch_size"] // request.microbatches, device, config["precision"],
        refresh=refresh,
    )  # fmt: skip


def profile_command(overrides: list[str], refresh: bool = False) -> str:
    """The per-block profile of the configured model at its micro-batch size."""
    from jobs.pipeline.profiler import format_profile

    profile, path, hit = _profile(_config(overrides), refresh)
    return f"{format_profile(profile)}\n{'cached' if hit else 'measured'}: {path}"


def plan_command(overrides: list[str], refresh: bool = False) -> str:
    """The plan a cell of this config runs (``gpus × nodes`` processes): the planner's stages × replicas
    when ``pipeline.stages``/``replicas`` are auto, else the configured ones beside the planner's best."""
    from jobs.pipeline import planner

    config = _config(overrides)
    profile, path, hit = _profile(config, refresh)
    processes = config["gpus"] * config["nodes"]
    request = planner.ShapeRequest.of(config["framework"]["name"], config["pipeline"], processes)
    cluster = config["cluster"]
    topology = planner.Topology(
        processes=processes, per_node=config["gpus"],
        intranode_gbps=cluster["intranode_gbps"], interconnect_gbps=cluster["interconnect_gbps"],
    )  # fmt: skip
    try:
        result = planner.plan_for(request, profile, topology)
    except planner.PlanError as err:
        raise ConfigError(str(err)) from err
    text = planner.format_plan(result, profile) + f"\nshape chosen by the {request.chosen_by}"
    if request.chosen_by == "planner":
        text += f" (pipeline.stages=auto, pipeline.replicas=auto: best of {_shapes_text(request)})"
    elif processes > 1 and not request.split:
        best = planner.choose_shape(profile, processes=processes, microbatches=request.microbatches,
                                    topology=topology, schedule=request.schedule)  # fmt: skip
        text += (
            f"\nbest stages × replicas for {processes} processes (PipeDream replication): "
            f"pipeline.stages={best.stages} pipeline.replicas={best.replicas} (or both auto), predicted "
            f"{best.replicas * config['batch_size'] / best.step_s:.1f} samples/s vs "
            f"{result.replicas * config['batch_size'] / result.step_s:.1f}"
        )
    if profile.noisy:
        text += f"\nprofile {planner.NOISE_WARNING}"
    return f"{text}\nprofile {'cached' if hit else 'measured'}: {path}"


def _shapes_text(request: Any) -> str:
    return ", ".join(f"{lay.stages}×{lay.replicas}" for lay in request.shapes())
