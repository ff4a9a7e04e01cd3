"""Tests for d2lcnn.plot: every figure is built from small models and fake data defined here."""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from torch import nn

from d2lcnn import plot
from d2lcnn.compare import Comparison, Row
from d2lcnn.errors import ConfigError, CorruptDataError, InputShapeError, UnknownNameError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["zero", "one", "two", "three"]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]  # fmt: skip


@dataclass
class Epoch:
    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float | None
    test_acc: float | None
    seconds: float
    examples_per_s: float
    lr: float


class FakeHistory:
    """What fit() returns: .epochs (attribute records) and as_dict()."""

    def __init__(self, epochs: list[Epoch]) -> None:
        self.epochs = epochs

    def as_dict(self) -> dict:
        return {"model": "fake", "epochs": [asdict(e) for e in self.epochs]}


def make_history(num_epochs: int = 3, offset: float = 0.0, with_test: bool = True) -> FakeHistory:
    return FakeHistory(
        [
            Epoch(
                epoch=i + 1,
                train_loss=2.0 / (i + 1) + offset,
                train_acc=0.5 + 0.1 * i,
                test_loss=2.2 / (i + 1) + offset if with_test else None,
                test_acc=0.45 + 0.1 * i if with_test else None,
                seconds=1.0,
                examples_per_s=1000.0,
                lr=0.1,
            )
            for i in range(num_epochs)
        ]
    )


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def images_of(fig: Figure) -> list[np.ndarray]:
    return [np.asarray(ax.images[0].get_array()) for ax in fig.axes if ax.images]


def render(fig: Figure) -> None:
    """Draw the figure with the Agg canvas, as savefig to PNG does: the layout and every text's box are
    then final. (A figure closed in pyplot keeps a canvas whose draw() does nothing.)"""
    FigureCanvasAgg(fig).draw()


def overlap(a: Bbox, b: Bbox, slack: float = 0.5) -> bool:
    """Two drawn boxes share more than a sliver (in pixels)."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > slack and min(a.y1, b.y1) - max(a.y0, b.y0) > slack


def assert_titles_apart(fig: Figure) -> None:
    """Rendered: no panel title overlaps another title, another panel or the figure's title, and
    every title is inside the figure."""
    render(fig)
    boxes = [ax.title.get_window_extent() for ax in fig.axes]
    panels = [ax.get_window_extent() for ax in fig.axes]
    top = fig._suptitle.get_window_extent() if fig._suptitle else None
    for i, box in enumerate(boxes):
        name = repr(fig.axes[i].get_title())
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, name
        assert top is None or not overlap(box, top), name
        for j, (other, panel) in enumerate(zip(boxes, panels, strict=True)):
            if j != i:
                assert not overlap(box, other), f"{name} overlaps {fig.axes[j].get_title()!r}"
                assert not overlap(box, panel), f"{name} overlaps panel {j}"


# ----------------------------------------------------------------------------- fake data and model
#
# Each 1x4x4 image is -1 everywhere (normalised black) except one "hot" pixel in the first row; the
# model reads the first row, so it predicts the column of the hot pixel. Putting the hot pixel in
# another column than the label makes a known mistake, and its value sets how confident it is.

LABELS = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
HOT = [0, 1, 2, 3, 1, 1, 0, 3, 0, 2]  # wrong at positions 4, 6 and 9
HEAT = [1.0, 1.0, 1.0, 1.0, 0.2, 1.0, 1.0, 1.0, 1.0, -0.5]
WRONG = [i for i, (y, h) in enumerate(zip(LABELS, HOT, strict=True)) if y != h]


def make_images() -> torch.Tensor:
    x = -torch.ones(len(LABELS), 1, 4, 4)
    for i, (column, heat) in enumerate(zip(HOT, HEAT, strict=True)):
        x[i, 0, 0, column] = heat
    return x


def reading_model() -> nn.Sequential:
    linear = nn.Linear(16, 4)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        for c in range(4):
            linear.weight[c, c] = 6.0  # pixel (0, c) of the flattened image
    return nn.Sequential(nn.Flatten(), linear)


class FakeData:
    """Like d2lcnn.data's Data: .test batches of normalised images, .classes, .denormalize()."""

    def __init__(self, batch_size: int = 4) -> None:
        x, y = make_images(), torch.tensor(LABELS)
        self.test = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), 4)]
        self.classes = list(CLASSES)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 0.5 + 0.5).clamp(0, 1).cpu()


