"""Tests of the ground-truth testbed: the known Gaussian density, its dataset, the alignment metrics
and the Fisher-divergence floor of eq. 4 (against a brute-force minimisation of the loss code's own
Monte-Carlo objective)."""

from __future__ import annotations

import pytest
import torch
from scipy.optimize import minimize_scalar
from torch import nn

from trainer import keys
from trainer.config import DataConfig, LossConfig
from trainer.data import GaussianDensity, load_gaussians, make_density, smooth_kernel
from trainer.groundtruth import (fisher_divergence_rel_floor, flat_samples, groundtruth_metrics, optimal_scale,
                                 ratio_interval)
from trainer.losses import compute_loss

COVARIANCES = ["isotropic", "smooth"]


def small_cfg(**kw) -> DataConfig:
    base = dict(dataset="gaussians", num_classes=3, channels=2, image_size=4, train_size=60, test_size=30)
    return DataConfig(**{**base, **kw})


class TrueLogDensity(nn.Module):
    """A 'classifier' whose logits are exactly log p(x|y) for every class y: its implicit density is the truth."""

    def __init__(self, density: GaussianDensity) -> None:
        super().__init__()
        self.density = density

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        classes = range(self.density.num_classes)
        return torch.stack([self.density.log_prob(x, torch.full((len(x),), c)) for c in classes], dim=1)


