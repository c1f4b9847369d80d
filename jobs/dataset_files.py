"""Where torchvision's MNIST expects its files, checked without importing torch (login nodes)."""

from __future__ import annotations

from pathlib import Path

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
