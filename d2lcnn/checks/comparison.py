"""Self-checks of chapter 10 (every architecture side by side)."""

from __future__ import annotations

import math

from torch import nn

from ..models import create
from ..show import count_params
from ..trace import trace
from . import Wrong, expect_number, on_meta, register

# The sides and widths the exercise on resolution names (the chapter's CPU_SIZES), and the common side.
RESOLUTION_MODELS = {
    "nin": (112, {"width": 0.5}),
    "googlenet": (96, {"width": 0.25}),
    "densenet": (48, {"width": 0.5}),
}
COMMON_SIDE = 72
ALEXNET_SIDE = 195  # the smallest side AlexNet accepts: its input in the chapter's cpu profile


def _flops(name: str, channels: int, side: int, **options: object) -> int:
    """FLOPs of one forward pass of model `name` on one `channels` x `side` x `side` image."""
    model = on_meta(name, num_classes=10, in_channels=channels, **options)
    return trace(model, (channels, side, side)).total_flops


@register("comparison-grey")
def grey_alexnet(fewer_params: object, flops_fraction: object) -> str:
    colour, grey = (create("alexnet", num_classes=10, in_channels=c) for c in (3, 1))
    expect_number(
        fewer_params,
        count_params(colour) - count_params(grey),
        what="the number of parameters saved",
        look_at="only the first convolution reads the image's channels; each of its 96 filters has one "
        "11 x 11 kernel per input channel (the biases do not depend on the channels)",
    )
    expect_number(
        flops_fraction,
        _flops("alexnet", 1, ALEXNET_SIDE) / _flops("alexnet", 3, ALEXNET_SIDE),
        what="the fraction of the FLOPs",
        look_at="it is grey FLOPs divided by colour FLOPs, a number just below 1; only the first "
        "convolution's FLOPs change, in proportion to the channels it reads",
        rel_tol=5e-3,
    )
    return "the first convolution is the only layer that sees the channels, and a small share of the cost"


@register("comparison-resolution")
def resolution(flops_ratio: object) -> str:
    if not isinstance(flops_ratio, dict):
        raise Wrong(
            f"flops_ratio should be a dict from model name to a number, not {type(flops_ratio).__name__}"
        )
    missing = set(RESOLUTION_MODELS) - set(flops_ratio)
    if missing:
        raise Wrong(f"flops_ratio has no entry for {', '.join(sorted(missing))}")
    for name, (side, options) in RESOLUTION_MODELS.items():
        expect_number(
            flops_ratio[name],
            _flops(name, 3, side, **options) / _flops(name, 3, COMMON_SIDE, **options),
            what=f"the ratio for {name}",
            look_at=f"divide its FLOPs per image at {side} px by those at {COMMON_SIDE} px, both traced with "
            f"{', '.join(f'{k}={v}' for k, v in options.items())} on 3-channel images",
            rel_tol=5e-3,
        )
    return "trace predicts the cost before anything trains; compare each ratio with (side / 72) squared"


def leaf_outputs(model: nn.Module, input_shape: tuple[int, ...], leaves_only: bool = True) -> int:
    """Values output by the layers of `model` (only those without sublayers, with `leaves_only`) in one
    forward pass of one image of `input_shape` (C, H, W)."""
    layers = dict(model.named_modules())
    rows = trace(model, input_shape).rows
    return sum(
        math.prod(row.output_shape)
        for row in rows
        if row.output_shape and not (leaves_only and any(True for _ in layers[row.name].children()))
    )


@register("comparison-memory")
def activations(activation_count: object) -> str:
    if not callable(activation_count):
        raise Wrong(
            "activation_count should be a function of a model and an input shape, "
            f"not {type(activation_count).__name__}"
        )
    cases = [
        ("lenet", {}, (1, 28, 28)),
        ("resnet18", {"stem": "cifar", "width": 0.25}, (3, 32, 32)),
        ("densenet", {"width": 0.5}, (3, 48, 48)),
    ]
    for name, options, shape in cases:
        model = create(name, num_classes=10, in_channels=shape[0], **options)
        got = activation_count(model, shape)
        if got == leaf_outputs(model, shape, leaves_only=False):
            raise Wrong(
                f"on {name} your count includes the outputs of blocks and Sequential containers, which "
                "are outputs of layers inside them counted a second time: count only layers without sublayers"
            )
        expect_number(
            got,
            leaf_outputs(model, shape),
            what=f"the count for {name} on a {' x '.join(map(str, shape))} image",
            look_at="add up the sizes (channels x height x width) of the outputs of every layer without "
            "sublayers, activations and pooling included, for one image",
        )
    return "checked on LeNet, ResNet-18 and DenseNet"
