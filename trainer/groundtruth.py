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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer import keys, losses
from trainer.config import LossConfig
from trainer.data import Dataset

METRIC_BATCH = 256  # images per forward/backward in groundtruth_metrics


def optimal_scale(mu: float, sigma: float, dim: int, noise_std: float, draws: int = 1, estimator: str = "taylor") -> float:
    """a* minimising eq. 4's regularizer over the family f_y = −a/2·‖x − m_y‖² (module docstring).

    ``mu``: μ; ``sigma``: std of the estimator's noise v; ``dim``: D; ``noise_std``: σ_d of the
    data; ``draws``: K noise draws averaged per input; ``estimator``: taylor | central | hutchinson.
    """
    first_order = 1.0 if estimator == "taylor" else 0.0  # c: only Taylor keeps ∇ₓf_yᵀv
    var = noise_std**2
    return 1.0 / (var + 2 * mu * dim + (4 * mu + first_order * 8 * mu * var / sigma**2) / draws)


def fisher_divergence_rel_floor(
    mu: float, sigma: float, dim: int, noise_std: float, draws: int = 1, estimator: str = "taylor"
) -> float:
    """Relative Fisher divergence E‖∇f − s‖²/E‖s‖² = (1 − a*σ_d²)² at eq. 4's minimiser a* in the
    exact isotropic family (:func:`optimal_scale`): the best the score-matching regularizer can
    reach on isotropic ``gaussians`` data. 0 is a perfect score; 1 is a zero score."""
    a = optimal_scale(mu, sigma, dim, noise_std, draws, estimator)
    return (1.0 - a * noise_std**2) ** 2


def _logit_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """∇ₓ f_y(x) per sample (the model's implicit score), without touching parameter gradients."""
    x = x.detach().requires_grad_(True)
    return losses.input_gradient(losses.true_logit(model, x, y)[1], x)


def groundtruth_metrics(
    model: nn.Module, data: Dataset, samples: Tensor, targets: Tensor, loss: LossConfig | None = None
) -> dict[str, float]:
    """Alignment of the model's implicit density with the true one (``data.density`` must be set).

    On the test set, with g = ∇ₓf_y(x) and s = ∇ₓlog p(x|y):
    - SCORE_ALIGNMENT: mean cosine(g, s), in [−1, 1];
    - FISHER_DIVERGENCE: mean ‖g − s‖² (eq. 1 of the paper without its ½);
    - FISHER_DIVERGENCE_REL: that divided by mean ‖s‖² (0 is perfect, 1 is a zero score);
    and SAMPLE_LOGLIK: mean true log p(sample|target) / D, in nats per dimension, of the generated
    ``samples`` (B, C, H, W) under their ``targets`` (B,). When ``loss`` is score matching and the
    density is isotropic, also FISHER_DIVERGENCE_REL_FLOOR: :func:`fisher_divergence_rel_floor`
    for the loss's μ, σ, draws and estimator, beside the measured FISHER_DIVERGENCE_REL.
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
    metrics = {
        keys.SCORE_ALIGNMENT: cosine_sum / n,
        keys.FISHER_DIVERGENCE: sq_err_sum / n,
        keys.FISHER_DIVERGENCE_REL: sq_err_sum / sq_true_sum,
        keys.SAMPLE_LOGLIK: loglik,
    }
    if loss is not None and loss.kind == "score_matching" and density.isotropic:
        metrics[keys.FISHER_DIVERGENCE_REL_FLOOR] = fisher_divergence_rel_floor(
            loss.mu, loss.sigma, density.dim, density.noise_std, loss.samples, loss.estimator
        )
    return metrics
