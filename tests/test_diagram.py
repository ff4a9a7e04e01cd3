"""Architecture diagrams: every model draws; the boxes, shapes, skips and branches a reader relies on are
there and agree with the model; text never overlaps; and the pre-activation residual block."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib.text
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from torch import nn

from d2lcnn.diagram import draw
from d2lcnn.errors import ConfigError, InputShapeError, UnknownNameError
from d2lcnn.models import DenseBlock, Inception, PreActivationBlock, ResidualBlock, create, list_models
from d2lcnn.trace import trace


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def boxes(fig) -> list[FancyBboxPatch]:
    return fig.findobj(FancyBboxPatch)


def skip_arrows(fig) -> list[FancyArrowPatch]:
    return [arrow for arrow in fig.findobj(FancyArrowPatch) if arrow.get_gid() == "skip"]


def shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape[1:]))  # without the batch dimension


@pytest.mark.parametrize("name", list_models())
def test_every_model_draws_from_input_to_output_in_fewer_boxes_than_layers(name):
    with torch.device("meta"):  # no weights to initialise: VGG's 130 million would take seconds
        model = create(name)
    size = (model.in_channels, model.input_size, model.input_size)
    fig = draw(model, size)
    shown = texts(fig)
    assert shown[0] == name  # the title
    assert shown.index("Input") < shown.index("Output")
    assert shape_text((1, *size)) in shown
    assert shown[-1] == shape_text(trace(model, size).output_shape)  # the output box's shape comes last
    layers = [m for m in model.modules() if next(m.children(), None) is None]
    assert 4 <= len(boxes(fig)) < len(layers)


def test_lenet_boxes_group_layers_and_show_the_traced_shapes():
    model = create("lenet")
    fig = draw(model, "1x28x28")
    shapes = {row.name: row.output_shape for row in trace(model, (1, 28, 28)).rows}
    shown = texts(fig)
    assert shape_text(shapes["features.0"]) == "6×28×28" and "6×28×28" in shown
    # The second pool's 16x5x5 output is flattened to the 400 features of the first linear layer.
    assert f"{shape_text(shapes['features.5'])} → {shape_text(shapes['classifier.0'])}" == "16×5×5 → 400"
    assert "16×5×5 → 400" in shown
    assert [t for t in shown if t.startswith("Conv")] == ["Conv 5x5, 6", "Conv 5x5, 16"]
    assert shown.count("+ Tanh") == 4 and "+ Flatten" in shown
    assert len(boxes(fig)) == 9  # input, 2 x (conv, pool), 3 linear layers, output


def test_resnet18_has_a_skip_arrow_per_residual_block_and_names_the_1x1_shortcuts():
    model = create("resnet18", stem="cifar")
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    fig = draw(model, (3, 32, 32))
    assert len(skip_arrows(fig)) == len(blocks) == 8
    with_1x1 = sum(block.downsample is not None for block in blocks)
    assert texts(fig).count("1x1 conv shortcut") == with_1x1 == 3
    assert "2 × conv 3x3, 128, /2" in texts(fig) and "512×4×4" in texts(fig)


def test_googlenet_shows_every_inception_block_with_its_branch_channels():
    model = create("googlenet", width=0.5)
    fig = draw(model, (1, 96, 96))
    shown = texts(fig)
    inceptions = [m for m in model.modules() if isinstance(m, Inception)]
    for block in inceptions:
        branches = [block.branch1[0], block.branch2[2], block.branch3[2], block.branch4[1]]
        assert "concat: " + "+".join(str(conv.out_channels) for conv in branches) in shown
    expected = [
        "Inception 3a",
        "Inception 3b",
        *(f"Inception 4{c}" for c in "abcde"),
        "Inception 5a",
        "Inception 5b",
    ]
    assert [t for t in shown if t.startswith("Inception")] == expected
    assert shown.count("1x1, 3x3, 5x5, pool") == len(inceptions) == 9


def test_dense_blocks_show_their_convolutions_and_growth():
    fig = draw(create("densenet", arch=(2, 3), growth_rate=16), (1, 96, 96))
    shown = texts(fig)
    assert "2 × conv 3x3" in shown and "3 × conv 3x3" in shown
    assert shown.count("+16 ch each, concat") == 2
    assert [t for t in shown if t.startswith("Dense")] == ["Dense block"] * 2


def test_sequence_blocks_are_drawn_layer_by_layer():
    fast_vgg = texts(draw(create("fast_vgg"), (3, 32, 32)))
    assert fast_vgg.count("MaxPool 2x2, /2") == 3 and fast_vgg.count("+ BN, GELU") == 6
    fast_resnet = draw(create("fast_resnet"), (3, 32, 32))
    assert len(skip_arrows(fast_resnet)) == 2  # the first and the last group add a Residual block
    assert texts(fast_resnet).count("MaxPool 2x2, /2") == 3


def test_blocks_without_a_diagram_attribute_are_one_box_and_unknown_styles_are_named():
    class TwoConvs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1)

        def forward(self, x):
            return self.second(self.first(x))

    model = nn.Sequential(nn.Conv2d(1, 4, 1), TwoConvs(), nn.ReLU())
    shown = texts(draw(model, (1, 16, 16), title=""))
    assert set(shown[:2]) == {"convolution", "block"} and shown[2:4] == ["Input", "1×16×16"]  # no title
    assert shown[4:] == ["Conv 1x1, 4", "4×16×16", "Two convs", "2 × conv 3x3, 8, /2", "+ ReLU", "8×8×8",
                         "Output", "8×8×8"]  # fmt: skip

    TwoConvs.diagram = "residul"
    with pytest.raises(UnknownNameError, match="Did you mean 'residual'"):
        draw(model, (1, 16, 16))


def test_a_single_layer_is_drawn_as_its_own_box():
    shown = texts(draw(nn.Conv2d(1, 2, 3, stride=2), (1, 9, 9)))
    assert shown[-6:] == ["Input", "1×9×9", "Conv 3x3, 2, /2", "2×4×4", "Output", "2×4×4"]


def test_wrong_input_shapes_and_options_are_clear_errors():
    lenet = create("lenet")
    with pytest.raises(InputShapeError, match="in_channels=3"):
        draw(lenet, (3, 28, 28))
    with pytest.raises(InputShapeError, match="not an input shape"):
        draw(lenet, "1x28")
    with pytest.raises(ConfigError, match="max_columns"):
        draw(lenet, (1, 28, 28), max_columns=0)


def test_max_columns_caps_the_boxes_in_a_row():
    fig = draw(create("vgg11", head="cifar"), (3, 32, 32), max_columns=3)
    tops = [round(box.get_y(), 6) for box in boxes(fig)]
    assert max(tops.count(top) for top in tops) == 3
    assert fig.get_figwidth() == pytest.approx(10.5)


@pytest.mark.parametrize(("name", "options", "size"), [
    ("resnet18", {"stem": "cifar"}, (3, 32, 32)),
    ("googlenet", {}, (1, 96, 96)),
    ("densenet", {}, (1, 96, 96)),
    ("alexnet_paper", {}, (3, 227, 227)),
])  # fmt: skip
def test_no_text_overlaps_or_leaves_its_box_or_the_figure(name, options, size):
    with torch.device("meta"):
        fig = draw(create(name, **options), size)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    shown = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
    extents = [t.get_window_extent(renderer) for t in shown]
    page = fig.bbox
    for i, extent in enumerate(extents):
        assert page.x0 <= extent.x0 and extent.x1 <= page.x1 and page.y0 <= extent.y0 and extent.y1 <= page.y1
        for other in extents[i + 1 :]:
            assert not extent.shrunk(0.98, 0.9).overlaps(other.shrunk(0.98, 0.9))
    frames = [box.get_window_extent(renderer) for box in boxes(fig)]
    for i, frame in enumerate(frames):
        assert not any(frame.overlaps(other) for other in frames[i + 1 :])
    outside = {name, "convolution", "pooling", "linear", "block", "+", "1x1 conv shortcut"}  # header, skips
    for text, extent in zip(shown, extents):
        if text.get_text() not in outside:
            assert any(frame.contains(*extent.min) and frame.contains(*extent.max) for frame in frames)


def test_pre_activation_block_shapes_and_1x1_shortcut():
    x = torch.randn(2, 8, 6, 6)
    assert PreActivationBlock(8, 8)(x).shape == (2, 8, 6, 6)
    strided = PreActivationBlock(8, 16, stride=2, use_1x1conv=True)
    assert strided(x).shape == (2, 16, 3, 3)
    assert isinstance(strided.downsample, nn.Conv2d)
    assert strided.downsample.kernel_size == (1, 1) and strided.downsample.stride == (2, 2)
    assert PreActivationBlock(8, 8).downsample is None


@pytest.mark.parametrize("training", [True, False])
def test_pre_activation_block_is_x_plus_f_of_x_with_no_relu_after_the_add(training):
    block = PreActivationBlock(4, 4).train(training)
    nn.init.zeros_(block.conv2.weight)  # F(x) = 0: the block must return x itself, negatives included
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    y = block(x)
    assert (x < 0).any() and torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # dy/dx = I + dF/dx = I
    # ResidualBlock, for comparison, applies a ReLU after the add: with F = 0 it returns relu(x).
    post = ResidualBlock(4, 4).train(training)
    nn.init.zeros_(post.bn2.weight)
    assert torch.equal(post(x), torch.relu(x))


def test_pre_activation_blocks_are_drawn_as_residual_blocks():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), PreActivationBlock(8, 8), PreActivationBlock(8, 16, 2, True)
    )
    fig = draw(model, (3, 16, 16))
    assert len(skip_arrows(fig)) == 2
    assert texts(fig).count("1x1 conv shortcut") == 1
    assert texts(fig).count("Pre activation block") == 2 and "16×8×8" in texts(fig)


def test_dense_block_is_exported_and_drawn_as_one_box():
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), DenseBlock(3, 8, 4))
    shown = texts(draw(model, (1, 8, 8)))
    assert "3 × conv 3x3" in shown and "+4 ch each, concat" in shown and "20×8×8" in shown
