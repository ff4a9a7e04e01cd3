"""Architecture diagrams drawn from the model itself, so that a figure cannot disagree with the code:
`draw(model, input_shape)` traces one forward pass (`d2lcnn.trace`, on the ``meta`` device) and draws
it as boxes that flow left to right and wrap onto rows like text, each box saying what it is and the
shape it outputs.

A box starts at each convolution, linear layer, pooling layer and block; activations, normalisation,
dropout, flatten and any other layer that keeps the shape join the box before them as a "+ ..." line.
Sequentials are drawn layer by layer. A block is a module with its own forward that is neither an
nn.Sequential nor a leaf; its class attribute `diagram` says how it connects:

- ``"residual"``: a skip arrow around the box into a "+"; a shortcut child named ``downsample`` or
  ``shortcut`` holding a convolution is labelled, e.g. "1x1 conv shortcut" (`ResidualBlock`);
- ``"branches"``: parallel branches concatenated on channels, with each one's channels (`Inception`);
- ``"dense"``: convolutions each concatenating its output to its input (`DenseBlock`);
- ``"sequence"``: drawn layer by layer, like an nn.Sequential (fast_vgg's `ConvGroup`);
- no attribute: one plain box naming the block and its convolutions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle
from matplotlib.path import Path
from matplotlib.textpath import TextPath
from torch import nn

from d2lcnn.errors import ConfigError, is_int, unknown_name
from d2lcnn.models.batchnorm import BatchNorm
from d2lcnn.plot import new_figure
from d2lcnn.runtime import model_name
from d2lcnn.trace import Row, parse_shape, trace

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_POOLS = {
    "AvgPool": (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d),
    "MaxPool": (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d),
}
_POOLS = (*_MAX_POOLS, *_AVG_POOLS, *_ADAPTIVE_POOLS["AvgPool"], *_ADAPTIVE_POOLS["MaxPool"])

# Layers that join the box before them, with the short name they get in its "+ ..." line.
_ATTACHED_NAMES: list[tuple[tuple[type[nn.Module], ...], Callable[[nn.Module], str]]] = [
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, BatchNorm), lambda m: "BN"),
    ((nn.LocalResponseNorm,), lambda m: "LRN"),
    ((nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d), lambda m: f"Dropout {m.p:g}"),
    ((nn.Flatten,), lambda m: "Flatten"),
]

# kind: (fill, edge, legend label); "io" is the input and the output.
_PALETTE = {
    "conv": ("#dce9f6", "#2b6ca3", "convolution"),
    "pool": ("#fde7d0", "#d46f12", "pooling"),
    "linear": ("#dff0d8", "#3a8f2d", "linear"),
    "block": ("#ebe3f5", "#7d54b0", "block"),
    "other": ("#eeeeee", "#777777", "other layer"),
    "io": ("#ffffff", "#555555", None),
}
_FONTS = {  # (size in points, weight, colour) of each kind of line in a box
    "title": (14.0, "bold", "#111111"),
    "detail": (12.0, "normal", "#444444"),
    "shape": (12.0, "normal", "#111111"),
}
_LINE_SPACING = 1.4  # line height over font size
_LEGEND_SIZE = 10.5

# Layout, in inches: 10.5 in wide, so that 12-14 pt text stays legible when a page shrinks it to 400 px.
_WIDTH = 10.5
_MARGIN = 0.45  # left and right: room for the connectors that wrap to the next row
_GAP = 0.5  # between two boxes of a row: the arrow, and a skip arrow's "+" and its start
_ROW_GAP = 0.3  # between rows: the connector to the next row runs in its middle
_SKIP_RISE = 0.22  # how high a skip arrow passes over its box
_SKIP_ROOM = 0.36  # room above a row for skip arrows and their labels
_PAD_X, _PAD_Y = 0.12, 0.08  # inside a box
_HEADER = 0.5  # title and legend
_MIN_BOX = 1.2  # the narrowest box
_MAX_EXTRA = 1.5  # boxes widen to fill their row, by at most this much


@dataclass
class _Box:
    """One box of the diagram: a layer with the layers that join it, or a block."""

    kind: str
    title: str
    shape: tuple[int, ...]  # the output of the box's own layer, without the batch dimension
    details: list[str] = field(default_factory=list)
    attached: list[str] = field(default_factory=list)
    final_shape: tuple[int, ...] | None = None  # after attached layers that change it (flatten)
    shortcut: str | None = None  # None: no skip arrow; "": identity shortcut; else its label

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shape if self.final_shape is None else self.final_shape

    def lines(self) -> list[tuple[str, str]]:
        """(text, font) of each line: title, details, attached layers, output shape."""
        lines = [(self.title, "title"), *((d, "detail") for d in self.details)]
        if self.attached:
            lines.append(("+ " + ", ".join(self.attached), "detail"))
        shape = _shape_text(self.shape)
        if self.final_shape is not None and self.final_shape != self.shape:
            shape += " → " + _shape_text(self.final_shape)
        return [*lines, (shape, "shape")]


def draw(
    model: nn.Module,
    input_shape: str | Sequence[int],
    *,
    title: str | None = None,
    max_columns: int | None = None,
) -> Figure:
    """A diagram of `model` on an input of `input_shape` ((C, H, W), (N, C, H, W) or '1x28x28'): its
    layers and blocks as boxes, left to right and wrapping onto rows, each with the shape it outputs;
    skip arrows around residual blocks, branches of Inception blocks, dense blocks' growth. `title`
    defaults to the model's name ("" for none); `max_columns` caps the boxes per row. An input the model
    cannot take is an InputShapeError, as in `d2lcnn.trace.trace`."""
    if max_columns is not None and not (is_int(max_columns) and max_columns >= 1):
        raise ConfigError(f"max_columns={max_columns!r} is not valid: give a whole number >= 1, or None.")
    shape = parse_shape(input_shape)
    traced = trace(model, shape)
    boxes = _boxes(model, traced.rows, shape[1:])
    if next(model.children(), None) is None:  # a single layer: trace has no rows, the layer is the model
        _add_layer(boxes, model, traced.output_shape[1:])
    boxes.append(_Box("io", "Output", traced.output_shape[1:]))
    return _render(boxes, model_name(model) if title is None else title, max_columns)


def _boxes(model: nn.Module, rows: list[Row], input_shape: tuple[int, ...]) -> list[_Box]:
    """The boxes, input first, from the traced calls: a box per layer or block, attached layers joined."""
    boxes = [_Box("io", "Input", input_shape)]
    rows_by_name: dict[str, Row] = {}
    for row in rows:
        rows_by_name.setdefault(row.name, row)
    inside = None  # the block being drawn as one box: its layers are not drawn
    for row in rows:
        if inside is not None and row.name.startswith(inside + "."):
            continue
        module = model.get_submodule(row.name)
        shape = row.output_shape[1:] or boxes[-1].output_shape  # () when the output is not a tensor
        style = getattr(module, "diagram", None)
        if _is_block(module) and style != "sequence":
            if style not in _BLOCK_STYLES:
                valid = ["sequence", *(s for s in _BLOCK_STYLES if s)]
                listing = f"Valid values: {', '.join(valid)}, or no attribute for a plain box"
                raise unknown_name(f"{type(module).__name__}.diagram value", str(style), valid, listing)
            describe = _BLOCK_STYLES[style]
            boxes.append(describe(row.name, module, rows_by_name, boxes[-1].output_shape, shape))
            inside = row.name
        elif next(module.children(), None) is None:  # a leaf; containers are drawn through their layers
            _add_layer(boxes, module, shape)
    return boxes


def _is_block(module: nn.Module) -> bool:
    has_children = next(module.children(), None) is not None
    own_forward = type(module).forward is not nn.Module.forward
    return has_children and own_forward and not isinstance(module, nn.Sequential)


def _add_layer(boxes: list[_Box], layer: nn.Module, shape: tuple[int, ...]) -> None:
    """A new box for a convolution, pooling or linear layer (or another that changes the shape), else
    the layer's short name on the last box's "+ ..." line."""
    if isinstance(layer, nn.Identity):
        return
    if isinstance(layer, _CONVS):
        stride = _stride_text(layer.stride)
        boxes.append(
            _Box("conv", f"Conv {_size_text(layer.kernel_size)}, {layer.out_channels}{stride}", shape)
        )
    elif isinstance(layer, _POOLS):
        boxes.append(_Box("pool", _pool_title(layer), shape))
    elif isinstance(layer, nn.Linear):
        boxes.append(_Box("linear", f"Linear, {layer.out_features}", shape))
    else:
        name = _attached_name(layer)
        if name is None and shape != boxes[-1].output_shape:
            boxes.append(_Box("other", type(layer).__name__, shape))
            return
        boxes[-1].attached.append(name or type(layer).__name__)
        if shape != boxes[-1].output_shape:
            boxes[-1].final_shape = shape


def _attached_name(layer: nn.Module) -> str | None:
    """The short name of a layer that joins the box before it, None for other layers."""
    for types, name in _ATTACHED_NAMES:
        if isinstance(layer, types):
            return name(layer)
    if type(layer).__module__ == nn.modules.activation.__name__:
        return type(layer).__name__
    return None


def _pool_title(pool: nn.Module) -> str:
    for kind, types in _ADAPTIVE_POOLS.items():
        if isinstance(pool, types):
            size = pool.output_size
            if all(s == 1 for s in (size if isinstance(size, tuple) else (size,))):
                return f"Global {kind}"
            return f"Adaptive {kind} {_size_text(size)}"
    kind = "MaxPool" if isinstance(pool, _MAX_POOLS) else "AvgPool"
    return f"{kind} {_size_text(pool.kernel_size)}{_stride_text(pool.stride)}"


def _residual(name: str, block: nn.Module, rows: dict[str, Row], before: tuple, after: tuple) -> _Box:
    """A residual block: its main path's convolutions, and what its shortcut does."""
    shortcuts = [getattr(block, n, None) for n in ("downsample", "shortcut")]
    shortcut_convs = [m for s in shortcuts if s is not None for m in s.modules() if isinstance(m, _CONVS)]
    main_convs = [m for m in block.modules() if isinstance(m, _CONVS) and m not in shortcut_convs]
    detail = _joined(_convs_text(main_convs), f"{after[0]}{_reduction(before, after)}")
    kernels = sorted({_size_text(c.kernel_size) for c in shortcut_convs})
    label = f"{', '.join(kernels)} conv shortcut" if shortcut_convs else ""
    return _Box("block", _words(type(block).__name__), after, [detail], shortcut=label)


