"""What this machine shows of its hardware without importing torch (a login node may lack it)."""

from __future__ import annotations

import shutil
from pathlib import Path

# Any one of these shows a GPU driver without importing torch (sandboxes may lack /proc/driver).
GPU_SIGNS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0", "/usr/local/nvidia", "/dev/kfd")


def gpu_visible_here() -> bool:
    return any(Path(sign).exists() for sign in GPU_SIGNS) or shutil.which("nvidia-smi") is not None
