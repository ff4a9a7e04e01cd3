"""Figures for the course: training curves, image grids, predictions, confusion matrices, filters, feature
maps, architecture comparisons. Each returns a Figure closed in pyplot, so a notebook shows it just once."""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import is_color_like
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextPath
from matplotlib.transforms import Bbox, offset_copy
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook

from d2lcnn.errors import (
    ConfigError,
    CorruptDataError,
    InputShapeError,
    UnknownNameError,
    is_number,
    unknown_name,
)
from d2lcnn.runtime import evaluating, model_device

# A light style shared by every figure, readable at notebook width (used as a decorator: @plt.rc_context).
_STYLE = {
    "axes.titlesize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "lines.linewidth": 1.8,
    "image.interpolation": "nearest",
}
_CELL_INCHES = 1.2  # size of one image in a grid
_MAX_WIDTH = 10.5  # inches: no wider than the book's page, where a wider figure would be shrunk
_MISTAKE_COLOR = "tab:red"
_BEHIND_TEXT = {"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}

_METRICS = {  # metric: (fields to draw, panel title, y label)
    "loss": (("train_loss", "test_loss"), "Loss", "loss"),
    "acc": (("train_acc", "test_acc"), "Accuracy", "accuracy"),
    "lr": (("lr",), "Learning rate", "learning rate"),
}
_EPOCH_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")
_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm, nn.InstanceNorm2d)


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A figure of `width` x `height` inches that a notebook shows once, as the cell's result."""
    # Made through pyplot so a notebook's inline backend (and its PNG formatter) is loaded, then
    # closed so pyplot does not show it a second time at the end of the cell.
    fig = plt.figure(figsize=(width, height), layout=layout)
    plt.close(fig)
    return fig


def _field(record: Any, name: str) -> Any:
    """`record[name]` of a dict, `record.name` of an object; None when it has no such field."""
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)


def _epoch_rows(history: Any, label: str | None = None) -> list[dict[str, float]]:
    """The epochs of a History, its as_dict()/JSON form, or a bare list of epoch records, as floats."""
    records = history if isinstance(history, (list, tuple)) else _field(history, "epochs")
    if records is None:
        keys = f" with keys {list(history)} and no 'epochs' key" if isinstance(history, Mapping) else ""
        raise CorruptDataError(
            f"Expected a training history, got {type(history).__name__}{keys}. Pass the History from "
            "fit(), its as_dict(), its saved JSON, or a list of those to compare runs."
        )
    if not records:
        name = f" {label!r}" if label else ""
        raise CorruptDataError(f"The history{name} has no epochs yet: train for at least one epoch first.")
    rows = []
    for position, record in enumerate(records):
        row = {field: _field(record, field) for field in _EPOCH_FIELDS}
        if row["train_loss"] is None:
            raise CorruptDataError(
                f"Epoch record {position} ({type(record).__name__}) has no train_loss: pass fit()'s epochs."
            )
        row["epoch"] = position + 1 if row["epoch"] is None else row["epoch"]
        rows.append({field: math.nan if value is None else float(value) for field, value in row.items()})
    return rows


def _runs(history: Any, labels: Sequence[str] | None) -> list[tuple[str | None, list[dict]]]:
    """Split plot_history's input into (label, epoch rows) pairs, one per run."""
    listed = isinstance(history, (list, tuple)) and len(history) > 0
    several = listed and all(_field(one, "epochs") is not None for one in history)
    histories = list(history) if several else [history]
    if labels is None:
        labels = [f"run {i + 1}" for i in range(len(histories))] if several else [None]
    labels = [labels] if isinstance(labels, str) else list(labels)
    if len(labels) != len(histories):
        raise InputShapeError(
            f"Got {len(labels)} labels for {len(histories)} histories: give one label per history."
        )
    return [(label, _epoch_rows(one, label)) for label, one in zip(labels, histories, strict=True)]


