"""The losses against naive references: exact Hessian traces, per-sample autograd, the formulas."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import ConfigError, LossConfig, load_config
from trainer.losses import (
    LOSSES,
    compute_loss,
    finite_difference_draws,
    hutchinson_draws,
    input_gradient,
    precision,
    true_logit,
)
from trainer.models import build_model


# Shape of the tiny inputs: (channels, height, width), 12 dimensions.
SHAPE = (3, 2, 2)
DIM = math.prod(SHAPE)


def smooth_net(seed: int = 0) -> nn.Module:
    """A float64 softplus MLP on images, without BatchNorm, so samples do not interact."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(DIM, 16), nn.Softplus(beta=5.0), nn.Linear(16, 4))
    with torch.no_grad():  # larger weights: a trace of order 1, well away from 0
        net[1].weight.mul_(3.0)
        net[3].weight.mul_(3.0)
    return net.double()


def exact_trace(model: nn.Module, x: torch.Tensor, label: int) -> float:
    """tr ∇²ₓ f_label(x) from the full Hessian of one image."""
    hess = torch.autograd.functional.hessian(lambda z: model(z[None])[0, label], x)
    return hess.reshape(DIM, DIM).trace().item()


def estimates(model, x, label, estimator, sigma, copies=20000, seed=0) -> torch.Tensor:
    """h for ``copies`` copies of one image: that many independent draws of the estimator."""
    xr = x.expand(copies, *SHAPE).clone().requires_grad_(True)
    y = torch.full((copies,), label)
    cfg = LossConfig(kind="score_matching", lam=1.0, sigma=sigma, estimator=estimator)
    _, f_y = true_logit(model, xr, y)
    generator = torch.Generator().manual_seed(seed)
    if estimator == "hutchinson":
        h = hutchinson_draws(xr, input_gradient(f_y, xr, create_graph=True), generator, draws=1)
    else:
        h = finite_difference_draws(model, xr, y, f_y, cfg, generator, draws=1)
    return h[0].detach()


# Remainder of the finite-difference estimators at σ = 0.02: O(σ²) relative to the trace (the
# odd Taylor terms vanish in expectation); 2% of |trace| bounds it for this function.
FD_REMAINDER = {"taylor": 0.02, "central": 0.02, "hutchinson": 0.0}


@pytest.mark.parametrize("estimator", ["taylor", "central", "hutchinson"])
def test_estimators_average_to_the_exact_hessian_trace(estimator):
    model = smooth_net()
    torch.manual_seed(1)
    x = torch.rand(SHAPE, dtype=torch.float64)
    exact = exact_trace(model, x, label=2)  # 3.58 for this seed
    h = estimates(model, x, 2, estimator, sigma=0.02, copies=200_000)
    mean, se = h.mean().item(), h.std().item() / math.sqrt(h.numel())
    # Stated tolerance: 5 standard errors of the mean of 200k independent draws (a false failure
    # has probability < 1e-6 for a normal mean) plus the deterministic remainder above.
    tolerance = 5 * se + FD_REMAINDER[estimator] * abs(exact)
    assert abs(mean - exact) <= tolerance, (estimator, mean, exact, se)
    # The window must exclude 0, or the test could not tell an estimator from noise.
    assert tolerance < abs(exact)


def test_central_has_lower_variance_than_taylor():
    model = smooth_net()
    torch.manual_seed(1)
    x = torch.rand(SHAPE, dtype=torch.float64)
    var = {e: estimates(model, x, 1, e, sigma=0.02, copies=4000).var().item() for e in ("taylor", "central")}
    # Taylor carries the first-order term 2/σ²·∇f·v (variance 4‖∇f‖²/σ²), central cancels it.
    assert var["central"] < 0.1 * var["taylor"], var


def per_sample_grad_norms(model, x, y) -> torch.Tensor:
    """‖∇ₓ f_y(x_i)‖² one image at a time (the naive reference)."""
    norms = []
    for xi, yi in zip(x, y):
        xi = xi[None].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xi)[0, yi], xi)
        norms.append(g.pow(2).sum())
    return torch.stack(norms)


