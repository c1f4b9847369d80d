"""Step timing and memory probes, one implementation per device kind.

Timing: wall clock around each step, with ``torch.cuda.synchronize`` before
reading the clock on GPU so queued kernels are inside the step they belong to.
Memory: on GPU the caching allocator's peaks (allocated and reserved) after a reset
at the start of each phase; on CPU the process's peak RSS (VmHWM), which Linux lets
us reset per phase by writing 5 to /proc/self/clear_refs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_rss_bytes() -> int | None:
    return _status_bytes("VmRSS")


def peak_rss_bytes() -> int | None:
    return _status_bytes("VmHWM")


def reset_peak_rss() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class MemoryProbe:
    kind: str

    def reset(self) -> None:
        raise NotImplementedError

    def read(self) -> dict[str, Any]:
        raise NotImplementedError


class CudaMemoryProbe(MemoryProbe):
    kind = "cuda"

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict[str, Any]:
        torch.cuda.synchronize(self.device)
        return {
            "kind": self.kind,
            "peak_allocated_bytes": int(torch.cuda.max_memory_allocated(self.device)),
            "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(self.device)),
            "peak_rss_bytes": peak_rss_bytes(),
            "end_rss_bytes": current_rss_bytes(),
        }


class RssMemoryProbe(MemoryProbe):
    kind = "rss"

    def __init__(self) -> None:
        self.resettable = True

    def reset(self) -> None:
        self.resettable = reset_peak_rss()

    def read(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "peak_allocated_bytes": None,
            "peak_reserved_bytes": None,
            "peak_rss_bytes": peak_rss_bytes(),
            "end_rss_bytes": current_rss_bytes(),
            # False: the peak covers the whole process so far, not only this phase.
            "peak_is_per_phase": self.resettable,
        }


def memory_probe(device: torch.device) -> MemoryProbe:
    return CudaMemoryProbe(device) if device.type == "cuda" else RssMemoryProbe()


@dataclass
class StepClock:
    """Times steps; ``synchronize`` makes GPU work finish inside the step it was queued in."""

    device: torch.device
    times_s: list[float] = field(default_factory=list)
    _start: float = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self._start = time.perf_counter()

    def stop(self) -> float:
        self._sync()
        elapsed = time.perf_counter() - self._start
        self.times_s.append(elapsed)
        return elapsed
