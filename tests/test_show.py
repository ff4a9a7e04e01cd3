"""Tests for d2lcnn.show: the small helpers every chapter uses, and the tables they show."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from d2lcnn.errors import ConfigError, UnknownNameError
from d2lcnn.show import Table, count_params, init_weights, show_source
from d2lcnn.train import train_epoch


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_count_params_counts_all_or_only_trainable_ones():
    model = net()
    assert count_params(model) == (4 * 9 + 4) + (144 * 3 + 3)
    model[0].requires_grad_(False)
    assert count_params(model, trainable=True) == 144 * 3 + 3


def test_xavier_keeps_biases_and_kaiming_zeroes_them():
    model = net()
    bias = model[0].bias.detach().clone()
    init_weights(model, "xavier")
    assert torch.equal(model[0].bias, bias)
    bound = (6 / (9 + 4 * 9)) ** 0.5  # Xavier-uniform: sqrt(6 / (fan_in + fan_out))
    assert model[0].weight.abs().max() <= bound
    init_weights(model, "kaiming")
    assert torch.count_nonzero(model[0].bias) == 0 and torch.count_nonzero(model[3].bias) == 0
    with pytest.raises(UnknownNameError, match="Did you mean 'xavier'"):
        init_weights(model, "xavir")


def test_show_source_shows_the_code_that_runs(capsys):
    show_source(train_epoch)
    shown = capsys.readouterr().out
    assert shown.startswith("def train_epoch(") and "scaler.step(optimizer)" in shown


# ----------------------------------------------------------------------------- tables


def small_table(**options) -> Table:
    rows = [["lenet", 61_706, "833 K", "90.1%"], ["a<b & c", 46_764_746, "1.88 G", "-"]]
    return Table(["Model", "Params", "FLOPs", "Test acc"], rows, **options)


def cell_styles(html: str, tag: str = "td") -> list[str]:
    return re.findall(rf'<{tag} style="([^"]*)">', html)


def test_table_html_is_a_padded_table_in_a_box_that_scrolls_sideways():
    html = small_table(caption="Two models", notes=["Params: weights and biases."])._repr_html_()
    assert html.startswith('<div class="d2lcnn-table" style="overflow-x:auto; max-width:100%">')
    assert html.endswith("</div>") and html.count("<table") == 1 and "</table>" in html
    assert (
        html.index("Two models")
        < html.index("<table")
        < html.index("</table>")
        < html.index("Params: weights")
    )
    assert len(cell_styles(html, "th")) == 4 and len(cell_styles(html)) == 8
    assert all("padding:0.25em 0.75em" in style for style in cell_styles(html) + cell_styles(html, "th"))


def test_table_numbers_are_right_aligned_in_even_digits_and_text_left():
    styles = cell_styles(small_table()._repr_html_())
    first_row = styles[:4]
    assert "text-align:left" in first_row[0] and "white-space:nowrap" not in first_row[0]
    for style in first_row[1:]:  # 61,706, 833 K and 90.1% are numbers ("-" is a missing one)
        assert "text-align:right" in style and "tabular-nums" in style and "white-space:nowrap" in style
    assert small_table().alignment() == "lrrr"


@pytest.mark.parametrize(
    "cell", ["1,234", "-0.5", "+3.1", "12.5%", "2.31x", "1.88 G", "76.9 M", "512 MB", "1.5 s"]
)
def test_cells_that_read_as_numbers_are_right_aligned(cell):
    assert Table(["Value"], [[cell], ["-"]]).alignment() == "r"


@pytest.mark.parametrize("cell", ["1x28x28", "1 x 6 x 28 x 28", "nan", "3 layers", "failed", True])
def test_shapes_words_and_flags_are_text(cell):
    assert Table(["Value"], [[cell], [12]]).alignment() == "l"


def test_table_escapes_every_cell_the_caption_and_the_notes():
    html = small_table(caption="<b>x</b>", notes=["1 < 2"])._repr_html_()
    assert "a&lt;b &amp; c" in html and "&lt;b&gt;x&lt;/b&gt;" in html and "1 &lt; 2" in html
    assert "<b>" not in html and "a<b" not in html


def test_table_writes_ints_with_separators_floats_briefly_and_none_as_a_dash():
    table = Table(
        ["Name", "Value"], [["int", 1234567], ["float", 0.0123456], ["big", 12345.6], ["none", None]]
    )
    values = [line.split()[-1] for line in str(table).splitlines()[3:-1]]
    assert values == ["1,234,567", "0.01235", "12,346", "-"]
    assert table.alignment() == "lr"


def test_markdown_lines_up_and_marks_the_number_columns():
    text = small_table(align="lrlr").to_markdown()
    lines = text.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1
    assert lines[0].startswith("| Model ") and lines[1].startswith("|---") and lines[1].endswith(":|")
    rule = lines[1].strip("|").split("|")
    assert [cell.endswith(":") for cell in rule] == [False, True, False, True]
    assert lines[2].split("|")[3] == " 833 K  "  # left-aligned, as asked, though a number


def test_markdown_escapes_pipes_and_puts_caption_and_notes_around_the_table():
    text = Table(["a", "b"], [["x|y", 1]], caption="Above", notes=["Below", "And below"]).to_markdown()
    paragraphs = text.split("\n\n")
    assert paragraphs[0] == "Above" and paragraphs[2:] == ["Below", "And below"]
    assert "x\\|y" in paragraphs[1]


def test_printing_a_table_shows_plain_text_that_lines_up():
    table = small_table(caption="Two models", notes=["a note"])
    text = str(table)
    assert repr(table) == text
    lines = text.splitlines()
    assert lines[0] == "Two models" and lines[-2] == "a note"
    assert lines[1] == lines[3] == lines[-3] == lines[-1] == "-" * len(lines[1])
    assert lines[4].startswith("lenet") and lines[4].endswith("90.1%") and len(lines[4]) == len(lines[1])


def test_explicit_align_is_honoured():
    html = small_table(align="rlll")._repr_html_()
    first_row = [re.search(r"text-align:(\w+)", style)[1] for style in cell_styles(html)[:4]]
    assert first_row == ["right", "left", "left", "left"]
    assert "tabular-nums" not in cell_styles(html)[1]


@pytest.mark.parametrize("align", ["lrr", "lrrrr", "lrcr", 4])
def test_an_align_that_does_not_fit_the_columns_says_what_to_give(align):
    with pytest.raises(
        ConfigError, match=r"align=.* is not valid: give 'l' \(left\) or 'r' \(right\) for each of the 4"
    ):
        small_table(align=align)


def test_rows_of_the_wrong_length_and_bad_indents_are_refused():
    with pytest.raises(ConfigError, match="Row 2 of the table has 1 cells for the 2 columns"):
        Table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(ConfigError, match="indent=.*one whole number >= 0 for each of the 2 rows"):
        Table(["a", "b"], [[1, 2], [3, 4]], indent=[0])
    with pytest.raises(ConfigError, match="list of names"):
        Table("ab", [])


def test_indent_pads_the_first_cell_in_html_and_text():
    table = Table(["Layer", "Params"], [["features", 10], ["features.0", 4]], indent=[0, 1])
    styles = cell_styles(table._repr_html_())
    assert "padding-left" not in styles[0] and "padding-left:1.95em" in styles[2]
    assert "padding-left" not in styles[3]  # only the first cell of a row
    assert "\n  features.0" in str(table) and "|   features.0 |" in table.to_markdown()


def test_a_table_can_carry_more_html_classes():
    html = Table(["a"], [[1]], css_class="d2lcnn-trace")._repr_html_()
    assert html.startswith('<div class="d2lcnn-table d2lcnn-trace" style="overflow-x:auto')
