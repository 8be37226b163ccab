"""Datasets as tensors on the training device, and seeded on-device batches with augmentation.

A dataset is a handful of tensors: images (N, C, H, W) float32 in [0, 1] and labels (N,) int64.
They live on the training device, and shuffling, random crops with zero padding and horizontal
flips run there in whole batches: no DataLoader worker processes, which a shared GPU node has no
CPU for. All randomness comes from one CPU ``torch.Generator``, so a run is reproducible and
resumable on any device.

Loaders (the ``DATASETS`` registry): ``cifar10`` / ``cifar100`` (torchvision, from
``data.data_dir``; downloaded only with ``data.download=true``; checked against the published
md5 sums unless ``data.verify=false``, for an own copy in CIFAR's on-disk format), ``digits`` (scikit-learn's 8x8
digits, offline), ``synthetic`` (seeded class prototypes plus noise, for tests) and ``gaussians``
(classes drawn from a known Gaussian density, :class:`GaussianDensity`, which trainer.groundtruth
measures models against).

The validation split (``data.val_size``) is carved from the training images with a generator
seeded by ``data.split_seed``: the same images for every run and every training seed, disjoint
from the training images left and from the test set. Nothing that selects (early stopping, the
sweep objective, "best") should look at the test set; the validation split is what it looks at.
"""

from __future__ import annotations

import functools
import math
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
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
    """Train, validation and test splits as tensors: images (N, C, H, W) float32, labels (N,) int64."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    # Known class-conditional density (gaussians only): .score(x, y) = ∇ₓ log p(x|y) and
    # .log_prob(x, y) -> (B,).
    density: GaussianDensity | None = None
    # Validation split carved from the training images by load_dataset; None: no validation split.
    val_x: Tensor | None = None
    val_y: Tensor | None = None
    val_indices: Tensor | None = None  # positions of the validation images in the training pool

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
            val_x=None if self.val_x is None else self.val_x.to(device),
            val_y=None if self.val_y is None else self.val_y.to(device),
        )


def _images(array: np.ndarray) -> Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div(255.0)


def _cifar_class(name: str) -> type:
    from torchvision.datasets import CIFAR10, CIFAR100

    return {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]


def _unverified(dataset_class: type) -> type:
    """``dataset_class`` without its md5 sums: torchvision's ``check_integrity(path, None)`` then
    checks only that each file exists, and the files are read as they are."""
    return type(f"Unverified{dataset_class.__name__}", (dataset_class,), {
        "train_list": [[name, None] for name, _ in dataset_class.train_list],
        "test_list": [[name, None] for name, _ in dataset_class.test_list],
        "meta": {**dataset_class.meta, "md5": None},
    })


def cifar_integrity_problem(cfg: DataConfig, prefix: str = "data") -> str | None:
    """Why torchvision would reject the CIFAR files in ``cfg.data_dir`` (one line naming the files,
    the check and what to do), or None: the files pass, or there is nothing to check here (another
    dataset, ``verify=false``, no folder yet, or ``download=true``, where torchvision fetches the
    archive again). ``prefix``: where the data section sits in the user's config (``trainer.data``)."""
    if cfg.dataset not in ("cifar10", "cifar100") or not cfg.verify or cfg.download:
        return None
    from torchvision.datasets.utils import check_integrity

    cls = _cifar_class(cfg.dataset)
    folder = Path(cfg.data_dir) / cls.base_folder
    if not folder.is_dir():
        return None
    files = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
    missing = [name for name, _ in files if not (folder / name).is_file()]
    differ = [name for name, md5 in files if name not in missing and not check_integrity(str(folder / name), md5)]
    if not missing and not differ:
        return None
    found = ([f"{', '.join(differ)} differ from the published files"] if differ else []) + (
        [f"{', '.join(missing)} missing"] if missing else [])
    return (
        f"{prefix}: {cfg.dataset} files in {folder.resolve()} fail torchvision's integrity check (each file's md5 "
        f"against the published dataset's): {'; '.join(found)}; for your own copy in CIFAR's format, "
        f"--set {prefix}.verify=false reads it unchecked; for the published dataset, remove the folder and "
        f"--set {prefix}.download=true"
    )


