"""Self-checks of chapter 6 (Network in Network)."""

from __future__ import annotations

from torch import nn

from ..show import count_params
from ..trace import trace
from . import Wrong, expect_model, expect_number, on_meta, register

# The block the variants are checked on: NiN's second block (5x5 convolution, padding 2) on a small map.
BLOCK_ARGS = (64, 128, 5, 1, 2)
BLOCK_INPUT = (1, 64, 12, 12)


def class_map_side(side: int) -> int:
    """The side of NiN's class maps (what the global average pool averages) for a side x side input."""
    return trace(on_meta("nin", num_classes=10), (1, side, side)).rows[0].output_shape[-1]


def block_variant(ones: int = 2, norm: bool = False, bias: bool = True) -> nn.Sequential:
    """NiN's second block with `ones` 1x1 convolutions, batch norm after each convolution if `norm`."""
    in_channels, out_channels, kernel_size, stride, padding = BLOCK_ARGS
    layers: list[nn.Module] = []
    for number in range(ones + 1):
        if number == 0:
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias))
        else:
            layers.append(nn.Conv2d(out_channels, out_channels, kernel_size=1, bias=bias))
        layers += [nn.BatchNorm2d(out_channels), nn.ReLU()] if norm else [nn.ReLU()]
    return nn.Sequential(*layers)


def built_block(make_block: object) -> nn.Module:
    """Call the student's block function with the arguments of NiN's second block."""
    if not callable(make_block):
        raise Wrong(
            "the answer should be a function like nin_block, taking (in_channels, out_channels, "
            f"kernel_size, stride, padding), not {type(make_block).__name__}"
        )
    return make_block(*BLOCK_ARGS)


def expect_block(make_block: object, reference: nn.Module, look_at: str) -> str:
    """`expect_model` for a block function, checked on NiN's second block (64 -> 128 channels, 5x5)."""
    summary = expect_model(built_block(make_block), reference, BLOCK_INPUT, look_at=look_at)
    return f"checked as a 64 -> 128 channel block with 5x5 kernels on 12x12 maps: {summary}"


@register("nin-input-size")
def input_size(side: object) -> str:
    if not isinstance(side, int) or side < 67:
        raise Wrong("the side should be a whole number of pixels, at least 67 (the smallest input NiN takes)")
    if class_map_side(side) < 2:
        raise Wrong(
            "at that side the class maps are still 1x1: follow the side through the 11x11 convolution "
            "with stride 4 and the three 3x3 max pools with stride 2"
        )
    if class_map_side(side - 1) >= 2:
        raise Wrong("a smaller input already gives 2x2 class maps: look for the smallest side")
    return "one pixel less and the global average pool has a single position left to average"


@register("nin-fc-head")
def fc_head(params: object) -> str:
    head = [nn.Linear(384 * 5 * 5, 4096), nn.Linear(4096, 4096), nn.Linear(4096, 10)]
    expect_number(
        params,
        count_params(nn.Sequential(*head)),
        what="the parameter count of the three linear layers",
        look_at="a linear layer has out x (in + 1) parameters, and the first one reads all 384 x 5 x 5 "
        "values of the last feature map",
    )
    return "the first linear layer alone holds most of them, as in AlexNet"


@register("nin-one-1x1")
def one_1x1(make_block: object) -> str:
    return expect_block(
        make_block,
        block_variant(ones=1),
        look_at="keep the first convolution with its kernel size, stride and padding, then one 1x1 "
        "convolution with as many output channels, each followed by a ReLU",
    )


@register("nin-batch-norm")
def batch_norm(make_block: object) -> str:
    look_at = "each of the three convolutions is followed by nn.BatchNorm2d over its channels, then a ReLU"
    try:  # a bias before batch norm is redundant (the norm subtracts it again): accept either
        return expect_block(make_block, block_variant(norm=True, bias=False), look_at)
    except Wrong:
        return expect_block(make_block, block_variant(norm=True, bias=True), look_at)


@register("nin-width-resolution")
def width_resolution(flops_full_112: object, flops_half_224: object) -> str:
    for answer, width, side in ((flops_full_112, 1.0, 112), (flops_half_224, 0.5, 224)):
        model = on_meta("nin", num_classes=10, width=width)
        expect_number(
            answer,
            trace(model, (1, side, side)).total_flops,
            what=f"the FLOP count of the {'full' if width == 1.0 else 'half'}-width network at {side}x{side}",
            look_at="trace create('nin', width=...) on a 1 x side x side input and read total_flops",
        )
    return "now compare the two: which costs less per image?"
