"""The environment fingerprint every rank records, and the hash that makes confounds visible.

Two cells are comparable only if what could change their speed is the same:
library versions, thread settings, TF32 settings, CPU and GPU model, driver. Those fields
make up ``jobs.schema.COMPARABLE_KEYS``, hashed by ``jobs.schema.environment_hash``; where
a process ran (host, Slurm ids, ranks) is recorded but left out of the hash.

``resources`` records what this process was given: the CPUs it may run on
(``os.sched_getaffinity``), the GPUs it sees, and the GPUs Slurm allocated. It is left out
of the hash on purpose: it differs between cells by design (a 4-GPU cell is given more
CPUs and GPUs than a 1-GPU cell), so hashing it would flag every intended difference as a
confound. What it is for is checking each rank got what its cell asked for (enough CPUs
for its threads, one GPU per process), which a per-cell comparison with the config does.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import socket
import subprocess
from collections.abc import Callable, Iterable, Mapping
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
# What Slurm 22.05+ sets, in the batch step and in srun steps, when GPUs are allocated:
# SLURM_GPUS_ON_NODE and SLURM_JOB_GPUS for --gres=gpu:N, --gpus, --gpus-per-node and
# --gpus-per-task alike (SLURM_STEP_GPUS in steps); the SLURM_GPUS* request echoes only
# for the option used. Checked on the dev cluster's GRES GPUs (docs/metrics.md).
SLURM_GPU_VARIABLES = (
    "SLURM_GPUS_ON_NODE",
    "SLURM_JOB_GPUS",
    "SLURM_STEP_GPUS",
    "SLURM_GPUS_PER_NODE",
    "SLURM_GPUS",
    "SLURM_GPUS_PER_TASK",
)
SLURM_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_NODELIST",
    "SLURM_RESTART_COUNT",
    # The Slurm node the rank ran on: what `--exclude` takes, and distinct where one host runs several
    # slurmd (the dev cluster), which the host name is not.
    "SLURMD_NODENAME",
)


# Variables known to change speed (thread runtimes, BLAS, allocators, communication, PyTorch's
# own switches): recorded per rank and hashed. The thread counts among them are also in
# ``threads``; both say the same, once as the runtime reads it.
PERFORMANCE_VARIABLE_PREFIXES = (
    "OMP_",
    "KMP_",
    "GOMP_",
    "MKL_",
    "OPENBLAS_",
    "BLIS_",
    "MALLOC_",
    "JEMALLOC_",
    "TCMALLOC_",
    "NCCL_",
    "CUDA_",
    "CUDNN_",
    "CUBLAS_",
    "TORCH_",
    "PYTORCH_",
    "ONEDNN_",
    "DNNL_",
    "ATEN_",
)
PERFORMANCE_VARIABLES = ("LD_PRELOAD", "LD_LIBRARY_PATH")
# Not collected: set per rank or per cell by design (``CUDA_VISIBLE_DEVICES`` is in ``resources``),
# or by a launcher for its own ranks (torchrun's ``TORCHELASTIC_*``): they differ between
# frameworks by construction, so hashing them would flag every framework comparison. Horovod's
# and Gloo's own variables (``HOROVOD_*``, ``GLOO_*``) are not collected for the same reason;
# the Horovod knobs dnnbench sets are in the cell's config.
# ``NCCL_SOCKET_IFNAME``: horovodrun sets it for its ranks to the interfaces it chose.
UNHASHED_VARIABLES = frozenset(("CUDA_VISIBLE_DEVICES", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "NCCL_SOCKET_IFNAME"))
UNHASHED_VARIABLE_PREFIXES = ("TORCHELASTIC_",)
# Shared libraries whose build changes speed: BLAS/LAPACK, OpenMP and thread runtimes, memory
# allocators, oneDNN, and the GPU stack. Matched on the file name of each mapping of the process.
SPEED_LIBRARY = re.compile(
    r"^lib(openblas\w*|mkl_\w+|blis\w*|flexiblas\w*|blas|cblas|lapack\w*|gomp|iomp5|omp|tbb\w*|"
    r"jemalloc|tcmalloc\w*|mimalloc|hoard|dnnl|mkldnn|cuda|cudart|cudnn\w*|nccl|cublas\w*|cufft|"
    r"cusparse\w*|nvrtc\w*|gloo\w*)([-.][^/]*)?\.so(\.[0-9.]+)?$"
)
_WHOLE_FILE_HASH_LIMIT = 16 * 2**20  # larger libraries (cuDNN, cuBLAS: hundreds of MiB) hash head and tail
_HASH_SPAN = 2**20


def performance_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of :data:`PERFORMANCE_VARIABLE_PREFIXES` set for this process, by name."""
    environ = os.environ if environ is None else environ
    found = {}
    for name, value in environ.items():
        if name in UNHASHED_VARIABLES or name.startswith(UNHASHED_VARIABLE_PREFIXES):
            continue
        if name in PERFORMANCE_VARIABLES or name.startswith(PERFORMANCE_VARIABLE_PREFIXES):
            found[name] = value
    return dict(sorted(found.items()))


