"""The paper's training losses, as plain functions read top to bottom.

Notation: f = logits, y = the true label, f_y(x) the true-label logit, G = ∇ₓΣᵢf_yᵢ(x) the input
gradient, v the input noise, h(x) an estimate of the Hessian trace tr ∇²ₓf_y(x) per sample.

- ``ce``: cross-entropy.
- ``grad_norm``: ce + λ·½·mean ‖∇ₓf_y‖².
- ``score_matching`` (eq. 4): ce + λ·(mean h + ½·mean ‖∇ₓf_y‖² + μ·mean h²).
- ``anti_score_matching``: ce − λ·mean(min(h, τ)), clamped per sample before the mean.

h per noise draw (``loss.estimator``; each sample's h is the mean over ``loss.samples`` draws):

- ``taylor`` (the paper's eq. 3): 2/σ²·(f_y(x+v) − f_y(x)), v ~ N(0, σ²I); one extra forward.
- ``central``: (f_y(x+v) + f_y(x−v) − 2f_y(x))/σ²; the first-order term cancels. Two forwards.
- ``hutchinson``: vᵀ(∇²ₓf_y)v, v ~ N(0, I), by double backward: exact for each v, the reference
  the others approximate (its weight gradient is a third derivative: the BatchNorm layers of
  trainer.models switch to elementary ops for it).

The noisy passes are separate forwards in the model's current mode (train mode during training,
as in the released code); ``loss.forward=batched`` runs them as one joint forward instead
(docs/losses.md explains what changes). ``loss.stability=unbiased`` replaces the paper's mean h²
by h₁·h₂ of two independent estimates, and ``loss.grad_norm_method`` takes the weight gradient of
½‖G‖² by a finite difference instead of a double backward; docs/losses.md derives both. Every
pass of a loss with a finite difference runs in float32 or wider, in ``loss.precision``
(trainer.precision).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.config import LossConfig, validate
from trainer.models import any_order_batchnorm
from trainer.precision import fp32_precision


def true_logit(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(logits (B, K), f_y (B,)) of ``model`` at ``x``."""
    logits = model(x)
    return logits, logits.gather(1, y[:, None]).squeeze(1)


def input_gradient(
    f_y: Tensor, x: Tensor, create_graph: bool = False, retain_graph: bool | None = None
) -> Tensor:
    """∇ₓ Σ f_y: each sample's own input gradient where samples do not interact (eval mode).

    The trainer's one input-gradient helper. ``create_graph`` keeps it differentiable (double
    backward); ``retain_graph`` keeps f_y's graph for a later backward. Parameter gradients are
    not touched.
    """
    return torch.autograd.grad(f_y.sum(), x, create_graph=create_graph, retain_graph=retain_graph)[0]


def _squared_norm(t: Tensor) -> Tensor:
    """Per-sample squared L2 norm over all non-batch dimensions: (B, ...) -> (B,)."""
    return t.flatten(1).pow(2).sum(1)


def _noise(x: Tensor, std: float, generator: torch.Generator | None) -> Tensor:
    return std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def uses_finite_differences(cfg: LossConfig) -> bool:
    """Whether a loss divides a difference of logits by a small step (and so needs the precision
    policy): the trace estimators, and the gradient-norm term without double backward."""
    if cfg.kind in ("score_matching", "anti_score_matching"):
        return True
    return cfg.kind == "grad_norm" and cfg.grad_norm_method != "double_backward"


# ---- h for each noise draw: (draws, B) -------------------------------------------------------


def h_from_logits(f_y: Tensor, f_noisy: Tensor, cfg: LossConfig) -> Tensor:
    """h per draw (draws, B) from the clean f_y (B,) and the noisy passes' f_y: for taylor one row
    per draw, 2/σ²·(f_y(x+v) − f_y(x)); for central two rows per draw (x+v, then x−v),
    (f_y(x+v) + f_y(x−v) − 2f_y(x))/σ²."""
    if cfg.estimator == "taylor":
        return 2.0 / cfg.sigma**2 * (f_noisy - f_y)
    return (f_noisy[0::2] + f_noisy[1::2] - 2.0 * f_y) / cfg.sigma**2


def noisy_inputs(x: Tensor, cfg: LossConfig, generator, draws: int) -> list[Tensor]:
    """The noisy inputs of ``draws`` draws, from a detached x (the loss is differentiated w.r.t.
    the weights only): x + v for taylor; x + v, x − v for central."""
    x = x.detach()
    out = []
    for _ in range(draws):
        v = _noise(x, cfg.sigma, generator)
        out += [x + v] if cfg.estimator == "taylor" else [x + v, x - v]
    return out


def finite_difference_draws(
    model: nn.Module, x: Tensor, y: Tensor, f_y: Tensor, cfg: LossConfig, generator, draws: int
) -> Tensor:
    """h per draw (draws, B) by ``cfg.estimator`` (taylor or central), each noisy input in its own
    forward, in the model's current mode."""
    noisy = noisy_inputs(x, cfg, generator, draws)
    f_noisy = torch.stack([true_logit(model, n, y)[1] for n in noisy])
    return h_from_logits(f_y, f_noisy, cfg)