@plt.rc_context(_STYLE)
def plot_history(
    history: Any,
    labels: Sequence[str] | None = None,
    metrics: str | Sequence[str] = ("loss", "acc"),
    ax: Axes | Sequence[Axes] | None = None,
    loss_ylim: tuple[float, float] | None = None,
) -> Figure:
    """Loss and accuracy (train solid, test dashed) against epoch of a History, its as_dict() or JSON,
    or of a list of those overlaid and named by `labels`. `metrics` picks panels from "loss", "acc" and
    "lr"; `ax` gives one Axes per metric to draw into. `loss_ylim` = (low, high) fixes the loss axis,
    e.g. when one spike would flatten the other epochs; a point beyond it is marked at the edge with
    its value ("3.9 ↑")."""
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    for metric in metrics or [""]:  # none at all is refused like an unknown one
        if metric not in _METRICS:
            raise unknown_name("metric", str(metric), _METRICS)
    if loss_ylim is not None and not (
        isinstance(loss_ylim, (tuple, list))
        and len(loss_ylim) == 2
        and all(is_number(limit) for limit in loss_ylim)
        and loss_ylim[0] < loss_ylim[1]
    ):
        raise ConfigError(f"loss_ylim must be (low, high) with low < high, e.g. (0, 2.5), got {loss_ylim!r}.")
    runs = _runs(history, labels)
    if ax is None:
        ax = new_figure(4.6 * len(metrics), 3.4).subplots(1, len(metrics), squeeze=False)
    axes = list(np.ravel(ax))  # one Axes or an array of them
    if len(axes) != len(metrics):
        raise InputShapeError(
            f"Got {len(axes)} axes for the metrics {metrics}: pass one Axes per metric, or ax=None."
        )
    for ax, metric in zip(axes, metrics, strict=True):
        fields, title, ylabel = _METRICS[metric]
        positive = []
        for run_index, (label, rows) in enumerate(runs):
            for field_index, field in enumerate(fields):
                values = [row[field] for row in rows]
                if all(math.isnan(v) for v in values):
                    continue  # e.g. no test set was evaluated
                split = field.split("_")[0] if len(fields) > 1 else ""
                ax.plot(
                    [row["epoch"] for row in rows],
                    values,
                    color=f"C{field_index}" if len(runs) == 1 else f"C{run_index % 10}",
                    linestyle="--" if split == "test" else "-",
                    marker="o" if len(rows) <= 30 else None,
                    markersize=3,
                    label=" ".join(part for part in (label, split) if part) or None,
                )
                positive += [v for v in values if v > 0]
        if metric == "lr" and positive and max(positive) / min(positive) > 10:
            ax.set_yscale("log")
        if metric == "loss" and loss_ylim is not None:
            _limit_with_marks(ax, loss_ylim)
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        ax.locator_params(axis="x", integer=True, nbins=10)
        if ax.get_legend_handles_labels()[1]:
            ax.legend()
    return axes[0].figure.figure  # the Figure itself, also when the axes are in a SubFigure


def _text_inches(text: str, size: float) -> float:
    """The width in inches of the longest line of `text` in the default font at `size` points."""
    prop = FontProperties(size=size)
    widths = [
        TextPath((0, 0), line, prop=prop).get_extents().width for line in text.split("\n") if line.strip()
    ]
    return max(widths, default=0.0) / 72


def _limit_with_marks(ax: Axes, ylim: tuple[float, float]) -> None:
    """Set the y limits of `ax`, and mark each point of its lines beyond them by a triangle on the edge
    it passed, in the line's colour, annotated with its value: nothing is hidden silently."""
    low, high = float(ylim[0]), float(ylim[1])
    ax.set_ylim(low, high)
    left, right = ax.get_xlim()
    edge = ax.get_xaxis_transform()  # x in data, y in axes fraction: 1 is the top edge, 0 the bottom
    marks: dict[tuple[float, bool], int] = {}  # marks so far at each (x, edge): stack their labels
    for line in list(ax.lines):
        for x, y in zip(np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)):
            if not (y > high or y < low):  # also skips NaN
                continue
            up = y > high
            stacked = marks.get((x, up), 0)
            marks[(x, up)] = stacked + 1
            color, shift = line.get_color(), 9 * stacked + 2  # points inwards from the edge
            # a second mark at the same place goes just inside the first, so that both show
            place = offset_copy(edge, ax.figure, y=(2 - shift if up else shift - 2), units="points")
            ax.plot([x], [1.0 if up else 0.0], transform=place, marker="^" if up else "v", markersize=7,
                    color=color, linestyle="none", clip_on=False, zorder=4)  # fmt: skip
            on_right = x - left > 0.7 * (right - left)  # then the label goes left, to stay inside
            ax.annotate(
                f"{y:.3g} {'↑' if up else '↓'}",
                (x, 1.0 if up else 0.0),
                xycoords=edge,
                xytext=(-6 if on_right else 6, -shift if up else shift),
                textcoords="offset points",
                ha="right" if on_right else "left",
                va="top" if up else "bottom",
                fontsize=8,
                color=color,
                bbox=_BEHIND_TEXT,
            )