@cache
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """12 hex digits of a library's bytes (head and tail of a large one, with its size)."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        if size <= _WHOLE_FILE_HASH_LIMIT:
            digest.update(handle.read())
        else:
            digest.update(handle.read(_HASH_SPAN))
            handle.seek(size - _HASH_SPAN)
            digest.update(handle.read(_HASH_SPAN))
    return digest.hexdigest()[:12]


def _library_identity(path: str) -> str:
    """``<version> sha256:<12 hex>``: the version the file name carries (``libcudnn.so.9.1.0``)
    when it carries one, and always a hash of the file, since a soname (``libjemalloc.so.2``)
    stays the same across builds that differ."""
    name = os.path.basename(os.path.realpath(path))
    version = re.search(r"\.so\.([0-9][0-9.]*)$", name)
    try:
        stat = os.stat(path)
        digest = "sha256:" + _file_digest(path, stat.st_size, stat.st_mtime_ns)
    except OSError as err:
        digest = f"unreadable ({err.strerror})"
    return f"{version.group(1)} {digest}" if version else digest


def loaded_libraries(maps: str = "/proc/self/maps") -> dict[str, str]:
    """The speed-relevant shared libraries this process has mapped, by file name (which tells
    an allocator preloaded or the OpenMP runtime torch brought): see :data:`SPEED_LIBRARY`."""
    try:
        text = Path(maps).read_text()
    except OSError:
        return {}
    paths = set()
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            paths.add(fields[5].removesuffix(" (deleted)"))
    found = {}
    for path in sorted(paths):
        name = os.path.basename(path)
        if SPEED_LIBRARY.match(name):
            found[name] = _library_identity(path)
    return found


# Set by dnnbench around a container command (orchestrator/containers.py): ``RUNTIME:IMAGE``.
CONTAINER_VARIABLE = "DNNBENCH_CONTAINER"
# What each runtime sets inside its containers, whoever started them: evidence, not declaration.
CONTAINER_RUNTIME_VARIABLES = {
    "CH_RUNNING": "charliecloud",
    "APPTAINER_CONTAINER": "apptainer",
    "SINGULARITY_CONTAINER": "apptainer",
    "ENROOT_ROOTFS": "pyxis",
}


def _root_mount(mountinfo: str) -> str | None:
    """``SOURCE:ROOT`` of the mount at ``/``: inside a directory image the image's folder on the
    host (ch-run bind-mounts it as the new root), elsewhere the host's own root file system."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        fields, _, tail = line.partition(" - ")
        parts, source = fields.split(), tail.split()
        if len(parts) >= 5 and parts[4] == "/" and len(source) >= 2:
            found = f"{source[1]}:{parts[3]}"  # the last mount at / is the one this process sees
    return found


def _os_name(os_release: str) -> str | None:
    try:
        text = Path(os_release).read_text()
    except OSError:
        return None
    found = re.search(r'^PRETTY_NAME="?([^"\n]*)"?$', text, re.MULTILINE)
    return found.group(1) if found else None


def container_identity(
    environ: Mapping[str, str] | None = None,
    mountinfo: str = "/proc/self/mountinfo",
    os_release: str = "/etc/os-release",
) -> dict[str, str | None]:
    """Which root file system this rank ran on: the image dnnbench declared (``declared``), the
    runtime that says it started the process (``runtime``), and what the rank saw itself (the
    ``root`` mount, the ``os`` of /etc/os-release). Not hashed: the speed-relevant libraries are
    in ``libraries`` either way, and the path of an image would set two copies of one image apart."""
    environ = os.environ if environ is None else environ
    runtimes = sorted({runtime for name, runtime in CONTAINER_RUNTIME_VARIABLES.items() if name in environ})
    return {
        "declared": environ.get(CONTAINER_VARIABLE),
        "runtime": ",".join(runtimes) or None,
        "root": _root_mount(mountinfo),
        "os": _os_name(os_release),
    }


