"""Figures for the course: training curves, image grids, predictions, confusion matrices,
filters, feature maps and the comparison of architectures.

Every function returns a matplotlib Figure that is already closed in pyplot: in a notebook it shows
exactly once, as the cell's result (or with ``display(fig)``), as a PNG so the static site shows it.
Save it with ``fig.savefig("name.png")``. Functions that take ``ax`` draw into your axes instead and
return your figure.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Mapping, Sequence
from functools import wraps
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import is_color_like
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor, nn

from d2lcnn.errors import CorruptDataError, InputShapeError, UnknownNameError, unknown_name
from d2lcnn.runtime import evaluating, model_device

__all__ = [
    "LivePlot",
    "confusion_matrix",
    "feature_maps",
    "plot_comparison",
    "plot_confusion_matrix",
    "plot_history",
    "show_feature_maps",
    "show_filters",
    "show_images",
    "show_most_confused",
    "show_predictions",
]

# A light style shared by every figure, readable at notebook width.
_STYLE = {
    "figure.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
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
_MISTAKE_COLOR = "tab:red"
_CORRECT_COLOR = "black"

# (fields to draw, panel title, y label)
_METRICS = {
    "loss": (("train_loss", "test_loss"), "Loss", "loss"),
    "acc": (("train_acc", "test_acc"), "Accuracy", "accuracy"),
    "lr": (("lr",), "Learning rate", "learning rate"),
}
_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
)
_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm, nn.InstanceNorm2d)


def _styled(function):
    """Run a plotting function inside the shared style."""

    @wraps(function)
    def wrapper(*args, **kwargs):
        with plt.rc_context(_STYLE):
            return function(*args, **kwargs)

    return wrapper


def _new_figure(width: float, height: float) -> Figure:
    # Made through pyplot so a notebook's inline backend (and its PNG formatter) is loaded, then
    # closed so pyplot does not show it a second time at the end of the cell.
    fig = plt.figure(figsize=(width, height), layout="constrained")
    plt.close(fig)
    return fig


def _root_figure(ax: Axes) -> Figure:
    fig = ax.figure
    while not isinstance(fig, Figure):  # a SubFigure: walk up to the real figure
        fig = fig.figure
    return fig


# ----------------------------------------------------------------------------- training curves


def _is_history(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and "epochs" in obj) or (
        not isinstance(obj, Mapping) and hasattr(obj, "epochs")
    )


def _epoch_rows(history: Any) -> list[dict[str, float]]:
    """The epochs of a History, its as_dict()/JSON form, or a bare list of epoch records."""
    if isinstance(history, Mapping):
        if "epochs" not in history:
            raise CorruptDataError(
                f"This dict is not a training history: it has no 'epochs' key (keys: "
                f"{', '.join(map(str, history))}). Pass the History from fit(), its as_dict(), "
                "or its saved JSON."
            )
        records = history["epochs"]
    elif hasattr(history, "epochs"):
        records = history.epochs
    elif isinstance(history, (list, tuple)):
        records = history
    else:
        raise CorruptDataError(
            f"Expected a training history, got {type(history).__name__}. Pass the History from "
            "fit(), its as_dict(), its saved JSON, or a list of those to compare runs."
        )
    if not isinstance(records, Sequence) or isinstance(records, (str, bytes)):
        raise CorruptDataError(
            f"A history's 'epochs' must be a list of epoch records, got {type(records).__name__}."
        )
    rows = []
    for position, record in enumerate(records):
        has_loss = "train_loss" in record if isinstance(record, Mapping) else hasattr(record, "train_loss")
        if not has_loss:
            raise CorruptDataError(
                f"Epoch record {position} ({type(record).__name__}) has no train_loss: expected "
                "records with epoch, train_loss, train_acc, test_loss, test_acc and lr, as fit() "
                "writes them."
            )
        row = {}
        for field in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr"):
            value = record.get(field) if isinstance(record, Mapping) else getattr(record, field, None)
            try:
                row[field] = math.nan if value is None else float(value)
            except (TypeError, ValueError):
                raise CorruptDataError(
                    f"Epoch record {position} has {field}={value!r}, which is not a number."
                ) from None
        if math.isnan(row["epoch"]):
            row["epoch"] = float(position + 1)
        rows.append(row)
    return rows


def _runs(history: Any, labels: Sequence[str] | None) -> list[tuple[str | None, list[dict]]]:
    """Split plot_history's input into (label, epoch rows) pairs."""
    several = isinstance(history, (list, tuple)) and len(history) > 0 and all(map(_is_history, history))
    histories = list(history) if several else [history]
    if labels is None:
        labels = [f"run {i + 1}" for i in range(len(histories))] if several else [None]
    elif isinstance(labels, str):
        labels = [labels]
    labels = list(labels)
    if len(labels) != len(histories):
        raise InputShapeError(
            f"Got {len(labels)} labels for {len(histories)} histories: give one label per history."
        )
    runs = []
    for label, one in zip(labels, histories, strict=True):
        rows = _epoch_rows(one)
        if not rows:
            name = f" {label!r}" if label else ""
            raise CorruptDataError(
                f"The history{name} has no epochs yet: train for at least one epoch first."
            )
        runs.append((label, rows))
    return runs


