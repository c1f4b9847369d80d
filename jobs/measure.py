"""Step timing and memory probes, one implementation per device kind.

Timing: per step, the host clock on CPU and CUDA events on GPU (:class:`StepClock` says
why); per phase, the wall clock with the device synchronised at both ends.
Memory: on GPU the caching allocator's peaks (allocated and reserved) after a reset
at the start of each phase; on both the process's peak RSS (VmHWM), which Linux lets
us reset per phase by writing 5 to /proc/self/clear_refs (on CPU it is the device's).
"""

from __future__ import annotations

import ctypes
import gc
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


def release_cached_memory(device: torch.device) -> None:
    """Give back what finished work left cached, so the next phase's baseline excludes it.

    On a GPU the caching allocator keeps freed blocks reserved and ``reset_peak_memory_stats``
    only resets the peak to what is reserved now: without ``empty_cache`` a phase after
    pipeline profiling would start with the profile's blocks in its reserved peak. On the CPU
    glibc's malloc keeps freed heap pages resident the same way; ``malloc_trim`` returns them.
    """
    gc.collect()  # autograd graphs and modules in reference cycles hold tensors until collected
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    _malloc_trim()


def _malloc_trim() -> bool:
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):  # not glibc: nothing to trim through this call
        return False


class MemoryProbe:
    """Peaks per phase: :meth:`reset` at the start of a phase, :meth:`read` at its end.

    The reset first releases what earlier work left cached (:func:`release_cached_memory`),
    so a phase's baseline is what is live, not what pipeline profiling or data loading once
    needed. Every probe records the process's host RSS (peak and end); the device's own peaks
    come from :meth:`device_peaks`. ``peak_is_per_phase`` says whether the RSS peak could be
    reset (False: it covers the whole process so far).
    """

    kind: str

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rss_per_phase = True

    def reset(self) -> None:
        release_cached_memory(self.device)
        self.reset_device()
        self.rss_per_phase = reset_peak_rss()

    def read(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            **self.device_peaks(),
            "peak_rss_bytes": peak_rss_bytes(),
            "end_rss_bytes": current_rss_bytes(),
            "peak_is_per_phase": self.rss_per_phase,
        }

    def reset_device(self) -> None:
        raise NotImplementedError

    def device_peaks(self) -> dict[str, int | None]:
        raise NotImplementedError


class CudaMemoryProbe(MemoryProbe):
    kind = "cuda"

    def reset_device(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def device_peaks(self) -> dict[str, int | None]:
        torch.cuda.synchronize(self.device)
        return {
            "peak_allocated_bytes": int(torch.cuda.max_memory_allocated(self.device)),
            "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(self.device)),
        }


class RssMemoryProbe(MemoryProbe):
    kind = "rss"

    def reset_device(self) -> None:
        pass  # the process's RSS is the device's memory: reset by reset()

    def device_peaks(self) -> dict[str, int | None]:
        return {"peak_allocated_bytes": None, "peak_reserved_bytes": None}


def memory_probe(device: torch.device) -> MemoryProbe:
    return CudaMemoryProbe(device) if device.type == "cuda" else RssMemoryProbe(device)


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