@pytest.mark.parametrize("kind", ["grad_norm", "score_matching"])
def test_grad_norm_equals_per_sample_autograd(kind):
    model = smooth_net()
    x = torch.rand(8, *SHAPE, dtype=torch.float64)
    y = torch.arange(8) % 4
    out = compute_loss(model, x, y, {"kind": kind, "lam": 0.1})
    reference = per_sample_grad_norms(model, x, y).mean()
    torch.testing.assert_close(out["grad_norm"], reference)


def test_score_matching_parts_combine_with_the_coefficients():
    model = smooth_net()
    x = torch.rand(8, *SHAPE, dtype=torch.float64)
    y = torch.arange(8) % 4
    lam, mu, sigma = 0.3, 0.02, 0.05
    cfg = {"kind": "score_matching", "lam": lam, "mu": mu, "sigma": sigma}
    out = compute_loss(model, x, y, cfg, generator=torch.Generator().manual_seed(7))
    # Rebuild every part independently, drawing the same noise.
    v = sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=x.dtype)
    with torch.no_grad():
        logits = model(x)
        f = logits.gather(1, y[:, None]).squeeze(1)
        f_noisy = model(x + v).gather(1, y[:, None]).squeeze(1)
    h = 2 / sigma**2 * (f_noisy - f)
    ce = F.cross_entropy(logits, y)
    gn = per_sample_grad_norms(model, x, y).mean()
    expected = ce + lam * (h.mean() + 0.5 * gn + mu * h.pow(2).mean())
    torch.testing.assert_close(out["ce"], ce)
    torch.testing.assert_close(out["trace"], h.mean())
    torch.testing.assert_close(out["stability"], h.pow(2).mean())
    torch.testing.assert_close(out["total"].detach(), expected)
    torch.testing.assert_close(out["logits"], logits)
    assert not out["logits"].requires_grad and out["total"].requires_grad


def test_grad_norm_and_ce_totals():
    model = smooth_net()
    x = torch.rand(8, *SHAPE, dtype=torch.float64)
    y = torch.arange(8) % 4
    ce = F.cross_entropy(model(x), y)
    gn = per_sample_grad_norms(model, x, y).mean()
    out = compute_loss(model, x, y, {"kind": "grad_norm", "lam": 0.4})
    torch.testing.assert_close(out["total"], ce + 0.4 * 0.5 * gn)
    out = compute_loss(model, x, y, {"kind": "ce"})
    torch.testing.assert_close(out["total"], ce)
    assert set(LOSSES) == {"ce", "grad_norm", "score_matching", "anti_score_matching"}


class Quadratic(nn.Module):
    """Logits [‖x‖², −‖x‖²]: the class-0 trace is +2D and the class-1 trace is −2D."""

    def forward(self, x):
        s = x.flatten(1).pow(2).sum(1)
        return torch.stack([s, -s], 1)


def test_anti_score_matching_clamps_each_sample_before_the_mean():
    dim = 3 * 16 * 16
    x = 0.01 * torch.rand(2, 3, 16, 16, dtype=torch.float64)
    y = torch.tensor([0, 1])  # h ≈ [+2·dim, −2·dim]
    tau, lam = float(dim), 1e-3
    cfg = {"kind": "anti_score_matching", "lam": lam, "tau": tau, "sigma": 0.01, "estimator": "central"}
    out = compute_loss(Quadratic(), x, y, cfg, generator=torch.Generator().manual_seed(0))
    # Per sample: mean(min(h, τ)) ≈ (dim − 2·dim)/2 = −dim/2, so total − ce ≈ +λ·dim/2.
    # Clamping the mean instead would give min(≈0, τ) ≈ 0. ‖v‖²/σ² is within ~15% of dim here.
    penalty = (out["total"] - out["ce"]).item()
    assert penalty == pytest.approx(lam * dim / 2, rel=0.3)
    # Unclamped, the two samples would cancel: the reported trace (mean h) is near 0.
    assert abs(out["trace"].item()) < 0.3 * dim


def test_low_precision_inputs_are_estimated_in_float32():
    torch.manual_seed(0)
    model = build_model("resnet9", 5, in_channels=1, width=1 / 16)
    x = torch.rand(4, 1, 8, 8)
    y = torch.arange(4)
    cfg = {"kind": "score_matching", "lam": 1e-3, "mu": 1e-4}
    ref = compute_loss(model, x, y, cfg, generator=torch.Generator().manual_seed(3))
    low = compute_loss(model, x.bfloat16(), y, cfg, generator=torch.Generator().manual_seed(3))
    assert low["trace"].dtype == torch.float32
    # bfloat16 rounding of x changes the input by < 0.4%, not the noise: traces stay close.
    assert torch.isfinite(low["total"])
    assert low["total"].item() == pytest.approx(ref["total"].item(), rel=0.5)


