"""The paper's training losses and their Hessian-trace estimators.

Notation (docs/design.md): f = logits, y = true label, f_y(x) the true-label logit, v the input noise.

- ``ce``: cross-entropy.
- ``grad_norm``: ce + λ·½·mean ‖∇ₓf_y(x)‖².
- ``score_matching`` (eq. 4): ce + λ·(mean h + ½·mean ‖∇ₓf_y‖² + μ·mean h²).
- ``anti_score_matching``: ce − λ·mean(min(h, τ)), clamped per sample before the mean.

h(x) estimates the Hessian trace tr ∇²ₓf_y(x) per sample:

- ``taylor`` (the paper's eq. 3): 2/σ²·(f_y(x+v) − f_y(x)), v ~ N(0, σ²I); one extra forward.
- ``central``: (f_y(x+v) + f_y(x−v) − 2 f_y(x))/σ²; the first-order term vᵀ∇ₓf_y, whose
  variance the paper's appendix B bounds, cancels exactly. Two extra forwards.
- ``hutchinson``: vᵀ(∇²ₓf_y)v by double backward with v ~ N(0, I) (Gaussian, as in the paper's
  statement of Hutchinson's estimator); exact for each v, the reference the others approximate.
  Training through it needs third derivatives: the BatchNorm layers of trainer.models switch to
  elementary ops for it (other modules' fused BatchNorm cannot be trained this way).

With ``samples`` > 1 each sample's h is the mean over that many noise draws. By default
(``forward="separate"``) the noisy passes are separate forwards in the model's current mode (train
mode during training, so BatchNorm sees the noisy batch, as in the released code). With
``forward="batched"`` the clean and noisy inputs of taylor and central go through one forward over
their concatenation, split afterwards: the same numbers in eval mode, but in train mode BatchNorm
normalizes every pass with the joint batch's statistics (and updates its running statistics once,
from the joint batch). The input gradient for ‖∇ₓf_y‖² is still taken w.r.t. the clean x only: the
noisy inputs are built from a detached x, so ∇ₓ Σ f_y(x) differentiates the clean logits through
the joint forward, including BatchNorm's coupling of samples through the joint batch statistics —
the gradient that the released-code-style loss defines for that joint forward. Hutchinson has no
noisy forward and ignores the option. Because 2/σ² = 2·10⁴ amplifies rounding, every pass of a
finite-difference loss runs in float32 or wider with autocast and TF32 off.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.config import LossConfig, validate
from trainer.models import any_order_batchnorm


@contextlib.contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """Autocast off and TF32 off (cuDNN convolutions and CUDA matmuls) inside; restored after."""
    conv = torch.backends.cudnn.conv if hasattr(torch.backends.cudnn, "conv") else None
    if conv is not None and hasattr(conv, "fp32_precision"):
        # torch >= 2.9: the per-operator precision API (mixing it with allow_tf32 is an error).
        saved = (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
        conv.fp32_precision = torch.backends.cuda.matmul.fp32_precision = "ieee"

        def restore() -> None:
            conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = saved

    else:
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

        def restore() -> None:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

    try:
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    finally:
        restore()


def true_logit(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(logits (B, K), f_y (B,)) of ``model`` at ``x``."""
    logits = model(x)
    return logits, logits.gather(1, y[:, None]).squeeze(1)


def input_gradient(f_y: Tensor, x: Tensor) -> Tensor:
    """∇ₓ Σ f_y, kept in the graph (create_graph) so that the loss can be differentiated."""
    return torch.autograd.grad(f_y.sum(), x, create_graph=True)[0]


def _squared_norm(t: Tensor) -> Tensor:
    """Per-sample squared L2 norm over all non-batch dimensions: (B, ...) -> (B,)."""
    return t.flatten(1).pow(2).sum(1)


def _noise(x: Tensor, std: float, generator: torch.Generator | None) -> Tensor:
    return std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def taylor_inputs(x: Tensor, cfg: LossConfig, generator: torch.Generator | None) -> list[Tensor]:
    """The noisy inputs of the Taylor estimator: x + v for each of ``cfg.samples`` draws."""
    return [x + _noise(x, cfg.sigma, generator) for _ in range(cfg.samples)]


