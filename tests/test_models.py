"""The networks match the paper and the released code: CIFAR ResNet stem, softplus everywhere,
the released judge's exact layout, exact parameter counts."""

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


def test_standard_vgg11_has_biased_convs_and_fits_digits():
    model = build_model("vgg11", 10, in_channels=1, width=1 / 8)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and all(c.bias is not None for c in convs)
    assert all(a.beta == 10 for a in model.modules() if isinstance(a, nn.Softplus))
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    assert build_model("vgg11", 100, width=1 / 8)(torch.rand(2, 3, 32, 32)).shape == (2, 100)


def test_released_judge_has_the_released_layout_and_parameter_count():
    model = build_model("vgg11_released", 100)
    # The released models/vgg.py "vgg11": 10 x (conv3x3 with bias, BN, softplus β=10), 4 max-pools,
    # flatten, Linear(2048, classes). Written out layer by layer, not from the plan in the code.
    expected = []
    cin = 3
    for item in (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512):
        if item == "M":
            expected.append(("MaxPool2d", 2))
        else:
            expected += [("Conv2d", (cin, item, 3, True)), ("BatchNorm2d", item), ("Softplus", 10.0)]
            cin = item
    seen = []
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            assert (m.stride, m.padding) == ((1, 1), (1, 1))
            seen.append(("Conv2d", (m.in_channels, m.out_channels, m.kernel_size[0], m.bias is not None)))
        elif isinstance(m, nn.BatchNorm2d):
            seen.append(("BatchNorm2d", m.num_features))
        elif isinstance(m, nn.Softplus):
            seen.append(("Softplus", m.beta))
        elif isinstance(m, nn.MaxPool2d):
            seen.append(("MaxPool2d", m.kernel_size))
        else:
            seen.append((type(m).__name__, None))
    assert seen == expected
    assert (model.head.in_features, model.head.out_features) == (2 * 2 * 512, 100)
    # The head is the only module after the features: no average pool.
    assert [name for name, _ in model.named_children()] == ["features", "head"]
    # By hand: conv weights + biases, BN (γ, β) per channel, then the head.
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512)] + [(512, 512)] * 3
    by_hand = sum(9 * a * b + b + 2 * b for a, b in convs) + 2048 * 100 + 100
    assert count_parameters(model) == by_hand == 9_615_780
    assert count_parameters(build_model("vgg11", 100)) == 9_277_284  # the standard VGG-11 is not it
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 100)
    # The flattened map is what the head sees: 2x2 spatial positions of 512 channels.
    assert model.features(x).shape == (2, 512, 2, 2)


def test_released_judge_refuses_images_too_small_for_four_pools():
    assert build_model("vgg11_released", 10, width=1 / 8, image_size=16)(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    with pytest.raises(ValueError, match="at least 16 pixels.*use vgg11"):
        build_model("vgg11_released", 10, in_channels=1, image_size=8)


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
