"""Self-checks of chapter 1 (LeNet)."""

from __future__ import annotations

from torch import nn

from ..show import count_params
from ..trace import trace
from . import Wrong, expect_model, expect_number, register


def lenet_like(
    kernel: int = 5,
    padding: int = 2,
    widths: tuple[int, int] = (6, 16),
    side: int = 28,
    third_conv: bool = False,
) -> nn.Sequential:
    """The chapter's LeNet (Tanh, average pooling) with another kernel, padding, widths or input side."""
    first, second = widths
    features = [
        nn.Conv2d(1, first, kernel, padding=padding),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(first, second, kernel),
        nn.Tanh(),
        nn.AvgPool2d(2),
    ]
    if third_conv:
        features += [nn.Conv2d(second, 16, 3, padding=1), nn.Tanh()]
    flat = trace(nn.Sequential(*features), (1, side, side)).output_shape
    classifier = [nn.Linear(flat[1] * flat[2] * flat[3], 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh()]
    return nn.Sequential(*features, nn.Flatten(), *classifier, nn.Linear(84, 10))


@register("lenet-kernel")
def kernel_size(model: object) -> str:
    return expect_model(
        model,
        lenet_like(kernel=3, padding=1),
        (1, 1, 28, 28),
        look_at="trace the features part first: the first linear layer must take what the "
        "last pooling layer outputs (channels x height x width)",
    )


@register("lenet-width")
def width_params(params: object) -> str:
    expected = count_params(lenet_like(widths=(12, 32)))
    expect_number(
        params,
        expected,
        what="the parameter count",
        look_at="count weights and biases of each layer: a convolution has out x (in x k x k + 1), "
        "a linear layer out x (in + 1); the first linear layer now reads 32 x 5 x 5 values",
    )
    return "pen and paper agree with trace"


@register("lenet-input32")
def input32(model: object) -> str:
    return expect_model(
        model,
        lenet_like(padding=0, side=32),
        (1, 1, 32, 32),
        look_at="with no padding a 5x5 convolution shrinks 32 to 28; follow the sizes to the "
        "first linear layer",
    )


@register("lenet-depth")
def third_conv(model: object) -> str:
    if isinstance(model, nn.Module) and trace(model, (1, 1, 28, 28)).output_shape != (1, 10):
        raise Wrong("the network should still output 10 class scores for a 1 x 28 x 28 image")
    return expect_model(
        model,
        lenet_like(third_conv=True),
        (1, 1, 28, 28),
        look_at="a 3x3 convolution keeps a 5x5 map only with padding 1, and it goes after the "
        "second pooling layer",
    )
