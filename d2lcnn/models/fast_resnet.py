"""A fast ResNet for CIFAR-10: the residual form of fast_vgg, in the line of David Page's ResNet-9
(davidcpage/cifar10-fast, 94% in 24 epochs).

Page's network is three groups, each a convolution and a 2x2 max pool; the first and the last group
add a residual block (two 3x3 conv-BN-activation layers whose output is added to their input). This
one keeps that layout and takes fast_vgg's parts: the 2x2 whitening stem, batch norm without a
learned scale, GELU, convolutions starting as identity maps on their first channels, pooling right
after a group's first convolution, and a global max pool with a bias-free linear layer scaled by 1/9.
"""

from __future__ import annotations

from torch import nn

from d2lcnn.models.base import scaled
from d2lcnn.models.fast_vgg import FastVGG, batch_norm, conv3x3
from d2lcnn.models.registry import register

# One (output channels, has a residual block) pair per group.
CONFIGS: dict[str, list[tuple[int, bool]]] = {"fast_resnet": [(64, True), (256, False), (256, True)]}


def conv_bn_gelu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(in_channels, out_channels), batch_norm(out_channels), nn.GELU())


class Residual(nn.Module):
    """x + f(x), f being two 3x3 conv-BN-GELU layers that keep the channels and the size."""

    diagram = "residual"  # how d2lcnn.diagram draws it

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_gelu(channels, channels), conv_bn_gelu(channels, channels))

    def forward(self, x):
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """conv, max pool (halves the size), BN, GELU; then a Residual block if `residual`."""

    diagram = "sequence"  # d2lcnn.diagram draws its layers, and the Residual block with its skip

    def __init__(self, in_channels: int, out_channels: int, residual: bool) -> None:
        super().__init__()
        self.conv = conv3x3(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)
        self.norm = batch_norm(out_channels)
        self.act = nn.GELU()
        self.residual = Residual(out_channels) if residual else None

    def forward(self, x):
        x = self.act(self.norm(self.pool(self.conv(x))))
        return x if self.residual is None else self.residual(x)


class FastResNet(FastVGG):
    """FastVGG with a ResidualGroup per (width, residual) entry of `config`."""

    def make_group(self, in_channels: int, entry: tuple[int, bool], width: float) -> tuple[nn.Module, int]:
        out_channels = scaled(entry[0], width)
        return ResidualGroup(in_channels, out_channels, residual=entry[1]), out_channels


@register
def fast_resnet(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> FastResNet:
    """ResNet-9-style network for fast CIFAR-10 training, with fast_vgg's parts. Input: C x 32 x 32."""
    return FastResNet(CONFIGS["fast_resnet"], num_classes, in_channels, width)