@pytest.fixture(autouse=True)
def no_figures_left_open():
    """Every function hands back its figure without leaving it registered in pyplot, so a
    notebook shows it exactly once."""
    plt.close("all")
    yield
    assert plt.get_fignums() == []


# ----------------------------------------------------------------------------- plot_history


def test_plot_history_draws_train_and_test_per_metric():
    history = make_history()
    fig = plot.plot_history(history)
    assert isinstance(fig, Figure)
    assert titles(fig) == ["Loss", "Accuracy"]
    loss_ax, acc_ax = fig.axes
    lines = {line.get_label(): line for line in loss_ax.lines}
    assert set(lines) == {"train", "test"}
    assert list(lines["train"].get_xdata()) == [1, 2, 3]
    assert list(lines["train"].get_ydata()) == pytest.approx([e.train_loss for e in history.epochs])
    assert list(lines["test"].get_ydata()) == pytest.approx([e.test_loss for e in history.epochs])
    assert lines["test"].get_linestyle() == "--"
    acc = {line.get_label(): line for line in acc_ax.lines}
    assert list(acc["train"].get_ydata()) == pytest.approx([e.train_acc for e in history.epochs])
    assert png_bytes(fig).startswith(PNG_MAGIC)


def test_plot_history_accepts_dicts_and_json_and_skips_missing_test():
    history = make_history(with_test=False)
    for form in (
        history.as_dict(),
        json.loads(json.dumps(history.as_dict())),
        history.as_dict()["epochs"],
    ):
        fig = plot.plot_history(form, metrics=("loss",))
        assert len(fig.axes) == 1
        assert [line.get_label() for line in fig.axes[0].lines] == ["train"]
        assert list(fig.axes[0].lines[0].get_ydata()) == pytest.approx([e.train_loss for e in history.epochs])


def test_plot_history_overlays_labelled_runs():
    runs = [make_history(offset=k) for k in range(3)]
    labels = ["fine-tuned", "frozen", "scratch"]
    fig = plot.plot_history(runs, labels=labels)
    assert len(fig.axes) == 2
    legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert legend == [f"{label} {split}" for label in labels for split in ("train", "test")]
    first_lines = fig.axes[0].lines[::2]  # train curves of each run
    assert len({line.get_color() for line in first_lines}) == 3
    assert first_lines[2].get_ydata()[0] == pytest.approx(2.0 + 2)


def test_plot_history_draws_into_given_axes():
    fig, axes = plt.subplots(1, 2)
    try:
        assert plot.plot_history(make_history(), ax=axes) is fig
        assert len(axes[0].lines) == 2 and len(axes[1].lines) == 2
        with pytest.raises(InputShapeError, match="one Axes per metric"):
            plot.plot_history(make_history(), ax=axes[0])
    finally:
        plt.close(fig)


def test_plot_history_bad_input_errors():
    with pytest.raises(UnknownNameError, match="Did you mean 'acc'"):
        plot.plot_history(make_history(), metrics=("accuracy",))
    with pytest.raises(CorruptDataError, match="Expected a training history"):
        plot.plot_history(42)
    with pytest.raises(CorruptDataError, match="no 'epochs' key"):
        plot.plot_history({"loss": [1, 2]})
    with pytest.raises(CorruptDataError, match="no epochs yet"):
        plot.plot_history(FakeHistory([]))
    with pytest.raises(InputShapeError, match="2 labels for 3 histories"):
        plot.plot_history([make_history()] * 3, labels=["a", "b"])


def spiky_history(num_epochs: int = 6) -> FakeHistory:
    """The test loss of the first epoch is 38.7, twenty times the others."""
    history = make_history(num_epochs)
    history.epochs[0].test_loss = 38.7
    return history


