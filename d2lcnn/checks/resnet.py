"""Self-checks of chapter 4 (ResNet)."""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from ..models import ResidualBlock, create
from ..show import count_params
from ..trace import trace
from . import Wrong, expect_model, expect_number, on_meta, register


def _params(name: str, **options: object) -> int:
    """The parameter count of the registered model `name`, built on the meta device (instant)."""
    return count_params(on_meta(name, **options))


@register("resnet-34")
def resnet34_extra(extra_params: object) -> str:
    cifar = dict(num_classes=10, stem="cifar")
    expected = _params("resnet34", **cifar) - _params("resnet18", **cifar)
    expect_number(
        extra_params,
        expected,
        what="the number of extra parameters",
        look_at="ResNet-34 has 1, 2, 4 and 1 more blocks per stage than ResNet-18, all of them with "
        "identity shortcuts; a block with c channels has two 3x3 convolutions of c x c x 3 x 3 weights "
        "(no bias) and two batch norms of 2c parameters",
    )
    return "the extra blocks, counted by hand, agree with trace"


@register("resnet-stem")
def last_stage_sides(side_64: object, side_96: object) -> str:
    model = on_meta("resnet18", num_classes=10, stem="imagenet")
    for answer, side in ((side_64, 64), (side_96, 96)):
        rows = trace(model, (3, side, side), depth=1).rows
        expected = next(row for row in rows if row.name == "layer4").output_shape[-1]
        expect_number(
            answer,
            expected,
            what=f"the side of layer4's maps for {side} px",
            look_at="the stem divides the side by 4 (a stride-2 convolution, then a stride-2 max pool), "
            "each of layer2, layer3 and layer4 by 2 more, and a stride-2 layer with padding rounds up",
        )
    return "layer4's maps are that small; trace agrees"


class Bottleneck(nn.Module):
    """ResNet-50's block as torchvision builds it: 1x1 (reduce), 3x3 (with the stride), 1x1 (expand),
    each with batch norm, and a 1x1 conv + BN projection where the shape changes."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


def resnet50_reference() -> nn.Module:
    """A ResNet-50 built from the package's ResNet-18 stem and head and `Bottleneck` stages."""
    with torch.device("meta"):
        model = create("resnet18", num_classes=1000)
        model.fc = nn.Linear(2048, 1000)
        in_channels = 64
        for name, blocks, mid, stride in (("layer1", 3, 64, 1), ("layer2", 4, 128, 2),
                                          ("layer3", 6, 256, 2), ("layer4", 3, 512, 2)):  # fmt: skip
            stage = [Bottleneck(in_channels, mid, 4 * mid, stride)]
            stage += [Bottleneck(4 * mid, mid, 4 * mid) for _ in range(blocks - 1)]
            setattr(model, name, nn.Sequential(*stage))
            in_channels = 4 * mid
    return model


def _shapes(model: nn.Module, kind: type[nn.Module]) -> Counter:
    return Counter(tuple(m.weight.shape) for m in model.modules() if isinstance(m, kind))


@register("resnet-bottleneck")
def resnet50(model: object) -> str:
    if not isinstance(model, nn.Module):
        raise Wrong(f"the answer should be a network (a torch.nn.Module), not {type(model).__name__}")
    reference = resnet50_reference()
    got = trace(model, (3, 224, 224))
    if got.output_shape != (1, 1000):
        raise Wrong("for a 3 x 224 x 224 image the network should output 1000 class scores")
    mine, theirs = _shapes(model, nn.Conv2d), _shapes(reference, nn.Conv2d)
    if sum(mine.values()) != sum(theirs.values()):
        more = "more" if sum(mine.values()) > sum(theirs.values()) else "fewer"
        raise Wrong(
            f"your network has {more} convolutions than ResNet-50: a stem convolution, three per "
            "bottleneck block in stages of 3, 4, 6 and 3 blocks, and one 1x1 projection per stage"
        )
    if mine != theirs:
        raise Wrong(
            "some convolutions have other shapes than ResNet-50's: each block reduces to a quarter of "
            "its output channels (64, 128, 256, 512), and its last 1x1 convolution expands to 4x that"
        )
    expected = count_params(reference)
    expect_number(
        count_params(model),
        expected,
        what="your network's parameter count",
        look_at="the convolutions are right, so look at the batch norms (one after every convolution, "
        "the projections' included), at biases (the convolutions have none) and at the last linear layer",
    )
    return f"{got.total_params:,} parameters, as in torchvision's resnet50"


class SourceBlock(ResidualBlock):
    """The first write-up's block: convolutions with bias, a bare 1x1 convolution on the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, use_1x1conv: bool = False):
        super().__init__(in_channels, out_channels, stride, use_1x1conv)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if use_1x1conv:
            self.downsample = nn.Conv2d(in_channels, out_channels, 1, stride=stride)


def source_gain() -> int:
    """How many parameters a full-width ResNet-18 (CIFAR stem) gains with `SourceBlock` everywhere."""
    with torch.device("meta"):
        model = create("resnet18", num_classes=10, stem="cifar")
        before = count_params(model)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            stage = getattr(model, name)
            for i, block in enumerate(stage):
                args = (block.conv1.in_channels, block.conv1.out_channels, block.conv1.stride[0])
                stage[i] = SourceBlock(*args, use_1x1conv=block.downsample is not None)
        return count_params(model) - before


@register("resnet-source-block")
def source_block(block: object, gain: object) -> str:
    summary = expect_model(
        block,
        SourceBlock(64, 128, stride=2, use_1x1conv=True),
        (1, 64, 32, 32),
        look_at="keep ResidualBlock's layers but give conv1 and conv2 a bias, and make the shortcut a "
        "single 1x1 convolution with stride 2 and a bias, without batch norm",
    )
    expect_number(
        gain,
        source_gain(),
        what="the number of parameters ResNet-18 gains",
        look_at="count the biases of the 16 block convolutions (one per output channel) and of the 3 "
        "shortcut convolutions, and subtract the 2c parameters of each shortcut batch norm removed",
    )
    return f"the block is right ({summary}), and so is the gain"
