"""Models: shapes at documented sizes, parameter counts against published/torchvision twins, source
details (LeNet layers, AlexNet init), the registry and the errors for inputs a model cannot take."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from d2lcnn.errors import ConfigError, InputShapeError, UnknownNameError
from d2lcnn.models import VGG, LeNet, accepted_sizes, create, list_models, model_doc
from d2lcnn.models.batchnorm import BatchNorm
from d2lcnn.models.densenet import DenseBlock, transition_block
from d2lcnn.models.googlenet import Inception
from d2lcnn.models.nin import nin_block
from d2lcnn.settings import RECIPES
from d2lcnn.trace import trace

# (name, options, input shape) for every model at each size it documents.
DOCUMENTED = [
    ("lenet", {}, (1, 28, 28)),
    ("lenet_modern", {}, (1, 28, 28)),
    ("lenet_modern", {"batch_norm": False}, (1, 28, 28)),
    ("alexnet", {}, (3, 224, 224)),
    ("alexnet", {"in_channels": 1}, (1, 224, 224)),
    ("alexnet_paper", {"num_classes": 10}, (3, 227, 227)),
    ("vgg11", {"width": 0.25}, (3, 224, 224)),
    ("vgg11", {"head": "cifar", "batch_norm": True}, (3, 32, 32)),
    ("vgg13", {"head": "cifar", "width": 0.25}, (3, 32, 32)),
    ("vgg16", {"head": "cifar", "width": 0.25}, (3, 32, 32)),
    ("vgg19", {"head": "cifar", "width": 0.25}, (3, 32, 32)),
    ("resnet18", {}, (3, 224, 224)),
    ("resnet18", {"stem": "cifar"}, (3, 32, 32)),
    ("resnet34", {"stem": "cifar", "width": 0.25}, (3, 32, 32)),
    ("nin", {}, (1, 224, 224)),
    ("nin", {"in_channels": 3, "width": 0.25}, (3, 224, 224)),
    ("googlenet", {}, (1, 96, 96)),
    ("googlenet", {"num_classes": 7, "in_channels": 3, "width": 0.25}, (3, 96, 96)),
    ("lenet_bn", {}, (1, 28, 28)),
    ("lenet_bn", {"scratch": True}, (1, 28, 28)),
    ("densenet", {}, (1, 96, 96)),
    ("densenet", {"growth_rate": 8, "arch": (2, 3), "width": 0.5}, (1, 96, 96)),
    ("fast_vgg", {}, (3, 32, 32)),
    ("fast_resnet", {}, (3, 32, 32)),
]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, options, shape", DOCUMENTED)
def test_forward_gives_one_logit_per_class_at_documented_size(name, options, shape):
    torch.manual_seed(0)
    model = create(name, **options).eval()
    num_classes = options.get("num_classes", 10)
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    assert (model.in_channels, model.input_size, model.input_size) == shape


def test_every_registered_model_is_covered_and_documents_its_input():
    assert {name for name, _, _ in DOCUMENTED} == set(list_models())
    for name in list_models():
        assert "Input:" in model_doc(name), name


def test_lenet_follows_the_first_source_layer_for_layer():
    layers = [m for m in create("lenet").modules() if not isinstance(m, nn.Sequential)][1:]
    described = [
        (type(m).__name__, getattr(m, "in_channels", getattr(m, "in_features", None)),
         getattr(m, "out_channels", getattr(m, "out_features", None)))
        for m in layers
    ]  # fmt: skip
    assert described == [
        ("Conv2d", 1, 6), ("Tanh", None, None), ("AvgPool2d", None, None),
        ("Conv2d", 6, 16), ("Tanh", None, None), ("AvgPool2d", None, None),
        ("Flatten", None, None),
        ("Linear", 400, 120), ("Tanh", None, None),
        ("Linear", 120, 84), ("Tanh", None, None),
        ("Linear", 84, 10),
    ]  # fmt: skip
    assert layers[0].padding == (2, 2) and layers[0].kernel_size == (5, 5)
    assert n_params(create("lenet")) == 61_706  # 156 + 2,416 + 48,120 + 10,164 + 850


def test_modern_lenet_uses_relu_max_pool_and_optional_batch_norm():
    kinds = {type(m) for m in create("lenet_modern", batch_norm=True).modules()}
    assert {nn.ReLU, nn.MaxPool2d, nn.BatchNorm2d, nn.BatchNorm1d} <= kinds
    assert nn.Tanh not in kinds
    kinds = {type(m) for m in create("lenet_modern", batch_norm=False).modules()}
    assert nn.BatchNorm2d not in kinds


def test_alexnet_first_source_form():
    model = create("alexnet")  # 3 x 224 x 224, no LRN, Linear(5*5*256 -> 4096), dropout 0.5
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in model.modules())
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (6400, 4096), (4096, 4096), (4096, 10)
    ]  # fmt: skip
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    conv_params = [(3 * 96 * 121 + 96), (96 * 256 * 25 + 256), (256 * 384 * 9 + 384),
                   (384 * 384 * 9 + 384), (384 * 256 * 9 + 256)]  # fmt: skip
    linear_params = [6400 * 4096 + 4096, 4096 * 4096 + 4096, 4096 * 10 + 10]
    assert n_params(model) == sum(conv_params) + sum(linear_params)


def test_alexnet_second_source_form_and_its_initialisation():
    torch.manual_seed(0)
    model = create("alexnet_paper")
    lrns = [m for m in model.features if isinstance(m, nn.LocalResponseNorm)]
    assert len(lrns) == 2
    # Krizhevsky et al. (2012), section 3.3: b = a / (k + alpha * sum of a^2 over n=5 channels)^beta
    # with k=2, alpha=1e-4, beta=0.75; PyTorch's alpha is divided by size, so it must be 5e-4.
    a = torch.randn(1, 8, 3, 3) * 30
    squares = torch.nn.functional.pad(a.pow(2), (0, 0, 0, 0, 2, 2))
    window_sums = sum(squares[:, i : i + 8] for i in range(5))
    paper = a / (2 + 1e-4 * window_sums) ** 0.75
    for lrn in lrns:
        torch.testing.assert_close(lrn(a), paper)
    features = list(model.features)
    # LRN right after the ReLUs of conv1 and conv2, as in the source's Sequential (indices 2 and 6)
    assert isinstance(features[2], nn.LocalResponseNorm) and isinstance(features[6], nn.LocalResponseNorm)
    assert model.avgpool.output_size == (6, 6)
    assert n_params(model) == 62_378_344  # the paper's "60 million", counted for 1000 classes
    convs = model.convs()
    for i, conv in enumerate(convs):
        expected_bias = 1.0 if i in (1, 3, 4) else 0.0  # conv2, conv4, conv5 biases are 1
        assert torch.all(conv.bias == expected_bias)
        assert abs(conv.weight.std().item() - 0.01) < 0.002
        assert abs(conv.weight.mean().item()) < 0.002
    for linear in (m for m in model.modules() if isinstance(m, nn.Linear)):
        assert torch.all(linear.bias == 0)
        assert abs(linear.weight.std().item() - 0.01) < 0.001
    assert sum(isinstance(m, nn.Dropout) for m in model.classifier) == 3


def test_alexnet_takes_grayscale_fashion_mnist_resized_to_224():
    model = create("alexnet", in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(4, 1, 224, 224)).shape == (4, 10)


@pytest.mark.parametrize("depth", [11, 13, 16, 19])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg_imagenet_form_has_torchvision_parameter_count(depth, batch_norm):
    with torch.device("meta"):
        ours = create(f"vgg{depth}", num_classes=1000, batch_norm=batch_norm)
        suffix = "_bn" if batch_norm else ""
        theirs = getattr(torchvision.models, f"vgg{depth}{suffix}")()
    assert n_params(ours) == n_params(theirs)


def test_vgg_is_built_from_blocks_of_the_config_table():
    model = create("vgg11", batch_norm=True)
    blocks = list(model.features)
    assert len(blocks) == 5
    convs_per_block = [sum(isinstance(m, nn.Conv2d) for m in b) for b in blocks]
    assert convs_per_block == [1, 1, 2, 2, 2]
    assert all(isinstance(b[-1], nn.MaxPool2d) for b in blocks)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 8
    vgg16 = create("vgg16")
    assert [sum(isinstance(m, nn.Conv2d) for m in b) for b in vgg16.features] == [2, 2, 3, 3, 3]


def test_vgg_width_scales_channels():
    narrow = create("vgg11", width=0.25, head="cifar")
    convs = [m for m in narrow.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 64, 128, 128, 128, 128]


@pytest.mark.parametrize("depth", [18, 34])
def test_resnet_imagenet_form_matches_torchvision(depth):
    ours = create(f"resnet{depth}", num_classes=1000)
    theirs = getattr(torchvision.models, f"resnet{depth}")()
    assert n_params(ours) == n_params(theirs)
    ours.load_state_dict(theirs.state_dict())  # same names and shapes: torchvision weights load
    ours.eval()
    theirs.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_residual_block_with_and_without_1x1_shortcut():
    from d2lcnn.models import ResidualBlock

    same = ResidualBlock(8, 8)
    assert same.downsample is None
    x = torch.randn(2, 8, 10, 10)
    assert same(x).shape == (2, 8, 10, 10)
    halved = ResidualBlock(8, 16, stride=2, use_1x1conv=True)
    assert halved(x).shape == (2, 16, 5, 5)
    # Without a 1x1 conv the shortcut cannot match a block that changes the shape.
    with pytest.raises(RuntimeError):
        ResidualBlock(8, 16, stride=2)(x)


def test_resnet_stems():
    imagenet, cifar = create("resnet18"), create("resnet18", stem="cifar")
    assert imagenet.conv1.kernel_size == (7, 7) and imagenet.conv1.stride == (2, 2)
    assert imagenet.maxpool is not None
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert cifar.maxpool is None


def test_unknown_model_name_suggests_the_closest_and_lists_all():
    with pytest.raises(UnknownNameError) as err:
        create("vgg1l")
    message = str(err.value)
    assert "Did you mean 'vgg11'?" in message
    for name in list_models():
        assert name in message
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet18'"):
        create("resnet-18")


def test_unknown_option_names_the_valid_options():
    with pytest.raises(UnknownNameError, match="Did you mean 'width'.*head='imagenet'"):
        create("vgg11", widht=0.5)
    with pytest.raises(UnknownNameError, match="Did you mean 'cifar'"):
        create("resnet18", stem="cifa")


WIDTH_MODELS = [
    "densenet",
    "fast_resnet",
    "fast_vgg",
    "googlenet",
    "nin",
    "resnet18",
    "resnet34",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
]


@pytest.mark.parametrize(
    "option, value, valid",
    [
        ("num_classes", 0, "whole number >= 1"),
        ("num_classes", 10.0, "whole number >= 1"),
        ("in_channels", 0, "whole number >= 1"),
        ("in_channels", -3, "whole number >= 1"),
    ],
)
@pytest.mark.parametrize("name", list_models())
def test_every_model_refuses_a_bad_class_or_channel_count(name, option, value, valid):
    with pytest.raises(ConfigError) as err:
        create(name, **{option: value})
    assert f"{option}={value!r}" in str(err.value) and valid in str(err.value)


@pytest.mark.parametrize("value", [0, -1, 0.0, float("nan"), float("inf"), "half", True])
@pytest.mark.parametrize("name", WIDTH_MODELS)
def test_every_model_with_a_width_refuses_a_width_that_is_not_positive(name, value):
    with pytest.raises(ConfigError) as err:
        create(name, width=value)
    assert f"width={value!r}" in str(err.value) and "> 0" in str(err.value)


@pytest.mark.parametrize(
    "name, options, valid",
    [
        ("vgg11", {"dropout": 1.0}, "[0, 1)"),
        ("vgg11", {"dropout": -0.1}, "[0, 1)"),
        ("vgg11", {"batch_norm": "false"}, "True or False"),  # the string is truthy: it would add BN
        ("lenet_modern", {"batch_norm": 0}, "True or False"),
        ("lenet_bn", {"scratch": "yes"}, "True or False"),
        ("densenet", {"growth_rate": 0}, "whole number >= 1"),
        ("densenet", {"arch": 4}, "list of whole numbers"),
        ("densenet", {"arch": ()}, "non-empty"),
        ("densenet", {"arch": (4, 0)}, "whole numbers >= 1"),
    ],
)
def test_other_nonsense_options_name_the_option_value_and_range(name, options, valid):
    ((option, value),) = options.items()
    with pytest.raises(ConfigError) as err:
        create(name, **options)
    assert f"{option}={value!r}" in str(err.value) and valid in str(err.value)


def test_the_models_without_a_width_option_are_the_others():
    for name in set(list_models()) - set(WIDTH_MODELS):
        with pytest.raises(UnknownNameError, match="'width'"):
            create(name, width=0.5)


def test_model_classes_check_their_options_without_create():
    with pytest.raises(ConfigError, match="num_classes=0"):
        LeNet(num_classes=0)
    with pytest.raises(ConfigError, match="width=0"):
        VGG([8, "M"], width=0)


def test_num_classes_is_the_number_of_outputs_even_after_the_head_is_replaced():
    for name, options, _ in DOCUMENTED:
        with torch.device("meta"):  # layer sizes without the memory
            model = create(name, **options)
        assert model.num_classes == options.get("num_classes", 10), name
    model = create("resnet18", num_classes=1000)
    model.fc = nn.Linear(model.fc.in_features, 7)  # a new head for transfer learning
    assert model.num_classes == 7
    assert create("nin", num_classes=5).num_classes == 5  # NiN ends in a convolution, not a linear layer


def test_integer_images_are_refused_with_the_conversion_to_make():
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    with pytest.raises(InputShapeError) as err:
        create("lenet")(images)
    assert "torch.uint8" in str(err.value) and "x.float() / 255" in str(err.value)
    assert "normalise" in str(err.value)


def test_too_small_input_names_layer_shape_and_smallest_size():
    model = create("alexnet", in_channels=1)
    with pytest.raises(InputShapeError) as err:
        model(torch.randn(2, 1, 28, 28))
    message = str(err.value)
    assert "(2, 1, 28, 28)" in message
    assert "layer 'features.5' (MaxPool2d) received (2, 256, 2, 2)" in message
    assert "from 195 to 226 px" in message
    assert "resize=224" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_wrong_channel_count_names_the_first_conv_and_the_fix():
    with pytest.raises(InputShapeError) as err:
        create("lenet")(torch.randn(2, 3, 28, 28))
    message = str(err.value)
    assert "layer 'features.0' (Conv2d) received (2, 3, 28, 28)" in message
    assert "in_channels=3" in message
    assert "sides from 28 to 31 px" in message


@pytest.mark.parametrize("name", ["lenet", "lenet_bn", "resnet18"])
def test_missing_batch_dimension_is_explained(name):
    # batch norm fails on a 3-D input with a ValueError instead of torch's usual RuntimeError
    model = create(name)
    side = model.input_size
    with pytest.raises(InputShapeError, match=r"unsqueeze\(0\)"):
        model(torch.randn(model.in_channels, side, side))


def test_accepted_sizes():
    assert accepted_sizes(create("lenet")) == (28, 31)
    assert accepted_sizes(create("resnet18", stem="cifar")) == (1, None)
    assert accepted_sizes(create("vgg11", head="cifar", width=0.25)) == (32, None)


def test_an_error_that_is_not_about_the_input_shape_is_left_alone():
    model = create("lenet")
    with pytest.raises(RuntimeError) as err:
        model(torch.randn(2, 1, 28, 28, dtype=torch.float64))  # dtype mismatch, not a shape problem
    assert not isinstance(err.value, InputShapeError)


def test_explaining_an_error_leaves_the_model_untouched():
    model = create("lenet_modern")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputShapeError):
        model(torch.randn(2, 3, 28, 28))  # fails at the first conv, before any batch norm
    assert model.training
    for key, value in model.state_dict().items():
        assert value.device.type == "cpu"
        assert torch.equal(value, before[key]), key


# ----------------------------------------------------------------- NiN, GoogLeNet, batch norm, DenseNet
# Parameter counts below are computed from the layer formulas, not read from the models.


def conv_params(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def nin_params(num_classes: int, in_channels: int, hidden: tuple[int, int, int]) -> int:
    def block(c_in: int, c_out: int, k: int) -> int:  # k x k conv, then two 1x1 convs
        return conv_params(c_in, c_out, k) + 2 * conv_params(c_out, c_out, 1)

    c1, c2, c3 = hidden
    return block(in_channels, c1, 11) + block(c1, c2, 5) + block(c2, c3, 3) + block(c3, num_classes, 3)


# d2l's (and the paper's table 1) Inception blocks: c1, (c2 reduce, c2), (c3 reduce, c3), c4.
INCEPTIONS = [
    (64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64),
    (192, (96, 208), (16, 48), 64), (160, (112, 224), (24, 64), 64), (128, (128, 256), (24, 64), 64),
    (112, (144, 288), (32, 64), 64), (256, (160, 320), (32, 128), 128),
    (256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128),
]  # fmt: skip


def inception_params(c_in: int, c1: int, c2: tuple, c3: tuple, c4: int) -> int:
    branch1 = conv_params(c_in, c1, 1)
    branch2 = conv_params(c_in, c2[0], 1) + conv_params(c2[0], c2[1], 3)
    branch3 = conv_params(c_in, c3[0], 1) + conv_params(c3[0], c3[1], 5)
    branch4 = conv_params(c_in, c4, 1)  # after the 3x3 max pool, which has no parameters
    return branch1 + branch2 + branch3 + branch4


def densenet_params(num_classes: int, in_channels: int, channels: int, growth: int, arch: tuple) -> int:
    total = conv_params(in_channels, channels, 7) + 2 * channels  # stem conv + its batch norm
    for i, num_convs in enumerate(arch):
        for _ in range(num_convs):  # BN + 3x3 conv, then the output is concatenated
            total += 2 * channels + conv_params(channels, growth, 3)
            channels += growth
        if i < len(arch) - 1:  # transition: BN + 1x1 conv halving the channels
            total += 2 * channels + conv_params(channels, channels // 2, 1)
            channels //= 2
    return total + 2 * channels + channels * num_classes + num_classes  # final BN + linear


def test_nin_parameter_count_from_the_layer_formulas():
    assert n_params(create("nin")) == nin_params(10, 1, (96, 256, 384)) == 1_992_166
    assert n_params(create("nin", width=0.25, in_channels=3)) == nin_params(10, 3, (24, 64, 96))


def test_nin_has_no_linear_layer_and_ends_in_one_channel_per_class():
    model = create("nin", num_classes=7)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    block = nin_block(3, 8, kernel_size=5, stride=2, padding=1)
    assert [type(m) for m in block] == [nn.Conv2d, nn.ReLU] * 3
    assert [m.kernel_size for m in block if isinstance(m, nn.Conv2d)] == [(5, 5), (1, 1), (1, 1)]
    assert isinstance(model.features[6], nn.Dropout) and model.features[6].p == 0.5
    assert model.features[7][4].out_channels == 7
    narrow = create("nin", num_classes=7, width=0.25)
    assert narrow.features[7][4].out_channels == 7  # width leaves the class channels alone
    assert [narrow.features[i][0].out_channels for i in (0, 2, 4)] == [24, 64, 96]


def test_googlenet_parameter_count_from_the_layer_formulas():
    stem = conv_params(1, 64, 7) + conv_params(64, 64, 1) + conv_params(64, 192, 3)
    total, channels, outputs = stem, 192, []
    for c1, c2, c3, c4 in INCEPTIONS:
        total += inception_params(channels, c1, c2, c3, c4)
        channels = c1 + c2[1] + c3[1] + c4
        outputs.append(channels)
    assert outputs == [256, 480, 512, 512, 512, 528, 832, 832, 1024]
    total += 1024 * 10 + 10
    model = create("googlenet")
    assert n_params(model) == total == 5_977_530
    blocks = [m for m in model.modules() if isinstance(m, Inception)]
    assert [b.out_channels for b in blocks] == outputs
    assert (len(model.b3) - 1, len(model.b4) - 1, len(model.b5) - 2) == (2, 5, 2)


def test_inception_block_keeps_the_size_and_concatenates_four_branches():
    block = Inception(192, 64, (96, 128), (16, 32), 32)
    x = torch.randn(2, 192, 12, 12)
    branches = [block.branch1(x), block.branch2(x), block.branch3(x), block.branch4(x)]
    assert [b.shape[1] for b in branches] == [64, 128, 32, 32]
    out = block(x)
    assert out.shape == (2, 256, 12, 12) == (2, block.out_channels, 12, 12)
    torch.testing.assert_close(out, torch.cat(branches, dim=1))
    assert (out >= 0).all()  # every branch ends in ReLU
    assert n_params(block) == inception_params(192, 64, (96, 128), (16, 32), 32)


def test_densenet_parameter_count_from_the_layer_formulas():
    assert n_params(create("densenet")) == densenet_params(10, 1, 64, 32, (4, 4, 4, 4)) == 758_226
    small = create("densenet", growth_rate=8, arch=(2, 3), width=0.5)
    assert n_params(small) == densenet_params(10, 1, 32, 4, (2, 3))


def test_dense_block_concatenates_and_transition_halves():
    block = DenseBlock(num_convs=2, in_channels=3, growth_rate=10)
    x = torch.randn(4, 3, 8, 8)
    out = block(x)
    assert out.shape == (4, 23, 8, 8) and block.out_channels == 23
    torch.testing.assert_close(out[:, :3], x)  # the input is passed on unchanged
    assert [type(m) for m in block.convs[0]] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d]  # pre-activation
    transition = transition_block(23, 11)
    assert [type(m) for m in transition] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.AvgPool2d]
    assert transition(out).shape == (4, 11, 4, 4)


# Shapes at the documented input, after each stage (as in the modules' docstrings).
STAGE_SHAPES = {
    "nin": {"features.0": (96, 54, 54), "features.1": (96, 26, 26), "features.3": (256, 12, 12),
            "features.5": (384, 5, 5), "features.7": (10, 5, 5), "avgpool": (10, 1, 1), "flatten": (10,)},
    "googlenet": {"b1": (64, 24, 24), "b2": (192, 12, 12), "b3": (480, 6, 6), "b4": (832, 3, 3),
                  "b5": (1024,), "fc": (10,)},
    "densenet": {"stem": (64, 24, 24), "blocks.dense1": (192, 24, 24), "blocks.trans1": (96, 12, 12),
                 "blocks.dense2": (224, 12, 12), "blocks.trans2": (112, 6, 6), "blocks.dense3": (240, 6, 6),
                 "blocks.trans3": (120, 3, 3), "blocks.dense4": (248, 3, 3), "head": (10,)},
    "lenet_bn": {"features.1": (6, 28, 28), "features.3": (6, 14, 14), "features.5": (16, 10, 10),
                 "features": (16, 5, 5), "classifier.2": (120,), "classifier": (10,)},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(STAGE_SHAPES))
def test_trace_shows_each_stage_shape_at_the_documented_size(name):
    model = create(name)
    table = trace(model, (1, model.input_size, model.input_size))
    shapes = {r.name: r.output_shape for r in table.rows}
    assert {k: shapes[k] for k in STAGE_SHAPES[name]} == {k: (1, *v) for k, v in STAGE_SHAPES[name].items()}
    assert table.total_params == n_params(model)


@pytest.mark.parametrize(
    "name, smallest, layer",
    [
        ("nin", 67, "layer 'features.3' (MaxPool2d) received (2, 256, 2, 2)"),
        ("densenet", 29, "layer 'blocks.trans3.3' (AvgPool2d) received (2, 120, 1, 1)"),
    ],
)
def test_new_models_explain_too_small_input(name, smallest, layer):
    model = create(name)
    assert accepted_sizes(model) == (smallest, None)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, smallest, smallest)).shape == (1, 10)
    with pytest.raises(InputShapeError) as err:
        model(torch.randn(2, 1, 28, 28))
    message = str(err.value)
    assert layer in message
    assert f"any side of at least {smallest} px" in message
    assert f"resize={model.input_size}" in message


def test_googlenet_takes_any_size_and_explains_a_wrong_channel_count():
    model = create("googlenet").eval()
    assert accepted_sizes(model) == (1, None)  # every pool rounds up, so even 1 x 1 passes through
    with torch.no_grad():
        assert model(torch.randn(1, 1, 1, 1)).shape == (1, 10)
    with pytest.raises(InputShapeError) as err:
        model(torch.randn(2, 3, 96, 96))
    assert "layer 'b1.0' (Conv2d) received (2, 3, 96, 96)" in str(err.value)
    assert "in_channels=3" in str(err.value)


@pytest.mark.parametrize("name", ["nin", "googlenet", "densenet"])
def test_width_shrinks_the_new_models(name):
    full, half, quarter = (n_params(create(name, width=w)) for w in (1.0, 0.5, 0.25))
    assert full > 2.5 * half > 2.5 * 2.5 * quarter  # most weights scale with width squared
    narrow = create(name, width=0.5)
    first_conv = next(m for m in narrow.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.out_channels == {"nin": 48, "googlenet": 32, "densenet": 32}[name]


def test_every_model_has_a_recipe_whose_resize_it_accepts():
    assert set(RECIPES) == set(list_models())
    for name in ("nin", "googlenet", "lenet_bn", "densenet"):
        assert RECIPES[name].dataset == "fashion_mnist"
    for name, recipe in RECIPES.items():
        if recipe.resize is None:
            continue
        low, high = accepted_sizes(create(name, **recipe.model_options))
        assert low <= recipe.resize and (high is None or recipe.resize <= high), name


def bn_pair(num_features: int, num_dims: int) -> tuple[BatchNorm, nn.Module]:
    """A scratch and a torch batch norm layer in float64, with the same non-trivial gamma and beta."""
    ours = BatchNorm(num_features, num_dims).double()
    theirs = (nn.BatchNorm2d if num_dims == 4 else nn.BatchNorm1d)(num_features).double()
    gamma, beta = (
        torch.rand(num_features, dtype=torch.float64) + 0.5,
        torch.randn(num_features, dtype=torch.float64),
    )
    with torch.no_grad():
        for layer in (ours, theirs):
            layer.weight.copy_(gamma)
            layer.bias.copy_(beta)
    return ours, theirs


def outputs_and_grads(layer: nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> list[torch.Tensor]:
    """The layer's output, then the gradients of sum(output * upstream) w.r.t. input, gamma and beta."""
    x = x.clone().requires_grad_()
    y = layer(x)
    return [y.detach(), *torch.autograd.grad(y, (x, layer.weight, layer.bias), upstream)]