def test_plot_history_loss_ylim_marks_points_beyond_it():
    fig = plot.plot_history(spiky_history(), loss_ylim=(0, 2.5))
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_ylim() == (0, 2.5)
    assert acc_ax.get_ylim()[1] < 1.5 and not acc_ax.texts  # the accuracy is left alone
    test_line = next(line for line in loss_ax.lines if line.get_label() == "test")
    marks = [line for line in loss_ax.lines if line.get_marker() == "^"]
    assert len(marks) == 1 and marks[0].get_color() == test_line.get_color()
    assert [t.get_text() for t in loss_ax.texts] == ["38.7 ↑"]
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["train", "test"]
    render(fig)
    frame = loss_ax.get_window_extent()
    x, y = marks[0].get_transform().transform((1, 1.0))  # epoch 1, on the top edge
    assert y == pytest.approx(frame.y1, abs=1) and frame.x0 < x < frame.x1
    label = loss_ax.texts[0].get_window_extent()
    assert frame.x0 <= label.x0 and label.x1 <= frame.x1 and frame.y0 <= label.y0 and label.y1 <= frame.y1
    # below the axis too: each point under 0.5 gets a mark on the bottom edge and its value
    low = plot.plot_history(spiky_history(), metrics="loss", loss_ylim=(0.5, 2.5)).axes[0]
    under = [e for e in spiky_history().epochs for v in (e.train_loss, e.test_loss) if v < 0.5]
    assert len([line for line in low.lines if line.get_marker() == "v"]) == len(under) > 0
    assert sum(t.get_text().endswith("↓") for t in low.texts) == len(under)


def test_plot_history_without_loss_ylim_shows_the_spike_and_checks_the_limits():
    ax = plot.plot_history(spiky_history()).axes[0]
    assert ax.get_ylim()[1] > 38.7 and not ax.texts
    assert {line.get_label() for line in ax.lines} == {"train", "test"}
    for bad in ((2.5, 0), (1.0,), ("0", 2), (0, float("nan")), 3.0):
        with pytest.raises(ConfigError, match="loss_ylim must be"):
            plot.plot_history(spiky_history(), loss_ylim=bad)


# ----------------------------------------------------------------------------- image grids


def test_show_images_grid_titles_colors_and_gray():
    images = torch.rand(10, 1, 6, 5)
    names = [f"img {i}" for i in range(10)]
    colors = ["red" if i % 2 else "black" for i in range(10)]
    fig = plot.show_images(images, titles=names, ncols=4, colors=colors)
    assert len(fig.axes) == 10
    assert titles(fig) == names
    assert fig.axes[1].title.get_color() == "red"
    shown = images_of(fig)
    assert shown[3].shape == (6, 5)
    np.testing.assert_allclose(shown[3], images[3, 0].numpy())
    assert fig.axes[0].images[0].get_cmap().name == "gray"
    assert fig.axes[4].get_subplotspec().rowspan.start == 1  # 4 per row: the 5th starts row 2
    assert len(png_bytes(fig)) > 0


def test_show_images_rgb_and_bad_input():
    fig = plot.show_images(torch.rand(3, 3, 8, 8))
    assert [image.shape for image in images_of(fig)] == [(8, 8, 3)] * 3
    with pytest.raises(InputShapeError, match="channels-last"):
        plot.show_images(torch.rand(2, 8, 8, 3))
    with pytest.raises(InputShapeError, match="denormalize"):
        plot.show_images(torch.randn(2, 3, 8, 8) * 3)
    with pytest.raises(UnknownNameError, match="not a matplotlib colour"):
        plot.show_images(torch.rand(2, 1, 4, 4), titles=["a", "b"], colors=["red", "rouge"])
    with pytest.raises(InputShapeError, match="3 titles for 2 images"):
        plot.show_images(torch.rand(2, 1, 4, 4), titles=["a", "b", "c"])


# ----------------------------------------------------------------------------- predictions


def test_show_predictions_marks_mistakes_in_red():
    model = reading_model()
    model.train()
    fig = plot.show_predictions(model, FakeData(), n=24)
    assert model.training  # the model's own mode is given back
    assert len(fig.axes) == len(LABELS)  # fewer test images than n: all are shown
    # right: the class alone; wrong: the prediction above "(true: class)"
    expected = [CLASSES[h] if y == h else f"{CLASSES[h]}\n(true: {CLASSES[y]})" for y, h in zip(LABELS, HOT)]
    assert titles(fig) == expected
    red = to_rgba(plot._MISTAKE_COLOR)
    for i, ax in enumerate(fig.axes):
        is_red = to_rgba(ax.title.get_color()) == red
        assert is_red == (i in WRONG), ax.get_title()
    assert f"{len(WRONG)} of {len(LABELS)} wrong" in fig.get_suptitle()
    np.testing.assert_allclose(images_of(fig)[0], (make_images()[0, 0] * 0.5 + 0.5).numpy())


