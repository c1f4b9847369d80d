"""One rank of one cell: ``python -m jobs.entry CELL_JSON OUT_DIR`` (started by a launcher).

Reads the resolved cell, runs the loop through the framework's strategy and writes
``OUT_DIR/rank_<N>.json``; a rank that raises writes ``error_rank_<N>.txt`` (and, for a
failure it recognises, ``failure_rank_<N>.json``: jobs/failures.py). Ends with
``os._exit`` after tearing the process group down: gloo ranks otherwise abort in
interpreter shutdown in about a third of runs.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from jobs import schema
from jobs.atomic import write_atomic_text
from jobs.failures import RankFailure, write_rank_failure


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def run_rank(cell: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    import torch

    from jobs.colocation import PhaseWatch
    from jobs.comm_probe import section as communication_section
    from jobs.data import build_batches
    from jobs.env_lock import check as check_environment
    from jobs.environment import fingerprint
    from jobs.loop import train_phase, val_phase
    from jobs.measure import memory_probe
    from jobs.models import build_model
    from jobs.strategies import get_strategy

    cfg: DictConfig = OmegaConf.create(cell["config"])
    # Before anything is built or measured: a rank outside its declared environment measures nothing.
    check_environment(cell["config"].get("env") or {})
    started = _now()
    torch.set_num_threads(cfg.threads_per_process)
    torch.backends.cudnn.benchmark = bool(cfg.get("cudnn_benchmark", False))
    strategy = get_strategy(cfg.framework.name)(cfg)
    try:
        placement = strategy.setup()
        torch.manual_seed(cfg.seed)  # same initial weights on every rank, before any broadcast
        strategy.build(
            lambda: build_model(cfg.model.name, num_classes=cfg.dataset.num_classes, in_channels=cfg.dataset.channels)
        )
        source, data_record = build_batches(cfg, strategy.data_shard(), placement.device)
        probes = strategy.communication_probes()  # before warm-up: every rank together, untimed
        probe = memory_probe(placement.device)
        watch = PhaseWatch(out_dir, placement.device)  # what else ran on the node (extra.colocation)
        train = watch.measure("train", train_phase, strategy, source, cfg, probe)
        held = strategy.model_state()  # at the end of training: gradients and optimizer state still there
        phases = {"train": train, "val": watch.measure("val", val_phase, strategy, source, cfg, probe)}
        digests = strategy.parameter_digests()
        env = fingerprint(device=placement.device)
        doc = schema.new_dump(
            cell_id=cell["cell_id"],
            attempt=int(cell.get("attempt", 0)),
            repeat=int(cfg.repeat),
            rank=placement.rank,
            local_rank=placement.local_rank,
            world_size=placement.world_size,
            node_rank=placement.node_rank,
            framework=cfg.framework.name,
            model=cfg.model.name,
            dataset=cfg.dataset.name,
            device_type=placement.device.type,
            memory_kind=probe.kind,
            counts_samples=strategy.counts_samples,
            config=OmegaConf.to_container(cfg, resolve=True),
            phases=phases,
            environment=env,
            environment_hash=schema.environment_hash(env),
            started_at=started,
            finished_at=_now(),
            pipeline=strategy.pipeline_metrics(),
            model_state=held,
            communication=communication_section(probes, strategy.step_collectives(), strategy.communication_timed_in),
            extra={
                "data": data_record,
                "parameter_digests": digests,
                "framework_knobs": strategy.framework_knobs(),
                "colocation": watch.record(),
            },
        )
        schema.write_atomic(out_dir / schema.dump_filename(placement.rank), doc)
        return doc
    finally:
        strategy.teardown()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m jobs.entry CELL_JSON OUT_DIR", file=sys.stderr)
        return 2
    cell = json.loads(Path(args[0]).read_text())
    out_dir = Path(args[1])
    try:
        doc = run_rank(cell, out_dir)
    except BaseException as err:
        rank = os.environ.get("RANK", os.environ.get("HOROVOD_RANK", "unknown"))
        text = traceback.format_exc()
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic_text(out_dir / schema.error_filename(rank), text)
        if isinstance(err, RankFailure):  # the runner reports its own class, not launcher_error
            write_rank_failure(out_dir, rank, err)
        print(text, file=sys.stderr, flush=True)
        return 1
    train, val = doc["phases"]["train"], doc["phases"]["val"]
    print(
        f"[rank {doc['rank']}/{doc['world_size']}] train {train['throughput_samples_per_s']:.1f} "
        f"samples/s, val {val['throughput_samples_per_s']:.1f} samples/s, "
        f"val accuracy {val['accuracy']}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
