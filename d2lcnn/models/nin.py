"""Network in Network (Lin, Chen & Yan, 2013) as in d2l: no fully connected layers. Each block is a
convolution and two 1x1 convolutions (a per-pixel MLP across channels); the last block outputs one
channel per class, which a global average pool turns into the logits. For 224x224 input::

    nin_block(96, 11x11, stride 4)  - MaxPool(3, 2)    # 96 x 54 x 54 -> 96 x 26 x 26
    nin_block(256, 5x5, pad 2)      - MaxPool(3, 2)    # 256 x 26 x 26 -> 256 x 12 x 12
    nin_block(384, 3x3, pad 1)      - MaxPool(3, 2)    # 384 x 12 x 12 -> 384 x 5 x 5
    Dropout(0.5) - nin_block(classes, 3x3, pad 1)      # classes x 5 x 5
    AdaptiveAvgPool(1) - Flatten                       # classes

It accepts any input from 67x67 (the third max pool then gets 3x3). `width` scales the hidden channel
counts (96, 256, 384), not the last block's, which is one per class.
"""

from __future__ import annotations

from torch import nn

from d2lcnn.models.base import Classifier, scaled
from d2lcnn.models.registry import register


def nin_block(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int
) -> nn.Sequential:
    """A convolution, then two 1x1 convolutions, each followed by ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
    )  # fmt: skip


class NiN(Classifier):
    """Four NiN blocks with max pools between them, then a global average pool: no linear layer."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, dropout: float = 0.5
    ) -> None:
        super().__init__(num_classes, in_channels, input_size=224, width=width, dropout=dropout)
        c1, c2, c3 = (scaled(c, width) for c in (96, 256, 384))
        self.features = nn.Sequential(
            nin_block(in_channels, c1, kernel_size=11, stride=4, padding=0),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nin_block(c1, c2, kernel_size=5, stride=1, padding=2),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nin_block(c2, c3, kernel_size=3, stride=1, padding=1),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Dropout(dropout),
            nin_block(c3, num_classes, kernel_size=3, stride=1, padding=1),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()

    def forward(self, x):
        return self.flatten(self.avgpool(self.features(x)))


@register
def nin(num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> NiN:
    """NiN as in d2l: four NiN blocks, global average pool, no linear layer. Input: C x 224 x 224."""
    return NiN(num_classes, in_channels, width)