def _cifar(cfg: DataConfig, name: str) -> Dataset:
    dataset_class = _cifar_class(name)
    if not cfg.verify:
        dataset_class = _unverified(dataset_class)
    splits = []
    for train in (True, False):
        try:
            ds = dataset_class(root=cfg.data_dir, train=train, download=cfg.download)
        except RuntimeError:  # torchvision: "Dataset not found or corrupted"
            problem = cifar_integrity_problem(cfg)
            raise DataError(problem or (
                f"data.dataset={name}: no {name} files in data.data_dir={cfg.data_dir!r}; "
                "set data.download=true to download them, or point data.data_dir at a copy"
            )) from None
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:  # unchecked files
            folder = Path(cfg.data_dir) / dataset_class.base_folder
            raise DataError(
                f"data.dataset={name}: cannot read {folder.resolve()} as CIFAR's on-disk format "
                f"({type(e).__name__}: {e}); each of its files must be a pickled dict as the published dataset's"
            ) from None
        splits += [_images(ds.data), torch.as_tensor(ds.targets, dtype=torch.int64)]
    return Dataset(name, *splits, num_classes=len(ds.classes))


def load_cifar10(cfg: DataConfig) -> Dataset:
    """CIFAR-10 through torchvision (50000/10000 images, 32x32x3)."""
    return _cifar(cfg, "cifar10")


def load_cifar100(cfg: DataConfig) -> Dataset:
    """CIFAR-100 through torchvision (50000/10000 images, 32x32x3, fine labels)."""
    return _cifar(cfg, "cifar100")


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


# --- gaussians: a known class-conditional density -------------------------------------------
#
# C classes of images with channels x image_size x image_size pixels, x = m_y + e, e ~ N(0, S),
# S = noise_std^2 * (I_channels (x) K). Each class mean m_y is a smooth random image (a 4x4 grid of
# values uniform in [0.2, 0.8], bilinearly upsampled, so every mean pixel lies in [0.2, 0.8]); K is
# the per-channel pixel correlation: the identity (covariance: isotropic) or a squared-exponential
# kernel over pixel positions plus a nugget, normalised to unit diagonal (covariance: smooth).
# Either way each pixel's standard deviation is noise_std; channels are independent and share K.
#
# Samples are NOT clamped to [0, 1]: clamping would put point masses on the borders and the density
# would no longer be the Gaussian above. With means in [0.2, 0.8] and the default noise_std = 0.1
# (two standard deviations of headroom), well under 1% of pixels fall outside [0, 1]. Means,
# labels, noise and the train/test split all come from one generator seeded with split_seed.
# Train on it with data.augment: false: crops and flips would move the training distribution away
# from p(x|y). trainer.groundtruth measures a model against this density.

DEFAULT_TRAIN_SIZE = 2000  # images, when data.train_size is None
DEFAULT_TEST_SIZE = 500  # images, when data.test_size is None
MEAN_GRID = 4  # side of the random grid upsampled into each class mean (low frequency)
MEAN_LOW, MEAN_HIGH = 0.2, 0.8  # range of the mean pixels: headroom for the unclamped noise
SMOOTH_LENGTHSCALE = 1.5  # pixels: correlation length of the smooth covariance
SMOOTH_NUGGET = 0.1  # added to the kernel's diagonal so K is well conditioned (eigenvalues ≥ 0.09)


def smooth_kernel(image_size: int, lengthscale: float = SMOOTH_LENGTHSCALE, nugget: float = SMOOTH_NUGGET) -> Tensor:
    """Correlation matrix (P, P), P = image_size², of a squared-exponential kernel over pixel positions.

    K_ij = (exp(−‖p_i − p_j‖² / (2ℓ²)) + nugget·δ_ij) / (1 + nugget): unit diagonal, positive definite.
    """
    coords = torch.arange(image_size, dtype=torch.float64)
    pos = torch.cartesian_prod(coords, coords)  # (P, 2) pixel positions in pixels
    sq_dist = torch.cdist(pos, pos).square()
    kernel = torch.exp(-sq_dist / (2 * lengthscale**2))
    return (kernel + nugget * torch.eye(len(pos), dtype=torch.float64)) / (1 + nugget)


