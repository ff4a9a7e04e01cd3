"""Self-checks of chapter 2 (AlexNet)."""

from __future__ import annotations

import torch
from torch import nn

from ..show import count_params
from ..trace import trace
from . import expect_flops, expect_number, on_meta, register


@register("alexnet-input96")
def input96(conv1_side: object, final_side: object) -> str:
    result = trace(on_meta("alexnet_paper", num_classes=10), (3, 96, 96))
    convs = [row for row in result.rows if row.kind == "Conv2d"]
    features = next(row for row in result.rows if row.name == "features")
    expect_number(
        conv1_side,
        convs[0].output_shape[-1],
        what="the side after conv1",
        look_at="an 11x11 convolution with stride 4 and no padding turns a side n into (n - 11) // 4 + 1",
    )
    expect_number(
        final_side,
        features.output_shape[-1],
        what="the side of the map before avgpool",
        look_at="each 3x3 max pool with stride 2 turns n into (n - 3) // 2 + 1, and the padded 5x5 and "
        "3x3 convolutions keep the side",
    )
    return f"a 96x96 image leaves a {final_side}x{final_side} map of 256 channels before the adaptive pool"


@register("alexnet-flops")
def top_conv_flops(flops: object) -> str:
    result = trace(on_meta("alexnet", num_classes=10, in_channels=1), (1, 224, 224))
    top = max((row for row in result.rows if row.kind == "Conv2d"), key=lambda row: row.flops)
    expect_flops(
        flops,
        top.flops,
        what="the FLOP count",
        look_at="find the convolution with the most FLOPs in the trace first; each of its outputs "
        "(channels x height x width) sums in_channels x k x k products, one multiply-add each",
    )
    return "pen and paper agree with trace: the most expensive convolution is not the largest one"


@register("alexnet-gap")
def gap_params_lost(params_lost: object) -> str:
    model = on_meta("alexnet", num_classes=10, in_channels=1)
    before = count_params(model)
    with torch.device("meta"):
        model.classifier[0] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        model.classifier[1] = nn.Linear(256, 4096)
    expect_number(
        params_lost,
        before - count_params(model),
        what="the number of parameters lost",
        look_at="only the first linear layer changes: it reads 256 values instead of 256 x 5 x 5, and "
        "its 4,096 biases stay",
    )
    return "global average pooling removes most of the first linear layer's weights"