@pytest.mark.parametrize("num_dims, shape", [(4, (8, 3, 5, 5)), (2, (16, 7))])
def test_scratch_batch_norm_matches_torch(num_dims, shape):
    torch.manual_seed(0)
    ours, theirs = bn_pair(shape[1], num_dims)
    assert ours.gamma is ours.weight and ours.beta is ours.bias
    scale = torch.rand(shape[1], dtype=torch.float64) * 3 + 0.5  # channels with their own mean and spread
    scale, shift = (
        scale.reshape(1, -1, *[1] * (num_dims - 2)),
        scale.reshape(1, -1, *[1] * (num_dims - 2)) * 2,
    )
    for _ in range(4):  # train mode: batch statistics, running averages updated
        x = torch.randn(shape, dtype=torch.float64) * scale + shift
        upstream = torch.randn(shape, dtype=torch.float64)
        for a, b in zip(outputs_and_grads(ours, x, upstream), outputs_and_grads(theirs, x, upstream)):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(ours.running_mean, theirs.running_mean)
        torch.testing.assert_close(ours.running_var, theirs.running_var)  # unbiased: differs from biased
    with torch.no_grad():  # no_grad alone does not switch to the running statistics
        x = torch.randn(shape, dtype=torch.float64)
        torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours.running_var, theirs.running_var)
    assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item() == 5
    assert not torch.allclose(ours.running_var, torch.ones_like(ours.running_var))
    ours.eval()
    theirs.eval()
    before = ours.running_mean.clone()
    x, upstream = torch.randn(shape, dtype=torch.float64) * 4, torch.randn(shape, dtype=torch.float64)
    for a, b in zip(outputs_and_grads(ours, x, upstream), outputs_and_grads(theirs, x, upstream)):
        torch.testing.assert_close(a, b)
    assert torch.equal(ours.running_mean, before)  # eval mode leaves the statistics alone
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }


