"""DenseNet (Huang, Liu, van der Maaten & Weinberger, 2017) as in d2l. Where ResNet adds a block's input
to its output, DenseNet concatenates them: each convolution of a dense block sees the block's input and
every earlier convolution's output, and adds `growth_rate` channels. A transition block between two dense
blocks halves the channels (1x1 convolution) and the height and width (2x2 average pool). Convolutions
are pre-activation (batch norm, ReLU, convolution). For 96x96 input and 4 dense blocks of 4 convolutions::

    stem: Conv(64, 7x7, stride 2, pad 3) - BN - ReLU - MaxPool(3, 2, pad 1)   # 64 x 24 x 24
    dense1 (64 -> 192) - trans1 (-> 96 x 12 x 12)
    dense2 (96 -> 224) - trans2 (-> 112 x 6 x 6)
    dense3 (112 -> 240) - trans3 (-> 120 x 3 x 3)
    dense4 (120 -> 248)
    head: BN - ReLU - AdaptiveAvgPool(1) - Flatten - Linear(248 -> classes)

It accepts any input from 29x29 (the last transition's 2x2 average pool then gets 2x2). `width` scales
the stem's channels and the growth rate.
"""

from __future__ import annotations

import torch
from torch import nn

from d2lcnn.models.base import Classifier, scaled
from d2lcnn.models.registry import register


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Batch norm, ReLU, then a 3x3 convolution that keeps height and width."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(), nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
    )


class DenseBlock(nn.Module):
    """`num_convs` conv blocks; each one's output is concatenated to its input before the next one."""

    diagram = "dense"  # how d2lcnn.diagram draws it

    def __init__(self, num_convs: int, in_channels: int, growth_rate: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            *(conv_block(in_channels + i * growth_rate, growth_rate) for i in range(num_convs))
        )
        self.out_channels = in_channels + num_convs * growth_rate

    def forward(self, x):
        for block in self.convs:
            x = torch.cat((x, block(x)), dim=1)
        return x


def transition_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Batch norm, ReLU, a 1x1 convolution to `out_channels`, then a 2x2 average pool (halves the size)."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, kernel_size=1),
        nn.AvgPool2d(kernel_size=2, stride=2),
    )  # fmt: skip


class DenseNet(Classifier):
    """A stem; a dense block per entry of `arch` (its convolutions), with a channel-halving transition block
    between each two; then BN, pool, linear. `width` scales the stem's 64 channels and the growth rate."""

    def __init__(
        self,
        arch: tuple[int, ...],
        num_classes: int = 10,
        in_channels: int = 1,
        growth_rate: int = 32,
        width: float = 1.0,
    ) -> None:
        super().__init__(num_classes, in_channels, 96, growth_rate=growth_rate, arch=arch, width=width)
        channels, growth_rate = scaled(64, width), scaled(growth_rate, width)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=7, stride=2, padding=3),
            nn.BatchNorm2d(channels), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )  # fmt: skip
        self.blocks = nn.Sequential()
        for i, num_convs in enumerate(arch, start=1):
            dense = DenseBlock(num_convs, channels, growth_rate)
            self.blocks.add_module(f"dense{i}", dense)
            channels = dense.out_channels
            if i < len(arch):
                self.blocks.add_module(f"trans{i}", transition_block(channels, channels // 2))
                channels //= 2
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(),
            nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
            nn.Linear(channels, num_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


@register
def densenet(
    num_classes: int = 10,
    in_channels: int = 1,
    growth_rate: int = 32,
    arch: tuple[int, ...] = (4, 4, 4, 4),
    width: float = 1.0,
) -> DenseNet:
    """DenseNet as in d2l: four dense blocks of 4 convolutions, growth rate 32. Input: C x 96 x 96."""
    return DenseNet(arch, num_classes, in_channels, growth_rate, width)