def _branches(name: str, block: nn.Module, rows: dict[str, Row], before: tuple, after: tuple) -> _Box:
    """Parallel branches concatenated on channels: what each branch is, and the channels it gives."""
    kinds, channels = [], []
    for child_name, branch in block.named_children():
        row = rows.get(f"{name}.{child_name}")
        if row is None or len(row.output_shape) < 2:  # not called, or not a branch of images
            continue
        convs = [m for m in branch.modules() if isinstance(m, _CONVS)]
        has_pool = any(isinstance(m, _POOLS) for m in branch.modules())
        largest = max(convs, key=lambda c: math.prod(c.kernel_size), default=None)
        kinds.append("pool" if has_pool or largest is None else _size_text(largest.kernel_size))
        channels.append(str(row.output_shape[1]))
    details = [", ".join(kinds), "concat: " + "+".join(channels)]
    return _Box("block", _words(type(block).__name__) + _stage_letter(name), after, details)


def _stage_letter(name: str) -> str:
    """' 3a' for the first block of a stage named like 'b3', as the GoogLeNet paper names its Inception
    blocks; '' when the names do not say."""
    parent, _, index = name.rpartition(".")
    stage = re.search(r"[0-9]+$", parent.rpartition(".")[2])
    if stage is None or not index.isdigit() or int(index) >= 26:
        return ""
    return f" {stage.group()}{chr(ord('a') + int(index))}"


