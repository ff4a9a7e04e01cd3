"""Self-checks of chapter 3 (VGG)."""

from __future__ import annotations

from torch import nn

from ..show import count_params
from ..trace import trace
from . import Wrong, expect_flops, expect_number, on_meta, register


def cifar_vgg(name: str, **options: object) -> nn.Module:
    """The chapter's VGG for 10 classes, CIFAR head and batch norm unless `options` say otherwise, on meta."""
    return on_meta(name, **{"num_classes": 10, "head": "cifar", "batch_norm": True, **options})


@register("vgg-depth")
def extra_flops(flops: object) -> str:
    deep, shallow = (trace(cifar_vgg(name), (3, 32, 32)).total_flops for name in ("vgg16", "vgg11"))
    expect_flops(
        flops,
        deep - shallow,
        what="the extra FLOP count",
        look_at="compare the two rows of the configuration table block by block: which convolutions "
        "does VGG-16 add, with how many channels in and out, and at which side of the map?",
    )
    return "pen and paper agree with trace; note that the first four added convolutions cost the same"


@register("vgg-width")
def features_params_half(params: object) -> str:
    features = cifar_vgg("vgg11", width=0.5).features
    convs_only = sum(count_params(m) for m in features.modules() if isinstance(m, nn.Conv2d))
    if params == convs_only:
        raise Wrong(
            "that counts the convolutions only: with batch_norm=True a BatchNorm2d follows each of them, "
            "with its own learned parameters"
        )
    expect_number(
        params,
        count_params(features),
        what="the parameter count",
        look_at="halve every channel count of the vgg11 row; a 3x3 convolution has out x (in x 3 x 3 + 1) "
        "parameters (the first reads 3 channels at any width), a BatchNorm2d a scale and a shift per "
        "channel (its running statistics are buffers, not parameters)",
    )
    return "pen and paper agree with count_params"


@register("vgg-head")
def imagenet_head_params(params: object) -> str:
    expect_number(
        params,
        count_params(cifar_vgg("vgg11", head="imagenet", width=0.25).classifier),
        what="the classifier's parameter count",
        look_at="the adaptive pool turns the 128 x 1 x 1 map into 128 x 7 x 7 values for the first "
        "Linear layer, and the hidden layers of the ImageNet head are 4,096 wide; count the biases too",
    )
    return "pen and paper agree with count_params: nearly all of them sit in the first two Linear layers"
