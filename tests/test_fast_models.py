"""fast_vgg and fast_resnet: shapes, parameter and FLOP counts from the layer formulas, tracing, the
identity init and frozen batch norm scales, and the errors for bad options and inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import d2lcnn.models.fast_resnet  # noqa: F401  (registers fast_resnet)
import d2lcnn.models.fast_vgg  # noqa: F401  (registers fast_vgg)
from d2lcnn.errors import ConfigError, InputShapeError
from d2lcnn.models import create, list_models, model_doc
from d2lcnn.models.fast_resnet import CONFIGS as RESNET_CONFIGS
from d2lcnn.models.fast_vgg import CONFIGS as VGG_CONFIGS
from d2lcnn.models.fast_vgg import conv3x3
from d2lcnn.trace import trace

NAMES = ["fast_vgg", "fast_resnet"]


def conv_params(c_in: int, c_out: int, k: int = 3) -> int:
    return c_in * c_out * k * k


def stem_params(c: int) -> int:
    return conv_params(c, 8 * c, 2) + 8 * c  # 2x2 conv with bias, 2 * c * 2 * 2 outputs


def vgg_counts(c: int, widths: list[int], classes: int) -> tuple[int, int, list[int]]:
    """(parameters, frozen batch norm scales, channels per group) of fast_vgg from its formulas."""
    params, frozen, c_in = stem_params(c), 0, 8 * c
    for w in widths:
        params += conv_params(c_in, w) + conv_params(w, w) + 2 * (2 * w)  # two convs, two BN
        frozen += 2 * w
        c_in = w
    return params + c_in * classes, frozen, widths


def resnet_counts(c: int, config: list[tuple[int, bool]], classes: int) -> tuple[int, int]:
    params, frozen, c_in = stem_params(c), 0, 8 * c
    for w, residual in config:
        convs = 1 + 2 * residual
        params += conv_params(c_in, w) + (convs - 1) * conv_params(w, w) + convs * 2 * w
        frozen += convs * w
        c_in = w
    return params + c_in * classes, frozen


def vgg_flops(c: int, widths: list[int], classes: int, side: int = 32) -> int:
    """Forward FLOPs (2 per multiply-add) of the convolutions and the linear layer of fast_vgg."""
    side -= 1  # the 2x2 stem has no padding
    flops, c_in = 2 * conv_params(c, 8 * c, 2) * side * side, 8 * c
    for w in widths:
        flops += 2 * conv_params(c_in, w) * side * side
        side //= 2
        flops += 2 * conv_params(w, w) * side * side
        c_in = w
    return flops + 2 * c_in * classes


def n_params(model: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("options", [{}, {"num_classes": 7, "in_channels": 1, "width": 0.5}])
def test_forward_gives_one_logit_per_class(name, options):
    torch.manual_seed(0)
    model = create(name, **options).eval()
    channels = options.get("in_channels", 3)
    with torch.no_grad():
        out = model(torch.randn(2, channels, 32, 32))
    assert out.shape == (2, options.get("num_classes", 10))
    assert torch.isfinite(out).all()
    assert model.num_classes == options.get("num_classes", 10)


def test_registered_with_a_documented_input():
    for name in NAMES:
        assert name in list_models()
        assert "Input: C x 32 x 32" in model_doc(name)


@pytest.mark.parametrize("channels, classes, width", [(3, 10, 1.0), (1, 4, 0.5)])
def test_fast_vgg_parameters_and_flops_follow_the_layer_formulas(channels, classes, width):
    widths = [round(w * width) for w in VGG_CONFIGS["fast_vgg"]]
    params, frozen, _ = vgg_counts(channels, widths, classes)
    model = create("fast_vgg", num_classes=classes, in_channels=channels, width=width)
    assert n_params(model) == params
    assert n_params(model, trainable=True) == params - frozen  # batch norm scales stay 1
    traced = trace(model, (channels, 32, 32))
    assert traced.output_shape == (1, classes)
    assert traced.total_params == params
    assert traced.total_flops == vgg_flops(channels, widths, classes)


def test_fast_vgg_default_size_is_airbench94s():
    assert vgg_counts(3, [64, 256, 256], 10)[0] == 1_972_792
    assert vgg_flops(3, [64, 256, 256], 10) == trace(create("fast_vgg"), (3, 32, 32)).total_flops
    assert 230e6 < vgg_flops(3, [64, 256, 256], 10) < 240e6


@pytest.mark.parametrize("channels, classes, width", [(3, 10, 1.0), (1, 4, 0.25)])
def test_fast_resnet_parameters_follow_the_layer_formulas(channels, classes, width):
    config = [(round(w * width), residual) for w, residual in RESNET_CONFIGS["fast_resnet"]]
    params, frozen = resnet_counts(channels, config, classes)
    model = create("fast_resnet", num_classes=classes, in_channels=channels, width=width)
    assert n_params(model) == params
    assert n_params(model, trainable=True) == params - frozen
    traced = trace(model, (channels, 32, 32))
    assert traced.output_shape == (1, classes)
    assert traced.total_params == params


def test_fast_resnet_adds_its_residual_blocks():
    model = create("fast_resnet").eval()
    residuals = [g.residual is not None for g in model.features]
    assert residuals == [r for _, r in RESNET_CONFIGS["fast_resnet"]]
    block = model.features[0].residual
    for param in block.parameters():
        nn.init.zeros_(param)  # the body then outputs GELU(0) = 0: the block is the identity
    x = torch.randn(2, block.body[0][0].in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), x)


def test_convolutions_start_as_identity_on_their_first_channels():
    conv = conv3x3(4, 6)
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        y = conv(x)
    assert torch.allclose(y[:, :4], x)
    assert not torch.allclose(y[:, 4:], torch.zeros_like(y[:, 4:]))  # the rest keep a random init


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "option, value", [("num_classes", 0), ("in_channels", 0), ("width", 0), ("width", -0.5), ("width", "1")]
)
def test_bad_options_name_the_value_and_the_valid_range(name, option, value):
    with pytest.raises(ConfigError, match=rf"{option}={value!r}.*must be"):
        create(name, **{option: value})


@pytest.mark.parametrize("name", NAMES)
def test_a_wrong_input_is_explained(name):
    model = create(name)
    with pytest.raises(InputShapeError, match="in_channels=1"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(InputShapeError, match="takes float images"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