def _image_grid(
    images: Sequence[np.ndarray],
    ncols: int,
    titles: Sequence[str] | None = None,
    title_colors: Sequence[Any] | None = None,
    mistakes: Sequence[bool] | None = None,
    suptitle: str | None = None,
    cell: tuple[float, float] = (_CELL_INCHES, _CELL_INCHES),
    title_size: float = 8.0,
    **imshow: Any,
) -> Figure:
    """One panel per (H, W) or (H, W, 3) image, gray in [0, 1] unless `imshow` overrides; mistakes in red.
    `cell` is the (width, height) in inches of one image; a column is widened to its widest title, and
    `ncols` lowered if the figure would be wider than the page, so that no two titles overlap."""
    titles = [str(title) for title in titles] if titles else []
    lines = max((title.count("\n") + 1 for title in titles), default=0)
    title_room = lines * title_size * 1.25 / 72 + (0.03 if lines else 0.0)
    column = max(cell[0], max((_text_inches(title, title_size) for title in titles), default=0.0) + 0.15)
    ncols = max(1, min(ncols, len(images), int(_MAX_WIDTH // column)))
    nrows = math.ceil(len(images) / ncols)
    fig = new_figure(ncols * column, nrows * (cell[1] + title_room) + (0.35 if suptitle else 0.0))
    pad = min(3 / 72, 0.03 * cell[1])  # between panels: constrained layout's default, less for small ones
    fig.get_layout_engine().set(w_pad=pad, h_pad=pad, wspace=0.0, hspace=0.02 if lines else 0.0)
    imshow = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} | imshow  # the colour map is ignored for RGB
    for i, image in enumerate(images):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(image, **imshow)
        ax.set(xticks=[], yticks=[])
        wrong = bool(mistakes and mistakes[i])
        for spine in ax.spines.values():
            spine.set(visible=wrong, color=_MISTAKE_COLOR, linewidth=2.5 if cell[1] >= 1 else 1.5)
        if titles:
            color = _MISTAKE_COLOR if wrong else title_colors[i] if title_colors else "black"
            ax.set_title(titles[i], fontsize=title_size, color=color, linespacing=1.1, pad=3)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def _to_hwc(images: Any) -> list[np.ndarray]:
    """(N, C, H, W) images in [0, 1] (or uint8) as a list of (H, W) or (H, W, 3) numpy arrays."""
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], Tensor):
        images = torch.stack(list(images))
    x = torch.as_tensor(images).detach().cpu()
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        channels_last = x.ndim == 4 and x.shape[-1] in (1, 3)
        hint = " They look channels-last: use images.permute(0, 3, 1, 2)." if channels_last else ""
        if x.ndim == 3:
            hint = " For one image use image.unsqueeze(0); for gray (N, H, W) use x.unsqueeze(1)."
        raise InputShapeError(
            f"Expected images of shape (N, C, H, W) with C 1 or 3, got {tuple(x.shape)}.{hint}"
        )
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    low, high = x.min().item(), x.max().item()
    if not -1e-3 <= low <= high <= 1 + 1e-3:  # also refuses NaN
        raise InputShapeError(
            f"Images must have values in [0, 1], not [{low:.3g}, {high:.3g}]: use data.denormalize(x) first."
        )
    x = x.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return [image[..., 0] if image.shape[-1] == 1 else image for image in x]