class GaussianDensity:
    """The known class-conditional density p(x|y) = N(m_y, noise_std² · (I_channels ⊗ K)).

    Works on batches of images (B, C, H, W) on any device and floating dtype; the parameters are
    kept in float64 on the CPU and cast on first use for each (device, dtype).
    """

    def __init__(self, means: Tensor, noise_std: float, kernel: Tensor) -> None:
        """``means``: (num_classes, C, H, W); ``kernel``: (H·W, H·W) pixel correlation shared by channels."""
        self.means = means.to(torch.float64)
        self.noise_std = float(noise_std)
        self.kernel = kernel.to(torch.float64)
        # Σ_channel = noise_std² · K = L Lᵀ; the precision is what the score needs.
        self.cholesky = self.noise_std * torch.linalg.cholesky(self.kernel)
        self.precision = torch.cholesky_inverse(self.cholesky)
        channels = self.means.shape[1]
        self.log_norm = -0.5 * self.dim * math.log(2 * math.pi) - channels * self.cholesky.diagonal().log().sum().item()
        self._cast: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    @property
    def num_classes(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        """Dimension D = C·H·W of an image."""
        return self.means[0].numel()

    @property
    def isotropic(self) -> bool:
        """Whether the covariance is noise_std² · I (the pixel correlation K is the identity)."""
        return bool(torch.equal(self.kernel, torch.eye(len(self.kernel), dtype=self.kernel.dtype)))

    @property
    def pixel_covariance(self) -> Tensor:
        """(H·W, H·W) covariance of the pixels of one channel, noise_std² · K (channels are independent)."""
        return self.noise_std**2 * self.kernel

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor]:
        key = (x.device, x.dtype)
        if key not in self._cast:
            self._cast[key] = (self.means.to(x.device, x.dtype), self.precision.to(x.device, x.dtype))
        return self._cast[key]

    def _residual(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        means, precision = self._params(x)
        diff = (x - means[y.to(x.device)]).flatten(2)  # (B, C, H·W)
        return diff, precision

    def score(self, x: Tensor, y: Tensor) -> Tensor:
        """∇ₓ log p(x|y) = −Σ⁻¹(x − m_y), same shape as x."""
        diff, precision = self._residual(x, y)
        return -(diff @ precision).reshape(x.shape)

    def log_prob(self, x: Tensor, y: Tensor) -> Tensor:
        """log p(x|y) in nats, shape (B,)."""
        diff, precision = self._residual(x, y)
        quad = ((diff @ precision) * diff).sum(dim=(1, 2))
        return self.log_norm - 0.5 * quad

    def sample(self, y: Tensor, generator: torch.Generator) -> Tensor:
        """Draw x ~ p(x|y) for each label in y (CPU, float64): m_y + L·z with z ~ N(0, I)."""
        z = torch.randn(len(y), *self.means.shape[1:], generator=generator, dtype=torch.float64)
        noise = z.flatten(2) @ self.cholesky.T  # rows of z times Lᵀ: covariance L Lᵀ per channel
        return self.means[y] + noise.reshape(z.shape)


def _class_means(num_classes: int, channels: int, image_size: int, generator: torch.Generator) -> Tensor:
    """Smooth random images in [MEAN_LOW, MEAN_HIGH]: a small uniform grid, bilinearly upsampled."""
    grid = min(MEAN_GRID, image_size)
    coarse = MEAN_LOW + (MEAN_HIGH - MEAN_LOW) * torch.rand(
        num_classes, channels, grid, grid, generator=generator, dtype=torch.float64
    )
    # Bilinear interpolation is a convex combination of grid values, so the range is preserved.
    return F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=True)


