"""The pipeline runtime computes the same optimizer step as one process (CPU, gloo, real processes).

Reference: one process, the same seeded resnet18, the same micro-batches accumulated
(BatchNorm normalises per micro-batch in a pipeline, so the reference must too), losses
averaged over micro-batches and replicas, one SGD step.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from jobs.models import build_model
from jobs.pipeline.blocks import split_blocks
from orchestrator import config as compose_config

MODEL, BATCH, MICRO = "resnet18", 4, 2


def _config(processes: int, overrides: list[str]) -> dict:
    cfg = compose_config.resolved(
        compose_config.compose(
            ["framework=pipeline", f"gpus={processes}", f"model={MODEL}", f"batch_size={BATCH}",
             f"pipeline.microbatches={MICRO}", "device=cpu", *overrides]
        )
    )  # fmt: skip
    compose_config.validate(cfg)
    return cfg


def _batch(replica: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + replica)
    images = torch.randn(BATCH, 1, 28, 28, generator=generator)
    return images, torch.randint(0, 10, (BATCH,), generator=generator)


def _factory() -> nn.Module:
    return build_model(MODEL, num_classes=10, in_channels=1)


def _worker(rank: int, world: int, port: int, config: dict, cache: str, out: dict) -> None:
    from omegaconf import OmegaConf

    from jobs.strategies import get_strategy

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), DNNBENCH_CACHE=cache)  # fmt: skip
    torch.set_num_threads(1)
    cfg = OmegaConf.create(config)
    strategy = get_strategy(cfg.framework.name)(cfg)
    try:
        strategy.setup()
        torch.manual_seed(cfg.seed)
        strategy.build(_factory)
        result = strategy.train_step(*_batch(strategy.data_shard().rank))
        bounds = [0, *strategy.plan.split, 10]
        params = {}
        for st in strategy.stages:
            start = bounds[st.stage_index]
            for name, p in st.submod.named_parameters():
                local, _, rest = name.partition(".")
                params[f"{start + int(local)}.{rest}"] = p.detach().clone()
        out[rank] = {"params": params, "samples": result.samples, "counts": strategy.counts_samples}
    finally:
        strategy.teardown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(world: int, config: dict, cache: str) -> dict:
    manager = mp.Manager()
    out = manager.dict()
    mp.start_processes(_worker, args=(world, _free_port(), config, cache, out), nprocs=world,
                       start_method="spawn")  # fmt: skip
    return dict(out)


def _reference(config: dict, replicas: int) -> dict[str, torch.Tensor]:
    # One thread like the ranks: oneDNN picks other conv algorithms for other thread counts,
    # and the stem's large first-step gradients then differ in the 4th digit.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _reference_step(config, replicas)
    finally:
        torch.set_num_threads(threads)


def _reference_step(config: dict, replicas: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(config["seed"])
    model = nn.Sequential(*[b.module for b in split_blocks(_factory())])
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    criterion = nn.CrossEntropyLoss()
    for replica in range(replicas):
        images, labels = _batch(replica)
        for x, y in zip(images.chunk(MICRO), labels.chunk(MICRO), strict=True):
            (criterion(model(x), y) / (MICRO * replicas)).backward()
    optimizer.step()
    return {name: p.detach() for name, p in model.named_parameters()}


def _check(out: dict, reference: dict[str, torch.Tensor], world: int) -> None:
    seen: set[str] = set()
    for rank in range(world):
        for name, value in out[rank]["params"].items():
            torch.testing.assert_close(value, reference[name], rtol=1e-4, atol=1e-5, msg=name)
            seen.add(name)
    assert seen == set(reference), "every parameter lives on some stage"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("profiles"))


def test_two_stages_two_microbatches_match_one_process(cache):
    config = _config(2, ["pipeline.split=[5]"])
    out = _run(2, config, cache)
    _check(out, _reference(config, replicas=1), 2)
    assert [out[r]["samples"] for r in range(2)] == [0, BATCH]
    assert [out[r]["counts"] for r in range(2)] == [False, True]


def test_hybrid_two_stages_by_two_replicas_match_one_process(cache):
    config = _config(4, ["pipeline.stages=2", "pipeline.replicas=2"])
    out = _run(4, config, cache)
    _check(out, _reference(config, replicas=2), 4)
    # Ranks are laid out pipeline-inner: 0,1 = replica 0; 2,3 = replica 1.
    assert [out[r]["counts"] for r in range(4)] == [False, True, False, True]
