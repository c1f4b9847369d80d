"""Time every block of a model alone, forward and backward, on the device the cells use.

Each block runs on the previous block's real output (so shapes are the model's), a few
untimed warm-up passes, then ``repeats`` timed ones; the median is kept. Backward is
seeded with ones on the block's output and includes the gradient of its input (a
pipeline stage sends that back), except for the stem, whose input is data.
Per block it also records the output's bytes (what a stage boundary sends) and the
bytes autograd saves for backward (what 1F1B holds per in-flight micro-batch),
counted once per storage.

Profiles are cached as JSON under ``$DNNBENCH_CACHE`` (default ``~/.cache/dnnbench``)
keyed by model, input shape, micro-batch, device, dtype and the environment hash.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from jobs.atomic import write_atomic_text
from jobs.pipeline.blocks import split_blocks
from jobs.pipeline.planner import NOISE_WARNING, BlockCost, Profile
from jobs.precision import precision as precision_of


def cache_dir() -> Path:
    return Path(os.environ.get("DNNBENCH_CACHE", Path.home() / ".cache" / "dnnbench")) / "profiles"


def cache_key(model: str, input_shape: list[int], microbatch: int, device: str, dtype: str,
              fingerprint: str) -> str:  # fmt: skip
    text = f"{model}|{'x'.join(map(str, input_shape))}|{microbatch}|{device}|{dtype}|{fingerprint}"
    return f"{model}-b{microbatch}-{device.replace(':', '')}-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    started = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - started


def _saved_bytes(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    return out, sum(seen.values())


def profile_blocks(model: nn.Module, model_name: str, input_shape: list[int], microbatch: int,
                   device: torch.device, precision: str = "fp32", *, warmup: int = 2,
                   repeats: int = 5, fingerprint: str = "") -> Profile:  # fmt: skip
    """Measure every block of ``model`` (train mode) at ``microbatch`` samples."""
    model = model.to(device).train()
    x = torch.randn(microbatch, *input_shape, device=device)
    input_bytes = x.numel() * x.element_size()
    # The pipeline strategies run fp32 only; other precisions are profiled on a GPU alone.
    autocast = precision_of(precision).autocast(device) if device.type == "cuda" else nullcontext()
    costs, spreads = [], []
    for index, block in enumerate(split_blocks(model)):
        module = block.module
        x = x.detach().requires_grad_(index > 0)
        forward, backward = [], []
        for attempt in range(warmup + repeats):
            _sync(device)
            started = time.perf_counter()
            with autocast:
                out, saved = _saved_bytes(module, x)
            _sync(device)
            forward_s = time.perf_counter() - started
            grad = torch.ones_like(out)
            backward_s = _timed(lambda out=out, grad=grad: out.backward(grad), device)
            if attempt >= warmup:
                forward.append(forward_s)
                backward.append(backward_s)
        module.zero_grad(set_to_none=True)
        totals = [f + b for f, b in zip(forward, backward, strict=True)]
        middle = statistics.median(totals)
        spreads.append(((max(totals) - min(totals)) / middle, middle))
        params = sum(p.numel() * p.element_size() for p in module.parameters())
        costs.append(
            BlockCost(
                name=block.name,
                forward_s=statistics.median(forward),
                backward_s=statistics.median(backward),
                activation_bytes=out.numel() * out.element_size(),
                saved_bytes=saved,
                parameter_bytes=params,
            )
        )
        x = out
    return Profile(
        model=model_name, input_shape=list(input_shape), microbatch=microbatch,
        device=str(device.type), dtype=precision, fingerprint=fingerprint, blocks=costs,
        input_bytes=input_bytes, spread=_weighted_spread(spreads),
        load_per_core=os.getloadavg()[0] / (os.cpu_count() or 1) if device.type == "cpu" else None,
    )  # fmt: skip


def _weighted_spread(spreads: list[tuple[float, float]]) -> float | None:
    weight = sum(seconds for _, seconds in spreads)
    return sum(spread * seconds for spread, seconds in spreads) / weight if weight > 0 else None


def cached_profile(model_factory: Callable[[], nn.Module], model_name: str,
                   input_shape: list[int], microbatch: int, device: torch.device,
                   precision: str = "fp32", *, refresh: bool = False) -> tuple[Profile, Path, bool]:  # fmt: skip
    """(profile, cache file, whether it came from the cache); measures on a miss."""
    from jobs.environment import fingerprint
    from jobs.schema import environment_hash

    env_hash = environment_hash(fingerprint())
    key = cache_key(model_name, input_shape, microbatch, device.type, precision, env_hash)
    path = cache_dir() / f"{key}.json"
    if path.exists() and not refresh:
        return Profile.from_json(path.read_text()), path, True
    profile = profile_blocks(model_factory(), model_name, input_shape, microbatch, device,
                             precision, fingerprint=env_hash)  # fmt: skip
    write_atomic_text(path, profile.to_json())  # concurrent profilers: the last complete file wins, never half of one
    return profile, path, False


def format_profile(profile: Profile) -> str:
    lines = [
        f"{profile.model}: {len(profile.blocks)} blocks, micro-batch {profile.microbatch} × "
        f"{profile.input_shape}, {profile.device}, {profile.dtype}",
        f"{'#':>3} {'block':<16} {'fwd ms':>8} {'bwd ms':>8} {'out KiB':>9} {'saved KiB':>10} {'params KiB':>11}",
    ]
    for i, b in enumerate(profile.blocks):
        lines.append(
            f"{i:>3} {b.name:<16} {b.forward_s * 1e3:>8.3f} {b.backward_s * 1e3:>8.3f} "
            f"{b.activation_bytes / 1024:>9.1f} {b.saved_bytes / 1024:>10.1f} "
            f"{b.parameter_bytes / 1024:>11.1f}"
        )
    total = sum(b.compute_s for b in profile.blocks)
    lines.append(f"total forward+backward {total * 1e3:.2f} ms per micro-batch")
    if profile.spread is not None:
        load = "" if profile.load_per_core is None else f", load {profile.load_per_core:.2f} per core"
        lines.append(f"measured with repeat spread {profile.spread:.0%}{load}")
    if profile.noisy:
        lines.append(NOISE_WARNING)
    return "\n".join(lines)
