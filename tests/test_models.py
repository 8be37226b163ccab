"""The networks match docs/trainer.md (Models): CIFAR ResNet stem, softplus everywhere, exact parameter counts."""

import pytest
import torch
from torch import nn

from trainer.models import BatchNorm2d, any_order_batchnorm, build_model, count_parameters


def resnet_reference_count(depths, num_classes, in_channels=3, widths=(64, 128, 256, 512)):
    """Parameters of the CIFAR ResNet, derived by hand: conv weights, BN (γ, β), head."""
    conv = lambda cin, cout, k: cin * cout * k * k  # noqa: E731  (no bias)
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(in_channels, widths[0], 3) + bn(widths[0])  # stem
    cin = widths[0]
    for stage, (cout, depth) in enumerate(zip(widths, depths)):
        for block in range(depth):
            stride = 2 if stage > 0 and block == 0 else 1
            total += conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
            if stride != 1 or cin != cout:
                total += conv(cin, cout, 1) + bn(cout)  # 1x1 projection shortcut
            cin = cout
    return total + cin * num_classes + num_classes  # linear head with bias


def test_resnet18_for_cifar100_matches_the_design():
    model = build_model("resnet18", 100)
    modules = list(model.modules())
    assert not any(isinstance(m, (nn.ReLU, nn.MaxPool2d)) for m in modules)
    acts = [m for m in modules if isinstance(m, nn.Softplus)]
    # One after the stem and two per BasicBlock (the second after the residual add): 1 + 2·8.
    assert len(acts) == 17 and all(a.beta == 10 for a in acts)
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    stem = convs[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.bias is None
    assert stem.out_channels == 64
    assert all(c.bias is None for c in convs)
    shortcuts = [c for c in convs if c.kernel_size == (1, 1)]
    assert [c.stride for c in shortcuts] == [(2, 2)] * 3
    assert count_parameters(model) == resnet_reference_count([2, 2, 2, 2], 100) == 11_220_132
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 100)


def test_resnet9_and_width_scaling():
    assert count_parameters(build_model("resnet9", 10)) == resnet_reference_count([1, 1, 1, 1], 10)
    tiny = build_model("resnet9", 10, in_channels=1, width=1 / 16)
    assert count_parameters(tiny) == resnet_reference_count([1, 1, 1, 1], 10, 1, (4, 8, 16, 32))
    # Channels never drop below one.
    assert build_model("resnet9", 3, width=1e-3)(torch.rand(2, 3, 8, 8)).shape == (2, 3)


def test_softplus_is_applied_after_the_residual_add():
    model = build_model("resnet9", 10, width=1 / 16)
    block = model.stages[1][0]
    x = torch.randn(2, 4, 8, 8)
    inner = block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x)))))
    expected = nn.functional.softplus(inner + block.shortcut(x), beta=10)
    torch.testing.assert_close(block(x), expected)


def test_beta_none_gives_relu():
    modules = list(build_model("resnet9", 10, beta=None).modules())
    assert any(isinstance(m, nn.ReLU) for m in modules) and not any(
        isinstance(m, nn.Softplus) for m in modules
    )


def test_vgg11_judge_has_biased_convs_and_fits_digits():
    model = build_model("vgg11", 10, in_channels=1, width=1 / 8)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and all(c.bias is not None for c in convs)
    assert all(a.beta == 10 for a in model.modules() if isinstance(a, nn.Softplus))
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    assert build_model("vgg11", 100, width=1 / 8)(torch.rand(2, 3, 32, 32)).shape == (2, 100)


def test_unknown_arch_is_rejected():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("resnet50", 10)


@pytest.mark.parametrize("training", [True, False])
def test_any_order_batchnorm_matches_the_fused_layer(training):
    torch.manual_seed(0)
    fused, composite = BatchNorm2d(3), BatchNorm2d(3)
    with torch.no_grad():
        for bn in (fused, composite):
            bn.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
            bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
            bn.running_mean.fill_(0.2)
            bn.running_var.fill_(1.5)
            bn.train(training)
    x = torch.randn(4, 3, 5, 5)
    out = fused(x)
    with any_order_batchnorm():
        torch.testing.assert_close(composite(x), out)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(composite, name), getattr(fused, name))