def _dense(name: str, block: nn.Module, rows: dict[str, Row], before: tuple, after: tuple) -> _Box:
    """Convolutions that each concatenate their output to their input: how many, and what each adds."""
    convs = [m for m in block.modules() if isinstance(m, _CONVS)]
    growth = {c.out_channels for c in convs}
    added = f"+{growth.pop()} ch each, concat" if len(growth) == 1 else "concat"
    return _Box("block", _words(type(block).__name__), after, [_convs_text(convs), added])


def _plain(name: str, block: nn.Module, rows: dict[str, Row], before: tuple, after: tuple) -> _Box:
    """A block without a `diagram` attribute: its name and its convolutions."""
    convs = [m for m in block.modules() if isinstance(m, _CONVS)]
    detail = _joined(_convs_text(convs), f"{after[0]}{_reduction(before, after)}" if convs else "")
    return _Box("block", _words(type(block).__name__), after, [detail] if detail else [])


# How a block is described, by its `diagram` attribute (None: it has none). A "sequence" block is not
# described: its layers are drawn one by one.
_BLOCK_STYLES: dict[str | None, Callable[..., _Box]] = {
    "residual": _residual,
    "branches": _branches,
    "dense": _dense,
    None: _plain,
}


def _convs_text(convs: list[nn.Module]) -> str:
    """'2 × conv 3x3' when the kernels are alike, 'conv 1x1, 3x3, 1x1' when not."""
    kernels = [_size_text(c.kernel_size) for c in convs]
    if not kernels:
        return ""
    if len(set(kernels)) == 1:
        return f"{len(kernels)} × conv {kernels[0]}" if len(kernels) > 1 else f"conv {kernels[0]}"
    return "conv " + ", ".join(kernels)


