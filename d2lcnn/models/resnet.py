"""ResNet (He, Zhang, Ren & Sun, 2015): stacks of residual blocks, y = relu(F(x) + shortcut(x)).

The residual block is the first source's: two 3x3 convolutions with batch norm and a ReLU between them,
and a 1x1 convolution on the shortcut when the block changes the shape. As in torchvision (and the
paper's option B), the convolutions have no bias (the batch norm after them shifts), the 1x1 shortcut
has a batch norm too, and the attributes have torchvision's names: ResNet-18 and -34 load its weights.
Stems: "imagenet" (7x7 conv, stride 2, then a 3x3 max pool: 224 px -> 56 px) and "cifar" (one 3x3
conv, stride 1, no pool: a 32 px image has little to throw away).
"""

from __future__ import annotations

from torch import nn

from d2lcnn.errors import unknown_name
from d2lcnn.models.base import Classifier, scaled
from d2lcnn.models.registry import register


class ResidualBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity shortcut, or a 1x1 conv + BN one when `use_1x1conv`."""

    diagram = "residual"  # how d2lcnn.diagram draws it

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, use_1x1conv: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if use_1x1conv:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


class PreActivationBlock(nn.Module):
    """He et al. (2016), "Identity mappings in deep residual networks": BN, ReLU, 3x3 conv, BN, ReLU,
    3x3 conv, added to the shortcut with no ReLU after: y = x + F(x), so dy/dx = I + dF/dx and the
    identity reaches every later block unchanged. Arguments as in ResidualBlock; the 1x1 shortcut
    convolution has no batch norm after it (the next block starts with one)."""

    diagram = "residual"  # how d2lcnn.diagram draws it

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, use_1x1conv: bool = False
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.downsample = None
        if use_1x1conv:
            self.downsample = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x):
        y = self.conv1(self.relu(self.bn1(x)))
        y = self.conv2(self.relu(self.bn2(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return y + shortcut


class ResNet(Classifier):
    """A stem, four stages of residual blocks (64, 128, 256, 512 channels), global average pool, linear."""

    def __init__(
        self,
        blocks_per_stage: list[int],
        num_classes: int = 10,
        in_channels: int = 3,
        stem: str = "imagenet",
        width: float = 1.0,
    ) -> None:
        if stem not in ("imagenet", "cifar"):
            raise unknown_name("stem", stem, ("imagenet", "cifar"))
        super().__init__(num_classes, in_channels, 224 if stem == "imagenet" else 32, width=width)
        channels = [scaled(c, width) for c in (64, 128, 256, 512)]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, channels[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
            self.maxpool = None
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(channels[0], channels[0], blocks_per_stage[0], stride=1)
        self.layer2 = self._make_layer(channels[0], channels[1], blocks_per_stage[1], stride=2)
        self.layer3 = self._make_layer(channels[1], channels[2], blocks_per_stage[2], stride=2)
        self.layer4 = self._make_layer(channels[2], channels[3], blocks_per_stage[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels[3], num_classes)
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _make_layer(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        """One stage: the first block may halve the size and change channels, the rest keep both."""
        changes_shape = stride != 1 or in_channels != out_channels
        layers = [ResidualBlock(in_channels, out_channels, stride, use_1x1conv=changes_shape)]
        layers += [ResidualBlock(out_channels, out_channels) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


@register
def resnet18(
    num_classes: int = 10, in_channels: int = 3, stem: str = "imagenet", width: float = 1.0
) -> ResNet:
    """ResNet-18 (2-2-2-2 blocks). Input: C x 224 x 224 (stem="imagenet") or C x 32 x 32 ("cifar")."""
    return ResNet([2, 2, 2, 2], num_classes, in_channels, stem, width)


@register
def resnet34(
    num_classes: int = 10, in_channels: int = 3, stem: str = "imagenet", width: float = 1.0
) -> ResNet:
    """ResNet-34 (3-4-6-3 blocks). Input: C x 224 x 224 (stem="imagenet") or C x 32 x 32 ("cifar")."""
    return ResNet([3, 4, 6, 3], num_classes, in_channels, stem, width)
