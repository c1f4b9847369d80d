"""Step timing and memory probes, one implementation per device kind.

Timing: per step, the host clock on CPU and CUDA events on GPU (:class:`StepClock` says
why); per phase, the wall clock with the device synchronised at both ends.
Memory: on GPU the caching allocator's peaks (allocated and reserved) after a reset
at the start of each phase; on CPU the process's peak RSS (VmHWM), which Linux lets
us reset per phase by writing 5 to /proc/self/clear_refs.
"""

from __future__ import annotations

import time
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


class StepClock:
    """Per-step times that include each step's device work, without stalling the host between steps.

    The host clock alone stops when a step's kernels are queued, not when they are done.
    Synchronising at every step would cover them, but it also stalls the host between steps
    and so removes the overlap of one step's kernel launches with the previous step's kernels
    that a training loop has when nobody is timing it. On a GPU, CUDA events recorded on the
    stream at each step's start and end measure the device's time instead; :meth:`finish`
    reads them all with one synchronisation. On a CPU the host clock is the device's clock.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.times_s: list[float] = []
        self._on_gpu = device.type == "cuda"
        self._pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._begin: torch.cuda.Event | None = None
        self._start = 0.0

    def start(self) -> None:
        if self._on_gpu:
            self._begin = torch.cuda.Event(enable_timing=True)
            self._begin.record()
        else:
            self._start = time.perf_counter()

    def stop(self) -> None:
        if self._on_gpu:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            assert self._begin is not None, "start() first"
            self._pending.append((self._begin, end))
        else:
            self.times_s.append(time.perf_counter() - self._start)

    def discard_last(self) -> None:
        (self._pending or self.times_s).pop()

    def finish(self) -> list[float]:
        """Every step's seconds so far (waits for the device's queued work once)."""
        if self._pending:
            self._pending[-1][1].synchronize()
            self.times_s += [begin.elapsed_time(end) / 1000 for begin, end in self._pending]
            self._pending.clear()
        return self.times_s

    @property
    def steps(self) -> int:
        return len(self.times_s) + len(self._pending)


class WallClock:
    """Wall time of a whole phase: the device's queued work is finished at both ends."""

    def __init__(self, device: torch.device):
        self.device = device
        self._start = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self._start = time.perf_counter()

    def stop(self) -> float:
        self._sync()
        return time.perf_counter() - self._start