def _check_metrics(metrics: str | Sequence[str]) -> tuple[str, ...]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metrics:
        raise InputShapeError(
            f"metrics is empty: name at least one of {', '.join(_METRICS)}, e.g. ('loss', 'acc')."
        )
    for metric in metrics:
        if metric not in _METRICS:
            raise unknown_name("metric", str(metric), _METRICS)
    return metrics


def _draw_history(
    axes: Sequence[Axes],
    runs: list[tuple[str | None, list[dict]]],
    metrics: tuple[str, ...],
    num_epochs: int | None = None,
) -> None:
    single = len(runs) == 1
    for ax, metric in zip(axes, metrics, strict=True):
        fields, title, ylabel = _METRICS[metric]
        positive = []
        for run_index, (label, rows) in enumerate(runs):
            epochs = [row["epoch"] for row in rows]
            for field_index, field in enumerate(fields):
                values = [row[field] for row in rows]
                if all(math.isnan(v) for v in values):
                    continue  # e.g. no test set was evaluated
                split = field.split("_")[0] if len(fields) > 1 else ""
                name = " ".join(part for part in (label, split) if part) or None
                color = f"C{field_index}" if single else f"C{run_index % 10}"
                ax.plot(
                    epochs,
                    values,
                    color=color,
                    linestyle="--" if split == "test" else "-",
                    marker="o" if len(rows) <= 30 else None,
                    markersize=3,
                    label=name,
                )
                positive += [v for v in values if v > 0]
        if metric == "lr" and positive and max(positive) / min(positive) > 10:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if num_epochs:
            ax.set_xlim(0.5, num_epochs + 0.5)
        if any(line.get_label() and not line.get_label().startswith("_") for line in ax.lines):
            ax.legend()


@_styled
def plot_history(
    history: Any,
    labels: Sequence[str] | None = None,
    metrics: str | Sequence[str] = ("loss", "acc"),
    ax: Axes | Sequence[Axes] | None = None,
) -> Figure:
    """Loss and accuracy (train solid, test dashed) against epoch, one panel per metric.

    `history` is a History from fit(), its as_dict() or saved JSON, or a list of those to overlay
    several runs, named by `labels` (e.g. ["fine-tuned", "frozen", "scratch"]). `metrics` picks the
    panels from "loss", "acc" and "lr". Pass `ax` (one Axes per metric) to draw into your figure.
    """
    metrics = _check_metrics(metrics)
    runs = _runs(history, labels)
    if ax is None:
        fig = _new_figure(4.6 * len(metrics), 3.4)
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    else:
        axes = [ax] if isinstance(ax, Axes) else list(np.ravel(ax))
        if len(axes) != len(metrics) or not all(isinstance(a, Axes) for a in axes):
            raise InputShapeError(
                f"Got {len(axes)} axes for {len(metrics)} metrics {metrics}: pass one Axes per "
                "metric, or ax=None for a new figure."
            )
        fig = _root_figure(axes[0])
    _draw_history(axes, runs, metrics)
    return fig


# ----------------------------------------------------------------------------- image grids