def test_show_predictions_sample_is_fixed_by_seed():
    data, model = FakeData(), reading_model()
    first = titles(plot.show_predictions(model, data, n=4, ncols=2, seed=1))
    again = titles(plot.show_predictions(model, data, n=4, ncols=2, seed=1))
    assert len(first) == 4 and first == again
    others = {tuple(titles(plot.show_predictions(model, data, n=4, seed=s))) for s in range(2, 8)}
    assert len(others) > 1


def test_show_predictions_rejects_model_for_other_classes():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    with pytest.raises(InputShapeError, match=r"expected \(batch, 4\)"):
        plot.show_predictions(model, FakeData())


def test_show_most_confused_ranks_by_wrong_class_probability():
    fig = plot.show_most_confused(reading_model(), FakeData(), n=len(WRONG))
    # the mistakes, surest first: position 6 (heat 1.0), then 4 (0.2), then 9 (-0.5)
    order = [6, 4, 9]
    # "wrong class (its probability)" above "(true: class)"
    lines = [title.split("\n") for title in titles(fig)]
    assert [second for _, second in lines] == [f"(true: {CLASSES[LABELS[i]]})" for i in order]
    assert [first.split(" (")[0] for first, _ in lines] == [CLASSES[HOT[i]] for i in order]
    percents = [float(first.split(" (")[1].rstrip("%)")) for first, _ in lines]
    assert percents == sorted(percents, reverse=True) and percents[0] > 90
    assert all(to_rgba(ax.title.get_color()) == to_rgba(plot._MISTAKE_COLOR) for ax in fig.axes)
    np.testing.assert_allclose(images_of(fig)[0], (make_images()[6, 0] * 0.5 + 0.5).numpy())


