"""GoogLeNet (Szegedy et al., 2014) as in d2l. An Inception block does not choose a kernel size: it runs
a 1x1, a 3x3 and a 5x5 convolution (the last two after a 1x1 convolution that cuts the channels first)
and a 3x3 max pool side by side, and concatenates their outputs along the channels. For 96x96 input::

    b1: Conv(64, 7x7, stride 2, pad 3) - ReLU - MaxPool(3, 2, pad 1)        # 64 x 24 x 24
    b2: Conv(64, 1x1) - ReLU - Conv(192, 3x3, pad 1) - ReLU - MaxPool       # 192 x 12 x 12
    b3: 2 Inception blocks (256, 480 channels) - MaxPool                    # 480 x 6 x 6
    b4: 5 Inception blocks (512, 512, 512, 528, 832 channels) - MaxPool     # 832 x 3 x 3
    b5: 2 Inception blocks (832, 1024 channels) - AdaptiveAvgPool(1) - Flatten   # 1024
    fc: Linear(1024 -> classes)

Like d2l's, it leaves out the paper's local response normalisation and auxiliary classifiers. Every pool
has padding 1, so each halving rounds up: it accepts any input side. `width` scales every channel count.
"""

from __future__ import annotations

import torch
from torch import nn

from d2lcnn.models.base import Classifier, scaled
from d2lcnn.models.registry import register

# (c1, (c2 reduce, c2), (c3 reduce, c3), c4) of each Inception block, stage by stage, as in d2l.
STAGES: dict[str, list[tuple[int, tuple[int, int], tuple[int, int], int]]] = {
    "b3": [(64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64)],
    "b4": [(192, (96, 208), (16, 48), 64), (160, (112, 224), (24, 64), 64), (128, (128, 256), (24, 64), 64),
           (112, (144, 288), (32, 64), 64), (256, (160, 320), (32, 128), 128)],
    "b5": [(256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128)],
}  # fmt: skip


class Inception(nn.Module):
    """Four parallel branches, concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max pool -> 1x1.

    c1 and c4 are the output channels of the 1x1 and the pool branch; c2 and c3 are (channels after the
    1x1 reduction, output channels) of the 3x3 and the 5x5 branch.
    """

    diagram = "branches"  # how d2lcnn.diagram draws it

    def __init__(self, in_channels: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(nn.Conv2d(in_channels, c1, kernel_size=1), nn.ReLU())
        self.branch2 = nn.Sequential(
            nn.Conv2d(in_channels, c2[0], kernel_size=1), nn.ReLU(),
            nn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.branch3 = nn.Sequential(
            nn.Conv2d(in_channels, c3[0], kernel_size=1), nn.ReLU(),
            nn.Conv2d(c3[0], c3[1], kernel_size=5, padding=2), nn.ReLU(),
        )  # fmt: skip
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            nn.Conv2d(in_channels, c4, kernel_size=1), nn.ReLU(),
        )  # fmt: skip
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x):
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([branch(x) for branch in branches], dim=1)


class GoogLeNet(Classifier):
    """Stem b1, b2; Inception stages b3, b4, b5; then a linear layer `fc` on the pooled 1024 channels."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> None:
        super().__init__(num_classes, in_channels, input_size=96, width=width)

        def w(channels: int) -> int:
            return scaled(channels, width)

        def pool() -> nn.MaxPool2d:
            return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.b1 = nn.Sequential(
            nn.Conv2d(in_channels, w(64), kernel_size=7, stride=2, padding=3), nn.ReLU(), pool()
        )
        self.b2 = nn.Sequential(
            nn.Conv2d(w(64), w(64), kernel_size=1), nn.ReLU(),
            nn.Conv2d(w(64), w(192), kernel_size=3, padding=1), nn.ReLU(),
            pool(),
        )  # fmt: skip
        channels = w(192)
        for name, blocks in STAGES.items():
            layers: list[nn.Module] = []
            for c1, c2, c3, c4 in blocks:
                block = Inception(channels, w(c1), (w(c2[0]), w(c2[1])), (w(c3[0]), w(c3[1])), w(c4))
                layers.append(block)
                channels = block.out_channels
            layers += [nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten()] if name == "b5" else [pool()]
            self.add_module(name, nn.Sequential(*layers))  # self.b3, self.b4, self.b5
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(self.b5(self.b4(self.b3(self.b2(self.b1(x))))))


@register
def googlenet(num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> GoogLeNet:
    """GoogLeNet as in d2l: nine Inception blocks, no auxiliary classifiers. Input: C x 96 x 96."""
    return GoogLeNet(num_classes, in_channels, width)