@plt.rc_context(_STYLE)
def show_images(
    images: Tensor | np.ndarray,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    colors: Sequence[Any] | None = None,
) -> Figure:
    """A grid of images (N, C, H, W) with values in [0, 1], gray when C == 1; `titles` and `colors`
    (title colours) give one entry per image."""
    arrays = _to_hwc(images)
    for name, values in (("titles", titles), ("colors", colors)):
        if values is not None and len(values) != len(arrays):
            raise InputShapeError(f"Got {len(values)} {name} for {len(arrays)} images: give one per image.")
    for color in colors or ():
        if not is_color_like(color):
            raise UnknownNameError(
                f"{color!r} is not a matplotlib colour: use e.g. 'red', '#1f77b4' or (1.0, 0.5, 0.0)."
            )
    return _image_grid(arrays, ncols, titles=titles, title_colors=colors)


def _forward(model: nn.Module, x: Tensor) -> Tensor:
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    try:
        return model(x.to(device=model_device(model) or "cpu", dtype=dtype))
    except RuntimeError as err:
        raise InputShapeError(
            f"The model could not run on input of shape {tuple(x.shape)}: {err}. Check that the model was "
            "built for these images (channels, size) and that the input is normalised float images."
        ) from err


def _probabilities(model: nn.Module, x: Tensor, num_classes: int) -> Tensor:
    """Softmax class probabilities (on CPU) for a batch; call inside `evaluating`."""
    logits = _forward(model, x)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise InputShapeError(
            f"The model's output has shape {tuple(logits.shape)}, expected (batch, {num_classes}) logits for "
            f"the data's {num_classes} classes. Use a model built for this dataset."
        )
    return logits.float().softmax(dim=1).cpu()


def _pair_titles(
    classes: Sequence[str], true: Tensor, other: Tensor, probability: Tensor | None = None
) -> list[str]:
    """Short titles that fit a panel: the class alone where `other` (a predicted class) is the true one,
    else `other` (with its probability) above "(true: class)"."""
    shares = [None] * len(true) if probability is None else probability.tolist()
    titles = []
    for t, o, share in zip(true.tolist(), other.tolist(), shares, strict=True):
        guess = classes[o] if share is None else f"{classes[o]} ({share:.0%})"
        titles.append(guess if t == o else f"{guess}\n(true: {classes[t]})")
    return titles


@plt.rc_context(_STYLE)
def show_predictions(model: nn.Module, data: Any, n: int = 24, ncols: int = 8, seed: int = 0) -> Figure:
    """A grid of `n` test images titled by the predicted class; a mistake in red, with "(true: class)"
    below. Drawn at random (fixed by `seed`) from the first few test batches; `ncols` at most per row."""
    if n < 1:
        raise InputShapeError(f"n must be at least 1, got {n}.")
    images, labels = [], []
    for x, y in data.test:
        images.append(x)
        labels.append(torch.as_tensor(y).cpu())
        if sum(map(len, labels)) >= max(4 * n, 256):
            break
    images, labels = torch.cat(images), torch.cat(labels)
    chosen = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    images, labels = images[chosen.to(images.device)], labels[chosen]
    with evaluating(model):
        predicted = _probabilities(model, images, len(data.classes)).argmax(dim=1)
    wrong = (predicted != labels).tolist()
    suptitle = f"Test predictions, {sum(wrong)} of {len(wrong)} wrong (in red, with the true class below)"
    titles = _pair_titles(data.classes, labels, predicted)
    images = _to_hwc(data.denormalize(images))
    return _image_grid(images, ncols, titles, mistakes=wrong, suptitle=suptitle, title_size=7.5)


@plt.rc_context(_STYLE)
def show_most_confused(model: nn.Module, data: Any, n: int = 16) -> Figure:
    """The `n` test images with the highest probability on a wrong class, most confused first, titled
    "wrong class (its probability)" above "(true: class)", in red where it is the prediction. Runs the
    model over the whole test set."""
    if n < 1:
        raise InputShapeError(f"n must be at least 1, got {n}.")
    kept = None  # the n most confused so far: images, labels, score, confused class, predicted class
    with evaluating(model):
        for x, y in data.test:
            y = torch.as_tensor(y).cpu()
            probabilities = _probabilities(model, x, len(data.classes))
            # the most likely wrong class: the true class's probability set to -1 before the max
            score, confused = probabilities.scatter(1, y[:, None], -1.0).max(dim=1)
            batch = [x.detach().cpu(), y, score, confused, probabilities.argmax(dim=1)]
            if kept is not None:
                batch = [torch.cat(pair) for pair in zip(kept, batch, strict=True)]
            top = batch[2].topk(min(n, len(batch[2]))).indices
            kept = [values[top] for values in batch]
    images, labels, score, confused, predicted = kept
    titles = _pair_titles(data.classes, labels, confused, score)
    wrong = (predicted != labels).tolist()
    suptitle = (
        "Most confused test images: the most likely wrong class (its probability), the true class below"
    )
    images = _to_hwc(data.denormalize(images))
    return _image_grid(images, 8, titles, mistakes=wrong, suptitle=suptitle, title_size=7.5)


