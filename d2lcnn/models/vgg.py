"""VGG (Simonyan & Zisserman, 2014): five blocks of 3x3 convolutions, each ending in a 2x2 max pool.

The depths differ only in the convolutions per block. In the table (the second source's), a number is a
3x3 convolution with that many output channels, "M" a max pool; `vgg_block` (the first source's) builds
each run of numbers. Heads: "imagenet" (224x224 input, pooled to 7x7, then 512*7*7 -> 4096 -> 4096 ->
classes, as in the paper and torchvision) and "cifar" (32x32 input, 1x1 after the last pool, then
512 -> 512 -> 512 -> classes). `width` scales every convolution's channels.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from d2lcnn.errors import unknown_name
from d2lcnn.models.base import Classifier, scaled
from d2lcnn.models.registry import register

CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}  # fmt: skip

HEADS = {"imagenet": (7, 4096, 224), "cifar": (1, 512, 32)}  # pooled side, hidden width, input side


def vgg_block(num_convs: int, in_channels: int, out_channels: int, batch_norm: bool = False):
    """`num_convs` 3x3 convolutions (same padding, each followed by ReLU), then a 2x2 max pool."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU())
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def blocks_of(config: list[int | str]) -> list[tuple[int, int]]:
    """(number of convolutions, output channels) for each block of a config row."""
    blocks, convs = [], []
    for item in config:
        if item == "M":
            blocks.append((len(convs), convs[-1]))
            convs = []
        else:
            convs.append(item)
    return blocks


class VGG(Classifier):
    """VGG from a config row: five blocks made by `vgg_block`, then a three-layer classifier."""

    def __init__(
        self,
        config: list[int | str],
        num_classes: int = 10,
        in_channels: int = 3,
        batch_norm: bool = False,
        head: str = "imagenet",
        width: float = 1.0,
        dropout: float = 0.5,
    ) -> None:
        if head not in HEADS:
            raise unknown_name("head", head, HEADS)
        pooled, hidden, input_size = HEADS[head]
        super().__init__(
            num_classes, in_channels, input_size, batch_norm=batch_norm, width=width, dropout=dropout
        )
        blocks = []
        for num_convs, channels in blocks_of(config):
            channels = scaled(channels, width)
            blocks.append(vgg_block(num_convs, in_channels, channels, batch_norm))
            in_channels = channels
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((pooled, pooled))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * pooled * pooled, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip
        for module in self.modules():  # the second source's and torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


def _builder(name: str, config_letter: str) -> Callable[..., VGG]:
    """The registered builder of one depth: the same options for all four."""

    def build(
        num_classes: int = 10, in_channels: int = 3, batch_norm: bool = False,
        head: str = "imagenet", width: float = 1.0, dropout: float = 0.5,
    ) -> VGG:  # fmt: skip
        """Input: C x 224 x 224 (head="imagenet"), C x 32 x 32 ("cifar")."""
        return VGG(CONFIGS[name], num_classes, in_channels, batch_norm, head, width, dropout)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"VGG-{name[3:]} (config {config_letter}). {build.__doc__}"
    return register(build)


vgg11 = _builder("vgg11", "A")
vgg13 = _builder("vgg13", "B")
vgg16 = _builder("vgg16", "D")
vgg19 = _builder("vgg19", "E")
