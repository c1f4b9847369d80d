"""Where torchvision's MNIST expects its files, checked without importing torch (login nodes)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import BinaryIO

from jobs.atomic import write_atomic_stream

MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetError(FileNotFoundError):
    pass


def missing_mnist_files(root: str | Path) -> list[Path]:
    """The IDX files torchvision's MNIST needs under ``root`` that are absent (plain or .gz)."""
    raw = Path(root) / "MNIST" / "raw"
    missing = []
    for train in (True, False):
        for stem in MNIST_FILES[train]:
            if not (raw / stem).exists() and not (raw / f"{stem}.gz").exists():
                missing.append(raw / f"{stem}.gz")
    return missing


def check_mnist_root(root: str | Path, download: bool) -> None:
    if download:
        return
    missing = missing_mnist_files(root)
    if missing:
        names = ", ".join(p.name for p in missing)
        raise DatasetError(
            f"MNIST not found under {Path(root).resolve()}/MNIST/raw (missing {names}). "
            f"Put the IDX files there, point dataset.root at the folder holding MNIST/raw, "
            f"or set dataset.download=true on a machine with internet access."
        )


def unpacked_mnist_root(root: str | Path, scratch: str | Path | None = None) -> Path:
    """A root whose MNIST/raw holds the uncompressed IDX files torchvision's MNIST reads.

    torchvision (download=False) reads only uncompressed files; a folder of the published
    ``.gz`` files is unpacked once, beside them (temporary name, then rename, so concurrent
    ranks never see half a file), or under ``scratch`` when the folder is read-only.
    """
    import hashlib
    import os
    import tempfile

    raw = Path(root) / "MNIST" / "raw"
    packed = [stem for train in (True, False) for stem in MNIST_FILES[train] if not (raw / stem).exists()]
    if not packed:
        return Path(root)
    target_root = Path(root)
    if not os.access(raw, os.W_OK):
        digest = hashlib.sha256(str(raw.resolve()).encode()).hexdigest()[:12]
        target_root = Path(scratch or tempfile.gettempdir()) / f"dnnbench-mnist-{digest}"
        (target_root / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
    target = target_root / "MNIST" / "raw"
    for stem in MNIST_FILES[True] + MNIST_FILES[False]:
        if (target / stem).exists():
            continue
        source = raw / stem if (raw / stem).exists() else raw / f"{stem}.gz"
        write_atomic_stream(target / stem, partial(_unpack, source))
    return target_root


def _unpack(source: Path, sink: BinaryIO) -> None:
    """An IDX file's bytes into ``sink``, gunzipped when ``source`` is packed."""
    import gzip
    import shutil

    with gzip.open(source, "rb") if source.suffix == ".gz" else open(source, "rb") as stream:
        shutil.copyfileobj(stream, sink)
