"""Shape tracing: rows, totals and the bad-input errors."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from d2lcnn.errors import ConfigError, InputShapeError
from d2lcnn.models import create, list_models
from d2lcnn.trace import trace


@pytest.mark.parametrize("name", list_models())
def test_totals_equal_the_model_and_torch_flop_counter(name):
    model = create(name, in_channels=3) if name.startswith("lenet") else create(name)
    shape = (model.in_channels, model.input_size, model.input_size)
    table = trace(model, shape)
    assert table.total_params == sum(p.numel() for p in model.parameters())
    assert table.output_shape == (1, 10 if name != "alexnet_paper" else 1000)
    if name in ("lenet", "resnet18"):  # a real (not meta) count on two models agrees
        model.eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.randn(1, *shape))
        assert table.total_flops == counter.get_total_flops()


def test_lenet_rows_show_each_layer_shape():
    table = trace(create("lenet"), (1, 28, 28))
    shapes = {r.name: r.output_shape for r in table.rows}
    assert shapes["features.0"] == (1, 6, 28, 28)
    assert shapes["features.2"] == (1, 6, 14, 14)
    assert shapes["features.3"] == (1, 16, 10, 10)
    assert shapes["features"] == (1, 16, 5, 5)
    assert shapes["classifier.0"] == (1, 400)
    params = {r.name: r.params for r in table.rows}
    assert params["features.0"] == 156 and params["classifier.1"] == 48_120
    flops = {r.name: r.flops for r in table.rows}
    assert flops["features.0"] == 2 * 6 * 28 * 28 * 25  # 2 FLOPs per multiply-add
    assert flops["classifier.1"] == 2 * 400 * 120
    assert table.total_flops == sum(r.flops for r in table.rows if r.depth == 1)


def test_collapsed_and_expanded_views():
    model = create("resnet18", stem="cifar")
    collapsed = trace(model, (3, 32, 32), depth=1)
    expanded = trace(model, (3, 32, 32))
    assert [r.name for r in collapsed.rows][:4] == ["conv1", "bn1", "relu", "layer1"]
    assert all(r.depth == 1 for r in collapsed.rows)
    names = [r.name for r in expanded.rows]
    assert "layer2.0.downsample.0" in names
    assert names.count("layer1.0.relu") == 2  # the block's ReLU runs twice, once per row
    assert sum(r.params for r in collapsed.rows) == collapsed.total_params
    assert collapsed.total_flops == expanded.total_flops


def test_text_and_html_views():
    table = trace(create("vgg11", head="cifar", width=0.25), (3, 32, 32), depth=2)
    text = str(table)
    assert "features.0" in text and "Sequential" in text and "Parameters: 910,954" in text
    html = table._repr_html_()
    assert html.count("<tr>") == len(table.rows) + 1
    assert "padding-left:1.95em" in html  # nested rows are indented


def test_html_cells_are_padded_in_a_box_that_scrolls_sideways():
    table = trace(create("lenet"), (1, 28, 28))
    html = table._repr_html_()
    assert html.startswith('<div class="d2lcnn-table d2lcnn-trace" style="overflow-x:auto; max-width:100%">')
    cells = re.findall(r'<t[dh] style="([^"]*)">([^<]*)</t[dh]>', html)
    assert len(cells) == 5 * (len(table.rows) + 1)
    assert all("padding:0.25em 0.75em" in style for style, _ in cells)
    params, flops = cells[5 + 3], cells[5 + 4]  # of the first row: 2,572 and 715.20 K, apart
    assert params[1] == "2,572" and flops[1] == "715.20 K"
    assert all("text-align:right" in style and "white-space:nowrap" in style for style, _ in (params, flops))
    assert "lenet: input 1 x 1 x 28 x 28" in html and "Parameters: 61,706 (61,706 trainable)" in html


def test_batch_shape_and_any_module():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    table = trace(plain, (5, 3, 8, 8))
    assert table.output_shape == (5, 2)
    assert table.total_params == sum(p.numel() for p in plain.parameters())


def test_trace_does_not_touch_weights_or_mode():
    model = create("lenet_modern").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace(model, (1, 28, 28))
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_trace_explains_too_small_input():
    with pytest.raises(InputShapeError) as err:
        trace(create("alexnet"), (3, 28, 28))
    message = str(err.value)
    assert "layer 'features.5' (MaxPool2d) received (1, 256, 2, 2)" in message
    assert "from 195 to 226 px" in message


def test_trace_explains_wrong_channels():
    with pytest.raises(InputShapeError, match=r"features.0.*in_channels=3"):
        trace(create("lenet"), (3, 28, 28))


def test_repr_is_the_readable_table():
    table = trace(create("lenet"), (1, 28, 28))
    assert repr(table) == str(table) and "features.0" in repr(table)


@pytest.mark.parametrize(
    "shape", ["1x28x28", "1, 28, 28", [1, 28, 28], torch.Size([1, 28, 28]), (2, 1, 28, 28)]
)
def test_shape_as_a_string_list_or_size(shape):
    table = trace(create("lenet"), shape)
    assert table.input_shape[1:] == (1, 28, 28) and table.output_shape[1] == 10


@pytest.mark.parametrize(
    "shape, shown",
    [
        ((1, 28.0, 28), "(1, 28.0, 28)"),  # a float side would have been truncated silently
        ("1x28", "'1x28'"),
        ("1x28.5x28", "'1x28.5x28'"),
        ((0, 28, 28), "(0, 28, 28)"),
        ((True, 28, 28), "(True, 28, 28)"),
        (28, "28"),
        ((1, 2, 3, 4, 5), "(1, 2, 3, 4, 5)"),
    ],
)
def test_a_shape_that_is_not_whole_sides_says_how_to_write_one(shape, shown):
    with pytest.raises(InputShapeError) as err:
        trace(create("lenet"), shape)
    message = str(err.value)
    assert message.startswith(f"{shown} is not an input shape") and "'1x28x28'" in message


@pytest.mark.parametrize("depth", [0, -1, 1.5])
def test_depth_must_be_a_whole_number_from_1(depth):
    with pytest.raises(ConfigError, match=f"depth={depth}.*whole number >= 1"):
        trace(create("lenet"), (1, 28, 28), depth=depth)
