"""The ground-truth testbed's metrics: how well a model's implicit density matches a known one.

The paper's hypothesis is that input-gradients explain well when the classifier's implicit density
p_θ(x|y) ∝ exp(f_y(x)) is aligned with the data density p(x|y). On real images that alignment can only
be argued from proxies; on the ``gaussians`` dataset (trainer.data, :class:`GaussianDensity`) p(x|y)
is a known Gaussian, so eq. 1 of the paper, the Fisher divergence E‖∇ₓf_y(x) − ∇ₓlog p(x|y)‖², is
computable exactly on test points (:func:`groundtruth_metrics`).

What eq. 4 can reach there (:func:`fisher_divergence_rel_floor`): take the exact family for
isotropic Gaussian classes, f_y(x) = −a/2·‖x − m_y‖² with the true means m_y and one free scale a,
data x = m_y + ε, ε ~ N(0, σ_d²I) in D dimensions, and the score-matching regularizer
R = E[h] + ½E‖∇ₓf_y‖² + μE[h²] with h averaged over K noise draws v ~ N(0, σ²I). For this family
∇ₓf_y = −aε and ∇²ₓf_y = −aI, so E[h] = tr H = −aD, ½E‖∇ₓf_y‖² = ½a²Dσ_d², and

    E[h²] = (tr H)² + (2‖H‖²_F + c·4‖∇ₓf_y‖²/σ²)/K = a²D² + a²(2D + c·4Dσ_d²/σ²)/K,

where c = 1 for the Taylor estimator (its first-order term 2∇ₓf_yᵀv/σ² does not cancel) and c = 0
for the central and Hutchinson estimators. R(a) = −aD + ½a²Dσ_d² + μE[h²] is a parabola in a,
minimised at

    a* = 1 / (σ_d² + 2μD + (4μ + c·8μσ_d²/σ²)/K),

and the true score is −ε/σ_d², so the relative Fisher divergence there is (1 − a*σ_d²)². With the
paper's Taylor estimator (c = 1, K = 1) the 8μσ_d²/σ² term dominates for small σ: the stability
term's hidden gradient-norm penalty keeps a* far below the true 1/σ_d² even with exact means.
The unbiased stability term (``loss.stability: unbiased``) is h₁·h₂ of two independent estimates,
whose mean is (tr H)² = a²D² with no noise terms, so there a* = 1 / (σ_d² + 2μD) for every
estimator and K. At D = 64, σ_d = 0.1, σ = 0.01 the floor is 0.816 (paper h²) against 0.315
(h₁h₂) at μ = 1e-4, and 0.979 against 0.860 at μ = 1e-3.

Every metric comes with its 95 % interval over the test points (or samples), logged as
``<key>_lo``/``<key>_hi`` (trainer.stats). Sample log-likelihood comes with two controls
(:data:`trainer.keys.SAMPLE_LOGLIK_START`, ``..._FLAT``): it rewards samples that stay near the
class means' neighbourhood, which the initial distribution and a flat model (zero input gradient)
already are, so a model's value means alignment only where it beats both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer import keys, losses
from trainer.config import LossConfig
from trainer.data import Dataset
from trainer.stats import Interval, mean_interval

METRIC_BATCH = 256  # images per forward/backward in groundtruth_metrics


def optimal_scale(
    mu: float,
    sigma: float,
    dim: int,
    noise_std: float,
    draws: int = 1,
    estimator: str = "taylor",
    stability: str = "biased",
) -> float:
    """a* minimising eq. 4's regularizer over the family f_y = −a/2·‖x − m_y‖² (module docstring).

    ``mu``: μ; ``sigma``: std of the estimator's noise v; ``dim``: D; ``noise_std``: σ_d of the
    data; ``draws``: K noise draws averaged per input; ``estimator``: taylor | central | hutchinson;
    ``stability``: biased (the paper's mean h², with the estimator's noise) or unbiased (mean h₁h₂,
    whose expectation is (tr H)²: no noise terms, so σ, K and the estimator drop out).
    """
    var = noise_std**2
    if stability == "unbiased":
        return 1.0 / (var + 2 * mu * dim)
    first_order = 1.0 if estimator == "taylor" else 0.0  # c: only Taylor keeps ∇ₓf_yᵀv
    return 1.0 / (var + 2 * mu * dim + (4 * mu + first_order * 8 * mu * var / sigma**2) / draws)


def fisher_divergence_rel_floor(
    mu: float,
    sigma: float,
    dim: int,
    noise_std: float,
    draws: int = 1,
    estimator: str = "taylor",
    stability: str = "biased",
) -> float:
    """Relative Fisher divergence E‖∇f − s‖²/E‖s‖² = (1 − a*σ_d²)² at eq. 4's minimiser a* in the
    exact isotropic family (:func:`optimal_scale`, with the loss's ``stability`` term): the best
    the score-matching regularizer can reach on isotropic ``gaussians`` data. 0 is a perfect
    score; 1 is a zero score."""
    a = optimal_scale(mu, sigma, dim, noise_std, draws, estimator, stability)
    return (1.0 - a * noise_std**2) ** 2


def flat_samples(start: Tensor, steps: int, lr: float, prior: float) -> Tensor:
    """The samples a flat model (∇ₓf_y = 0) would give from ``start``: the sampler's update
    x ← clamp(x + lr·(0 − prior·(x − 0.5)), 0, 1) (trainer.evaluation.generate_samples), ``steps`` times."""
    x = start.clone()
    for _ in range(steps):
        x = (x - lr * prior * (x - 0.5)).clamp_(0, 1)
    return x


def ratio_interval(num: Tensor, den: Tensor) -> Interval:
    """Σnum/Σden with its delta-method interval over paired per-item values: the mean of
    R + (numᵢ − R·denᵢ)/mean(den), whose mean is exactly R and whose spread is R's linearisation."""
    num, den = num.double(), den.double()
    ratio = (num.sum() / den.sum()).item()
    linear = ratio + (num - ratio * den) / den.mean()
    return mean_interval(linear.tolist())


def _log(metrics: dict[str, float], key: str, interval: Interval) -> None:
    """``key`` and its interval as ``key_lo``/``key_hi``."""
    metrics[key], metrics[keys.lo_key(key)], metrics[keys.hi_key(key)] = interval.value, interval.lo, interval.hi


def _logit_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """∇ₓ f_y(x) per sample (the model's implicit score), without touching parameter gradients."""
    x = x.detach().requires_grad_(True)
    return losses.input_gradient(losses.true_logit(model, x, y)[1], x)


def groundtruth_metrics(
    model: nn.Module,
    data: Dataset,
    samples: Tensor,
    targets: Tensor,
    loss: LossConfig | None = None,
    start: Tensor | None = None,
    flat: Tensor | None = None,
) -> dict[str, float]:
    """Alignment of the model's implicit density with the true one (``data.density`` must be set).

    On the test set, with g = ∇ₓf_y(x) and s = ∇ₓlog p(x|y):
    - SCORE_ALIGNMENT: mean cosine(g, s), in [−1, 1];
    - FISHER_DIVERGENCE: mean ‖g − s‖² (eq. 1 of the paper without its ½);
    - FISHER_DIVERGENCE_REL: that divided by mean ‖s‖² (0 is perfect, 1 is a zero score);
    and SAMPLE_LOGLIK: mean true log p(sample|target) / D, in nats per dimension, of the generated
    ``samples`` (B, C, H, W) under their ``targets`` (B,); with ``start`` (the sampler's initial
    points) and ``flat`` (:func:`flat_samples`), the same for those: SAMPLE_LOGLIK_START and
    SAMPLE_LOGLIK_FLAT, its controls. Each comes with its 95 % interval (``_lo``/``_hi``): the
    mean over test points or samples (:func:`trainer.stats.mean_interval`), the relative
    divergence by the delta method (:func:`ratio_interval`). When ``loss`` is score matching and
    the density is isotropic, also FISHER_DIVERGENCE_REL_FLOOR: :func:`fisher_divergence_rel_floor`
    for the loss's μ, σ, draws, estimator and stability term, beside the measured FISHER_DIVERGENCE_REL.
    """
    density = data.density
    was_training = model.training
    model.eval()
    cosine, sq_err, sq_true = [], [], []  # per test point
    with torch.enable_grad():
        for begin in range(0, len(data.test_y), METRIC_BATCH):
            x = data.test_x[begin : begin + METRIC_BATCH]
            y = data.test_y[begin : begin + METRIC_BATCH]
            model_score = _logit_gradient(model, x, y).flatten(1)
            true_score = density.score(x, y).flatten(1)
            cosine.append(F.cosine_similarity(model_score, true_score, dim=1))
            sq_err.append((model_score - true_score).square().sum(1))
            sq_true.append(true_score.square().sum(1))
    model.train(was_training)
    cosine, sq_err, sq_true = torch.cat(cosine), torch.cat(sq_err), torch.cat(sq_true)
    metrics: dict[str, float] = {}
    _log(metrics, keys.SCORE_ALIGNMENT, mean_interval(cosine.tolist()))
    _log(metrics, keys.FISHER_DIVERGENCE, mean_interval(sq_err.tolist()))
    _log(metrics, keys.FISHER_DIVERGENCE_REL, ratio_interval(sq_err, sq_true))
    draws = {keys.SAMPLE_LOGLIK: samples, keys.SAMPLE_LOGLIK_START: start, keys.SAMPLE_LOGLIK_FLAT: flat}
    with torch.no_grad():
        for key, points in draws.items():
            if points is not None:
                per_sample = density.log_prob(points.float(), targets) / density.dim
                _log(metrics, key, mean_interval(per_sample.tolist()))
    if loss is not None and loss.kind == "score_matching" and density.isotropic:
        metrics[keys.FISHER_DIVERGENCE_REL_FLOOR] = fisher_divergence_rel_floor(
            loss.mu, loss.sigma, density.dim, density.noise_std, loss.samples, loss.estimator, loss.stability
        )
    return metrics
