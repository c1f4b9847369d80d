"""One rank of the sharded-vs-DDP equality check (tests/test_fsdp_zero.py), started by torchrun.

``python -m torch.distributed.run --nproc_per_node 2 tests/sharded_equality_worker.py OUT VARIANT…``
where a VARIANT is a space-free, comma-separated list of overrides (``framework=fsdp,fsdp.wrap=block``).
Each variant is one real cell config (Hydra compose, as ``dnnbench run`` resolves it) trained by its
real strategy and the real training phase (jobs/loop.py), one after another in one process group;
rank 0 saves every variant's whole parameters (gathered from the shards) to ``OUT`` (torch.save).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from omegaconf import OmegaConf

from jobs.data import build_batches
from jobs.loop import train_phase
from jobs.measure import memory_probe
from jobs.models import build_model
from jobs.strategies import get_strategy
from jobs.strategies.base import Placement
from jobs.strategies.ddp import init_torch_distributed, shutdown_torch_distributed
from jobs.strategies.fsdp import full_parameters
from orchestrator import config as compose_config


def train(variant: str, placement: Placement) -> list[torch.Tensor]:
    cfg: Any = OmegaConf.create(compose_config.resolved(compose_config.compose(variant.split(","))))
    torch.set_num_threads(cfg.threads_per_process)
    strategy = get_strategy(cfg.framework.name)(cfg)
    # The process group is the one setup() would start: every variant here shares it.
    strategy.placement = placement
    torch.manual_seed(cfg.seed)
    strategy.build(lambda: build_model(cfg.model.name, num_classes=cfg.dataset.num_classes,
                                       in_channels=cfg.dataset.channels))  # fmt: skip
    source, _ = build_batches(cfg, strategy.data_shard(), placement.device)
    train_phase(strategy, source, cfg, memory_probe(placement.device))
    return [p.clone() for p in full_parameters(strategy.model)]


def main(out: str, variants: list[str]) -> None:
    placement = init_torch_distributed("cpu", "gloo")
    try:
        results = {variant: train(variant, placement) for variant in variants}
        if placement.rank == 0:
            torch.save(results, out)
    finally:
        shutdown_torch_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
