"""The paper's networks: CIFAR ResNet-18/ResNet-9 (the regularized models) and the VGG judges.

Two VGGs: ``vgg11_released`` has exactly the layout of the GAN-test judge in the authors' released
code (10 convs, 4 max-pools, a flattened map into the linear head); ``vgg11`` is the standard
VGG-11 (8 convs, 5 max-pools, global average pool), which also fits images too small for
``vgg11_released`` (8x8 digits).

All of them map a batch of images (B, C, H, W) in [0, 1] to logits (B, num_classes), with no
input normalization. Every non-linearity is softplus with sharpness beta = 10 (the paper needs a
twice-differentiable model for the Hessian-trace term); ``beta=None`` gives ReLU for comparison.
``width`` multiplies every channel count so that tiny models train on a CPU.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor, nn


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d that can switch to elementary ops, differentiable to any order.

    PyTorch's fused batch_norm has no third derivative, which training through the Hutchinson
    estimator (a double backward, then the weight gradient) needs. Inside
    :func:`any_order_batchnorm` this layer computes the same normalization from mean/var ops and
    updates the running statistics the same way; outside it is the fused layer.
    """

    composite = False  # set by any_order_batchnorm()

    def forward(self, x: Tensor) -> Tensor:
        if not BatchNorm2d.composite:
            return super().forward(x)
        dims = (0, 2, 3)
        if self.training:
            mean, var = x.mean(dims), x.var(dims, unbiased=False)
            with torch.no_grad():
                n = x.numel() // x.shape[1]
                self.num_batches_tracked += 1
                # Running variance is the unbiased one, as in nn.BatchNorm2d.
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight * torch.rsqrt(var + self.eps)
        return x * scale[:, None, None] + (self.bias - mean * scale)[:, None, None]


@contextlib.contextmanager
def any_order_batchnorm() -> Iterator[None]:
    """Make this module's BatchNorm2d layers differentiable to any order inside the block."""
    saved, BatchNorm2d.composite = BatchNorm2d.composite, True
    try:
        yield
    finally:
        BatchNorm2d.composite = saved


def activation(beta: float | None) -> nn.Module:
    """softplus(beta) — the paper's smooth ReLU — or ReLU when beta is None."""
    return nn.ReLU() if beta is None else nn.Softplus(beta=beta)


def channels(base: int, width: float) -> int:
    """``base`` channels scaled by ``width``, at least 1."""
    return max(1, round(base * width))


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with a residual connection; the activation follows the add."""

    def __init__(self, cin: int, cout: int, stride: int, beta: float | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = BatchNorm2d(cout)
        self.act1 = activation(beta)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = BatchNorm2d(cout)
        # 1x1 conv+BN projection whenever the shape changes, identity otherwise.
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), BatchNorm2d(cout))
        self.act2 = activation(beta)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem (stride 1, no max-pool), four BasicBlock stages, avg pool, linear."""

    def __init__(
        self,
        depths: list[int],
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        beta: float | None = 10.0,
    ) -> None:
        super().__init__()
        widths = [channels(c, width) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            BatchNorm2d(widths[0]),
            activation(beta),
        )
        stages = []
        cin = widths[0]
        for i, (cout, depth) in enumerate(zip(widths, depths)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(depth):
                blocks.append(BasicBlock(cin, cout, stride if j == 0 else 1, beta))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.stages(self.stem(x))).flatten(1))


# Layer plans: channel counts and "M" for a 2x2 max-pool.
VGG11_PLAN: list[int | str] = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
# The released code's "vgg11" (models/vgg.py): 10 convs, 4 pools, no pool after the last pair.
VGG11_RELEASED_PLAN: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512]
RELEASED_MIN_SIZE = 16  # pixels: four 2x max-pools must leave at least a 1x1 map


def vgg_features(plan: list[int | str], in_channels: int, width: float, beta: float | None, ceil: bool) -> nn.Sequential:
    """conv3x3(bias)+BN+activation for each channel count in ``plan``, a 2x2 max-pool for each "M"."""
    layers: list[nn.Module] = []
    cin = in_channels
    for item in plan:
        if item == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=ceil))
        else:
            cout = channels(int(item), width)
            layers += [nn.Conv2d(cin, cout, 3, 1, 1), BatchNorm2d(cout), activation(beta)]
            cin = cout
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """The standard VGG-11 (8 convs, 5 max-pools) with conv(bias)+BN+softplus and a global average
    pool. Not the released judge (that is :class:`ReleasedVGG`).

    The max-pools use ``ceil_mode=True``: on 32x32 inputs this changes nothing (every map has an
    even side), while on 8x8 ``digits`` images a 1x1 map stays 1x1 instead of vanishing
    (8 -> 4 -> 2 -> 1 -> 1 -> 1). A global average pool feeds the linear head for any input size.
    """

    def __init__(
        self, num_classes: int, in_channels: int = 3, width: float = 1.0, beta: float | None = 10.0
    ) -> None:
        super().__init__()
        self.features = vgg_features(VGG11_PLAN, in_channels, width, beta, ceil=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels(512, width), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


class ReleasedVGG(nn.Module):
    """The GAN-test judge of the authors' released code ("vgg11" in models/vgg.py).

    Convs 64,64,M,128,128,M,256,256,M,512,512,M,512,512 (each conv with bias, then BN, then
    softplus), the final map flattened into the linear head: at 32x32 a 2x2x512 map into
    Linear(2048, classes), 9,615,780 parameters for 100 classes. The head's input size depends on
    the image size, which must be at least 16 pixels.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        beta: float | None = 10.0,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        if image_size < RELEASED_MIN_SIZE:
            raise ValueError(
                f"vgg11_released needs images of at least {RELEASED_MIN_SIZE} pixels (four 2x max-pools), "
                f"not {image_size}; use vgg11 for smaller images"
            )
        self.features = vgg_features(VGG11_RELEASED_PLAN, in_channels, width, beta, ceil=False)
        side = image_size // 16  # four floor-mode 2x pools
        self.head = nn.Linear(channels(512, width) * side * side, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


ARCHS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": lambda image_size, **kw: ResNet([2, 2, 2, 2], **kw),
    "resnet9": lambda image_size, **kw: ResNet([1, 1, 1, 1], **kw),
    "vgg11": lambda image_size, **kw: VGG(**kw),
    "vgg11_released": lambda image_size, **kw: ReleasedVGG(image_size=image_size, **kw),
}
SIZED_ARCHS = ("vgg11_released",)  # archs whose layers depend on the image size


def build_model(
    arch: str,
    num_classes: int,
    in_channels: int = 3,
    width: float = 1.0,
    beta: float | None = 10.0,
    image_size: int | None = None,
) -> nn.Module:
    """Build ``arch`` (resnet18 | resnet9 | vgg11 | vgg11_released) mapping (B, C, H, W) images to
    (B, classes) logits. ``image_size`` (pixels per side, default 32) matters only for
    vgg11_released, whose linear head takes the flattened final map."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {sorted(ARCHS)}")
    size = 32 if image_size is None else image_size
    return ARCHS[arch](image_size=size, num_classes=num_classes, in_channels=in_channels, width=width, beta=beta)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