class ConstantModel(nn.Module):
    """Logits that do not depend on x: a zero implicit score."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.arange(num_classes, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), -1) + 0 * x.flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_log_prob_matches_multivariate_normal(covariance):
    cfg = small_cfg(covariance=covariance, noise_std=0.2)
    density = make_density(cfg, torch.Generator().manual_seed(1))
    # Naive reference: the full D×D covariance I_channels ⊗ (noise_std² K), D = channels·H·W.
    full_cov = torch.block_diag(*[density.pixel_covariance] * cfg.channels)
    x = torch.rand(5, cfg.channels, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0])
    reference = torch.distributions.MultivariateNormal(density.means[y].flatten(1), covariance_matrix=full_cov)
    torch.testing.assert_close(density.log_prob(x, y), reference.log_prob(x.flatten(1)))


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_score_is_autograd_of_log_prob(covariance):
    density = make_density(small_cfg(covariance=covariance), torch.Generator().manual_seed(2))
    x = torch.rand(6, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    (autograd_score,) = torch.autograd.grad(density.log_prob(x, y).sum(), x)
    torch.testing.assert_close(density.score(x, y), autograd_score)
    # Any dtype: float32 inputs give float32 outputs with the same values.
    torch.testing.assert_close(density.score(x.detach().float(), y), autograd_score.float(), rtol=1e-4, atol=1e-3)


def test_smooth_kernel_is_a_positive_definite_correlation():
    kernel = smooth_kernel(5)
    torch.testing.assert_close(kernel.diagonal(), torch.ones(25, dtype=torch.float64))
    torch.testing.assert_close(kernel, kernel.T)
    assert torch.linalg.eigvalsh(kernel).min() > 0.05
    assert kernel[0, 1] > 0.5  # neighbouring pixels are strongly correlated


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_samples_have_the_stated_mean_and_covariance(covariance):
    cfg = small_cfg(covariance=covariance, channels=1, noise_std=0.1)
    density = make_density(cfg, torch.Generator().manual_seed(3))
    n = 40_000
    x = density.sample(torch.full((n,), 1), torch.Generator().manual_seed(4)).flatten(1)
    # Tolerances: 5 standard errors. Mean: noise_std/√n ≈ 5e-4 per pixel. Covariance entry:
    # at most noise_std²·√(2/n) ≈ 7e-5.
    std_err_mean = cfg.noise_std / n**0.5
    torch.testing.assert_close(x.mean(0), density.means[1].flatten(), rtol=0, atol=5 * std_err_mean)
    std_err_cov = cfg.noise_std**2 * (2 / n) ** 0.5
    torch.testing.assert_close(torch.cov(x.T), density.pixel_covariance, rtol=0, atol=5 * std_err_cov)


def test_dataset_is_deterministic_and_has_the_configured_shapes():
    cfg = small_cfg(covariance="smooth", split_seed=7)
    a, b = load_gaussians(cfg), load_gaussians(cfg)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.density.means, b.density.means)
    other = load_gaussians(small_cfg(covariance="smooth", split_seed=8))
    assert not torch.equal(a.train_x, other.train_x)
    assert a.train_x.shape == (60, 2, 4, 4) and a.test_x.shape == (30, 2, 4, 4)
    assert a.train_x.dtype == torch.float32 and a.train_y.dtype == torch.int64
    assert a.num_classes == 3 and torch.bincount(a.train_y).tolist() == [20, 20, 20]
    # Means are smooth images inside [0.2, 0.8]; the unclamped samples stay mostly in [0, 1].
    assert a.density.means.min() >= 0.2 and a.density.means.max() <= 0.8
    assert ((a.train_x < 0) | (a.train_x > 1)).float().mean() < 0.01


def test_default_split_sizes():
    data = load_gaussians(DataConfig(dataset="gaussians"))
    assert data.train_x.shape == (2000, 1, 8, 8) and data.test_x.shape == (500, 1, 8, 8)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_true_log_density_model_is_perfectly_aligned(covariance):
    data = load_gaussians(small_cfg(covariance=covariance))
    model = TrueLogDensity(data.density)
    metrics = groundtruth_metrics(model, data, data.test_x, data.test_y)
    assert metrics[keys.SCORE_ALIGNMENT] == pytest.approx(1.0, abs=1e-5)
    assert metrics[keys.FISHER_DIVERGENCE_REL] == pytest.approx(0.0, abs=1e-8)
    assert metrics[keys.FISHER_DIVERGENCE] == pytest.approx(0.0, abs=1e-6 * data.density.dim / 0.1**2)
    # Samples = test points: the per-dimension log-likelihood is the true one, averaged.
    expected = data.density.log_prob(data.test_x, data.test_y).mean().item() / data.density.dim
    assert metrics[keys.SAMPLE_LOGLIK] == pytest.approx(expected, rel=1e-6)


def test_constant_model_has_zero_alignment():
    data = load_gaussians(small_cfg())
    model = ConstantModel(data.num_classes).train()
    metrics = groundtruth_metrics(model, data, data.test_x, data.test_y)
    assert metrics[keys.SCORE_ALIGNMENT] == 0.0
    # A zero score misses the whole true score: relative Fisher divergence 1.
    assert metrics[keys.FISHER_DIVERGENCE_REL] == pytest.approx(1.0)
    assert model.training  # the metrics restore the model's mode
    assert model.bias.grad is None  # and leave parameter gradients alone


def test_sample_loglik_prefers_samples_near_the_class_mean():
    data = load_gaussians(small_cfg())
    model = ConstantModel(data.num_classes)
    targets = torch.tensor([0, 1, 2])
    at_means = groundtruth_metrics(model, data, data.density.means[targets].float(), targets)
    uniform = groundtruth_metrics(model, data, torch.rand(3, 2, 4, 4), targets)
    assert at_means[keys.SAMPLE_LOGLIK] > uniform[keys.SAMPLE_LOGLIK]


def test_registry_loads_gaussians_with_its_density():
    from trainer.data import load_dataset

    cfg = small_cfg(covariance="smooth", train_size=40, test_size=12, val_size=0)
    data = load_dataset(cfg, "cpu")
    direct = load_gaussians(cfg)
    assert data.name == "gaussians" and isinstance(data.density, GaussianDensity)
    assert data.train_x.shape == (40, 2, 4, 4) and data.test_x.shape == (12, 2, 4, 4)
    assert torch.equal(data.train_x, direct.train_x) and torch.equal(data.test_y, direct.test_y)
    assert data.in_channels == 2 and data.image_size == 4
    # The default validation split (a tenth) keeps 4 of the 40 training images apart.
    split = load_dataset(cfg.model_copy(update={"val_size": 0.1}), "cpu")
    assert split.train_x.shape[0] == 36 and split.val_x.shape == (4, 2, 4, 4)
    held = split.val_indices
    kept = torch.tensor([i for i in range(40) if i not in set(held.tolist())])
    assert torch.equal(split.val_x, direct.train_x[held]) and torch.equal(split.train_x, direct.train_x[kept])


def test_short_run_on_gaussians_reports_the_groundtruth_metrics(tmp_path):
    from trainer.train import run

    cfg = {
        "data": {"dataset": "gaussians", "augment": False, "num_classes": 3, "image_size": 4,
                 "train_size": 64, "test_size": 24},
        "model": {"arch": "resnet9", "width": 0.0625},
        "loss": {"preset": "score_matching"},
        "epochs": 1,
        "batch_size": 32,
        "device": "cpu",
        "eval": {"samples": 8, "steps": 2, "density_images": 8, "perturbation_images": 8,
                 "perturbation_points": 2, "grid_images": 4},
    }
    reports = []
    final = run(cfg, report=lambda metrics, files: reports.append(metrics), out_dir=tmp_path)
    assert final["status"] == "finished" and reports[-1]["status"] == "finished"
    for key in (keys.SCORE_ALIGNMENT, keys.FISHER_DIVERGENCE, keys.FISHER_DIVERGENCE_REL, keys.SAMPLE_LOGLIK):
        assert key in final and key in reports[-1], key
    assert -1.0 <= final[keys.SCORE_ALIGNMENT] <= 1.0
    assert final[keys.FISHER_DIVERGENCE] > 0 and final[keys.FISHER_DIVERGENCE_REL] > 0
    # Reported beside the measured value: the floor for this run's μ, σ, D = 16 and σ_d = 0.1.
    assert final[keys.FISHER_DIVERGENCE_REL_FLOOR] == fisher_divergence_rel_floor(1e-4, 0.01, 16, 0.1)
    # Every testbed metric and sample likelihood's two controls carry their 95 % interval.
    for key in (keys.SCORE_ALIGNMENT, keys.FISHER_DIVERGENCE, keys.FISHER_DIVERGENCE_REL, keys.SAMPLE_LOGLIK,
                keys.SAMPLE_LOGLIK_START, keys.SAMPLE_LOGLIK_FLAT, keys.TEST_ACC, keys.VAL_ACC):
        assert final[keys.lo_key(key)] <= final[key] <= final[keys.hi_key(key)], key
        assert final[keys.lo_key(key)] < final[keys.hi_key(key)], key


class ScaledQuadratic(nn.Module):
    """The exact isotropic family: logits f_c(x) = −a/2·‖x − m_c‖² for every class c."""

    def __init__(self, means: torch.Tensor, a: float) -> None:
        super().__init__()
        self.means, self.a = means, a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = x.flatten(1)[:, None, :] - self.means.flatten(1).to(x.dtype)[None]  # (B, C, D)
        return -self.a / 2 * diff.square().sum(-1)


def regularizer(a: float, x: torch.Tensor, y: torch.Tensor, means: torch.Tensor, loss: dict) -> float:
    """Eq. 4's regularizer mean h + ½ mean ‖∇f‖² + μ mean h², by the loss code itself, with the
    same noise for every a (common random numbers)."""
    cfg = LossConfig(kind="score_matching", lam=1.0, **loss)
    out = compute_loss(ScaledQuadratic(means, a), x, y, cfg, generator=torch.Generator().manual_seed(1))
    return (out["trace"] + 0.5 * out["grad_norm"] + cfg.mu * out["stability"]).item()


@pytest.mark.parametrize(
    "loss",
    [
        # Taylor, one draw (the paper's estimator). σ = 0.03 rather than the paper's 0.01 keeps the
        # Monte-Carlo noise of h's first-order term (std 2σ_d/σ·√D per draw) small enough for a
        # few thousand samples, while 8μσ_d²/σ² stays 40% of the denominator.
        {"mu": 1e-3, "sigma": 0.03},
        {"mu": 1e-3, "sigma": 0.03, "samples": 3},  # K draws divide the noise terms by K
        {"mu": 1e-3, "sigma": 0.03, "estimator": "central"},  # no first-order term
        # The unbiased stability term h₁·h₂: E = (tr H)², the noise terms drop out.
        {"mu": 1e-3, "sigma": 0.03, "stability": "unbiased"},
        {"mu": 1e-2, "sigma": 0.03, "stability": "unbiased", "samples": 2},
    ],
)
def test_optimal_scale_is_the_brute_force_minimiser_of_the_estimators_objective(loss):
    # Data of the family: D = 64 pixels, σ_d = 0.1, 4 classes; float64 so that h's 2/σ² amplification
    # of f(x+v) − f(x) adds no rounding of its own.
    dim, noise_std, n = 64, 0.1, 6000
    gen = torch.Generator().manual_seed(0)
    means = torch.rand(4, 1, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.arange(n) % 4
    x = means[y] + noise_std * torch.randn(n, 1, 8, 8, generator=gen, dtype=torch.float64)
    # Brute force: a log grid over five decades, then a bounded 1-D search between its neighbours.
    grid = torch.logspace(-2, 3, 31, dtype=torch.float64).tolist()
    values = [regularizer(a, x, y, means, loss) for a in grid]
    best = min(range(len(grid)), key=values.__getitem__)
    assert 0 < best < len(grid) - 1  # an interior minimum
    found = minimize_scalar(lambda a: regularizer(a, x, y, means, loss), bounds=(grid[best - 1], grid[best + 1]),
                            method="bounded", options={"xatol": 1e-4 * grid[best]}).x
    expected = optimal_scale(loss["mu"], loss["sigma"], dim, noise_std, loss.get("samples", 1),
                             loss.get("estimator", "taylor"), loss.get("stability", "biased"))
    # Monte-Carlo error of the 6000-sample objective's minimiser: about 1% (seen up to 1.2% over data seeds).
    assert found == pytest.approx(expected, rel=0.02)


def test_floor_matches_the_issues_figures_and_its_limits():
    # D = 64, σ_d = 0.1, σ = 0.01, Taylor, one draw: ≈ 0.82, 0.98, 0.998 for μ = 1e-4, 1e-3, 1e-2.
    floors = [fisher_divergence_rel_floor(mu, 0.01, 64, 0.1) for mu in (1e-4, 1e-3, 1e-2)]
    assert floors == pytest.approx([0.8156, 0.9789, 0.99786], abs=5e-4)
    # μ = 0: a* = 1/σ_d², the true scale, divergence 0; central removes the 8μσ_d²/σ² term, which
    # is most of the μ = 1e-4 denominator (0.08 of 0.1032), but keeps 2μD from (tr H)².
    assert fisher_divergence_rel_floor(0.0, 0.01, 64, 0.1) == 0.0
    assert 0.1 < fisher_divergence_rel_floor(1e-4, 0.01, 64, 0.1, estimator="central") < floors[0] / 2
    # More draws average the first-order noise away: a lower floor.
    assert fisher_divergence_rel_floor(1e-4, 0.01, 64, 0.1, draws=4) < floors[0]


def test_unbiased_floor_matches_the_issues_figures_by_hand():
    # h₁·h₂ has mean (tr H)²: a* = 1/(σ_d² + 2μD). μ = 1e-4: 1/(0.01 + 0.0128) = 43.86, floor
    # (1 − 0.4386)² = 0.315; μ = 1e-3: 1/(0.01 + 0.128) = 7.246, floor (1 − 0.07246)² = 0.860.
    unbiased = [fisher_divergence_rel_floor(mu, 0.01, 64, 0.1, stability="unbiased") for mu in (1e-4, 1e-3)]
    assert unbiased == pytest.approx([(1 - 0.01 / 0.0228) ** 2, (1 - 0.01 / 0.138) ** 2], rel=1e-12)
    assert unbiased == pytest.approx([0.315, 0.860], abs=5e-4)
    biased = [fisher_divergence_rel_floor(mu, 0.01, 64, 0.1) for mu in (1e-4, 1e-3)]
    assert biased == pytest.approx([0.816, 0.979], abs=5e-4)
    # σ, K and the estimator drop out of the unbiased term's expectation.
    assert fisher_divergence_rel_floor(1e-4, 0.1, 64, 0.1, draws=3, estimator="central", stability="unbiased") == \
        unbiased[0]


def test_model_at_the_optimal_scale_measures_exactly_the_floor():
    # Within the family, g − s = (1/σ_d² − a)ε for every test point, so the measured relative
    # divergence is (1 − aσ_d²)² exactly: the metric and the floor agree on their definitions.
    cfg = small_cfg(channels=1, image_size=8, test_size=200)
    data = load_gaussians(cfg)
    loss = LossConfig(kind="score_matching", lam=1e-3, mu=1e-4, sigma=0.01)
    a = optimal_scale(loss.mu, loss.sigma, 64, cfg.noise_std)
    model = ScaledQuadratic(data.density.means.float(), a)
    metrics = groundtruth_metrics(model, data, data.test_x, data.test_y, loss=loss)
    assert metrics[keys.FISHER_DIVERGENCE_REL] == pytest.approx(metrics[keys.FISHER_DIVERGENCE_REL_FLOOR], rel=1e-4)
    assert metrics[keys.FISHER_DIVERGENCE_REL_FLOOR] == fisher_divergence_rel_floor(1e-4, 0.01, 64, 0.1)
    # Only score matching on isotropic data has a floor.
    assert keys.FISHER_DIVERGENCE_REL_FLOOR not in groundtruth_metrics(model, data, data.test_x, data.test_y)
    ce = LossConfig(kind="ce")
    assert keys.FISHER_DIVERGENCE_REL_FLOOR not in groundtruth_metrics(model, data, data.test_x, data.test_y, loss=ce)
    smooth = load_gaussians(small_cfg(covariance="smooth"))
    quad = ScaledQuadratic(smooth.density.means.float(), 1.0)
    assert keys.FISHER_DIVERGENCE_REL_FLOOR not in groundtruth_metrics(quad, smooth, smooth.test_x, smooth.test_y, loss=loss)


def test_flat_samples_are_what_the_sampler_gives_a_model_without_input_gradient():
    from trainer.evaluation import generate_samples

    targets = torch.tensor([0, 1, 2, 0, 1])
    kw = dict(shape=(2, 4, 4), lr=0.5, prior=0.3, init_mean=0.3, init_std=0.4, seed=3)
    start = generate_samples(ConstantModel(3), targets, steps=0, **kw)
    sampled = generate_samples(ConstantModel(3), targets, steps=7, **kw)
    assert torch.allclose(flat_samples(start, 7, 0.5, 0.3), sampled, atol=1e-6)
    # No clamp is hit here (lr·prior < 1): a contraction towards 0.5 by (1 − lr·prior) per step.
    assert torch.allclose(flat_samples(start, 7, 0.5, 0.3), 0.5 + 0.85**7 * (start - 0.5), atol=1e-6)


def test_ratio_interval_is_the_delta_method_by_hand():
    gen = torch.Generator().manual_seed(0)
    den = 1 + torch.rand(400, generator=gen, dtype=torch.float64)
    num = 0.3 * den + 0.1 * torch.randn(400, generator=gen, dtype=torch.float64)
    iv = ratio_interval(num, den)
    n, r = 400, (num.sum() / den.sum()).item()
    # Var(R̂) ≈ (Var(num) − 2R·Cov(num, den) + R²·Var(den)) / (n·mean(den)²)
    cov = torch.cov(torch.stack([num, den]))
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]).item() / (n * den.mean().item() ** 2)
    assert iv.value == pytest.approx(r, rel=1e-12)
    assert iv.half_width == pytest.approx(1.959964 * var**0.5, rel=1e-5)


def test_controls_score_the_start_and_the_flat_samples():
    data = load_gaussians(small_cfg(test_size=40))
    model = ConstantModel(3)
    targets = data.test_y[:12]
    start = torch.rand(12, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    flat = flat_samples(start, 50, 0.1, 0.5)
    metrics = groundtruth_metrics(model, data, start, targets, start=start, flat=flat)
    loglik = data.density.log_prob(start, targets) / data.density.dim
    assert metrics[keys.SAMPLE_LOGLIK_START] == pytest.approx(loglik.mean().item(), rel=1e-6)
    assert metrics[keys.SAMPLE_LOGLIK_START] == pytest.approx(metrics[keys.SAMPLE_LOGLIK], rel=1e-12)
    flat_loglik = (data.density.log_prob(flat, targets) / data.density.dim).double()
    assert metrics[keys.SAMPLE_LOGLIK_FLAT] == pytest.approx(flat_loglik.mean().item(), rel=1e-6)
    half = 1.959964 * flat_loglik.std().item() / 12**0.5
    upper = metrics[keys.hi_key(keys.SAMPLE_LOGLIK_FLAT)] - metrics[keys.SAMPLE_LOGLIK_FLAT]
    assert upper == pytest.approx(half, rel=1e-4)
    assert keys.SAMPLE_LOGLIK_FLAT not in groundtruth_metrics(model, data, start, targets)
