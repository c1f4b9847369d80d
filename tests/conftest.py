"""Shared fixtures: a real MNIST root built from the shared test split, and running one cell here.

The shared data folder holds only MNIST's 10,000-image *test* split (read-only). The
``mnist_root`` fixture turns it into a torchvision-layout root with a train split of the
first 8,000 images and a test split of the last 2,000, written as IDX gz files.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGES = 8000
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
SOURCE_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(autouse=True)
def _no_job_name_leaks_between_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """`dnnbench run` called in-process tags this process with its job name (the launcher and ranks
    inherit it, orchestrator/backends/local.py): undone after each test, or every process a later
    test starts would be taken for one of that run's."""
    from orchestrator.backends.local_processes import JOB_ENV

    monkeypatch.delenv(JOB_ENV, raising=False)


def mnist_source() -> Path | None:
    """The folder with the real MNIST test split, or None when this machine has none."""
    candidates = []
    if os.environ.get("DNNBENCH_MNIST_SOURCE"):
        candidates.append(Path(os.environ["DNNBENCH_MNIST_SOURCE"]))
    candidates += [REPO.parent / "shared" / "data" / "mnist", Path("/work/shared/data/mnist")]
    for folder in candidates:
        if all((folder / name).is_file() for name in SOURCE_FILES):
            return folder
    return None


def read_idx(path: Path, magic: int) -> tuple[list[int], bytes]:
    """(dimensions, payload bytes) of one gzip'd IDX file, checking its magic number."""
    data = gzip.decompress(path.read_bytes())
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise ValueError(f"{path}: IDX magic {found}, expected {magic}")
    ndim = magic & 0xFF
    dims = list(struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim]))
    return dims, data[4 + 4 * ndim :]


def write_idx(path: Path, magic: int, dims: list[int], payload: bytes) -> None:
    header = struct.pack(f">I{len(dims)}I", magic, *dims)
    path.write_bytes(gzip.compress(header + payload, compresslevel=1))


def build_mnist_root(source: Path, root: Path, train_count: int = TRAIN_IMAGES, *, extract: bool = True) -> Path:
    """Write ``root/MNIST/raw`` with train = first ``train_count`` test images, t10k = the rest.

    ``extract``: also write the uncompressed files beside the ``.gz`` ones, the layout
    torchvision's own download leaves (its MNIST reads only the uncompressed files).
    """
    (count, rows, cols), pixels = read_idx(source / SOURCE_FILES[0], IMAGE_MAGIC)
    (label_count,), labels = read_idx(source / SOURCE_FILES[1], LABEL_MAGIC)
    assert count == label_count == len(labels) and len(pixels) == count * rows * cols
    size = rows * cols
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    splits = {"train": (0, train_count), "t10k": (train_count, count)}
    for prefix, (lo, hi) in splits.items():
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", IMAGE_MAGIC, [hi - lo, rows, cols],
                  pixels[lo * size : hi * size])  # fmt: skip
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", LABEL_MAGIC, [hi - lo], labels[lo:hi])
    if extract:
        for packed in raw.glob("*.gz"):
            packed.with_suffix("").write_bytes(gzip.decompress(packed.read_bytes()))
    return root


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision MNIST root: 8,000 train and 2,000 test images, all real."""
    source = mnist_source()
    if source is None:
        pytest.skip(
            "real MNIST test split not found: put t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
            "in ../shared/data/mnist beside the repo or /work/shared/data/mnist, or set DNNBENCH_MNIST_SOURCE"
        )
    return build_mnist_root(source, tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def mnist_gz_only_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same split with only the ``.gz`` files, as the shared folder and MNIST mirrors ship them."""
    source = mnist_source()
    if source is None:
        pytest.skip("real MNIST test split not found (see the mnist_root fixture)")
    return build_mnist_root(source, tmp_path_factory.mktemp("mnist-gz"), extract=False)


RunCell = Callable[[list[str], Path], list[dict[str, Any]]]
# The smallest real DDP cell: two gloo processes, resnet18 on synthetic MNIST-shaped data.
TINY_DDP = [
    "framework=ddp", "model=resnet18", "gpus=2", "dataset=synthetic", "batch_size=16",
    "steps=3", "warmup_steps=1", "val_steps=2", "dataset.train_samples=128", "dataset.val_samples=64",
    "cudnn_benchmark=true",  # not the default: the dump must show the rank applied it
    "breakdown=true",  # not the default either: the dumps carry the parts and the timed collectives
    "device=cpu",  # also where Slurm allocated the dev cluster's fake GPUs (auto would mean CUDA there)
]  # fmt: skip


def launch_spec(**changes: Any) -> Any:
    """The LaunchSpec a runner builds for cell ``abc`` of sweep ``/sweeps/s``, with ``changes``."""
    from jobs.launchers import LaunchSpec

    fields: dict[str, Any] = dict(
        python="/opt/venv/bin/python",
        cell_file="/sweeps/s/cells/abc/cell.json",
        out_dir="/sweeps/s/cells/abc/attempt_0",
        nnodes=1,
        nproc_per_node=4,
        node_rank=0,
        hosts=("gcn1",),
        job_id="123456",
    )
    return LaunchSpec(**{**fields, **changes})


def run_cell_in(overrides: list[str], folder: Path) -> list[dict[str, Any]]:
    """Plan exactly one cell, write its cell.json as a sweep does, run it here; its valid rank dumps."""
    from jobs import schema
    from orchestrator.runner import run_cell
    from orchestrator.submit import write_cell_file
    from orchestrator.sweep import plan

    (cell,) = plan(overrides).cells
    cell_file = folder / "cells" / cell.id / "cell.json"
    write_cell_file(cell_file, cell)
    out_dir = cell_file.parent / "attempt_0"
    outcome = run_cell(str(cell_file), str(out_dir))
    assert outcome["state"] == "completed", outcome
    assert json.loads((out_dir / "outcome.json").read_text())["state"] == "completed"
    world = cell.config["gpus"] * cell.config["nodes"]
    return [schema.load(out_dir / schema.dump_filename(rank)) for rank in range(world)]


@pytest.fixture
def run_cell_here() -> RunCell:
    """``run_cell_here(overrides, tmp_path)`` → the loaded rank dumps of that one cell."""
    return run_cell_in


@pytest.fixture(scope="session")
def tiny_ddp_dumps(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The two rank dumps of :data:`TINY_DDP`, run once per test session (about 15 s)."""
    return run_cell_in(TINY_DDP, tmp_path_factory.mktemp("tiny-ddp"))