def batched_draws(
    model: nn.Module, x: Tensor, y: Tensor, cfg: LossConfig, generator, draws: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(clean logits, clean f_y, h per draw) from ONE forward over [x, noisy inputs...].

    The noisy inputs are built from a detached x, so an input gradient flows through the clean
    rows only.
    """
    noisy = noisy_inputs(x, cfg, generator, draws)
    logits, f_all = true_logit(model, torch.cat([x, *noisy]), y.repeat(1 + len(noisy)))
    f_y, *f_noisy = f_all.split(x.shape[0])
    return logits[: x.shape[0]], f_y, h_from_logits(f_y, torch.stack(f_noisy), cfg)


def hutchinson_draws(x: Tensor, grad: Tensor, generator, draws: int) -> Tensor:
    """vᵀ(∇²ₓf_y)v with v ~ N(0, I) for each draw, by a backward through ``grad`` (create_graph)."""
    out = []
    for _ in range(draws):
        v = _noise(x, 1.0, generator)
        hv = torch.autograd.grad((grad * v).sum(), x, create_graph=True)[0]
        out.append((hv * v).flatten(1).sum(1))
    return torch.stack(out)


# ---- the gradient-norm term ------------------------------------------------------------------


def grad_norm_term(
    model: nn.Module, x: Tensor, y: Tensor, f_y: Tensor, grad: Tensor, cfg: LossConfig
) -> tuple[Tensor, Tensor]:
    """(mean ‖∇ₓf_y‖², a term whose value is half of it and whose weight gradient is ∇θ of
    ½·mean ‖∇ₓf_y‖²).

    ``double_backward``: the term is ½·mean‖G‖² itself (``grad`` must carry its graph).
    Finite differences (``grad`` may be detached): with u = G·√B·ε/‖G‖ (G detached, ‖·‖ over the
    whole batch, so the per-sample steps have root-mean-square norm ε), Σf_y(x+u) − Σf_y(x−u) ≈
    2·Gᵀu, whose weight gradient is 2·(∂G/∂θ)ᵀu; dividing by 2·B·√B·ε/‖G‖ gives
    (∂G/∂θ)ᵀG/B = ∇θ ½·mean‖G‖². The forward difference uses Σf_y(x+u) − Σf_y(x) (error O(ε)
    instead of O(ε²)). The term's value is set to ½·mean‖G‖² (the surrogate contributes only its
    gradient), so the logged loss is the same quantity either way.
    """
    squared = _squared_norm(grad)
    if cfg.grad_norm_method == "double_backward":
        mean = squared.mean()
        return mean, 0.5 * mean
    g = grad.detach()
    batch = g.shape[0]
    # A scalar tensor, not a Python float: no host synchronisation. clamp_min: a zero gradient
    # gives u = 0 and a zero surrogate instead of 0/0.
    scale = cfg.grad_norm_eps * math.sqrt(batch) / g.norm().clamp_min(1e-30)
    u = g * scale
    x0 = x.detach()
    plus = true_logit(model, x0 + u, y)[1].sum()
    if cfg.grad_norm_method == "central_difference":
        difference = (plus - true_logit(model, x0 - u, y)[1].sum()) / 2.0
    else:  # forward_difference: the clean forward's f_y (its graph) is the other end
        difference = plus - f_y.sum()
    surrogate = difference / (scale * batch)
    mean = squared.detach().mean()
    return mean, 0.5 * mean + (surrogate - surrogate.detach())


# ---- the parts of the regularized losses -----------------------------------------------------


def regularizer_parts(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cfg: LossConfig,
    generator: torch.Generator | None,
    draws: int,
    with_grad_norm: bool,
) -> dict[str, Tensor]:
    """Clean logits, h per draw (``draws``, B) and, if asked, the gradient-norm parts.

    Runs in float32 or wider and in ``cfg.precision``.
    """
    hutchinson = cfg.estimator == "hutchinson"
    # Hutchinson differentiates through the input gradient, so it needs one even without the
    # gradient-norm term, and a differentiable one; so does the double-backward gradient norm.
    need_grad = with_grad_norm or hutchinson
    create_graph = hutchinson or (with_grad_norm and cfg.grad_norm_method == "double_backward")
    # The weight gradient of Hutchinson's h is a third derivative: fused BatchNorm has none.
    batchnorm = any_order_batchnorm() if hutchinson else contextlib.nullcontext()
    wide = torch.promote_types(x.dtype, torch.float32)
    parts: dict[str, Tensor] = {}
    with fp32_precision(cfg.precision, x.device), batchnorm:
        x = x.detach().to(wide).requires_grad_(need_grad)
        if cfg.forward == "batched" and not hutchinson:  # hutchinson has no noisy forward
            logits, f_y, h = batched_draws(model, x, y, cfg, generator, draws)
        else:
            logits, f_y = true_logit(model, x, y)
        grad = None
        if need_grad:
            grad = input_gradient(f_y, x, create_graph=create_graph, retain_graph=True)
        if hutchinson:
            h = hutchinson_draws(x, grad, generator, draws)
        elif cfg.forward == "separate":
            h = finite_difference_draws(model, x, y, f_y, cfg, generator, draws)
        if with_grad_norm:
            parts["grad_norm"], parts["grad_norm_term"] = grad_norm_term(model, x, y, f_y, grad, cfg)
    parts.update(logits=logits, h=h)
    return parts


def _result(total: Tensor, ce: Tensor, logits: Tensor, **parts: Tensor) -> dict[str, Tensor]:
    zero = torch.zeros((), device=total.device, dtype=total.dtype)
    out = {"total": total, "ce": ce, "trace": zero, "grad_norm": zero, "stability": zero}
    out.update(parts)
    out["logits"] = logits.detach()
    return out


# ---- the four losses -------------------------------------------------------------------------


def ce_loss(
    model: nn.Module, x: Tensor, y: Tensor, cfg: LossConfig, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Plain cross-entropy (runs in the caller's precision, autocast allowed)."""
    logits = model(x)
    ce = F.cross_entropy(logits, y)
    return _result(ce, ce, logits)