def confusion_matrix(preds: Any, labels: Any, num_classes: int) -> Tensor:
    """Counts (num_classes, num_classes): row = true class, column = predicted class. `preds` are
    class indices, or (N, num_classes) scores whose argmax is taken."""
    preds, labels = torch.as_tensor(preds).cpu(), torch.as_tensor(labels).cpu()
    if preds.ndim == 2 and preds.shape[1] == num_classes:
        preds = preds.argmax(dim=1)
    if preds.ndim != 1 or labels.ndim != 1 or len(preds) != len(labels):
        raise InputShapeError(
            f"preds {tuple(preds.shape)}, labels {tuple(labels.shape)}: need 1-D indices of the same length."
        )
    both = torch.cat([preds, labels])
    outside = both[(both < 0) | (both >= num_classes)]
    if len(outside):
        raise InputShapeError(
            f"A pred or label is class {int(outside[0])}, outside 0..{num_classes - 1}: check num_classes."
        )
    index = labels.long() * num_classes + preds.long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


@plt.rc_context(_STYLE)
def plot_confusion_matrix(preds: Any, labels: Any, classes: Sequence[str], normalize: bool = True) -> Figure:
    """An annotated heatmap of the confusion matrix, rows = true class, columns = predicted. With
    `normalize`, each row shows the share of that true class given each prediction."""
    k = len(classes)
    counts = confusion_matrix(preds, labels, k).double()
    values = (counts / counts.sum(dim=1, keepdim=True).clamp(min=1) if normalize else counts).numpy()
    size = max(4.5, 0.5 * k + 2.5)
    ax = new_figure(size + 1.0, size).add_subplot()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.figure.colorbar(image, ax=ax, shrink=0.8, label="share of true class" if normalize else "count")
    ax.grid(False)
    ax.set_xticks(range(k), classes, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), classes)
    total, correct = int(counts.sum()), int(counts.trace())
    accuracy = f", accuracy {correct / total:.1%}" if total else ""
    title = f"Confusion matrix ({'row-normalised' if normalize else 'counts'}, {total} images{accuracy})"
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    if k <= 20:  # beyond that the numbers no longer fit in the cells
        dark = 0.5 if normalize else 0.5 * (values.max() or 1)  # half the colour scale
        for (row, col), value in np.ndenumerate(values):
            text = f"{value:.0%}" if normalize else f"{int(value)}"
            color = "white" if value > dark else "black"
            ax.text(col, row, text, ha="center", va="center", fontsize=8, color=color)
    return ax.figure