@cache
def installed_packages() -> dict[str, str]:
    """``name: version`` of every distribution this interpreter sees (two venvs that differ in
    any package differ here), names normalised as pip compares them."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            # The first on sys.path is the one imported: a layered venv's own numpy shadows its base's.
            found.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist.version)
    return dict(sorted(found.items()))


def packages_hash(packages: Mapping[str, str]) -> str:
    text = "\n".join(f"{name}=={version}" for name, version in sorted(packages.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


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


def slurm_gpu_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in SLURM_GPU_VARIABLES if environ.get(name)}


def _count(text: str) -> int:
    """GPUs in a Slurm GPU count (``2``, ``a100:2``, ``a100:2,v100:1``); 0 when unreadable."""
    total = 0
    for part in text.split(","):
        number = part.rsplit(":", 1)[-1].strip()
        total += int(number) if number.isdigit() else 0
    return total


def slurm_allocated_gpus(environ: Mapping[str, str] | None = None) -> int:
    """GPUs Slurm allocated to this job on this node (0 outside a GPU allocation)."""
    found = slurm_gpu_variables(environ)
    if found.get("SLURM_GPUS_ON_NODE", "").isdigit():
        return int(found["SLURM_GPUS_ON_NODE"])
    for ids in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        if ids in found:
            return len([i for i in found[ids].split(",") if i.strip()])
    return _count(found.get("SLURM_GPUS_PER_NODE", ""))


def cpu_ranges(cpus: Iterable[int]) -> str:
    """``0-3,8,10-11``: a CPU set as taskset and Slurm print it."""
    spans: list[list[int]] = []
    for cpu in sorted(cpus):
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _allowed_cpus() -> set[int] | None:
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):  # not Linux
        return None


def _visible_gpu_names() -> list[str]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]


def rank_resources(*, with_torch: bool = True) -> dict[str, Any]:
    """The CPUs this process may run on and the GPUs it sees (what its allocation gave it)."""
    cpus = _allowed_cpus()
    names = _visible_gpu_names() if with_torch else []
    return {
        "cpus_allowed": cpu_ranges(cpus) if cpus is not None else None,
        "cpus_allowed_count": len(cpus) if cpus is not None else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus_visible": len(names),
        "gpu_names": names,
        "slurm_gpus_allocated": slurm_allocated_gpus(),
        "slurm_gpu_variables": slurm_gpu_variables(),
    }


def _cuda_init_error(torch: Any) -> str | None:
    """Why CUDA does not start, in torch's words (``is_available`` only says False)."""
    try:
        torch.cuda.init()
    except Exception as err:  # any reason is the fact we report
        return " ".join(f"{type(err).__name__}: {err}".split())
    return None


def cuda_facts() -> dict[str, Any]:
    """What decides whether this rank can use a GPU: for the reason of a cell that cannot."""
    import torch

    available = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "gpu_driver": _gpu_driver(),
        "cuda_available": available,
        "device_count": torch.cuda.device_count() if available else 0,
        "cuda_init_error": None if available else _cuda_init_error(torch),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        **slurm_gpu_variables(),
    }


def device_index(device: Any) -> int | None:
    """The CUDA ordinal this rank trains on, as the process numbers it (inside
    ``CUDA_VISIBLE_DEVICES``, recorded in ``resources``); None on the CPU."""
    if getattr(device, "type", None) != "cuda":
        return None
    if device.index is not None:
        return int(device.index)
    import torch

    return int(torch.cuda.current_device())


def fingerprint(
    extra_threads: dict[str, Any] | None = None, *, with_torch: bool = True, device: Any = None
) -> dict[str, Any]:
    """Everything about this process's environment that a result depends on.

    ``with_torch=False`` skips importing torch (CUDA details come out null). ``device`` is the
    rank's training device: its index goes in ``device_index``. ``hostname`` and
    ``device_index`` say where the rank ran (stragglers are reported per host): not hashed.
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
        "device_index": device_index(device),
        "platform": platform.platform(),
        "slurm": {k: v for k in SLURM_VARIABLES if (v := os.environ.get(k)) is not None},
        "resources": rank_resources(with_torch=with_torch),
        **details,
        "variables": performance_variables(),
        "libraries": loaded_libraries(),
        "packages": installed_packages(),
        "container": container_identity(),
    }
    env["packages_hash"] = packages_hash(env["packages"])
    return env