class LitPixelReader(nn.Module):
    """Predicts the class whose pixel is lit in the first row of channel 0 (a model without weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 6 * x[:, 0, 0, :10]


class LongNamesData:
    """24 CIFAR- or Fashion-MNIST-like test images of the three longest class names, predicted as
    another of them two times out of three by LitPixelReader."""

    def __init__(self, classes: list[str], channels: int = 3, side: int = 32) -> None:
        longest = sorted(range(len(classes)), key=lambda k: -len(classes[k]))[:3]
        labels = [longest[i % 3] for i in range(24)]
        self.predicted = [longest[(i + (i % 3 != 0)) % 3] for i in range(24)]
        x = -torch.ones(24, channels, side, side)
        for i, k in enumerate(self.predicted):
            x[i, 0, 0, k] = 1.0
        y = torch.tensor(labels)
        self.test = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)]
        self.classes = list(classes)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 0.5 + 0.5).clamp(0, 1).cpu()


@pytest.mark.parametrize(("classes", "channels", "side"), [(CIFAR10, 3, 32), (FASHION, 1, 28)])
def test_prediction_titles_fit_their_panels_with_long_class_names(classes, channels, side):
    data = LongNamesData(classes, channels, side)
    fig = plot.show_predictions(LitPixelReader(), data)
    shown = titles(fig)
    assert len(shown) == 24 and sum("\n(true: " in title for title in shown) == 16
    assert "automobile" in shown or "T-shirt/top" in shown  # the right ones: the class alone
    assert fig.get_size_inches()[0] <= 10.5
    assert_titles_apart(fig)
    confused = plot.show_most_confused(LitPixelReader(), data, n=16)
    assert all(title.count("\n") == 1 and "%)" in title for title in titles(confused))
    assert confused.get_size_inches()[0] <= 10.5
    assert_titles_apart(confused)


# ----------------------------------------------------------------------------- confusion matrix


def test_confusion_matrix_counts_by_hand():
    preds = [0, 1, 1, 2, 2, 2, 0]
    labels = [0, 1, 2, 2, 2, 0, 0]
    expected = torch.tensor([[2, 0, 1], [0, 1, 0], [0, 1, 2]])
    assert torch.equal(plot.confusion_matrix(torch.tensor(preds), torch.tensor(labels), 3), expected)
    scores = torch.nn.functional.one_hot(torch.tensor(preds), 3).float()
    assert torch.equal(plot.confusion_matrix(scores, np.array(labels), 3), expected)
    with pytest.raises(InputShapeError, match="outside 0..2"):
        plot.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(InputShapeError, match="same length"):
        plot.confusion_matrix([0, 1, 2], [0, 1], 3)


def test_plot_confusion_matrix_heatmap_and_labels():
    preds = [0, 1, 1, 2, 2, 2, 0]
    labels = [0, 1, 2, 2, 2, 0, 0]
    names = ["cat", "dog", "frog"]
    fig = plot.plot_confusion_matrix(preds, labels, names)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    heat = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(heat.sum(axis=1), 1.0)
    np.testing.assert_allclose(heat[0], [2 / 3, 0, 1 / 3])
    assert [t.get_text() for t in ax.texts[:3]] == ["67%", "0%", "33%"]
    counts = plot.plot_confusion_matrix(preds, labels, names, normalize=False).axes[0]
    assert [t.get_text() for t in counts.texts] == ["2", "0", "1", "0", "1", "0", "0", "1", "2"]
    assert "7 images" in counts.get_title()
    assert png_bytes(fig).startswith(PNG_MAGIC)


# ----------------------------------------------------------------------------- inside the network


def test_show_filters_one_image_per_filter():
    conv = nn.Conv2d(1, 6, kernel_size=5)
    fig = plot.show_filters(nn.Sequential(conv, nn.ReLU(), nn.Conv2d(6, 16, 5)))
    assert len(fig.axes) == 6
    shown = images_of(fig)
    assert all(image.shape == (5, 5) for image in shown)
    np.testing.assert_allclose(shown[2], conv.weight[2, 0].detach().numpy(), rtol=1e-6)
    assert "6 of 6" in fig.get_suptitle()
    assert len(plot.show_filters(conv, max_filters=4).axes) == 4


def test_show_filters_rgb_and_no_conv():
    fig = plot.show_filters(nn.Conv2d(3, 8, kernel_size=3))
    shown = images_of(fig)
    assert len(shown) == 8 and shown[0].shape == (3, 3, 3)
    assert all(image.min() >= 0 and image.max() <= 1 for image in shown)
    with pytest.raises(InputShapeError, match="no nn.Conv2d"):
        plot.show_filters(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_show_filters_many_in_a_compact_wide_grid():
    torch.manual_seed(0)
    fig = plot.show_filters(nn.Conv2d(3, 96, 11), max_filters=96)  # AlexNet's first layer
    assert len(fig.axes) == 96 and titles(fig) == [str(i) for i in range(96)]
    width, height = fig.get_size_inches()
    assert 9 <= width <= 10.5 and height <= 4.5
    assert fig.axes[16].get_subplotspec().rowspan.start == 1  # sixteen to a row
    assert_titles_apart(fig)
    assert fig.axes[0].get_window_extent().height / fig.dpi >= 0.4  # each filter still about half an inch
    lenet = plot.show_filters(nn.Conv2d(1, 6, 5))  # LeNet's six: one row of the usual size
    assert lenet.get_size_inches()[1] <= 2.5
    render(lenet)
    assert all(ax.get_window_extent().width / lenet.dpi >= 1.0 for ax in lenet.axes)


def small_convnet() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),  # "0": 4x10x10
        nn.ReLU(),  # "1"
        nn.MaxPool2d(2),  # "2": 4x5x5
        nn.Conv2d(4, 6, 3),  # "3": 6x3x3
        nn.ReLU(),  # "4"
        nn.Flatten(),
        nn.Linear(54, 3),
    )


def test_feature_maps_capture_the_named_layer():
    model, image = small_convnet(), torch.randn(1, 12, 12)
    name, maps = plot.feature_maps(model, image)
    assert name == "1"  # default: the first conv's output after its activation
    torch.testing.assert_close(maps, model[:2](image[None])[0].detach())
    name, maps = plot.feature_maps(model, image, layer="3")
    assert name == "3" and maps.shape == (6, 3, 3)
    torch.testing.assert_close(maps, model[:4](image[None])[0].detach())
    name, maps = plot.feature_maps(model, image[None], layer=model[2])
    assert name == "2" and maps.shape == (4, 5, 5)


def test_feature_maps_default_layer_skips_norm_and_falls_back_to_conv():
    with_norm = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(inplace=True))
    assert plot.feature_maps(with_norm, torch.randn(3, 8, 8))[0] == "2"
    no_activation = nn.Sequential(nn.Conv2d(3, 5, 3), nn.MaxPool2d(2), nn.ReLU())
    name, maps = plot.feature_maps(no_activation, torch.randn(3, 8, 8))
    assert name == "0" and maps.shape == (5, 6, 6)


def test_show_feature_maps_panels_and_errors():
    model, image = small_convnet(), torch.randn(1, 12, 12)
    fig = plot.show_feature_maps(model, image)
    assert len(fig.axes) == 4
    np.testing.assert_allclose(images_of(fig)[1], model[:2](image[None])[0, 1].detach().numpy())
    assert "'1' (ReLU)" in fig.get_suptitle()
    assert len(plot.show_feature_maps(model, image, layer="3", max_maps=2).axes) == 2
    with pytest.raises(UnknownNameError, match="Unknown layer '9'"):
        plot.show_feature_maps(model, image, layer="9")
    with pytest.raises(InputShapeError, match="not feature maps"):
        plot.show_feature_maps(model, image, layer="6")
    with pytest.raises(InputShapeError, match="could not run"):
        plot.show_feature_maps(model, torch.randn(3, 12, 12))
    with pytest.raises(InputShapeError, match="not a layer of this model"):
        plot.show_feature_maps(model, image, layer=nn.ReLU())


def test_show_feature_maps_titles_name_the_maps():
    torch.manual_seed(0)
    # like NiN's last block: one map per class before the global average pooling
    model = nn.Sequential(nn.Conv2d(3, 10, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    image = torch.randn(3, 12, 12)
    assert titles(plot.show_feature_maps(model, image, max_maps=4)) == ["0", "1", "2", "3"]
    fig = plot.show_feature_maps(model, image, layer="1", titles=CIFAR10)
    assert titles(fig) == CIFAR10
    assert fig.axes[5].get_subplotspec().rowspan.start == 1  # ten maps as two rows of five
    assert_titles_apart(fig)
    assert titles(plot.show_feature_maps(model, image, max_maps=3, titles=CIFAR10[:3])) == CIFAR10[:3]
    with pytest.raises(ConfigError, match="10 titles for the 4 feature maps shown.*10 channels"):
        plot.show_feature_maps(model, image, max_maps=4, titles=CIFAR10)
    with pytest.raises(ConfigError, match="9 titles for the 10 feature maps shown"):
        plot.show_feature_maps(model, image, titles=CIFAR10[:9])


# ----------------------------------------------------------------------------- comparison


def names_in(ax) -> list[str]:
    """The texts of a comparison panel that name models (not the chance line's label)."""
    return [t.get_text() for t in ax.texts if not t.get_text().startswith("chance")]


def make_comparison(rows: list) -> Comparison:
    return Comparison(
        dataset="mnist", budget=10.0, device="cpu", precision="fp32", threads=2, torch="2", in_channels=1,
        train_examples=300, test_examples=100, seed=0, memory="peak RSS", rows=rows,
    )  # fmt: skip


def test_plot_comparison_shows_accuracy_against_flops_and_seconds():
    done = dict(input_size=28, options={}, optimizer="sgd", lr=0.1, batch_size=128)
    rows = [
        Row("lenet", **done, flops=800_000, train_seconds=9.8, epoch_seconds=2.8, test_acc=0.71),
        Row("alexnet", **done, flops=1_900_000_000, train_seconds=10.4, epoch_seconds=330.0, test_acc=0.42),
        Row("vgg11", **done, error="the process was killed by SIGKILL (out of memory?)"),
    ]
    fig = plot.plot_comparison(make_comparison(rows))
    flops_ax, seconds_ax = fig.axes
    assert flops_ax.get_xscale() == "log" and seconds_ax.get_xscale() == "log"
    assert "per epoch" in seconds_ax.get_xlabel()
    for ax, xs in ((flops_ax, [800_000, 1_900_000_000]), (seconds_ax, [2.8, 330.0])):
        assert names_in(ax) == ["lenet", "alexnet"]  # the failed model has no point
        points = ax.collections[0].get_offsets()
        assert np.allclose(points, [[xs[0], 71.0], [xs[1], 42.0]])
    assert "mnist" in fig._suptitle.get_text() and "10 s" in fig._suptitle.get_text()
    assert png_bytes(fig).startswith(PNG_MAGIC)
    empty = plot.plot_comparison(make_comparison(rows[2:]))
    assert all("no model finished" in [t.get_text() for t in ax.texts] for ax in empty.axes)


def test_plot_comparison_names_close_points_legibly():
    done = dict(input_size=28, options={}, optimizer="sgd", lr=0.1, batch_size=128)
    points = [  # four LeNets almost on one spot, three models close together, two near chance
        ("lenet", 420_000, 20.1, 0.80), ("lenet_bn", 430_000, 20.3, 0.805),
        ("lenet_modern", 450_000, 20.2, 0.81), ("lenet_wide", 440_000, 20.15, 0.795),
        ("alexnet", 9.4e8, 21.5, 0.42), ("googlenet", 1.5e9, 23.0, 0.35), ("resnet18", 1.8e9, 22.8, 0.36),
        ("nin", 7.7e8, 22.0, 0.11), ("vgg11", 7.6e9, 24.0, 0.10),
    ]  # fmt: skip
    rows = [Row(name, **done, flops=f, epoch_seconds=t, test_acc=a) for name, f, t, a in points]
    rows.append(Row("densenet", **done, error="the process was killed by SIGKILL (out of memory?)"))
    fig = plot.plot_comparison(make_comparison(rows))
    assert "densenet" in fig.get_supxlabel()  # the failed model is named, not drawn
    for dpi in (100, 200):  # the names are placed in points: apart at any resolution
        fig.set_dpi(dpi)
        render(fig)
        for ax in fig.axes:
            assert sorted(names_in(ax)) == sorted(name for name, *_ in points)
            # the text alone: an Annotation's own extent includes its leader line to the point
            labels = [Text.get_window_extent(t) for t in ax.texts if t.get_text() in names_in(ax)]
            chance = next(t for t in ax.texts if t.get_text() == "chance (10%)").get_window_extent()
            centres = ax.transData.transform(ax.collections[0].get_offsets())
            for i, box in enumerate(labels):
                assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1, names_in(ax)[i]
                assert not overlap(box, chance), names_in(ax)[i]
                assert not any(box.contains(x, y) for x, y in centres), names_in(ax)[i]
                for j in range(i):
                    assert not overlap(box, labels[j]), (names_in(ax)[i], names_in(ax)[j])
    for ax in fig.axes:
        bottom, top = ax.get_ylim()
        assert bottom < 10 and top > 81  # below the lowest accuracy and chance, above the highest
        dotted = [line for line in ax.lines if line.get_linestyle() == ":"]
        assert len(dotted) == 1 and list(dotted[0].get_ydata()) == [10, 10]


# ----------------------------------------------------------------------------- LivePlot


class FakeHandle:
    def __init__(self) -> None:
        self.updates: list = []

    def update(self, obj) -> None:
        self.updates.append(obj)


def test_in_notebook_only_inside_a_kernel(monkeypatch):
    import IPython

    class TerminalShell:
        pass

    class KernelShell:
        kernel = object()

    for shell, expected in ((None, False), (TerminalShell(), False), (KernelShell(), True)):
        monkeypatch.setattr(IPython, "get_ipython", lambda shell=shell: shell)
        assert plot._in_notebook() is expected


def test_live_plot_does_nothing_outside_jupyter(monkeypatch):
    import IPython.display

    def fail(*args, **kwargs):
        raise AssertionError("LivePlot displayed something outside Jupyter")

    monkeypatch.setattr(IPython.display, "display", fail)
    assert not plot._in_notebook()
    live = plot.LivePlot()
    live.update(make_history())
    live.close()
    live.update(make_history())


def test_live_plot_updates_one_display_in_jupyter(monkeypatch):
    import IPython.display

    shown, handle = [], FakeHandle()

    def display(obj, display_id=False):
        shown.append(obj)
        return handle

    monkeypatch.setattr(IPython.display, "display", display)
    monkeypatch.setattr(plot, "_in_notebook", lambda: True)
    live = plot.LivePlot(num_epochs=5)
    for epochs in range(1, 4):
        live.update(make_history(epochs))
    assert len(shown) == 1 and len(handle.updates) == 2
    for image in (shown[0], *handle.updates):
        assert image.data.startswith(PNG_MAGIC)
    assert handle.updates[-1].data != shown[0].data  # the curves grew
    live.close()
    live.update(make_history(4))
    assert len(shown) == 1 and len(handle.updates) == 2
