"""A fast VGG for CIFAR-10 ("VGG, ten years on"), after KellerJordan/cifar10-airbench's airbench94.

Still VGG: groups of 3x3 convolutions, each group halving the image with a max pool, no skips. What
ten years changed:

- a 2x2 stem convolution with twice as many outputs as a 2x2 patch has numbers (24 for RGB); the
  recipe sets its weights from the data so that its outputs are whitened patches, then freezes them;
- few, wide layers: three groups of two convolutions with 64, 256 and 256 channels. Wide layers keep
  the CPU's matrix units busy (quarter-width VGG ran at about a fifth of the bf16 peak);
- the pool comes right after a group's first convolution, before batch norm and GELU, so the
  norm and the activation work on a quarter of the pixels;
- batch norm without a learned scale (a scale before the next convolution is redundant), with
  fast-moving running statistics (momentum 0.4) and a tiny eps;
- each convolution starts as an identity map on its first channels (an implicit skip, "dirac" init);
- the head is a global max pool and a linear layer without bias whose logits are scaled by 1/9.
"""

from __future__ import annotations

import torch
from torch import nn

from d2lcnn.models.base import Classifier, scaled
from d2lcnn.models.registry import register

# Output channels of each group's convolutions: two per group.
CONFIGS: dict[str, list[int]] = {"fast_vgg": [64, 256, 256]}

STEM_KERNEL = 2  # the stem sees 2x2 patches
LOGIT_SCALE = 1 / 9  # small logits at the start; the linear layer has no bias to absorb it
BN_MOMENTUM = 0.4  # torch's convention: the weight of the new batch in the running statistics
BN_EPS = 1e-12


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """Batch norm with a shift but no trained scale (the scale stays 1)."""
    norm = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    norm.weight.requires_grad_(False)
    return norm


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3x3 convolution (same padding, no bias) whose first `in_channels` filters start as the identity."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(in_channels, out_channels)])
    return conv


def stem(in_channels: int) -> nn.Conv2d:
    """The 2x2 convolution that the recipe turns into patch whitening: 2 * C * 2 * 2 outputs."""
    return nn.Conv2d(in_channels, 2 * in_channels * STEM_KERNEL**2, STEM_KERNEL)


class Scale(nn.Module):
    """Multiply by a constant."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:.4g}"


def whitened(stem: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The stem's output, computed in fp32 even under autocast: whitening multiplies the faint
    directions of a patch by up to 45, and with them bf16's rounding error of the input."""
    device = x.device.type
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        with torch.autocast(device, enabled=False):
            return stem(x.float())
    return stem(x)


def head(in_channels: int, num_classes: int) -> nn.Sequential:
    """Global max pool, then a bias-free linear layer whose logits are scaled by LOGIT_SCALE."""
    return nn.Sequential(
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes, bias=False),
        Scale(LOGIT_SCALE),
    )  # fmt: skip


class ConvGroup(nn.Module):
    """conv, max pool (halves the size), BN, GELU, then conv, BN, GELU."""

    diagram = "sequence"  # d2lcnn.diagram draws its layers: the pool right after the first conv shows

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = batch_norm(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.norm2 = batch_norm(out_channels)
        self.act = nn.GELU()

    def forward(self, x):
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class FastVGG(Classifier):
    """The stem, a group per entry of `config` (here a ConvGroup of that width), then a global max
    pool and a scaled linear layer."""

    def __init__(self, config: list, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__(num_classes, in_channels, 32, width=width)
        self.stem = stem(in_channels)
        self.act = nn.GELU()
        channels, groups = self.stem.out_channels, []
        for entry in config:
            group, channels = self.make_group(channels, entry, width)
            groups.append(group)
        self.features = nn.Sequential(*groups)
        self.head = head(channels, num_classes)

    def make_group(self, in_channels: int, entry: int, width: float) -> tuple[nn.Module, int]:
        """The group for one entry of the config, and its output channels."""
        out_channels = scaled(entry, width)
        return ConvGroup(in_channels, out_channels), out_channels

    def forward(self, x):
        return self.head(self.features(self.act(whitened(self.stem, x))))


@register
def fast_vgg(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> FastVGG:
    """VGG for fast CIFAR-10 training: whitening stem, three wide conv groups. Input: C x 32 x 32."""
    return FastVGG(CONFIGS["fast_vgg"], num_classes, in_channels, width)