def _image_grid(
    images: Sequence[np.ndarray],
    ncols: int,
    titles: Sequence[str] | None = None,
    title_colors: Sequence[Any] | None = None,
    frame_colors: Sequence[Any | None] | None = None,
    suptitle: str | None = None,
    cmap: str = "gray",
    value_range: tuple[float, float] | None = (0.0, 1.0),
) -> Figure:
    """One small panel per image (H, W) or (H, W, 3); exactly len(images) axes."""
    ncols = max(1, min(ncols, len(images)))
    nrows = math.ceil(len(images) / ncols)
    title_room = 0.18 * (1 + max(t.count("\n") for t in titles)) if titles else 0.0
    height = nrows * (_CELL_INCHES + title_room) + (0.35 if suptitle else 0.0)
    fig = _new_figure(ncols * _CELL_INCHES, height)
    vmin, vmax = value_range if value_range else (None, None)
    for i, image in enumerate(images):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(image, cmap=None if image.ndim == 3 else cmap, vmin=vmin, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        frame = frame_colors[i] if frame_colors else None
        for spine in ax.spines.values():
            spine.set_visible(frame is not None)
            if frame is not None:
                spine.set_color(frame)
                spine.set_linewidth(2.5)
        if titles:
            color = title_colors[i] if title_colors else _CORRECT_COLOR
            ax.set_title(titles[i], fontsize=8, color=color)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def _check_same_length(name: str, values: Sequence | None, count: int) -> None:
    if values is not None and len(values) != count:
        raise InputShapeError(f"Got {len(values)} {name} for {count} images: give one per image.")


def _as_cpu_tensor(values: Any, what: str) -> Tensor:
    """`values` (a tensor, array or list) as a tensor on the CPU; `what` says what was expected."""
    try:
        return torch.as_tensor(values.detach().cpu() if isinstance(values, Tensor) else values)
    except (TypeError, ValueError, RuntimeError):
        raise InputShapeError(f"{what}, got {type(values).__name__}.") from None


def _to_hwc(images: Any) -> list[np.ndarray]:
    """(N, C, H, W) images in [0, 1] (or uint8) as a list of (H, W) or (H, W, 3) numpy arrays."""
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], Tensor):
        images = torch.stack([image.detach().cpu() for image in images])
    x = _as_cpu_tensor(images, "show_images needs a tensor or array of images")
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        hint = ""
        if x.ndim == 4 and x.shape[-1] in (1, 3):
            hint = " They look channels-last: use images.permute(0, 3, 1, 2)."
        elif x.ndim == 3:
            hint = " For one image use image.unsqueeze(0); for gray (N, H, W) use x.unsqueeze(1)."
        raise InputShapeError(
            f"Expected images of shape (N, C, H, W) with C 1 or 3, got {tuple(x.shape)}.{hint}"
        )
    if len(x) == 0:
        raise InputShapeError("There are no images to show (the batch is empty).")
    if x.dtype == torch.uint8:
        x = x.float() / 255
    x = x.float()
    if not torch.isfinite(x).all():
        raise InputShapeError("The images contain NaN or infinite values.")
    low, high = x.min().item(), x.max().item()
    if low < -1e-3 or high > 1 + 1e-3:
        raise InputShapeError(
            f"Images must have values in [0, 1], these range over [{low:.3g}, {high:.3g}]. "
            "Normalised images must be turned back first: show_images(data.denormalize(x))."
        )
    x = x.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return [image[..., 0] if image.shape[-1] == 1 else image for image in x]


@_styled
def show_images(
    images: Tensor | np.ndarray,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    colors: Sequence[Any] | None = None,
) -> Figure:
    """A grid of images (N, C, H, W) with values in [0, 1]; gray when C == 1.

    `titles` and `colors` (title colours) give one entry per image.
    """
    arrays = _to_hwc(images)
    _check_same_length("titles", titles, len(arrays))
    _check_same_length("colors", colors, len(arrays))
    for color in colors or ():
        if not is_color_like(color):
            raise UnknownNameError(
                f"{color!r} is not a matplotlib colour: use a name like 'red', a hex string like "
                "'#1f77b4' or an (r, g, b) tuple of floats in [0, 1]."
            )
    titles = [str(t) for t in titles] if titles is not None else None
    return _image_grid(arrays, ncols, titles=titles, title_colors=colors)


# ----------------------------------------------------------------------------- predictions


def _forward(model: nn.Module, x: Tensor) -> Tensor:
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    try:
        return model(x.to(device=model_device(model) or "cpu", dtype=dtype))
    except RuntimeError as err:
        raise InputShapeError(
            f"The model could not run on input of shape {tuple(x.shape)}: {err}. Check that the "
            "model was built for these images (channels, size) and that the input is normalised "
            "float images."
        ) from err