def taylor_from_logits(f_y: Tensor, noisy: list[Tensor], cfg: LossConfig) -> Tensor:
    """h = 2/σ²·(mean over draws of f_y(x+v) − f_y(x)), from the true-label logits."""
    return 2.0 / cfg.sigma**2 * (torch.stack(noisy).mean(0) - f_y)


def central_inputs(x: Tensor, cfg: LossConfig, generator: torch.Generator | None) -> list[Tensor]:
    """The noisy inputs of the central estimator: x + v, x − v for each draw, in that order."""
    out = []
    for _ in range(cfg.samples):
        v = _noise(x, cfg.sigma, generator)
        out += [x + v, x - v]
    return out


def central_from_logits(f_y: Tensor, noisy: list[Tensor], cfg: LossConfig) -> Tensor:
    """h = (mean over draws of f_y(x+v) + f_y(x−v), minus 2 f_y(x))/σ², from the true-label logits."""
    pairs = [plus + minus for plus, minus in zip(noisy[0::2], noisy[1::2])]
    return (torch.stack(pairs).mean(0) - 2.0 * f_y) / cfg.sigma**2


# Finite-difference estimators: name -> (noisy inputs from a detached x, h from the logits).
FINITE_DIFFERENCES: dict[str, tuple[Callable[..., list[Tensor]], Callable[..., Tensor]]] = {
    "taylor": (taylor_inputs, taylor_from_logits),
    "central": (central_inputs, central_from_logits),
}