@plt.rc_context(_STYLE)
def show_filters(model_or_conv: nn.Module, max_filters: int = 64) -> Figure:
    """The first conv layer's filters, one image each: in colour for 3 input channels (each stretched to
    [0, 1]), else the mean over input channels in gray on one shared scale (mid-gray = 0)."""
    convs = [(name, m) for name, m in model_or_conv.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise InputShapeError(
            f"{type(model_or_conv).__name__} has no nn.Conv2d layer, so no filters to show."
        )
    name, conv = convs[0]
    weight = conv.weight.detach().float().cpu()
    shown = weight[:max_filters]
    if weight.shape[1] == 3:
        low = shown.amin(dim=(1, 2, 3), keepdim=True)
        high = shown.amax(dim=(1, 2, 3), keepdim=True)
        shown = ((shown - low) / (high - low).clamp(min=1e-12)).permute(0, 2, 3, 1)
        scale = {}
    else:
        shown = shown.mean(dim=1)
        limit = shown.abs().max().item() or 1.0
        scale = {"vmin": -limit, "vmax": limit}
    out_channels, in_channels, height, width = weight.shape
    layer = f"'{name}'" if name else type(conv).__name__
    suptitle = (
        f"Filters of conv layer {layer}: {len(shown)} of {out_channels}, "
        f"{height}×{width}, {in_channels} input channel{'s' if in_channels > 1 else ''}"
    )
    return _numbered_grid(shown, suptitle, **scale)


def _numbered_grid(
    panels: Tensor, suptitle: str, titles: Sequence[str] | None = None, **style: Any
) -> Figure:
    """One panel per filter or channel, titled by its number or by `titles`: up to 32 in rows of at
    most eight of the usual size, more in rows of sixteen small ones (96 make a figure about 10 x 4 in)."""
    n = len(panels)
    titles = [str(i) for i in range(n)] if titles is None else list(titles)
    if n > 32:
        layout = dict(ncols=16, cell=(0.62, 0.48), title_size=6.0)
    else:
        layout = dict(ncols=math.ceil(n / math.ceil(n / 8)))  # rows of equal length: 10 as 5 + 5
    return _image_grid(list(panels.numpy()), titles=titles, suptitle=suptitle, **layout, **style)


def _default_layer(ran: list[nn.Module]) -> nn.Module:
    """The first conv layer that ran, or the activation right after it (past norm layers) if any."""
    leaves = [module for module in ran if not list(module.children())]
    for i, module in enumerate(leaves):
        if isinstance(module, nn.Conv2d):
            for after in leaves[i + 1 :]:
                # torch defines all its activation layers (ReLU, GELU, SiLU, ...) in this one module
                if type(after).__module__ == "torch.nn.modules.activation":
                    return after
                if not isinstance(after, _NORMS):
                    break
            return module
    raise InputShapeError("The model runs no nn.Conv2d layer: name the layer to show with layer=...")


def _find_layer(names: dict[nn.Module, str], layer: str | int | nn.Module) -> nn.Module:
    modules = {name: module for module, name in names.items()}
    if isinstance(layer, nn.Module) and layer not in names:
        raise InputShapeError(
            f"The given {type(layer).__name__} is not a layer of this model: pass one of its layers or names."
        )
    if not isinstance(layer, nn.Module) and str(layer) not in modules:
        raise unknown_name("layer", str(layer), modules)
    return layer if isinstance(layer, nn.Module) else modules[str(layer)]


def feature_maps(model: nn.Module, image: Tensor, layer: str | nn.Module | None = None) -> tuple[str, Tensor]:
    """The name of one layer and its activations (C, H, W) for one normalised image. `layer` is a name
    from model.named_modules() or one of its modules; None means the first conv layer's output after
    its activation. A layer called several times gives its first output."""
    x = torch.as_tensor(image).detach()
    x = x[None] if x.ndim == 3 else x
    if x.ndim != 4 or len(x) != 1 or not x.is_floating_point():
        raise InputShapeError(
            f"Expected one normalised float image (C, H, W), got {x.dtype} of shape {tuple(x.shape)}: "
            "for a batch, pick one image (x[0]); take images from the data loader, not raw uint8."
        )
    names = {module: name for name, module in model.named_modules() if name}
    chosen = None if layer is None else _find_layer(names, layer)
    outputs: dict[nn.Module, Any] = {}  # each layer's first output, in the order the forward pass ran them

    def keep_first(module: nn.Module, inputs: Any, output: Any) -> None:
        if module in names:
            # clone: an in-place activation later in the network would overwrite this tensor
            outputs.setdefault(module, output.detach().clone() if isinstance(output, Tensor) else output)

    with register_module_forward_hook(keep_first), evaluating(model):
        _forward(model, x)
    chosen = _default_layer(list(outputs)) if chosen is None else chosen
    name = names[chosen]
    if chosen not in outputs:
        raise InputShapeError(f"Layer '{name}' did not run in the forward pass: pick a layer the model uses.")
    output = outputs[chosen]
    if not isinstance(output, Tensor) or output.ndim != 4:
        shape = tuple(output.shape[1:]) if isinstance(output, Tensor) else type(output).__name__
        raise InputShapeError(
            f"Layer '{name}' outputs {shape}, not feature maps (C, H, W): pick a conv, activation or pooling."
        )
    return name, output[0].float().cpu()


@plt.rc_context(_STYLE)
def show_feature_maps(
    model: nn.Module,
    image: Tensor,
    layer: str | nn.Module | None = None,
    max_maps: int = 32,
    titles: Sequence[str] | None = None,
) -> Figure:
    """The feature maps of one layer (see feature_maps) for one normalised image (C, H, W), one panel
    per channel, each on its own colour scale (yellow = high), titled by channel number or by `titles`,
    one per map shown: e.g. `data.classes` for NiN's last block, whose maps are one per class."""
    name, maps = feature_maps(model, image, layer)
    shown = maps[:max_maps]
    channels, height, width = maps.shape
    if titles is not None and len(titles) != len(shown):
        raise ConfigError(
            f"Got {len(titles)} titles for the {len(shown)} feature maps shown of layer '{name}' (it has "
            f"{channels} channels, max_maps={max_maps}): give one title per map shown, or titles=None."
        )
    suptitle = (
        f"Feature maps of layer '{name}' ({type(model.get_submodule(name)).__name__}): "
        f"{len(shown)} of {channels} channels, {height}×{width}"
    )
    return _numbered_grid(shown, suptitle, titles, cmap="viridis", vmin=None, vmax=None)


def _label_boxes(
    ax: Axes, points: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]], avoid: list[Bbox]
) -> list[tuple[float, float, str]]:
    """Where to write a label of (width, height) pixels beside each point of `ax`: (x offset, y offset)
    in points, and the side. Greedy, from the points farthest above or below the middle of the axes
    inwards: the first of beside the point, one line further in, one line out, two in, ... that overlaps
    no label placed before, no box of `avoid` and not the axes' edge; else the one overlapping least.
    So a cluster's labels keep the order of its points. Run once the layout is final."""
    px_per_pt = ax.figure.dpi / 72
    frame = ax.get_window_extent()
    gap, middle = 6 * px_per_pt, frame.y0 + frame.height / 2
    shown = ax.transData.transform(points)
    order = sorted(range(len(points)), key=lambda i: (-abs(shown[i][1] - middle), shown[i][0]))
    placed: dict[int, tuple[float, float, str]] = {}
    for i in order:
        (x, y), (width, height) = shown[i], sizes[i]
        inward = 1 if y < middle else -1
        steps = [0] + [sign * inward * k for k in range(1, 8) for sign in (1, -1)]
        sides = ("left", "right") if x > frame.x0 + 0.65 * frame.width else ("right", "left")  # stay inside
        best = None
        for side in sides:
            for k in steps:
                dy = k * (height + 1)
                x0 = x + gap if side == "right" else x - gap - width
                box = Bbox.from_bounds(x0, y + dy - height / 2, width, height)
                cost = 10 * sum(_overlap(box, other) for other in avoid)  # worse than leaving the axes
                cost += width * height - _overlap(box, frame)  # the part outside the axes
                if best is None or cost < best[0]:
                    best = (cost, box, (x0 - x) / px_per_pt, dy / px_per_pt, side)
                if cost == 0:
                    break
            if best[0] == 0:
                break
        avoid.append(best[1])
        placed[i] = best[2:]
    return [placed[i] for i in range(len(points))]