def _joined(*parts: str) -> str:
    return ", ".join(p for p in parts if p)


def _reduction(before: tuple[int, ...], after: tuple[int, ...]) -> str:
    """', /2' when the height shrinks by 2 from `before` to `after` (C, H, W), '' when it does not shrink."""
    if len(before) < 2 or len(after) < 2 or after[1] >= before[1]:
        return ""
    return f", /{round(before[1] / after[1])}"


def _size_text(size: int | tuple[int, ...]) -> str:
    sizes = size if isinstance(size, tuple) else (size, size)
    return "x".join(str(s) for s in sizes)


def _stride_text(stride: int | tuple[int, ...]) -> str:
    strides = stride if isinstance(stride, tuple) else (stride,)
    if all(s == 1 for s in strides):
        return ""
    return f", /{strides[0]}" if len(set(strides)) == 1 else f", /{_size_text(strides)}"


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(s) for s in shape) if shape else "-"


def _words(class_name: str) -> str:
    """'ResidualBlock' -> 'Residual block'."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", class_name).split()
    return " ".join([words[0], *(w.lower() for w in words[1:])]) if words else class_name


def _text_width(text: str, font: str, scale: float = 1.0) -> float:
    """The width of `text` in inches, in the font `font` (a key of _FONTS) scaled by `scale`."""
    size, weight, _ = _FONTS[font]
    path = TextPath((0, 0), text, size=size * scale, prop=FontProperties(weight=weight))
    return path.get_extents().width / 72 * 1.04  # rendered text comes out up to 4% wider


@dataclass
class _Place:
    """Where one box goes: its top-left corner and size, in inches (y grows downwards)."""

    x: float
    y: float
    width: float
    height: float

    @property
    def middle(self) -> float:
        return self.y + self.height / 2


def _natural_width(box: _Box, scale: float) -> float:
    return max(_text_width(text, font, scale) for text, font in box.lines()) + 2 * _PAD_X


def _line_height(font: str, scale: float) -> float:
    return _FONTS[font][0] * scale * _LINE_SPACING / 72


def _rows(widths: list[float], available: float, max_columns: int | None) -> list[range]:
    """Break the boxes into rows like a paragraph into lines: as few rows as fit, then the row widths as
    even as can be (no last row of a single box when a fuller one fits)."""
    count = len(widths)
    # best[end]: (rows, cost, where the last row starts) of the best breaks of the first `end` boxes,
    # the cost being the sum over rows of the squared width left empty.
    best: list[tuple[int, float, int]] = [(0, 0.0, 0)] + [(count + 1, math.inf, 0)] * count
    for end in range(1, count + 1):
        for begin in range(end - 1, -1, -1):
            used = sum(widths[begin:end]) + (end - begin - 1) * _GAP
            if begin < end - 1 and (used > available or (max_columns and end - begin > max_columns)):
                break
            rows, cost, _ = best[begin]
            candidate = (rows + 1, cost + (available - used) ** 2, begin)
            best[end] = min(best[end], candidate)
    rows, end = [], count
    while end > 0:
        begin = best[end][2]
        rows.append(range(begin, end))
        end = begin
    return rows[::-1]


def _layout(boxes: list[_Box], max_columns: int | None) -> tuple[list[_Place], float, float]:
    """A place for each box, the text scale and the figure height. Each box is as wide as its text
    needs, then widened to fill its row; the text shrinks only when a single box would not fit the page."""
    available = _WIDTH - 2 * _MARGIN
    scale = min(1.0, available / max(_natural_width(box, 1.0) for box in boxes))
    widths = [max(_MIN_BOX, _natural_width(box, scale)) for box in boxes]
    places, top = [], _HEADER
    for row in _rows(widths, available, max_columns):
        used = sum(widths[i] for i in row) + (len(row) - 1) * _GAP
        extra = min(_MAX_EXTRA, (available - used) / len(row))  # the same for each box of the row
        height = max(sum(_line_height(font, scale) for _, font in boxes[i].lines()) for i in row) + 2 * _PAD_Y
        top += _SKIP_ROOM if any(boxes[i].shortcut is not None for i in row) else 0.0
        x = _MARGIN
        for i in row:
            places.append(_Place(x, top, widths[i] + extra, height))
            x += widths[i] + extra + _GAP
        top += height + _ROW_GAP
    return places, scale, top - _ROW_GAP + 0.1


def _render(boxes: list[_Box], title: str, max_columns: int | None) -> Figure:
    places, scale, height = _layout(boxes, max_columns)
    fig = new_figure(_WIDTH, height, layout=None)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, _WIDTH)
    ax.set_ylim(height, 0)  # y grows downwards, like the rows
    ax.set_axis_off()
    _draw_header(ax, title, {box.kind for box in boxes})
    for index, (box, place) in enumerate(zip(boxes, places)):
        _draw_box(ax, box, place, scale)
        if box.shortcut is not None:
            _draw_skip(ax, box.shortcut, place, scale)
        if index + 1 < len(boxes):
            _draw_connector(ax, place, places[index + 1])
    return fig


def _draw_header(ax: Axes, title: str, kinds: set[str]) -> None:
    """The title on the left, and a legend of the colours used on the right."""
    middle = _HEADER / 2
    if title:
        ax.text(_MARGIN, middle, title, fontsize=14, fontweight="bold", va="center", ha="left")
    x = _WIDTH - _MARGIN
    for kind in reversed(list(_PALETTE)):
        fill, edge, label = _PALETTE[kind]
        if kind not in kinds or label is None:
            continue
        ax.text(x, middle, label, fontsize=_LEGEND_SIZE, va="center", ha="right", color="#333333")
        x -= _text_width(label, "detail", _LEGEND_SIZE / _FONTS["detail"][0]) + 0.1 + 0.18
        ax.add_patch(Rectangle((x, middle - 0.08), 0.18, 0.16, facecolor=fill, edgecolor=edge, linewidth=1.2))
        x -= 0.25


def _draw_box(ax: Axes, box: _Box, place: _Place, scale: float) -> None:
    fill, edge, _ = _PALETTE[box.kind]
    rounded = "round,pad=0,rounding_size=0.07"
    frame = FancyBboxPatch((place.x, place.y), place.width, place.height, boxstyle=rounded, linewidth=1.4)
    frame.set(facecolor=fill, edgecolor=edge)
    ax.add_patch(frame)
    lines = box.lines()
    top = place.middle - sum(_line_height(font, scale) for _, font in lines) / 2
    for text, font in lines:
        size, weight, color = _FONTS[font]
        line = _line_height(font, scale)
        style = {"fontsize": size * scale, "fontweight": weight, "color": color}
        ax.text(place.x + place.width / 2, top + line / 2, text, ha="center", va="center", **style)
        top += line


def _arrow(ax: Axes, points: list[tuple[float, float]], gid: str, color: str = "#444444") -> None:
    """A polyline with an arrowhead at its last point; `gid` names what it is ("connector", "skip")."""
    arrow = FancyArrowPatch(path=Path(points), arrowstyle="-|>", mutation_scale=11, linewidth=1.3, zorder=1)
    arrow.set(color=color, gid=gid)
    ax.add_patch(arrow)


def _draw_connector(ax: Axes, source: _Place, target: _Place) -> None:
    """The arrow from one box to the next: straight along a row; to the next row, out right, back left
    between the rows, and in from the left."""
    start, end = (source.x + source.width, source.middle), (target.x, target.middle)
    if target.y == source.y:
        _arrow(ax, [start, end], "connector")
        return
    between = source.y + source.height + _ROW_GAP / 2
    out, back = start[0] + 0.6 * _GAP, end[0] - 0.6 * _GAP
    _arrow(ax, [start, (out, start[1]), (out, between), (back, between), (back, end[1]), end], "connector")


def _draw_skip(ax: Axes, label: str, place: _Place, scale: float) -> None:
    """A skip arrow from before the box, over it, into a "+" after it; the shortcut's label on it."""
    radius = 0.075
    # The start and the "+" sit at different points of the gap, so that the skips of two neighbouring
    # blocks do not share a vertical line.
    start, plus = place.x - 0.3 * _GAP, place.x + place.width + 0.3 * _GAP
    over = place.y - _SKIP_RISE
    color = _PALETTE["block"][1]
    skip = [(start, place.middle), (start, over), (plus, over), (plus, place.middle - radius)]
    _arrow(ax, skip, "skip", color)
    ax.add_patch(Circle((start, place.middle), 0.03, color=color, zorder=2))
    ax.add_patch(Circle((plus, place.middle), radius, facecolor="white", edgecolor=color, lw=1.3, zorder=3))
    centred = {"color": color, "ha": "center", "va": "center"}
    ax.text(plus, place.middle, "+", fontsize=11, fontweight="bold", zorder=4, **centred)
    if label:
        on_line = {"facecolor": "white", "edgecolor": "none", "pad": 1.0}  # the line stops around the label
        ax.text(
            place.x + place.width / 2, over, label, fontsize=10 * scale, bbox=on_line, zorder=2, **centred
        )
