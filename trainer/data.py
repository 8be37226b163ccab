"""Datasets as tensors on the training device, and seeded on-device batches with augmentation.

A dataset is a handful of tensors: images (N, C, H, W) float32 in [0, 1] and labels (N,) int64.
They live on the training device, and shuffling, random crops with zero padding and horizontal
flips run there in whole batches: no DataLoader worker processes, which a shared GPU node has no
CPU for. All randomness comes from one CPU ``torch.Generator``, so a run is reproducible and
resumable on any device.

Loaders (the ``DATASETS`` registry): ``cifar10`` / ``cifar100`` (torchvision, from
``data.data_dir``; downloaded only with ``data.download=true``), ``digits`` (scikit-learn's 8x8
digits, offline), ``synthetic`` (seeded class prototypes plus noise, for tests) and ``gaussians``
(a known class-conditional density, in trainer.groundtruth).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.config import ConfigError, DataConfig


class DataError(ConfigError):
    """A dataset that cannot be loaded (missing files, ...); the message says what to do."""


@dataclass
class Dataset:
    """Train and test splits as tensors: images (N, C, H, W) float32, labels (N,) int64."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    # Known class-conditional density (gaussians only): .score(x, y) = ∇ₓ log p(x|y) and
    # .log_prob(x, y) -> (B,).
    density: object | None = None

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]

    def to(self, device: str | torch.device) -> Dataset:
        """The same dataset with its tensors on ``device``."""
        return replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
        )


def _images(array: np.ndarray) -> Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div(255.0)


def _cifar(cfg: DataConfig, dataset_class, name: str) -> Dataset:
    splits = []
    for train in (True, False):
        try:
            ds = dataset_class(root=cfg.data_dir, train=train, download=cfg.download)
        except RuntimeError:  # torchvision: "Dataset not found or corrupted"
            raise DataError(
                f"data.dataset={name}: no {name} files in data.data_dir={cfg.data_dir!r}; "
                "set data.download=true to download them, or point data.data_dir at a copy"
            ) from None
        splits += [_images(ds.data), torch.as_tensor(ds.targets, dtype=torch.int64)]
    return Dataset(name, *splits, num_classes=len(ds.classes))


def load_cifar10(cfg: DataConfig) -> Dataset:
    """CIFAR-10 through torchvision (50000/10000 images, 32x32x3)."""
    from torchvision.datasets import CIFAR10

    return _cifar(cfg, CIFAR10, "cifar10")


def load_cifar100(cfg: DataConfig) -> Dataset:
    """CIFAR-100 through torchvision (50000/10000 images, 32x32x3, fine labels)."""
    from torchvision.datasets import CIFAR100

    return _cifar(cfg, CIFAR100, "cifar100")


DIGITS_TEST_SIZE = 360  # of 1797 images: a stratified 1437/360 split


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    # Parsed once per process: a sweep loads digits for every trial.
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    return bunch.images, bunch.target


def load_digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's 8x8 digits (ships with the package), scaled from 0..16 to [0, 1].

    The train/test split is stratified and fixed by ``cfg.split_seed``.
    """
    from sklearn.model_selection import train_test_split

    images, target = _digits_arrays()
    x = torch.from_numpy(images).float().div(16.0)[:, None]  # (1797, 1, 8, 8), a copy
    y = torch.from_numpy(target).long()
    train, test = train_test_split(
        np.arange(len(y)), test_size=DIGITS_TEST_SIZE, stratify=target, random_state=cfg.split_seed
    )
    return Dataset("digits", x[train], y[train], x[test], y[test], num_classes=10)


SYNTHETIC_SIZES = (512, 256)  # default train/test images of the synthetic dataset
SYNTHETIC_NOISE = 0.15  # std of the per-pixel noise around each class prototype


def load_synthetic(cfg: DataConfig) -> Dataset:
    """Random class prototypes in [0, 1] plus Gaussian noise, clamped: learnable, seeded, tiny."""
    gen = torch.Generator().manual_seed(cfg.split_seed)
    shape = (cfg.channels, cfg.image_size, cfg.image_size)
    prototypes = torch.rand((cfg.num_classes, *shape), generator=gen)

    def split(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(cfg.num_classes, (n,), generator=gen)
        x = prototypes[y] + SYNTHETIC_NOISE * torch.randn((n, *shape), generator=gen)
        return x.clamp(0, 1), y

    train = split(cfg.train_size or SYNTHETIC_SIZES[0])
    test = split(cfg.test_size or SYNTHETIC_SIZES[1])
    return Dataset("synthetic", *train, *test, num_classes=cfg.num_classes)


def load_gaussians(cfg: DataConfig) -> Dataset:
    """Classes drawn from a known Gaussian density (see trainer.groundtruth)."""
    from trainer.groundtruth import load_gaussians as load  # only this dataset needs it

    return load(cfg)


DATASETS: dict[str, Callable[[DataConfig], Dataset]] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "digits": load_digits,
    "synthetic": load_synthetic,
    "gaussians": load_gaussians,
}


def load_dataset(cfg: DataConfig, device: str | torch.device = "cpu") -> Dataset:
    """Load ``cfg.dataset``, keep the first ``train_size`` / ``test_size`` images, move to ``device``."""
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"data.dataset: unknown dataset {cfg.dataset!r}; choose from {sorted(DATASETS)}")
    data = DATASETS[cfg.dataset](cfg)
    data = replace(
        data,
        train_x=data.train_x[: cfg.train_size],
        train_y=data.train_y[: cfg.train_size],
        test_x=data.test_x[: cfg.test_size],
        test_y=data.test_y[: cfg.test_size],
    )
    return data.to(device)


def augment(x: Tensor, generator: torch.Generator, padding: int, flip: bool) -> Tensor:
    """Random crop of the zero-padded batch back to its size, then random horizontal flips.

    Offsets and flips are drawn on the CPU from ``generator`` (a few integers per batch) and the
    images are cut on their own device with one gather.
    """
    b, c, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        dy = torch.randint(2 * padding + 1, (b,), generator=generator).to(x.device)
        dx = torch.randint(2 * padding + 1, (b,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chans = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if flip:
        flips = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    return x


def train_batches(
    data: Dataset, batch_size: int, generator: torch.Generator, cfg: DataConfig
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of shuffled (x, y) training batches, augmented on the data's device.

    ``generator`` is a CPU generator: it draws the order, the crop offsets and the flips. A last
    batch of a single image is dropped, because BatchNorm cannot train on one value per channel.
    """
    n = data.train_x.shape[0]
    order = torch.randperm(n, generator=generator).to(data.train_x.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if idx.numel() == 1 and n > 1:
            break
        x, y = data.train_x[idx], data.train_y[idx]
        if cfg.augment:
            x = augment(x, generator, cfg.crop_padding, cfg.flip)
        yield x, y