def _overlap(a: Bbox, b: Bbox) -> float:
    """The area two boxes share (0 when apart or just touching)."""
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))


def _name_points(ax: Axes, points: Sequence[tuple[float, float]], names: Sequence[str]) -> None:
    """Write each name beside its point so that no two names overlap (see _label_boxes), with a thin
    line to the point when a name had to move up or down."""
    if not points:
        return
    px_per_pt = ax.figure.dpi / 72
    sizes = []
    for name in names:  # measured once, then placed
        probe = ax.annotate(name, (0.5, 0.5), xycoords="axes fraction", fontsize=9)
        box = probe.get_window_extent()
        sizes.append((box.width, box.height))
        probe.remove()
    avoid = [text.get_window_extent() for text in ax.texts]  # e.g. the chance line's label
    half = 4.5 * px_per_pt  # around each marker
    avoid += [
        Bbox.from_extents(x - half, y - half, x + half, y + half) for x, y in ax.transData.transform(points)
    ]
    offsets = _label_boxes(ax, points, sizes, avoid)
    for point, name, (dx, dy, side) in zip(points, names, offsets, strict=True):
        leader = None
        if dy:
            relpos = (0.0, 0.5) if side == "right" else (1.0, 0.5)
            leader = dict(arrowstyle="-", color="0.4", linewidth=0.7, shrinkA=0, shrinkB=3, relpos=relpos)
        label = ax.annotate(
            name, point, xytext=(dx, dy), textcoords="offset points", ha="left", va="center",
            fontsize=9, arrowprops=leader, annotation_clip=False, bbox=_BEHIND_TEXT,
        )  # fmt: skip
        label.set_in_layout(False)  # placed for this layout: it must not change it


