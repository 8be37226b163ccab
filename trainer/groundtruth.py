"""A ground-truth testbed: images with a known class-conditional density, and the metrics it allows.

The paper's hypothesis is that input-gradients explain well when the classifier's implicit density
p_θ(x|y) ∝ exp(f_y(x)) is aligned with the data density p(x|y). On real images that alignment can only
be argued from proxies; here p(x|y) is a known Gaussian, so eq. 1 of the paper, the Fisher divergence
E‖∇ₓf_y(x) − ∇ₓlog p(x|y)‖², is computable exactly on test points.

The dataset ``gaussians``: C classes of images with ``channels × image_size × image_size`` pixels,

    x = m_y + ε,    ε ~ N(0, Σ),    Σ = noise_std² · (I_channels ⊗ K),

where each class mean m_y is a smooth random image (a 4×4 grid of values uniform in [0.2, 0.8],
bilinearly upsampled, so every mean pixel lies in [0.2, 0.8]) and K is the per-channel pixel
correlation: the identity (``covariance: isotropic``) or a squared-exponential kernel over pixel
positions plus a nugget, normalised to unit diagonal (``covariance: smooth``). Either way each
pixel's standard deviation is ``noise_std``. Channels are independent and share K.

Samples are NOT clamped to [0, 1]: clamping would put point masses on the borders and the density
would no longer be the Gaussian above. With means in [0.2, 0.8] and the default noise_std = 0.1
(two standard deviations of headroom from the nearest border), well under 1% of pixels fall
outside [0, 1]. Everything, means, labels, noise and the train/test split, is drawn from one
generator seeded with ``split_seed``. Train on it with ``data.augment: false``: random crops and
flips would change the training distribution away from p(x|y).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer import keys
from trainer.config import DataConfig
from trainer.data import Dataset

DEFAULT_TRAIN_SIZE = 2000  # images, when data.train_size is None
DEFAULT_TEST_SIZE = 500  # images, when data.test_size is None
MEAN_GRID = 4  # side of the random grid upsampled into each class mean (low frequency)
MEAN_LOW, MEAN_HIGH = 0.2, 0.8  # range of the mean pixels: headroom for the unclamped noise
SMOOTH_LENGTHSCALE = 1.5  # pixels: correlation length of the smooth covariance
SMOOTH_NUGGET = 0.1  # added to the kernel's diagonal so K is well conditioned (eigenvalues ≥ 0.09)
METRIC_BATCH = 256  # images per forward/backward in groundtruth_metrics


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
    """The ``gaussians`` dataset: deterministic in ``cfg.split_seed``; ``.density`` is the true p(x|y).

    Split sizes are ``cfg.train_size`` / ``cfg.test_size`` images (DEFAULT_TRAIN_SIZE /
    DEFAULT_TEST_SIZE when None). Tensors are float32 on the CPU, unclamped (see the module docstring).
    """
    generator = torch.Generator().manual_seed(cfg.split_seed)
    density = make_density(cfg, generator)
    train_x, train_y = _draw_split(density, cfg.train_size or DEFAULT_TRAIN_SIZE, generator)
    test_x, test_y = _draw_split(density, cfg.test_size or DEFAULT_TEST_SIZE, generator)
    return Dataset(
        name="gaussians",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=cfg.num_classes,
        density=density,
    )


def _logit_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """∇ₓ f_y(x) per sample (the model's implicit score), without touching parameter gradients."""
    x = x.detach().requires_grad_(True)
    logit = model(x).gather(1, y[:, None]).sum()
    (grad,) = torch.autograd.grad(logit, x)
    return grad


def groundtruth_metrics(model: nn.Module, data: Dataset, samples: Tensor, targets: Tensor) -> dict[str, float]:
    """Alignment of the model's implicit density with the true one (``data.density`` must be set).

    On the test set, with g = ∇ₓf_y(x) and s = ∇ₓlog p(x|y):
    - SCORE_ALIGNMENT: mean cosine(g, s), in [−1, 1];
    - FISHER_DIVERGENCE: mean ‖g − s‖² (eq. 1 of the paper without its ½);
    - FISHER_DIVERGENCE_REL: that divided by mean ‖s‖² (0 is perfect, 1 is a zero score);
    and SAMPLE_LOGLIK: mean true log p(sample|target) / D, in nats per dimension, of the generated
    ``samples`` (B, C, H, W) under their ``targets`` (B,).
    """
    density = data.density
    was_training = model.training
    model.eval()
    cosine_sum = sq_err_sum = sq_true_sum = 0.0
    with torch.enable_grad():
        for start in range(0, len(data.test_y), METRIC_BATCH):
            x = data.test_x[start : start + METRIC_BATCH]
            y = data.test_y[start : start + METRIC_BATCH]
            model_score = _logit_gradient(model, x, y).flatten(1)
            true_score = density.score(x, y).flatten(1)
            cosine_sum += F.cosine_similarity(model_score, true_score, dim=1).sum().item()
            sq_err_sum += (model_score - true_score).square().sum().item()
            sq_true_sum += true_score.square().sum().item()
    model.train(was_training)
    n = len(data.test_y)
    with torch.no_grad():
        loglik = density.log_prob(samples.float(), targets).mean().item() / density.dim
    return {
        keys.SCORE_ALIGNMENT: cosine_sum / n,
        keys.FISHER_DIVERGENCE: sq_err_sum / n,
        keys.FISHER_DIVERGENCE_REL: sq_err_sum / sq_true_sum,
        keys.SAMPLE_LOGLIK: loglik,
    }