def make_density(cfg: DataConfig, generator: torch.Generator) -> GaussianDensity:
    """The density described by ``cfg`` (num_classes, channels, image_size, noise_std, covariance)."""
    means = _class_means(cfg.num_classes, cfg.channels, cfg.image_size, generator)
    pixels = cfg.image_size**2
    kernel = smooth_kernel(cfg.image_size) if cfg.covariance == "smooth" else torch.eye(pixels, dtype=torch.float64)
    return GaussianDensity(means, cfg.noise_std, kernel)


def _draw_split(density: GaussianDensity, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    # Balanced classes in random order.
    y = torch.randperm(size, generator=generator) % density.num_classes
    return density.sample(y, generator).float(), y


def load_gaussians(cfg: DataConfig) -> Dataset:
    """Classes drawn from a known Gaussian density; deterministic in ``cfg.split_seed``; ``.density`` is the true p(x|y).

    Split sizes are ``cfg.train_size`` / ``cfg.test_size`` images (DEFAULT_TRAIN_SIZE /
    DEFAULT_TEST_SIZE when None). Tensors are float32 on the CPU, unclamped (see the module docstring).
    """
    generator = torch.Generator().manual_seed(cfg.split_seed)
    density = make_density(cfg, generator)
    train_x, train_y = _draw_split(density, cfg.train_size or DEFAULT_TRAIN_SIZE, generator)
    test_x, test_y = _draw_split(density, cfg.test_size or DEFAULT_TEST_SIZE, generator)
    return Dataset("gaussians", train_x, train_y, test_x, test_y, num_classes=cfg.num_classes, density=density)


DATASETS: dict[str, Callable[[DataConfig], Dataset]] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "digits": load_digits,
    "synthetic": load_synthetic,
    "gaussians": load_gaussians,
}


def val_count(val_size: float | int, pool: int) -> int:
    """Validation images for ``val_size`` (a fraction in (0, 1), a count, or 0) of ``pool`` images;
    a positive fraction keeps at least one image."""
    if val_size == 0:
        return 0
    return max(1, round(val_size * pool)) if val_size < 1 else int(val_size)


def split_validation(pool: int, val_size: float | int, seed: int) -> tuple[Tensor, Tensor]:
    """(train indices, validation indices) into a training pool of ``pool`` images, both sorted.

    The validation images are a uniformly random subset drawn by a CPU generator seeded with
    ``seed``: the same indices for the same (pool, val_size, seed) on any machine. Raises
    DataError when the split would leave no training image.
    """
    count = val_count(val_size, pool)
    if count >= pool:
        raise DataError(
            f"data.val_size={val_size}: {count} validation images of {pool} training images leave none "
            "to train on; lower data.val_size (0 for no validation split)"
        )
    order = torch.randperm(pool, generator=torch.Generator().manual_seed(seed))
    return order[count:].sort().values, order[:count].sort().values


def load_dataset(cfg: DataConfig, device: str | torch.device = "cpu") -> Dataset:
    """Load ``cfg.dataset``, keep the first ``train_size`` / ``test_size`` images, carve the
    validation split out of those training images, move everything to ``device``."""
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"data.dataset: unknown dataset {cfg.dataset!r}; choose from {sorted(DATASETS)}")
    data = DATASETS[cfg.dataset](cfg)
    train_x, train_y = data.train_x[: cfg.train_size], data.train_y[: cfg.train_size]
    val = {}
    if cfg.val_size > 0:
        keep, held = split_validation(len(train_y), cfg.val_size, cfg.split_seed)
        val = {"val_x": train_x[held], "val_y": train_y[held], "val_indices": held}
        train_x, train_y = train_x[keep], train_y[keep]
    data = replace(
        data,
        train_x=train_x,
        train_y=train_y,
        test_x=data.test_x[: cfg.test_size],
        test_y=data.test_y[: cfg.test_size],
        **val,
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
