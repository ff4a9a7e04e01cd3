"""Self-checks of chapter 7 (GoogLeNet)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import is_int
from ..models import create
from ..models.googlenet import Inception
from ..trace import trace
from . import Wrong, expect_model, on_meta, register

BLOCK_3A = (192, 64, (96, 128), (16, 32), 32)  # block 3a's budget: in_channels, c1, c2, c3, c4
BLOCK_3A_INPUT = (1, 192, 12, 12)  # what block 3a receives from the stem in a 96x96 image


def googlenet_flops(width: float, side: int) -> int:
    """FLOPs of the chapter's GoogLeNet at `width` on one side x side image."""
    return trace(on_meta("googlenet", num_classes=10, width=width), (1, side, side)).total_flops


def one_kernel_googlenet() -> nn.Module:
    """Full-width GoogLeNet with every Inception block replaced by one 3x3 convolution and a ReLU."""
    model = create("googlenet", num_classes=10)
    for stage in (model.b3, model.b4, model.b5):
        for index, layer in enumerate(stage):
            if isinstance(layer, Inception):
                conv = nn.Conv2d(layer.branch1[0].in_channels, layer.out_channels, kernel_size=3, padding=1)
                stage[index] = nn.Sequential(conv, nn.ReLU())
    return model


def unit(c_in: int, c_out: int, kernel_size: int, bias: bool) -> list[nn.Module]:
    """A convolution keeping the height and width, batch norm and a ReLU."""
    conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=bias)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU()]


def inception_bn(bias: bool) -> nn.Module:
    """Block 3a with batch norm after every convolution (each convolution with or without a bias)."""
    c_in, c1, (r2, c2), (r3, c3), c4 = BLOCK_3A
    return nn.ModuleList(
        [
            nn.Sequential(*unit(c_in, c1, 1, bias)),
            nn.Sequential(*unit(c_in, r2, 1, bias), *unit(r2, c2, 3, bias)),
            nn.Sequential(*unit(c_in, r3, 1, bias), *unit(r3, c3, 5, bias)),
            nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *unit(c_in, c4, 1, bias)),
        ]
    )


class Branches(nn.Module):
    """Runs `branches` side by side and concatenates their outputs along the channels."""

    def __init__(self, branches: nn.ModuleList) -> None:
        super().__init__()
        self.branches = branches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


@register("googlenet-width")
def width_side(side: object) -> str:
    if not is_int(side) or not 8 <= side <= 224:
        raise Wrong("the side should be a whole number of pixels between 8 and 224")
    ratio = googlenet_flops(0.5, side) / googlenet_flops(0.25, 96)
    if not 0.9 <= ratio <= 1.1:
        raise Wrong(
            f"at that side width 0.5 costs {'more' if ratio > 1 else 'less'} than width 0.25 at 96x96 "
            "(by more than 10%): the FLOPs grow with the square of the width and of the side"
        )
    return f"width 0.5 at {side}x{side} needs {ratio:.2f} times the FLOPs of the cpu profile's network"


@register("googlenet-one-kernel")
def one_kernel(model: object) -> str:
    return expect_model(
        model,
        one_kernel_googlenet(),
        (1, 1, 96, 96),
        look_at="start from create('googlenet', num_classes=10) and replace every Inception block of "
        "b3, b4 and b5 by a 3x3 convolution (padding 1) from the block's input channels to its "
        "out_channels, followed by a ReLU",
    )


@register("googlenet-batch-norm")
def batch_norm(block: object) -> str:
    look_at = (
        "block 3a's four branches, each convolution followed by nn.BatchNorm2d over its channels and then "
        "the ReLU; the pool keeps its stride 1 and padding 1"
    )
    try:  # a bias before batch norm is redundant (the norm subtracts it again): accept either
        return expect_model(block, Branches(inception_bn(bias=False)), BLOCK_3A_INPUT, look_at=look_at)
    except Wrong:
        return expect_model(block, Branches(inception_bn(bias=True)), BLOCK_3A_INPUT, look_at=look_at)


@register("googlenet-aux")
def auxiliary_head(head: object) -> str:
    reference = nn.Sequential(
        nn.AvgPool2d(kernel_size=5, stride=3), nn.Conv2d(512, 128, kernel_size=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(128, 1024), nn.ReLU(), nn.Dropout(0.7), nn.Linear(1024, 10),
    )  # fmt: skip
    return expect_model(
        head,
        reference,
        (1, 512, 6, 6),
        look_at="block 4a outputs 512 maps of 6x6 at 96x96: work out what the 5x5 average pool with "
        "stride 3 leaves, which sets the input size of the first linear layer",
    )