def grad_norm_loss(
    model: nn.Module, x: Tensor, y: Tensor, cfg: LossConfig, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """ce + λ·½·mean ‖∇ₓf_y‖². With the double backward it runs in the caller's precision; with a
    finite difference, in ``cfg.precision``."""
    with precision(cfg, x.device):
        x = x.detach().requires_grad_(True)
        logits, f_y = true_logit(model, x, y)
        create_graph = cfg.grad_norm_method == "double_backward"
        grad = input_gradient(f_y, x, create_graph=create_graph, retain_graph=True)
        grad_norm, term = grad_norm_term(model, x, y, f_y, grad, cfg)
    ce = F.cross_entropy(logits, y)
    return _result(ce + cfg.lam * term, ce, logits, grad_norm=grad_norm)


def score_matching_loss(
    model: nn.Module, x: Tensor, y: Tensor, cfg: LossConfig, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """ce + λ·(mean h + ½·mean ‖∇ₓf_y‖² + μ·stability) (the paper's eq. 4).

    stability is mean h² (``biased``, the paper) or mean h₁·h₂ of two independent estimates
    (``unbiased``); then h, for the trace term, is (h₁ + h₂)/2.
    """
    unbiased = cfg.stability == "unbiased"
    draws = cfg.samples * (2 if unbiased else 1)
    p = regularizer_parts(model, x, y, cfg, generator, draws, with_grad_norm=True)
    if unbiased:
        h1, h2 = p["h"][: cfg.samples].mean(0), p["h"][cfg.samples :].mean(0)
        h, stability = (h1 + h2) / 2, (h1 * h2).mean()
    else:
        h = p["h"].mean(0)
        stability = h.pow(2).mean()
    ce = F.cross_entropy(p["logits"], y)
    trace = h.mean()
    total = ce + cfg.lam * (trace + p["grad_norm_term"] + cfg.mu * stability)
    return _result(total, ce, p["logits"], trace=trace, grad_norm=p["grad_norm"], stability=stability)


def anti_score_matching_loss(
    model: nn.Module, x: Tensor, y: Tensor, cfg: LossConfig, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """ce − λ·mean(min(h, τ)): the clamp applies to each sample before the batch mean."""
    p = regularizer_parts(model, x, y, cfg, generator, cfg.samples, with_grad_norm=False)
    h = p["h"].mean(0)
    ce = F.cross_entropy(p["logits"], y)
    total = ce - cfg.lam * h.clamp(max=cfg.tau).mean()
    return _result(total, ce, p["logits"], trace=h.mean(), stability=h.pow(2).mean())


LOSSES: dict[str, Callable[..., dict[str, Tensor]]] = {
    "ce": ce_loss,
    "grad_norm": grad_norm_loss,
    "score_matching": score_matching_loss,
    "anti_score_matching": anti_score_matching_loss,
}


def precision(loss: LossConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The context a training step of ``loss`` runs in, backward included.

    A loss with a finite difference runs in ``loss.precision`` in the backward pass too (the
    weight gradient of h is 2/σ² times a difference of two backward passes); the others run in
    the caller's precision.
    """
    if uses_finite_differences(loss):
        return fp32_precision(loss.precision, device)
    return contextlib.nullcontext()


def as_loss_config(loss: LossConfig | Mapping[str, Any]) -> LossConfig:
    """A LossConfig from itself or from a dict with the same fields (``preset`` allowed)."""
    return loss if isinstance(loss, LossConfig) else validate(LossConfig, loss, "loss")


def compute_loss(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss: LossConfig | Mapping[str, Any],
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Loss of ``model`` on the batch (x, y).

    Returns ``total`` (to minimize) and the batch-mean parts ``ce``, ``trace`` (mean h),
    ``grad_norm`` (mean ‖∇ₓf_y‖²) and ``stability`` (mean h², or mean h₁·h₂) — parts a loss does
    not use are 0 — plus ``logits``, the clean logits, detached. ``generator`` (on x's device)
    seeds the noise; None uses torch's global generator.
    """
    cfg = as_loss_config(loss)
    return LOSSES[cfg.kind](model, x, y, cfg, generator)
