"""The paper's evaluations of a trained classifier read as a density model (Section 5).

- :func:`generate_samples`: class-conditional samples by projected gradient ascent on f_y (Fig. 2).
- :func:`gan_test`: the fraction of samples an independent judge assigns to their target (Table 1/2).
- :func:`density_ratios`: the dataset mean of p(x+η|y)/p(x|y) = exp(f_y(x+η) − f_y(x)) (Fig. 1).
- :func:`pixel_perturbation`: accuracy after replacing the least important pixels (Fig. 3).
- :func:`saliency_maps`: input gradients ∇ₓf_y (Fig. 4), drawn beside their images.
- :func:`evaluate_all`: all of the above on the test set, returning metrics and the files written
  (the pictures are drawn by trainer.figures; this module imports no plotting).

Every function works on any module mapping (B, C, H, W) images in [0, 1] to (B, K) logits, runs
batched on the model's device in eval mode (the model's mode is restored afterwards) and draws its
noise from a seeded CPU generator, so results do not depend on the device or on the batch size.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from trainer import items as item_codes
from trainer import losses
from trainer.config import CONSTANT_FILL, EvalConfig, LossConfig
from trainer.groundtruth import flat_samples, groundtruth_metrics
from trainer.keys import EVAL_SECONDS, GAN_TEST, density_ratio_key, hi_key, lo_key, pixel_perturbation_key
from trainer.precision import fp32_precision
from trainer.stats import Interval, mean_interval, proportion

# Images per forward/backward pass. Bounds memory; results do not depend on it. 256 keeps the
# evaluation's input gradients (about 1.8 GiB for a ResNet-18 on CIFAR, trainer.memory) below a
# score-matching training step's at batch 128, so four trials fit a 24 GB GPU.
BATCH_SIZE = 256
FILLS = ("image_mean", "constant")  # removed pixels: each image's mean, or CONSTANT_FILL


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextlib.contextmanager
def _eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put models in eval mode (BatchNorm uses running statistics) and restore their modes after."""
    modes = [m.training for m in models]
    try:
        for m in models:
            m.eval()
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _randn(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> Tensor:
    # Drawn on the CPU so the same seed gives the same noise on every device.
    return torch.randn(tuple(shape), generator=generator).to(device)


def input_gradient(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """∇ₓf_y(x) per sample and the logits, for a model already in eval mode.

    In eval mode samples do not interact, so the gradient of Σᵢ f_{yᵢ}(xᵢ) is each sample's own
    (trainer.losses.input_gradient, the trainer's one input-gradient helper). Only the input
    gradient is computed; parameter gradients are left untouched.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits, f_y = losses.true_logit(model, x, y)
        grad = losses.input_gradient(f_y, x)
    return grad, logits.detach()


def generate_samples(
    model: nn.Module,
    targets: Tensor,
    *,
    shape: Sequence[int],
    steps: int = 500,
    lr: float = 0.1,
    prior: float = 0.01,
    init_mean: float = 0.5,
    init_std: float = 0.2,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
) -> Tensor:
    """Class-conditional samples by projected gradient ascent on log p(x|y) = f_y(x) (Fig. 2).

    x₀ ~ N(init_mean, init_std²) clamped to [0, 1], then ``steps`` times
    x ← clamp(x + lr·(∇ₓf_y(x) − prior·(x − 0.5)), 0, 1).
    ``targets``: (N,) class indices; ``shape``: (C, H, W) of one image. Returns (N, C, H, W) in [0, 1].
    """
    device = _device(model)
    targets = targets.to(device=device, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    # The whole start is drawn at once so the result does not depend on batch_size.
    x0 = _randn((len(targets), *shape), generator, device)
    x0 = (init_mean + init_std * x0).clamp_(0, 1)
    out = torch.empty_like(x0)
    with _eval_mode(model):
        for part in _chunks(len(targets), batch_size):
            x, y = x0[part], targets[part]
            for _ in range(steps):
                grad, _ = input_gradient(model, x, y)
                x = (x + lr * (grad - prior * (x - 0.5))).clamp_(0, 1)
            out[part] = x
    return out


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = BATCH_SIZE) -> Tensor:
    """Predicted classes (N,) of ``images`` in eval mode, on the model's device."""
    device = _device(model)
    with _eval_mode(model):
        preds = [model(images[part].to(device)).argmax(1) for part in _chunks(len(images), batch_size)]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=device)


def gan_test_items(samples: Tensor, targets: Tensor, judge: nn.Module, batch_size: int = BATCH_SIZE) -> Tensor:
    """Per sample, whether ``judge`` classifies it as its target (bool, on the judge's device)."""
    preds = predict(judge, samples, batch_size)
    return preds == targets.to(preds.device)


def gan_test(samples: Tensor, targets: Tensor, judge: nn.Module, batch_size: int = BATCH_SIZE) -> float:
    """GAN-test: the fraction of ``samples`` that ``judge`` classifies as their ``targets``."""
    accepted = gan_test_items(samples, targets, judge, batch_size)
    return accepted.sum().item() / max(len(accepted), 1)


@torch.no_grad()
def log_density_ratios(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    sigmas: Sequence[float] | None = None,
    draws: int = 1,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
) -> dict[float, Tensor]:
    """Per σ, the log-ratios f_y(x+η) − f_y(x) of every image × draw (float64, on the model's device):
    what :func:`density_ratios` averages. The noisy images are not clamped."""
    sigmas = list(EvalConfig().density_sigmas if sigmas is None else sigmas)
    device = _device(model)
    labels = labels.to(device=device, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    log_ratios: dict[float, list[Tensor]] = {float(s): [] for s in sigmas}
    # IEEE float32 (trainer.precision): at σ = 1e-4 a log-ratio is about 1e-4·‖∇ₓf_y‖, below
    # TF32's rounding of a logit (docs/performance-gpu.md; `python -m trainer.bench --precision`
    # measures both precisions against float64).
    with _eval_mode(model), fp32_precision("ieee", device):
        for part in _chunks(len(images), batch_size):
            x, y = images[part].to(device), labels[part, None]
            clean = model(x).gather(1, y)
            for sigma in sigmas:
                for _ in range(draws):
                    noisy = model(x + sigma * _randn(x.shape, generator, device)).gather(1, y)
                    log_ratios[float(sigma)].append((noisy - clean).flatten().double())
    return {sigma: torch.cat(parts) for sigma, parts in log_ratios.items()}


def ratio_interval(log_ratios: Tensor) -> Interval:
    """The mean of exp(log_ratios) (a log-mean-exp, so large ratios do not overflow) with its 95 %
    interval mean ± 1.96·sd/√n over the images × draws (:func:`trainer.stats.mean_interval`, on the
    ratios scaled by their largest so that none overflows), the lower end kept at 0 or above."""
    values = log_ratios.double().flatten()
    mean = (torch.logsumexp(values, 0) - math.log(len(values))).exp().item()
    top = values.max()
    scaled = mean_interval((values - top).exp().tolist())
    scale = math.exp(top.item()) if top.item() < 700 else math.inf  # exp(709.8) overflows a double
    lo, hi = scaled.lo * scale, scaled.hi * scale
    return Interval(mean, max(lo, 0.0) if math.isfinite(lo) else lo, hi)


def density_ratios(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    sigmas: Sequence[float] | None = None,
    draws: int = 1,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
) -> dict[float, float]:
    """Dataset mean of p(x+η|y)/p(x|y) = exp(f_y(x+η) − f_y(x)), η ~ N(0, σ²I), per σ (Fig. 1).

    ``draws`` noise draws per image; the mean over images × draws is a log-mean-exp of the
    log-ratios, so large ratios do not overflow. ``sigmas`` default to EvalConfig's grid
    (1e-4 … 1e-1). The noisy images are not clamped: the ratio probes the density along η.
    """
    logs = log_density_ratios(model, images, labels, sigmas, draws, seed, batch_size)
    return {sigma: (torch.logsumexp(v, 0) - math.log(len(v))).exp().item() for sigma, v in logs.items()}


def pixel_importance(gradients: Tensor) -> Tensor:
    """Importance (N, H, W) of each pixel: the std over channels of the input gradient (the
    released code's rule). A single channel has no spread, so there it is |gradient|."""
    if gradients.shape[1] == 1:
        return gradients[:, 0].abs()
    return gradients.std(dim=1)


def fill_values(images: Tensor, fill: str) -> Tensor:
    """What removed pixels become, broadcastable to ``images`` (N, C, H, W).

    ``image_mean`` (the paper: "the mean pixel value of the image"): each image's mean pixel,
    i.e. its per-channel mean over H×W, so a removed pixel keeps the image's average colour.
    ``constant``: 0.5 in every channel (the released code).
    """
    if fill == "image_mean":
        return images.mean(dim=(2, 3), keepdim=True)
    if fill == "constant":
        return torch.full_like(images[:, :, :1, :1], CONSTANT_FILL)
    raise ValueError(f"fill must be one of {FILLS}, not {fill!r}")


def remove_pixels(images: Tensor, order: Tensor, count: int, fill: Tensor) -> Tensor:
    """Replace, in every image, the ``count`` pixels listed first in ``order`` (all channels).

    ``order``: (N, H·W) flat pixel indices, least important first; ``fill``: from :func:`fill_values`.
    """
    n, c, h, w = images.shape
    mask = torch.zeros(n, h * w, dtype=torch.bool, device=images.device)
    mask.scatter_(1, order[:, :count], True)
    return torch.where(mask.view(n, 1, h, w), fill, images)


def pixel_perturbation(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    explainer: nn.Module | None = None,
    fractions: Sequence[float] | None = None,
    fill: str = "image_mean",
    batch_size: int = BATCH_SIZE,
) -> dict[float, float]:
    """Discriminative pixel perturbation (Fig. 3): accuracy of ``model`` after the least important
    round(fraction·H·W) pixels of each image are replaced by ``fill`` (see :func:`fill_values`).

    Importance comes from the ``explainer``'s input gradients of the true-label logit (default: the
    model itself, Fig. 3a; another model gives Fig. 3b). ``fractions`` default to
    logspace(−2, 0, 25); fraction 0 gives the clean accuracy. Returns {fraction: accuracy}.
    """
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, not {fill!r}")
    fractions = [float(f) for f in (np.logspace(-2, 0, 25) if fractions is None else fractions)]
    if any(not 0 <= f <= 1 for f in fractions):
        raise ValueError(f"fractions must lie in [0, 1], got {fractions}")
    explainer = model if explainer is None else explainer
    device = _device(model)
    labels = labels.to(device=device, dtype=torch.long)
    correct = torch.zeros(len(fractions), device=device)
    with _eval_mode(model, explainer):
        for part in _chunks(len(images), batch_size):
            x, y = images[part].to(device), labels[part]
            grad, _ = input_gradient(explainer, x.to(_device(explainer)), y.to(_device(explainer)))
            importance = pixel_importance(grad.to(device)).flatten(1)
            # Stable sort: ties keep their raster order, so the result is deterministic.
            order = importance.argsort(dim=1, stable=True)
            fills = fill_values(x, fill)
            pixels = order.shape[1]
            with torch.no_grad():
                for i, fraction in enumerate(fractions):
                    perturbed = remove_pixels(x, order, round(fraction * pixels), fills)
                    correct[i] += (model(perturbed).argmax(1) == y).sum()
    accuracy = (correct / max(len(images), 1)).tolist()
    return dict(zip(fractions, accuracy))


def saliency_maps(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = BATCH_SIZE) -> Tensor:
    """Input gradients ∇ₓf_y of the true-label logit (Fig. 4), (N, C, H, W) on the model's device."""
    device = _device(model)
    labels = labels.to(device=device, dtype=torch.long)
    with _eval_mode(model):
        grads = [
            input_gradient(model, images[part].to(device), labels[part])[0]
            for part in _chunks(len(images), batch_size)
        ]
    return torch.cat(grads)


def evaluate_all(
    model: nn.Module,
    data,
    cfg: EvalConfig,
    *,
    judge: nn.Module | None,
    out_dir: str | Path,
    seed: int,
    loss: LossConfig | None = None,
    items: dict[str, Tensor] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """Run every evaluation on ``data``'s test set and write images and curves under ``out_dir``.

    Returns ``(metrics, files)``: metrics keyed by trainer.keys (GAN-test when a judge is given,
    density ratios, pixel-perturbation accuracies, groundtruth metrics when ``data.density`` is
    known, with the floor eq. 4 can reach for ``loss`` (the run's loss config), evaluation
    seconds); files {"samples", "saliency", "density_ratios",
    "pixel_perturbation", "eval", "items"} -> path. ``items.json`` holds per-item outcomes
    (:mod:`trainer.items`) by metric key: GAN-test's per sample, and those passed in ``items``
    (the training loop's per-image correctness of this epoch's val/test accuracy).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    test_x, test_y = data.test_x, data.test_y
    shape = tuple(test_x.shape[1:])
    metrics: dict[str, float] = {}

    # Targets are the test labels in order, cycled when there are fewer test images than samples.
    targets = test_y[torch.arange(cfg.samples, device=test_y.device) % len(test_y)]
    samples = generate_samples(
        model,
        targets,
        shape=shape,
        steps=cfg.steps,
        lr=cfg.step_size,
        prior=cfg.prior,
        init_mean=cfg.init_mean,
        init_std=cfg.init_std,
        seed=seed,
    )
    outcomes = dict(items or {})
    if judge is not None:
        outcomes[GAN_TEST] = gan_test_items(samples, targets, judge)
        metrics[GAN_TEST] = outcomes[GAN_TEST].sum().item() / max(len(samples), 1)
        interval = proportion(metrics[GAN_TEST], len(samples))  # Wilson over the samples
        metrics[lo_key(GAN_TEST)], metrics[hi_key(GAN_TEST)] = interval.lo, interval.hi

    # Each curve point with its 95 % interval beside it (<key>_lo, <key>_hi), as every reported number.
    n = cfg.density_images
    logs = log_density_ratios(model, test_x[:n], test_y[:n], cfg.density_sigmas, cfg.density_draws, seed)
    ratios = {}
    for sigma, values in logs.items():
        interval, key = ratio_interval(values), density_ratio_key(sigma)
        ratios[sigma] = metrics[key] = interval.value
        metrics[lo_key(key)], metrics[hi_key(key)] = interval.lo, interval.hi

    n = cfg.perturbation_images
    fractions = np.logspace(-2, 0, cfg.perturbation_points)
    accuracy = pixel_perturbation(model, test_x[:n], test_y[:n], fractions=fractions, fill=cfg.perturbation_fill)
    for fraction, value in accuracy.items():
        interval, key = proportion(value, len(test_x[:n])), pixel_perturbation_key(fraction)  # Wilson over the images
        metrics[key], metrics[lo_key(key)], metrics[hi_key(key)] = value, interval.lo, interval.hi

    if getattr(data, "density", None) is not None:
        # Sample likelihood's controls: the sampler's start (no step taken) and a flat model's samples.
        initial = generate_samples(model, targets, shape=shape, steps=0, init_mean=cfg.init_mean,
                                   init_std=cfg.init_std, seed=seed)
        flat = flat_samples(initial, cfg.steps, cfg.step_size, cfg.prior)
        metrics.update(groundtruth_metrics(model, data, samples, targets, loss=loss, start=initial, flat=flat))

    # The pictures (trainer.figures) load matplotlib only here, when an evaluation writes them.
    from trainer import figures

    n = min(cfg.grid_images, figures.MAX_TILES)  # tiles drawn: their saliency maps and the judge's verdicts
    saliency = saliency_maps(model, test_x[:n], test_y[:n])
    judged = None if judge is None else predict(judge, samples[:n])
    files = figures.write_all(
        data, cfg, samples=samples, targets=targets, saliency=saliency, judged=judged, ratios=ratios,
        accuracy=accuracy, gan_test_value=metrics.get(GAN_TEST), model_name=type(model).__name__, out_dir=out_dir,
    )
    curves = {
        "density_ratios": {"sigma": list(ratios), "ratio": list(ratios.values())},
        "pixel_perturbation": {
            "fraction": list(accuracy),
            "accuracy": list(accuracy.values()),
            "fill": cfg.perturbation_fill,
        },
        "samples": cfg.samples,
        "steps": cfg.steps,
        "seed": seed,
    }
    metrics[EVAL_SECONDS] = time.perf_counter() - start
    files["eval"] = out_dir / "eval.json"
    files["eval"].write_text(json.dumps({**curves, "metrics": metrics}, indent=2))
    files["items"] = out_dir / item_codes.FILE
    files["items"].write_text(json.dumps({key: item_codes.encode(v.cpu().numpy()) for key, v in outcomes.items()}))
    return metrics, {name: str(path) for name, path in files.items()}