@plt.rc_context(_STYLE)
def plot_comparison(comparison: Any, chance: float | None = 0.1) -> Figure:
    """Test accuracy of each model in a `d2lcnn.compare.Comparison` against FLOPs per image and
    against the seconds one epoch takes (both log scale; with equal budgets, the time per pass over
    the data is what differs), each point named by its model, the names moved apart where points
    are close. A dotted line marks `chance` accuracy (10 classes: 10%; None: no line); models
    that failed are left out, and named below the panels."""
    done = [r for r in comparison.rows if r.test_acc is not None and not r.error]
    left_out = [r.model for r in comparison.rows if r.test_acc is None or r.error]
    accuracies = [100 * r.test_acc for r in done] + ([100 * chance] if chance is not None else [])
    low = max(0.0, math.floor(min(accuracies, default=0.0) / 5) * 5 - 5)  # below the lowest shown
    high = min(100.0, max(accuracies, default=95.0) + 5)
    fig = new_figure(10, 4.4 if left_out else 4)
    panels = [
        ("flops", "FLOPs per image (forward pass)", "log"),
        ("epoch_seconds", "seconds per epoch (one pass over the training set)", "log"),
    ]
    axes = fig.subplots(1, 2)
    shown = []
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        rows = [r for r in done if getattr(r, key) is not None]
        points = [(getattr(r, key), 100 * r.test_acc) for r in rows]
        if points:
            ax.scatter(*zip(*points), color="tab:blue", zorder=3, clip_on=False)
        ax.set(xscale=scale, xlabel=label, ylabel="test accuracy (%)", ylim=(low, high))
        ax.margins(x=0.1)
        if chance is not None:
            ax.axhline(100 * chance, color="0.4", linestyle=":", linewidth=1.2, zorder=1)
            ax.annotate(f"chance ({chance:.0%})", (0.01, 100 * chance), xycoords=ax.get_yaxis_transform(),
                        xytext=(2, 2), textcoords="offset points", fontsize=8, color="0.4")  # fmt: skip
        if not points:
            ax.text(0.5, 0.5, "no model finished", ha="center", va="center", transform=ax.transAxes)
        shown.append((ax, points, [r.model for r in rows]))
    setup = f"{comparison.device}, {comparison.precision}"
    fig.suptitle(f"{comparison.dataset}: about {comparison.budget:g} s of training per model ({setup})")
    if left_out:
        fig.supxlabel(f"Not shown (failed or no result): {', '.join(left_out)}", fontsize=9, color="0.4")
    fig.draw_without_rendering()  # the final layout, so that the names are placed where they will be
    for ax, points, names in shown:
        _name_points(ax, points, names)
    return fig


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (notebook, lab, Colab, VS Code); False in scripts, terminals."""
    ipython = sys.modules.get("IPython")  # never imported: not in Jupyter
    return ipython is not None and hasattr(ipython.get_ipython(), "kernel")


class LivePlot:
    """Loss and accuracy curves redrawn in place in a notebook after each epoch, as one PNG that stays
    after close() as the static site's figure. Outside Jupyter, update() and close() do nothing."""

    def __init__(self, num_epochs: int | None = None) -> None:
        self.num_epochs = num_epochs
        self._active = _in_notebook()
        self._handle: Any = None

    def update(self, history: Any) -> None:
        """Redraw the curves of `history` (a History, its as_dict() or JSON form)."""
        if not self._active or not _field(history, "epochs"):
            return
        from IPython.display import Image, display

        fig = plot_history(history)
        for ax in fig.axes if self.num_epochs else ():
            ax.set_xlim(0.5, self.num_epochs + 0.5)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        image = Image(data=buffer.getvalue(), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)

    def close(self) -> None:
        """Stop updating; the last image stays in the output."""
        self._active = False