def test_scratch_batch_norm_rejects_what_torch_rejects():
    with pytest.raises(ValueError, match="num_dims"):
        BatchNorm(4, num_dims=3)
    ours, theirs = BatchNorm(4, num_dims=2), nn.BatchNorm1d(4)
    for layer in (ours, theirs):  # one value per feature: no variance to normalise by
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            layer(torch.randn(1, 4))
    with pytest.raises(ValueError, match="expected 4D input"):
        BatchNorm(4, num_dims=4)(torch.randn(8, 4))


def test_lenet_bn_follows_d2l_with_the_source_layout():
    model = create("lenet_bn")
    kinds = [type(m) for m in model.modules() if not isinstance(m, (nn.Sequential, type(model)))]
    assert kinds == [
        nn.Conv2d, nn.BatchNorm2d, nn.Sigmoid, nn.AvgPool2d,
        nn.Conv2d, nn.BatchNorm2d, nn.Sigmoid, nn.AvgPool2d,
        nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.Sigmoid, nn.Linear, nn.BatchNorm1d, nn.Sigmoid, nn.Linear,
    ]  # fmt: skip
    assert n_params(model) == n_params(create("lenet")) + 2 * (6 + 16 + 120 + 84)
    scratch = create("lenet_bn", scratch=True)
    norms = [m for m in scratch.modules() if isinstance(m, BatchNorm)]
    assert [(m.num_features, m.num_dims) for m in norms] == [(6, 4), (16, 4), (120, 2), (84, 2)]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in scratch.modules())


def test_lenet_bn_scratch_and_torch_versions_are_interchangeable():
    torch.manual_seed(0)
    scratch = create("lenet_bn", scratch=True).double()
    torch.manual_seed(0)
    builtin = create("lenet_bn").double()
    ours, theirs = scratch.state_dict(), builtin.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # same seed, same initial weights
    torch.manual_seed(1)
    x, y = torch.randn(32, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (32,))
    losses = {}
    for name, model in (("scratch", scratch), ("builtin", builtin)):  # a few SGD steps on one batch
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        model.train()
        losses[name] = []
        for _ in range(5):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    torch.testing.assert_close(losses["scratch"], losses["builtin"])
    assert losses["scratch"][-1] < losses["scratch"][0]
    for key, value in scratch.state_dict().items():
        torch.testing.assert_close(value, builtin.state_dict()[key], msg=key)
    scratch.eval()
    builtin.eval()
    with torch.no_grad():
        torch.testing.assert_close(scratch(x), builtin(x))
    fresh = create("lenet_bn").double().eval()
    fresh.load_state_dict(scratch.state_dict())  # a scratch checkpoint loads into the torch version
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), scratch(x))
