"""The one training/validation loop, the same for every framework.

Protocol: ``warmup_steps`` untimed steps, a barrier, then timed steps; the strategy hears of each
phase (``begin_phase``: warmup, train, val) before it starts. A step's time
covers fetching the batch, moving it to the device and the framework's step, so a
slow loader shows up in throughput instead of hiding outside the clock. Memory peaks
are reset at the start of each phase, after what earlier work left cached is released.
Validation excludes its first step (allocator and kernel warm-up) from timing but counts
its predictions. Each timed step is also broken down into parts (jobs/breakdown.py): the loop
times ``data``, the strategy the parts of its own step, through ``strategy.parts``.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from typing import Any

import torch

from jobs.breakdown import NO_PARTS, step_parts
from jobs.data import BatchSource
from jobs.energy import PhaseEnergy, unmeasured
from jobs.measure import MemoryProbe, StepClock, WallClock
from jobs.strategies.base import Strategy

# Test hook: DNNBENCH_TEST_SLOW_RANK=<rank>:<seconds> makes that rank sleep inside every timed step,
# a straggler made on purpose. An environment variable, not a config key: the cell id stays that of
# the plain cell.
SLOW_RANK_ENV = "DNNBENCH_TEST_SLOW_RANK"


def _test_delay_s() -> float:
    spec = os.environ.get(SLOW_RANK_ENV, "")
    rank, _, seconds = spec.partition(":")
    here = os.environ.get("RANK", os.environ.get("HOROVOD_RANK"))
    return float(seconds) if spec and rank == here else 0.0


def _to_device(batch: tuple[torch.Tensor, torch.Tensor], device: torch.device):
    images, labels = batch
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def _phase_record(clock: StepClock, warmup: int, samples: int, wall_s: float, probe: MemoryProbe):
    times = clock.finish()
    return {
        "timed_steps": len(times),
        "warmup_steps": warmup,
        "samples": samples,
        "seconds": wall_s,
        "throughput_samples_per_s": samples / wall_s if wall_s > 0 else 0.0,
        "step_times_s": times,
        "memory": probe.read(),
    }


def _timed_steps(batches: Iterator[Any], count: int | None) -> Iterator[Any]:
    return batches if count is None else itertools.islice(batches, count)


def train_phase(strategy: Strategy, source: BatchSource, cfg: Any, probe: MemoryProbe) -> dict[str, Any]:
    device = strategy.device
    if cfg.epochs is not None:
        batches: Iterator[Any] = itertools.chain.from_iterable(source.train_epoch(e) for e in range(cfg.epochs))
        timed = max(cfg.epochs * source.steps_per_epoch - cfg.warmup_steps, 0)
    else:
        batches, timed = source.train_forever(), cfg.steps
    if timed <= 0:
        raise ValueError(
            f"no timed steps: {cfg.epochs} epoch(s) of {source.steps_per_epoch} steps "
            f"are not more than warmup_steps={cfg.warmup_steps}"
        )
    strategy.begin_phase("warmup")
    probe.reset()
    for batch in itertools.islice(batches, cfg.warmup_steps):  # consumes them from batches
        strategy.train_step(*_to_device(batch, device))
    strategy.begin_phase("train")
    strategy.barrier()
    clock, wall, energy = StepClock(device), WallClock(device), PhaseEnergy(device)
    strategy.parts = parts = step_parts(device, strategy.cfg)
    samples, last = 0, None
    delay = _test_delay_s()
    wall.start()
    energy.start()
    for _ in range(timed):
        clock.start()
        parts.begin_step()
        if delay:
            time.sleep(delay)
        with parts.part("data"):
            batch = _to_device(next(batches), device)
        result = strategy.train_step(*batch)
        clock.stop()
        parts.end_step()
        samples += result.samples
        last = result.loss
    wall_s = wall.stop()
    strategy.parts = NO_PARTS
    record = _phase_record(clock, cfg.warmup_steps, samples, wall_s, probe)
    record["breakdown"] = parts.record(record["step_times_s"])
    record["energy"] = energy.stop()
    record["loss"] = float(last.float().item()) if last is not None else None
    record["accuracy"] = record["correct"] = record["evaluated"] = None
    return record


def val_phase(strategy: Strategy, source: BatchSource, cfg: Any, probe: MemoryProbe):
    device = strategy.device
    batches = iter(_timed_steps(source.val_batches(), cfg.val_steps))
    strategy.begin_phase("val")  # before the memory reset: work a strategy finishes now is not validation's
    probe.reset()
    strategy.barrier()
    clock, wall, energy = StepClock(device), WallClock(device), PhaseEnergy(device)
    strategy.parts = parts = step_parts(device, strategy.cfg)
    correct = evaluated = samples = 0
    warmup = 0
    delay = _test_delay_s()
    wall.start()
    for index in itertools.count():
        clock.start()  # before the fetch: as in training, a step's time includes its batch
        parts.begin_step()
        if delay and index:
            time.sleep(delay)
        with parts.part("data"):
            batch = next(batches, None)
            if batch is not None:
                batch = _to_device(batch, device)
        if batch is None:
            break
        right, made = strategy.eval_step(*batch)
        clock.stop()
        parts.end_step()
        if index == 0:
            # First step: warm-up, counted for accuracy, not for time.
            clock.discard_last()
            parts.discard_last()
            warmup = 1
            wall.start()
            energy.start()
        else:
            samples += made
        correct, evaluated = correct + right, evaluated + made
    wall_s = wall.stop() if clock.steps else 0.0
    strategy.parts = NO_PARTS
    record = _phase_record(clock, warmup, samples, wall_s, probe)
    record["breakdown"] = parts.record(record["step_times_s"])
    record["energy"] = energy.stop() if warmup else unmeasured("no timed validation step")
    record["loss"] = None
    record["accuracy"] = correct / evaluated if evaluated else None
    record["correct"], record["evaluated"] = correct, evaluated
    return record