def joint_true_logits(
    model: nn.Module, x: Tensor, y: Tensor, noisy: list[Tensor]
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """(clean logits, clean f_y, f_y of each noisy input) from one forward over [x, *noisy]."""
    logits, f_y = true_logit(model, torch.cat([x, *noisy]), y.repeat(1 + len(noisy)))
    clean, *noisy_f = f_y.split(x.shape[0])
    return logits[: x.shape[0]], clean, noisy_f


def _separate_forwards(name: str) -> Callable[..., Tensor]:
    """The ``forward="separate"`` estimator ``name``: each noisy input in its own forward."""
    make_inputs, from_logits = FINITE_DIFFERENCES[name]

    def trace(
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        f_y: Tensor,
        grad: Tensor | None,
        cfg: LossConfig,
        generator: torch.Generator | None,
    ) -> Tensor:
        # x detached: the loss is differentiated w.r.t. the weights only.
        noisy = [true_logit(model, n, y)[1] for n in make_inputs(x.detach(), cfg, generator)]
        return from_logits(f_y, noisy, cfg)

    trace.__doc__ = f"h by the {name} estimator ({from_logits.__doc__.strip()}), separate forwards."
    return trace


def hutchinson_trace(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    f_y: Tensor,
    grad: Tensor | None,
    cfg: LossConfig,
    generator: torch.Generator | None,
) -> Tensor:
    """h = vᵀ(∇²ₓf_y)v with v ~ N(0, I), by a second backward through ``grad``; averaged over draws."""
    draws = []
    for _ in range(cfg.samples):
        v = _noise(x, 1.0, generator)
        hv = torch.autograd.grad((grad * v).sum(), x, create_graph=True)[0]
        draws.append((hv * v).flatten(1).sum(1))
    return torch.stack(draws).mean(0)


ESTIMATORS: dict[str, Callable[..., Tensor]] = {
    "taylor": _separate_forwards("taylor"),
    "central": _separate_forwards("central"),
    "hutchinson": hutchinson_trace,
}


def _parts(
    model: nn.Module, x: Tensor, y: Tensor, cfg: LossConfig, generator, need_grad_norm: bool
) -> dict[str, Tensor]:
    """Clean logits, per-sample h and (if needed) ‖∇ₓf_y‖², all in float32 or wider."""
    wide = torch.promote_types(x.dtype, torch.float32)
    # Hutchinson differentiates through the input gradient, so it needs one even without the
    # gradient-norm term.
    need_grad = need_grad_norm or cfg.estimator == "hutchinson"
    # The weight gradient of Hutchinson's h is a third derivative: fused BatchNorm has none.
    batchnorm = any_order_batchnorm() if cfg.estimator == "hutchinson" else contextlib.nullcontext()
    # Hutchinson has no noisy forward: "batched" applies to the finite-difference estimators only.
    batched = cfg.forward == "batched" and cfg.estimator in FINITE_DIFFERENCES
    with exact_float32(x.device), batchnorm:
        x = x.detach().to(wide).requires_grad_(need_grad)
        if batched:
            make_inputs, from_logits = FINITE_DIFFERENCES[cfg.estimator]
            # Noisy inputs from a detached x: the input gradient below flows through the clean
            # rows of the joint forward only (BatchNorm's joint statistics included).
            noisy = make_inputs(x.detach(), cfg, generator)
            logits, f_y, noisy_f_y = joint_true_logits(model, x, y, noisy)
        else:
            logits, f_y = true_logit(model, x, y)
        grad = input_gradient(f_y, x) if need_grad else None
        if batched:
            h = from_logits(f_y, noisy_f_y, cfg)
        else:
            h = ESTIMATORS[cfg.estimator](model, x, y, f_y, grad, cfg, generator)
    grad_norm = _squared_norm(grad) if need_grad_norm else torch.zeros_like(h)
    return {"logits": logits, "h": h, "grad_norm": grad_norm}


def _result(total: Tensor, ce: Tensor, logits: Tensor, **parts: Tensor) -> dict[str, Tensor]:
    zero = torch.zeros((), device=total.device, dtype=total.dtype)
    out = {"total": total, "ce": ce, "trace": zero, "grad_norm": zero, "stability": zero}
    out.update(parts)
    out["logits"] = logits.detach()
    return out


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
    """ce + λ·½·mean ‖∇ₓf_y‖² (no finite difference: runs in the caller's precision)."""
    x = x.detach().requires_grad_(True)
    logits, f_y = true_logit(model, x, y)
    grad_norm = _squared_norm(input_gradient(f_y, x)).mean()
    ce = F.cross_entropy(logits, y)
    return _result(ce + cfg.lam * 0.5 * grad_norm, ce, logits, grad_norm=grad_norm)


def score_matching_loss(
    model: nn.Module, x: Tensor, y: Tensor, cfg: LossConfig, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """ce + λ·(mean h + ½·mean ‖∇ₓf_y‖² + μ·mean h²) (the paper's eq. 4)."""
    p = _parts(model, x, y, cfg, generator, need_grad_norm=True)
    ce = F.cross_entropy(p["logits"], y)
    trace, grad_norm, stability = p["h"].mean(), p["grad_norm"].mean(), p["h"].pow(2).mean()
    total = ce + cfg.lam * (trace + 0.5 * grad_norm + cfg.mu * stability)
    return _result(total, ce, p["logits"], trace=trace, grad_norm=grad_norm, stability=stability)


def anti_score_matching_loss(
    model: nn.Module, x: Tensor, y: Tensor, cfg: LossConfig, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """ce − λ·mean(min(h, τ)): the clamp applies to each sample before the batch mean."""
    p = _parts(model, x, y, cfg, generator, need_grad_norm=False)
    ce = F.cross_entropy(p["logits"], y)
    h = p["h"]
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

    Finite-difference losses need float32 with TF32 off in the backward pass too: the weight
    gradient of h is 2/σ² times a difference of two backward passes.
    """
    if loss.kind in ("score_matching", "anti_score_matching"):
        return exact_float32(device)
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
    ``grad_norm`` (mean ‖∇ₓf_y‖²) and ``stability`` (mean h²) — parts a loss does not use are 0 —
    plus ``logits``, the clean logits, detached. ``generator`` (on x's device) seeds the noise;
    None uses torch's global generator.
    """
    cfg = as_loss_config(loss)
    return LOSSES[cfg.kind](model, x, y, cfg, generator)