def _probabilities(model: nn.Module, x: Tensor, num_classes: int) -> Tensor:
    """Softmax class probabilities (on CPU) for a batch; call inside `evaluating`."""
    logits = _forward(model, x)
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[1] != num_classes:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise InputShapeError(
            f"The model's output has shape {shape}, expected (batch, {num_classes}) logits for "
            f"the data's {num_classes} classes. Use a model built for this dataset."
        )
    return logits.float().softmax(dim=1).cpu()


def _first_test_images(data: Any, count: int) -> tuple[Tensor, Tensor]:
    """At least `count` test images (fewer if the test set is smaller) and their labels."""
    images, labels, seen = [], [], 0
    for x, y in data.test:
        images.append(x)
        labels.append(torch.as_tensor(y).cpu())
        seen += len(labels[-1])
        if seen >= count:
            break
    if not images:
        raise InputShapeError("The data's test set is empty: there are no images to predict.")
    return torch.cat(images), torch.cat(labels)


def _pair_titles(classes: Sequence[str], true: Tensor, other: Tensor) -> list[str]:
    return [f"{classes[t]} / {classes[o]}" for t, o in zip(true.tolist(), other.tolist(), strict=True)]


@_styled
def show_predictions(model: nn.Module, data: Any, n: int = 24, ncols: int = 8, seed: int = 0) -> Figure:
    """A grid of `n` test images titled "true / predicted", mistakes in red.

    The images are drawn at random (fixed by `seed`) from the first few test batches.
    """
    if n < 1:
        raise InputShapeError(f"n must be at least 1, got {n}.")
    images, labels = _first_test_images(data, max(4 * n, 256))
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(labels), generator=generator)[:n].sort().values
    images, labels = images[chosen.to(images.device)], labels[chosen]
    with evaluating(model):
        predicted = _probabilities(model, images, len(data.classes)).argmax(dim=1)
    wrong = (predicted != labels).tolist()
    return _image_grid(
        _to_hwc(data.denormalize(images)),
        ncols,
        titles=_pair_titles(data.classes, labels, predicted),
        title_colors=[_MISTAKE_COLOR if w else _CORRECT_COLOR for w in wrong],
        frame_colors=[_MISTAKE_COLOR if w else None for w in wrong],
        suptitle=f"Test predictions (true / predicted): {sum(wrong)} of {len(wrong)} wrong",
    )


@_styled
def show_most_confused(model: nn.Module, data: Any, n: int = 16) -> Figure:
    """The `n` test images with the highest probability on a wrong class, most confused first.

    Titles read "true / most likely wrong class" and that probability; mistakes are in red.
    Runs the model over the whole test set.
    """
    if n < 1:
        raise InputShapeError(f"n must be at least 1, got {n}.")
    num_classes = len(data.classes)
    kept: dict[str, Tensor] | None = None
    with evaluating(model):
        for x, y in data.test:
            y = torch.as_tensor(y).cpu()
            probabilities = _probabilities(model, x, num_classes)
            wrong = probabilities.clone()
            wrong[torch.arange(len(y)), y] = -1.0
            score, confused = wrong.max(dim=1)
            batch = {
                "images": x.detach(),
                "labels": y,
                "score": score,
                "confused": confused,
                "predicted": probabilities.argmax(dim=1),
            }
            if kept is not None:
                batch = {key: torch.cat([kept[key], batch[key].to(kept[key].device)]) for key in kept}
            top = batch["score"].topk(min(n, len(batch["score"]))).indices
            kept = {key: value[top.to(value.device)] for key, value in batch.items()}
    if kept is None:
        raise InputShapeError("The data's test set is empty: there are no images to rank.")
    wrong = (kept["predicted"] != kept["labels"]).tolist()
    titles = [
        f"{pair}\n{p:.0%}"
        for pair, p in zip(
            _pair_titles(data.classes, kept["labels"], kept["confused"]),
            kept["score"].tolist(),
            strict=True,
        )
    ]
    return _image_grid(
        _to_hwc(data.denormalize(kept["images"])),
        min(8, len(titles)),
        titles=titles,
        title_colors=[_MISTAKE_COLOR if w else _CORRECT_COLOR for w in wrong],
        frame_colors=[_MISTAKE_COLOR if w else None for w in wrong],
        suptitle="Most confused test images: true / most likely wrong class (its probability)",
    )


