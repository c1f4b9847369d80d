"""The environment fingerprint every rank records, and the hash that makes confounds visible.

Two cells are comparable only if what could change their speed is the same:
library versions, thread settings, TF32 settings, CPU and GPU model, driver. Those fields
make up ``jobs.schema.COMPARABLE_KEYS``, hashed by ``jobs.schema.environment_hash``; where
a process ran (host, Slurm ids, ranks) is recorded but left out of the hash.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from collections.abc import Callable
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "KMP_AFFINITY",
    "OMP_PROC_BIND",
)
SLURM_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_NODELIST",
    "SLURM_RESTART_COUNT",
)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def git_sha() -> str | None:
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _torch_details() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"cuda": None, "cudnn": None, "nccl": None, "gpu_name": None, "gpu_count": 0}
    details: dict[str, Any] = {
        "torch_intra_op_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cudnn": None,
        "nccl": None,
        "gpu_name": None,
        "gpu_count": 0,
        "cuda_available": torch.cuda.is_available(),
        "numerics": numerics(torch),
    }
    if torch.cuda.is_available():
        details["cudnn"] = torch.backends.cudnn.version()
        nccl = torch.cuda.nccl.version() if hasattr(torch.cuda, "nccl") else None
        details["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl
        details["gpu_count"] = torch.cuda.device_count()
        details["gpu_name"] = torch.cuda.get_device_name(torch.cuda.current_device())
    return details


def _tf32(read_legacy: Callable[[], Any], backend: Any) -> bool | None:
    """Whether float32 work may run as TF32. PyTorch refuses the legacy flag's read once the
    newer ``fp32_precision`` setting was used in the process; then that setting answers."""
    try:
        return bool(read_legacy())
    except RuntimeError:
        setting = getattr(backend, "fp32_precision", None)
        return None if setting is None else setting == "tf32"


def numerics(torch: Any) -> dict[str, Any]:
    """The math settings that change GPU speed: TF32 for float32 convolutions and matmuls.

    (cuDNN autotuning is the config's ``cudnn_benchmark``: the config records it.)
    """
    try:
        matmul_precision: str | None = torch.get_float32_matmul_precision()
    except RuntimeError:
        matmul_precision = None
    return {
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_allow_tf32": _tf32(lambda: torch.backends.cudnn.allow_tf32, torch.backends.cudnn.conv),
        "matmul_allow_tf32": _tf32(lambda: torch.backends.cuda.matmul.allow_tf32, torch.backends.cuda.matmul),
        "float32_matmul_precision": matmul_precision,
    }


def _gpu_driver() -> str | None:
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    for token in text.split():
        if token[:1].isdigit() and "." in token:
            return token
    return None


def fingerprint(extra_threads: dict[str, Any] | None = None, *, with_torch: bool = True) -> dict[str, Any]:
    """Everything about this process's environment that a result depends on.

    ``with_torch=False`` skips importing torch (CUDA details come out null).
    """
    threads = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    details = _torch_details() if with_torch else {"cuda": None, "cudnn": None, "nccl": None, "gpu_name": None}
    threads["torch_intra_op_threads"] = details.pop("torch_intra_op_threads", None)
    threads.update(extra_threads or {})
    env = {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "horovod": _version("horovod"),
        "dnnbench": _version("dnnbench") or "unknown",
        "git_sha": git_sha(),
        "threads": threads,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu_driver": _gpu_driver(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "slurm": {k: v for k in SLURM_VARIABLES if (v := os.environ.get(k)) is not None},
        **details,
    }
    return env
