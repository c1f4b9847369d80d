"""Batches for the loop: real MNIST through torchvision, or MNIST-shaped synthetic tensors.

Both shard by the data-parallel rank the strategy reports, so every framework reads
the same samples for the same (rank, world) pair.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from jobs.dataset_files import check_mnist_root, unpacked_mnist_root

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def copy_to_scratch(root: str | Path, scratch: str | Path) -> Path:
    """Copy ``root/MNIST`` to node-local scratch once per node; returns the new root.

    Copied under a temporary name and renamed, so concurrent ranks never read half a copy.
    """
    target_root = Path(scratch) / "dnnbench-data"
    target = target_root / "MNIST"
    if not target.exists():
        target_root.mkdir(parents=True, exist_ok=True)
        partial = target_root / f".MNIST.partial.{torch.randint(1 << 30, ()).item()}"
        shutil.copytree(Path(root) / "MNIST", partial)
        try:
            # A folder, published whole by one rename (jobs.atomic writes single files).
            partial.rename(target)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)  # another rank won the race
    return target_root


@dataclass
class Shard:
    """Which slice of the data this process reads."""

    rank: int
    world: int


class ResidentBatches:
    """Batches of a dataset already held as tensors: one gather per batch, no per-sample collate.

    Same sampler, so the same samples in the same order as a DataLoader would give; it only
    skips the DataLoader's per-item indexing and stacking, which is harness cost, not work.
    """

    def __init__(self, data: TensorDataset, sampler: DistributedSampler, batch_size: int, drop_last: bool):
        self.tensors, self.sampler = data.tensors, sampler
        self.batch_size, self.drop_last = batch_size, drop_last

    def __len__(self) -> int:
        count = len(self.sampler)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = torch.tensor(list(iter(self.sampler)))
        device = self.tensors[0].device
        if device.type == "cuda":
            # From pinned memory the copy is queued; from pageable memory it would stall the host.
            order = order.pin_memory().to(device, non_blocking=True)
        for number in range(len(self)):
            index = order[number * self.batch_size : (number + 1) * self.batch_size]
            yield tuple(tensor[index] for tensor in self.tensors)


class BatchSource:
    """Training and validation batches for one process."""

    def __init__(
        self, train: Any, val: Any, batch_size: int, shard: Shard, seed: int, workers: int, *, pin: bool = False
    ):
        self.batch_size = batch_size
        self.train_sampler = DistributedSampler(
            train, num_replicas=shard.world, rank=shard.rank, shuffle=True, seed=seed, drop_last=True
        )
        val_sampler = DistributedSampler(val, num_replicas=shard.world, rank=shard.rank, shuffle=False, drop_last=False)
        self.train_loader: Any
        self.val_loader: Any
        if isinstance(train, TensorDataset) and isinstance(val, TensorDataset):
            self.train_loader = ResidentBatches(train, self.train_sampler, batch_size, drop_last=True)
            self.val_loader = ResidentBatches(val, val_sampler, batch_size, drop_last=False)
        else:
            # pin: a copy to the GPU from pageable memory blocks the host even with non_blocking=True.
            loader = {"batch_size": batch_size, "num_workers": workers, "pin_memory": pin}
            self.train_loader = DataLoader(train, sampler=self.train_sampler, drop_last=True, **loader)
            self.val_loader = DataLoader(val, sampler=val_sampler, **loader)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def train_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.train_sampler.set_epoch(epoch)
        yield from self.train_loader

    def train_forever(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = 0
        while True:
            yield from self.train_epoch(epoch)
            epoch += 1

    def val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from self.val_loader


def _mnist_tensors(root: str, train: bool, download: bool, limit: int | None, device: torch.device):
    from torchvision.datasets import MNIST

    data = MNIST(root, train=train, download=download)
    images, labels = data.data, data.targets
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    images = ((images.float() / 255.0 - MNIST_MEAN) / MNIST_STD).unsqueeze(1)
    return TensorDataset(images.to(device), labels.to(device))


def _mnist_dataset(root: str, train: bool, download: bool, limit: int | None):
    from torch.utils.data import Subset
    from torchvision import transforms
    from torchvision.datasets import MNIST

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    data = MNIST(root, train=train, download=download, transform=transform)
    return Subset(data, range(min(limit, len(data)))) if limit is not None else data


def _synthetic(samples: int, cfg: Any, device: torch.device, seed: int) -> TensorDataset:
    generator = torch.Generator(device=device).manual_seed(seed)
    shape = (samples, cfg.channels, cfg.image_size, cfg.image_size)
    images = torch.randn(shape, generator=generator, device=device)
    labels = torch.randint(0, cfg.num_classes, (samples,), generator=generator, device=device)
    return TensorDataset(images, labels)


def build_batches(cfg: Any, shard: Shard, device: torch.device) -> tuple[BatchSource, dict[str, Any]]:
    """The batch source for this process and a record of how data was served (for the dump)."""
    ds = cfg.dataset
    record: dict[str, Any] = {"name": ds.name, "on_device": bool(ds.on_device), "root": None}
    if ds.name == "synthetic":
        # Generated where the model runs: no host-to-device copy inside the timed steps.
        train = _synthetic(ds.train_samples or 4096, ds, device, cfg.seed)
        val = _synthetic(ds.val_samples or 1024, ds, device, cfg.seed + 1)
        record["on_device"] = True
        workers = 0
    elif ds.name == "mnist":
        root = str(ds.root)
        check_mnist_root(root, bool(ds.download))
        if ds.copy_to_scratch and getattr(cfg.cluster, "scratch", None):
            root = str(copy_to_scratch(root, cfg.cluster.scratch))
        if not ds.download:
            root = str(unpacked_mnist_root(root, getattr(cfg.cluster, "scratch", None)))
        record["root"] = root
        if ds.on_device:
            train = _mnist_tensors(root, True, ds.download, ds.train_samples, device)
            val = _mnist_tensors(root, False, ds.download, ds.val_samples, device)
            workers = 0
        else:
            train = _mnist_dataset(root, True, ds.download, ds.train_samples)
            val = _mnist_dataset(root, False, ds.download, ds.val_samples)
            workers = ds.num_workers
    else:
        raise ValueError(f"unknown dataset {ds.name!r}: expected mnist or synthetic")
    record["train_samples"], record["val_samples"] = len(train), len(val)
    # Batches the loop copies to a GPU come from page-locked memory, so the copy is queued.
    record["pinned"] = pin = not record["on_device"] and device.type == "cuda"
    return BatchSource(train, val, cfg.batch_size, shard, cfg.seed, workers, pin=pin), record