def test_loss_trains_any_module_and_precision_context_restores_flags():
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision if hasattr(conv, "fp32_precision") else None
    model = build_model("resnet9", 3, in_channels=2, width=1 / 16)
    x, y = torch.rand(4, 2, 5, 7), torch.tensor([0, 1, 2, 0])
    cfg = LossConfig(kind="score_matching", lam=1e-3, mu=1e-4, estimator="hutchinson")
    with precision(cfg, x.device):
        out = compute_loss(model, x, y, cfg)
        out["total"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    after = conv.fp32_precision if hasattr(conv, "fp32_precision") else None
    assert before == after


def batchnorm_net() -> nn.Module:
    """A tiny float64 ResNet-9 with BatchNorm, so that train mode couples the samples of a batch."""
    torch.manual_seed(0)
    return build_model("resnet9", 5, in_channels=1, width=1 / 16).double()


FD_CONFIG = {"kind": "score_matching", "lam": 1e-3, "mu": 1e-4, "samples": 2}


@pytest.mark.parametrize("estimator", ["taylor", "central"])
def test_batched_forward_equals_separate_in_eval_mode(estimator):
    model = batchnorm_net().eval()  # BatchNorm uses its running statistics: samples independent
    x, y = torch.rand(6, 1, 8, 8, dtype=torch.float64), torch.arange(6) % 5
    out = {}
    for forward in ("separate", "batched"):
        cfg = {**FD_CONFIG, "estimator": estimator, "forward": forward}
        out[forward] = compute_loss(model, x, y, cfg, generator=torch.Generator().manual_seed(3))
    for key in ("total", "ce", "trace", "grad_norm", "stability", "logits"):
        torch.testing.assert_close(out["batched"][key], out["separate"][key], msg=key)
    assert out["separate"]["trace"].abs() > 0 and out["separate"]["grad_norm"] > 0


@pytest.mark.parametrize("estimator", ["taylor", "central"])
def test_batched_forward_trains_in_train_mode(estimator):
    x, y = torch.rand(6, 1, 8, 8, dtype=torch.float64), torch.arange(6) % 5
    traces = {}
    for forward in ("separate", "batched"):
        model = batchnorm_net().train()
        cfg = LossConfig(**FD_CONFIG, estimator=estimator, forward=forward)
        with precision(cfg, x.device):
            out = compute_loss(model, x, y, cfg, generator=torch.Generator().manual_seed(3))
            out["total"].backward()
        assert torch.isfinite(out["total"]), forward
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        traces[forward] = out["trace"].item()
    # Joint BatchNorm statistics change the numbers in train mode (documented, not a bug).
    assert traces["batched"] != pytest.approx(traces["separate"], rel=1e-6)


def test_batched_input_gradient_is_taken_through_the_clean_rows_of_the_joint_forward():
    model = batchnorm_net().train()
    x, y = torch.rand(6, 1, 8, 8, dtype=torch.float64), torch.arange(6) % 5
    sigma = 0.01
    cfg = {"kind": "score_matching", "lam": 1e-3, "sigma": sigma, "forward": "batched"}
    out = compute_loss(model, x, y, cfg, generator=torch.Generator().manual_seed(5))
    # Reference: the same joint forward by hand, the noisy copy a constant (built from x detached).
    v = sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    xr = x.clone().requires_grad_(True)
    f = model(torch.cat([xr, x + v])).gather(1, y.repeat(2)[:, None]).squeeze(1)
    (g,) = torch.autograd.grad(f[:6].sum(), xr)
    torch.testing.assert_close(out["grad_norm"].detach(), g.flatten(1).pow(2).sum(1).mean())
    torch.testing.assert_close(out["trace"].detach(), (2 / sigma**2 * (f[6:] - f[:6])).mean().detach())


def test_forward_option_is_validated():
    assert load_config(None, ["loss.forward=batched"]).loss.forward == "batched"
    assert LossConfig().forward == "separate"  # the released code's passes are the default
    with pytest.raises(ConfigError, match=r"loss\.forward"):
        load_config(None, ["loss.forward=joint"])


class QuadraticLogit(nn.Module):
    """f_0(x) = gᵀx + ½xᵀAx, f_1(x) = 0: gradient g + Ax and Hessian A in closed form."""

    def __init__(self, dim: int, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.g = nn.Parameter(torch.randn(dim, generator=gen, dtype=torch.float64))
        a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
        self.a = nn.Parameter((a + a.T) / 2 + 2.0 * torch.eye(dim, dtype=torch.float64))

    def forward(self, x):
        z = x.flatten(1)
        f0 = z @ self.g + 0.5 * ((z @ self.a) * z).sum(1)
        return torch.stack([f0, torch.zeros_like(f0)], 1)


def quadratic_setup(copies: int, sigma: float):
    model = QuadraticLogit(DIM)
    x0 = torch.rand(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = x0.expand(copies, *SHAPE).clone()
    y = torch.zeros(copies, dtype=torch.long)
    with torch.no_grad():
        grad = model.g + model.a @ x0.flatten()
        trace, frob2 = model.a.trace(), model.a.pow(2).sum()
    return model, x, y, grad, trace.item(), frob2.item()


def test_biased_stability_carries_the_gradient_norm():
    # One Taylor draw on a quadratic: h = 2gᵀu/σ + uᵀAu exactly (u = v/σ), so
    # E[h²] = (tr A)² + 2‖A‖²_F + 4‖g‖²/σ².
    sigma, copies = 0.1, 200_000
    model, x, y, grad, trace, frob2 = quadratic_setup(copies, sigma)
    cfg = LossConfig(kind="score_matching", lam=1.0, mu=1.0, sigma=sigma)
    _, f_y = true_logit(model, x, y)
    h2 = finite_difference_draws(model, x, y, f_y, cfg, torch.Generator().manual_seed(2), draws=1)[0].pow(2).detach()
    expected = trace**2 + 2 * frob2 + 4 * grad.pow(2).sum().item() / sigma**2
    se = h2.std().item() / math.sqrt(copies)
    assert abs(h2.mean().item() - expected) <= 5 * se, (h2.mean().item(), expected, se)
    # The gradient-norm part dominates here, so a test of (tr A)² alone would fail by far.
    assert expected - trace**2 > 50 * se
    # The loss reports exactly this mean (same noise).
    out = compute_loss(model, x, y, cfg, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out["stability"].detach(), h2.mean())


def test_unbiased_stability_is_the_squared_trace():
    # h₁·h₂ of two independent draws: E[h₁h₂] = E[h₁]E[h₂] = (tr A)².
    sigma, copies = 0.1, 200_000
    model, x, y, grad, trace, frob2 = quadratic_setup(copies, sigma)
    cfg = LossConfig(kind="score_matching", lam=1.0, mu=1.0, sigma=sigma, stability="unbiased")
    _, f_y = true_logit(model, x, y)
    h = finite_difference_draws(model, x, y, f_y, cfg, torch.Generator().manual_seed(3), draws=2).detach()
    product = h[0] * h[1]
    se = product.std().item() / math.sqrt(copies)
    assert abs(product.mean().item() - trace**2) <= 5 * se, (product.mean().item(), trace**2, se)
    # The biased term's expectation lies far outside this window.
    assert 2 * frob2 + 4 * grad.pow(2).sum().item() / sigma**2 > 50 * se
    out = compute_loss(model, x, y, cfg, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out["stability"].detach(), product.mean())
    torch.testing.assert_close(out["trace"].detach(), h.mean())  # h = (h₁ + h₂)/2 per sample


def test_unbiased_stability_trains_and_is_validated():
    model = batchnorm_net().train()
    x, y = torch.rand(6, 1, 8, 8, dtype=torch.float64), torch.arange(6) % 5
    cfg = LossConfig(preset="score_matching", stability="unbiased", samples=2)
    out = compute_loss(model, x, y, cfg, generator=torch.Generator().manual_seed(0))
    out["total"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert LossConfig().stability == "biased"  # the paper's term is the default
    with pytest.raises(ConfigError, match=r"loss\.stability"):
        load_config(None, ["loss.stability=exact"])
