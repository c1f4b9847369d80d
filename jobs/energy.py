"""Energy of a phase on this rank: the GPU's NVML counter and the CPU package's RAPL counter.

Both are cumulative hardware counters read at the start and the end of the timed part of a
phase (the same span as its wall clock), so a phase's energy is a difference and costs no
sampling thread:

- GPU: ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the driver loaded; Volta and
  newer) of the device this rank trains on, found by its UUID because NVML numbers devices
  without ``CUDA_VISIBLE_DEVICES``. Needs ``nvidia-ml-py`` (the ``energy`` extra), imported
  only here and only on a CUDA device.
- CPU: every package domain under ``/sys/class/powercap`` (``intel-rapl:<N>/energy_uj``,
  microjoules), a counter that wraps at ``max_energy_range_uj``: one wrap per phase is
  undone. The package is shared by every process on the node, so this is the node's CPU
  energy, not the rank's (analysis counts it once per host). Since Linux 5.10 the file is
  readable by root only unless the site relaxes it.

A counter that cannot be read gives ``null`` with the reason, never an error: most machines
lack one of the two. ``DNNBENCH_RAPL_ROOT`` points the RAPL reader at another folder (tests
build a counter tree there).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RAPL_ROOT_ENV = "DNNBENCH_RAPL_ROOT"
DEFAULT_RAPL_ROOT = "/sys/class/powercap"
# Top-level domains are packages (intel-rapl:0, intel-rapl:1); intel-rapl:0:0 (core, dram) lie inside them.
_PACKAGE_DOMAIN = re.compile(r"intel-rapl:\d+")


@dataclass
class Reading:
    """A counter's value at one moment, or why there is none."""

    value: dict[str, float] | None  # per counter name, in joules
    reason: str | None = None


class RaplCounter:
    """The CPU package domains of RAPL under ``root``, read in joules."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root or os.environ.get(RAPL_ROOT_ENV) or DEFAULT_RAPL_ROOT)
        self.ranges: dict[str, float] = {}

    def _domains(self) -> list[Path]:
        try:
            return sorted(p for p in self.root.iterdir() if _PACKAGE_DOMAIN.fullmatch(p.name))
        except OSError:
            return []

    def read(self) -> Reading:
        domains = self._domains()
        if not domains:
            return Reading(None, f"no RAPL package domain under {self.root}")
        values: dict[str, float] = {}
        try:
            for domain in domains:
                values[domain.name] = int((domain / "energy_uj").read_text()) / 1e6
                self.ranges[domain.name] = int((domain / "max_energy_range_uj").read_text()) / 1e6
        except (OSError, ValueError) as err:
            return Reading(None, f"RAPL counter unreadable: {type(err).__name__}: {err}")
        return Reading(values)

    def joules(self, start: dict[str, float], end: dict[str, float]) -> float:
        total = 0.0
        for name, before in start.items():
            delta = end[name] - before
            if delta < 0:  # wrapped once past max_energy_range_uj
                delta += self.ranges[name]
            total += delta
        return total


class NvmlCounter:
    """The total-energy counter of one NVIDIA GPU, in joules."""

    def __init__(self, device: Any) -> None:
        self.handle: Any = None
        self.reason: str | None = None
        try:
            import pynvml
        except ImportError:
            self.reason = "nvidia-ml-py is not installed (pip install 'dnnbench[energy]')"
            return
        self.nvml = pynvml
        try:
            pynvml.nvmlInit()
            self.handle = _nvml_handle(pynvml, device)
        except Exception as err:  # NVMLError subclasses per cause: the cause is what we record
            self.reason = f"NVML: {type(err).__name__}: {err}"

    def read(self) -> Reading:
        if self.handle is None:
            return Reading(None, self.reason)
        try:
            return Reading({"gpu": self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1e3})
        except Exception as err:  # NVMLError_NotSupported on GPUs before Volta, among others
            return Reading(None, f"NVML total energy: {type(err).__name__}: {err}")


def _nvml_handle(pynvml: Any, device: Any) -> Any:
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        text = str(uuid)
        return pynvml.nvmlDeviceGetHandleByUUID(text if text.startswith("GPU-") else f"GPU-{text}")
    return pynvml.nvmlDeviceGetHandleByIndex(index)  # right only without CUDA_VISIBLE_DEVICES


class PhaseEnergy:
    """:meth:`start` and :meth:`stop` around a phase's timed part; :meth:`stop` gives its record."""

    def __init__(self, device: Any, rapl_root: str | os.PathLike[str] | None = None) -> None:
        self.rapl = RaplCounter(rapl_root)
        self.gpu = NvmlCounter(device) if getattr(device, "type", None) == "cuda" else None
        self._start: tuple[Reading, Reading | None] | None = None

    def start(self) -> None:
        self._start = (self.rapl.read(), self.gpu.read() if self.gpu else None)

    def stop(self) -> dict[str, Any]:
        if self._start is None:
            raise RuntimeError("PhaseEnergy.stop() before start()")
        cpu_start, gpu_start = self._start
        cpu_j, cpu_reason = _difference(cpu_start, self.rapl.read(), self.rapl.joules)
        if self.gpu is None or gpu_start is None:
            gpu_j, gpu_reason = None, "not a CUDA device"
        else:
            gpu_j, gpu_reason = _difference(gpu_start, self.gpu.read(), _plain_joules)
        return {"gpu_j": gpu_j, "gpu_reason": gpu_reason, "cpu_package_j": cpu_j, "cpu_reason": cpu_reason}


def _plain_joules(start: dict[str, float], end: dict[str, float]) -> float:
    return sum(end[name] - start[name] for name in start)


def _difference(start: Reading, end: Reading, joules: Any) -> tuple[float | None, str | None]:
    if start.value is None or end.value is None:
        return None, start.reason or end.reason
    if set(start.value) != set(end.value):
        return None, "the counters present changed during the phase"
    return joules(start.value, end.value), None


def unmeasured(reason: str) -> dict[str, Any]:
    """The record of a phase nothing was measured for (noop cells)."""
    return {"gpu_j": None, "gpu_reason": reason, "cpu_package_j": None, "cpu_reason": reason}