# ----------------------------------------------------------------------------- confusion matrix


def confusion_matrix(preds: Any, labels: Any, num_classes: int) -> Tensor:
    """Counts (num_classes, num_classes): row = true class, column = predicted class.

    `preds` are class indices, or (N, num_classes) scores whose argmax is taken.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InputShapeError(f"num_classes must be a positive int, got {num_classes!r}.")
    preds = _as_cpu_tensor(preds, "preds must be a tensor, array or list of class indices")
    labels = _as_cpu_tensor(labels, "labels must be a tensor, array or list of class indices")
    if preds.ndim == 2 and preds.shape[1] == num_classes:
        preds = preds.argmax(dim=1)
    if preds.ndim != 1 or labels.ndim != 1 or len(preds) != len(labels):
        raise InputShapeError(
            f"preds {tuple(preds.shape)} and labels {tuple(labels.shape)} must be two 1-D lists "
            "of class indices of the same length (or preds may be (N, num_classes) scores)."
        )
    for name, values in (("preds", preds), ("labels", labels)):
        if values.is_floating_point() and not torch.equal(values, values.round()):
            raise InputShapeError(f"{name} must be whole class indices, got fractional values.")
        values = values.long()
        if len(values) and (values.min() < 0 or values.max() >= num_classes):
            raise InputShapeError(
                f"{name} contain class {int(values.min() if values.min() < 0 else values.max())},"
                f" outside 0..{num_classes - 1} for num_classes={num_classes}."
            )
    index = labels.long() * num_classes + preds.long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


@_styled
def plot_confusion_matrix(
    preds: Any,
    labels: Any,
    classes: Sequence[str],
    normalize: bool = True,
    ax: Axes | None = None,
) -> Figure:
    """An annotated heatmap of the confusion matrix, rows = true class, columns = predicted.

    With `normalize`, each row shows the share of that true class given each prediction.
    """
    classes = [str(c) for c in classes]
    k = len(classes)
    counts = confusion_matrix(preds, labels, k)
    values = counts.double()
    if normalize:
        values = values / values.sum(dim=1, keepdim=True).clamp(min=1)
    values = values.numpy()
    if ax is None:
        size = max(4.5, 0.5 * k + 2.5)
        fig = _new_figure(size + 1.0, size)
        ax = fig.add_subplot()
    else:
        fig = _root_figure(ax)
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of true class" if normalize else "count")
    ax.grid(False)
    ax.set_xticks(range(k), classes, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total, correct = int(counts.sum()), int(counts.trace())
    accuracy = f", accuracy {correct / total:.1%}" if total else ""
    kind = "row-normalised" if normalize else "counts"
    ax.set_title(f"Confusion matrix ({kind}, {total} images{accuracy})")
    if k <= 20:  # beyond that the numbers no longer fit in the cells
        dark = 0.5 if normalize else 0.5 * (values.max() or 1)  # half the colour scale
        for row in range(k):
            for col in range(k):
                value = values[row, col]
                text = f"{value:.0%}" if normalize else f"{int(value)}"
                ax.text(
                    col,
                    row,
                    text,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if value > dark else "black",
                )
    return fig


# ----------------------------------------------------------------------------- inside the network


def _first_conv(model_or_conv: nn.Module) -> tuple[str, nn.Conv2d]:
    if not isinstance(model_or_conv, nn.Module):
        raise InputShapeError(f"Expected a model or an nn.Conv2d, got {type(model_or_conv).__name__}.")
    for name, module in model_or_conv.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise InputShapeError(
        f"{type(model_or_conv).__name__} has no nn.Conv2d layer, so there are no filters to show."
    )


@_styled
def show_filters(model_or_conv: nn.Module, max_filters: int = 64) -> Figure:
    """The first conv layer's weights, one image per output filter.

    3 input channels are shown as colour (each filter stretched to [0, 1]); otherwise the mean over
    input channels in gray, on one scale shared by all filters (mid-gray = 0).
    """
    name, conv = _first_conv(model_or_conv)
    weight = conv.weight
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise InputShapeError(
            "The first conv layer is lazy and not initialised yet: run one batch through the model first."
        )
    weight = weight.detach().float().cpu()
    shown = weight[:max_filters]
    if weight.shape[1] == 3:
        low = shown.amin(dim=(1, 2, 3), keepdim=True)
        high = shown.amax(dim=(1, 2, 3), keepdim=True)
        shown = ((shown - low) / (high - low).clamp(min=1e-12)).permute(0, 2, 3, 1)
        value_range = (0.0, 1.0)
    else:
        shown = shown.mean(dim=1)
        limit = shown.abs().max().item() or 1.0
        value_range = (-limit, limit)
    out_channels, in_channels, height, width = weight.shape
    layer = f"'{name}'" if name else type(conv).__name__
    suptitle = (
        f"Filters of conv layer {layer}: {len(shown)} of {out_channels}, "
        f"{height}×{width}, {in_channels} input channel{'s' if in_channels > 1 else ''}"
    )
    return _numbered_grid(shown, suptitle, value_range=value_range)


def _numbered_grid(panels: Tensor, suptitle: str, **style: Any) -> Figure:
    """One numbered panel per filter or channel, eight to a row."""
    titles = [str(i) for i in range(len(panels))]
    return _image_grid(list(panels.numpy()), ncols=8, titles=titles, suptitle=suptitle, **style)


def _leaf_call_order(model: nn.Module, x: Tensor) -> list[tuple[str, nn.Module]]:
    """The leaf modules in the order the forward pass calls them."""
    calls: list[tuple[str, nn.Module]] = []
    handles = [
        module.register_forward_hook(lambda module, inputs, output, name=name: calls.append((name, module)))
        for name, module in model.named_modules()
        if not list(module.children())
    ]
    try:
        _forward(model, x)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _default_layer(model: nn.Module, x: Tensor) -> tuple[str, nn.Module]:
    """The first conv layer, or the activation right after it (past a norm layer) if any."""
    calls = _leaf_call_order(model, x)
    for i, (name, module) in enumerate(calls):
        if isinstance(module, nn.Conv2d):
            for after_name, after in calls[i + 1 :]:
                if isinstance(after, _ACTIVATIONS):
                    return after_name, after
                if not isinstance(after, _NORMS):
                    break
            return name, module
    raise InputShapeError(
        f"{type(model).__name__} runs no nn.Conv2d layer: name the layer to show with layer=..."
    )


def _find_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    named = dict(model.named_modules())
    named.pop("", None)
    if isinstance(layer, str):
        if layer not in named:
            raise unknown_name("layer", layer, named)
        return layer, named[layer]
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer:
                return name, module
        raise InputShapeError(
            f"The given {type(layer).__name__} is not a layer of this model: pass one of its "
            "modules or its name (see model.named_modules())."
        )
    raise InputShapeError(
        f"layer must be a layer name, an nn.Module of the model or None, got {type(layer).__name__}."
    )


def _one_image_batch(image: Any) -> Tensor:
    x = image if isinstance(image, Tensor) else torch.as_tensor(np.asarray(image))
    if x.ndim == 4 and len(x) == 1:
        x = x[0]
    if x.ndim != 3:
        raise InputShapeError(
            f"Expected one normalised image (C, H, W), got shape {tuple(x.shape)}. "
            "For a batch, pick one image: x[0]."
        )
    if not x.is_floating_point():
        raise InputShapeError(
            f"Expected a normalised float image, got {x.dtype}: use an image from the data loader."
        )
    return x.detach().unsqueeze(0)


def feature_maps(model: nn.Module, image: Tensor, layer: str | nn.Module | None = None) -> tuple[str, Tensor]:
    """The activations (C, H, W) of one layer for one normalised image, captured by a forward hook.

    `layer` is a name from model.named_modules() or one of its modules; None means the first conv
    layer's output after its activation. Returns the layer's name and the activations on CPU. A
    layer called several times in one forward pass gives its first output.
    """
    x = _one_image_batch(image)
    captured: list[Any] = []

    def keep_first(module: nn.Module, inputs: Any, output: Any) -> None:
        if not captured:
            # clone: an in-place activation later in the network would overwrite this tensor
            captured.append(output.detach().clone() if isinstance(output, Tensor) else output)

    with evaluating(model):
        if layer is None:
            name, module = _default_layer(model, x)
        else:
            name, module = _find_layer(model, layer)
        handle = module.register_forward_hook(keep_first)
        try:
            _forward(model, x)
        finally:
            handle.remove()
    if not captured:
        raise InputShapeError(
            f"Layer '{name}' did not run in the model's forward pass, so it has no activations."
        )
    output = captured[0]
    if not isinstance(output, Tensor) or output.ndim != 4:
        shape = tuple(output.shape[1:]) if isinstance(output, Tensor) else type(output).__name__
        raise InputShapeError(
            f"Layer '{name}' outputs {shape}, not feature maps (C, H, W): pick a convolution, "
            "activation or pooling layer."
        )
    return name, output[0].float().cpu()


@_styled
def show_feature_maps(
    model: nn.Module,
    image: Tensor,
    layer: str | nn.Module | None = None,
    max_maps: int = 32,
) -> Figure:
    """The feature maps of one layer for one normalised image (C, H, W), one panel per channel.

    `layer` is a name from model.named_modules() or one of its modules; by default the first conv
    layer's output after its activation. Each map has its own colour scale (yellow = high).
    """
    name, maps = feature_maps(model, image, layer)
    module = dict(model.named_modules())[name]
    shown = maps[:max_maps]
    channels, height, width = maps.shape
    suptitle = (
        f"Feature maps of layer '{name}' ({type(module).__name__}): "
        f"{len(shown)} of {channels} channels, {height}×{width}"
    )
    return _numbered_grid(shown, suptitle, cmap="viridis", value_range=None)


# ----------------------------------------------------------------------------- comparison


@_styled
def plot_comparison(comparison: Any) -> Figure:
    """Two panels of a `d2lcnn.compare.Comparison`: test accuracy against FLOPs per image (log
    scale) and against training seconds; each point is labelled with its model's name."""
    fig = _new_figure(10, 4)
    done = [r for r in comparison.rows if r.test_acc is not None]
    panels = [
        ("flops", "FLOPs per image (forward pass)", "log"),
        ("train_seconds", "training seconds", "linear"),
    ]
    for ax, (key, label, scale) in zip(fig.subplots(1, 2), panels, strict=True):
        xs = [getattr(r, key) for r in done]
        ys = [100 * r.test_acc for r in done]
        ax.scatter(xs, ys, color="tab:blue", zorder=3)
        for r, x, y in zip(done, xs, ys, strict=True):
            ax.annotate(r.model, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=9)
        ax.set_xscale(scale)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        if not done:
            ax.text(0.5, 0.5, "no model finished", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(
        f"{comparison.dataset}: about {comparison.budget:g} s of training per model "
        f"({comparison.device}, {comparison.precision})"
    )
    return fig


# ----------------------------------------------------------------------------- live training plot


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (notebook, lab, Colab, VS Code); False in scripts, terminals."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class LivePlot:
    """Training curves that redraw in place in a notebook after each epoch.

    In Jupyter, update() replaces one PNG image in the cell's output; after close() that last image
    stays as the one static figure the website shows. Outside Jupyter both do nothing.
    """

    def __init__(self, metrics: str | Sequence[str] = ("loss", "acc"), num_epochs: int | None = None) -> None:
        self.metrics = _check_metrics(metrics)
        self.num_epochs = num_epochs
        self._active = _in_notebook()
        self._figure: Figure | None = None
        self._handle: Any = None

    def update(self, history: Any) -> None:
        """Redraw the curves of `history` (a History, its as_dict() or JSON form)."""
        if not self._active or not _epoch_rows(history):
            return
        from IPython.display import Image, display

        with plt.rc_context(_STYLE):
            if self._figure is None:
                # Not made through pyplot, so the notebook never shows it besides our image.
                self._figure = Figure(figsize=(4.6 * len(self.metrics), 3.4), layout="constrained")
                self._figure.subplots(1, len(self.metrics), squeeze=False)
            for ax in self._figure.axes:
                ax.clear()
            _draw_history(self._figure.axes, _runs(history, None), self.metrics, self.num_epochs)
            buffer = io.BytesIO()
            self._figure.savefig(buffer, format="png")
        image = Image(data=buffer.getvalue(), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)

    def close(self) -> None:
        """Stop updating; the last image stays in the output and the figure is released."""
        self._active = False
        self._figure = None
        self._handle = None

    def __enter__(self) -> LivePlot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
