"""The gradient-norm term without double backward, against float64 double backward."""

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.config import ConfigError, LossConfig, load_config
from trainer.losses import compute_loss, grad_norm_term, input_gradient, precision, true_logit
from trainer.models import build_model


def tiny_resnet():
    torch.manual_seed(0)
    return build_model("resnet9", 5, in_channels=3, width=1 / 8)


def batch():
    gen = torch.Generator().manual_seed(1)
    return torch.rand(16, 3, 8, 8, generator=gen), torch.arange(16) % 5


def term_weight_gradient(model, x, y, dtype, method, eps=1e-3):
    """∇θ of the ½·mean‖∇ₓf_y‖² term in train mode (BatchNorm couples the batch), flattened."""
    model = build_model("resnet9", 5, in_channels=3, width=1 / 8)
    model.load_state_dict(tiny_resnet().state_dict())
    model = model.to(dtype).train()
    cfg = LossConfig(kind="grad_norm", grad_norm_method=method, grad_norm_eps=eps)
    xr = x.to(dtype).requires_grad_(True)
    _, f_y = true_logit(model, xr, y)
    grad = input_gradient(f_y, xr, create_graph=method == "double_backward", retain_graph=True)
    value, term = grad_norm_term(model, xr, y, f_y, grad, cfg)
    grads = torch.autograd.grad(term, list(model.parameters()), allow_unused=True, materialize_grads=True)
    return value.detach(), term.detach(), torch.cat([g.flatten() for g in grads]).double()


# ε from the measured table in docs/losses.md (CPU float32, train mode): the error is smallest
# around 1e-3 for the central difference; the bounds below are ~3x the measured errors.
@pytest.mark.parametrize(
    "dtype, method, eps, min_cosine, max_rel",
    [
        (torch.float64, "central_difference", 1e-3, 0.99999, 1e-3),
        (torch.float32, "central_difference", 1e-3, 0.999, 2e-2),
        (torch.float32, "forward_difference", 1e-3, 0.999, 5e-2),
    ],
)
def test_finite_difference_weight_gradient_matches_float64_double_backward(dtype, method, eps, min_cosine, max_rel):
    x, y = batch()
    model = tiny_resnet()
    _, ref_term, ref = term_weight_gradient(model, x, y, torch.float64, "double_backward")
    value, term, got = term_weight_gradient(model, x, y, dtype, method, eps)
    cosine = F.cosine_similarity(got, ref, dim=0).item()
    rel = ((got - ref).norm() / ref.norm()).item()
    assert cosine >= min_cosine and rel <= max_rel, (cosine, rel)
    # The term's value is ½·mean‖∇ₓf_y‖² whichever method takes its gradient.
    torch.testing.assert_close(term.double(), ref_term, rtol=1e-5 if dtype == torch.float32 else 1e-10, atol=0)
    torch.testing.assert_close(2 * term, value)


def test_finite_difference_gradient_is_not_trivially_close():
    # A wrong direction (the gradient of the other class's logit) must fail the bar above, or
    # the cosine test could not tell a right surrogate from a wrong one.
    x, y = batch()
    model = tiny_resnet()
    _, _, ref = term_weight_gradient(model, x, y, torch.float64, "double_backward")
    _, _, wrong = term_weight_gradient(model, x, (y + 1) % 5, torch.float64, "central_difference")
    assert F.cosine_similarity(wrong, ref, dim=0).item() < 0.999


@pytest.mark.parametrize("kind", ["grad_norm", "score_matching"])
def test_losses_report_the_same_parts_with_either_method(kind):
    x, y = batch()
    out = {}
    for method in ("double_backward", "central_difference", "forward_difference"):
        model = tiny_resnet().double().train()
        cfg = LossConfig(kind=kind, lam=0.1, mu=1e-4, grad_norm_method=method)
        with precision(cfg, x.device):
            out[method] = compute_loss(model, x.double(), y, cfg, generator=torch.Generator().manual_seed(2))
            out[method]["total"].backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    for method in ("central_difference", "forward_difference"):
        for key in ("total", "ce", "trace", "grad_norm", "stability"):
            torch.testing.assert_close(out[method][key].detach(), out["double_backward"][key].detach(), msg=key)
    assert not out["central_difference"]["grad_norm"].requires_grad  # logged value, detached


def test_zero_input_gradient_gives_a_finite_zero_term():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).double()
    with torch.no_grad():
        model[1].weight.zero_()
    x, y = torch.rand(4, 3, 2, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    out = compute_loss(model, x, y, {"kind": "grad_norm", "lam": 1.0, "grad_norm_method": "central_difference"})
    out["total"].backward()
    assert out["grad_norm"].item() == 0.0 and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_grad_norm_method_is_validated():
    assert LossConfig().grad_norm_method == "double_backward"  # exact; the default until measured
    assert load_config(None, ["loss.grad_norm_method=central_difference"]).loss.grad_norm_method == "central_difference"
    with pytest.raises(ConfigError, match=r"loss\.grad_norm_method"):
        load_config(None, ["loss.grad_norm_method=triple_backward"])
    with pytest.raises(ConfigError, match=r"loss\.grad_norm_eps"):
        load_config(None, ["loss.grad_norm_eps=0"])
    assert math.isclose(LossConfig().grad_norm_eps, 1e-3)
