"""Shape tracing: what each layer does to the shape of one input, with parameters and FLOPs, computed
on the ``meta`` device (no arithmetic, no memory). FLOPs are torch's `FlopCounterMode` count: a
multiply-add is 2 FLOPs; ReLU, pooling and batch norm count as 0."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from d2lcnn.errors import ConfigError, InputShapeError, is_int
from d2lcnn.models.base import explain_input_error, run_on_meta
from d2lcnn.runtime import model_name
from d2lcnn.show import Table

HEADER = ("Layer", "Type", "Output shape", "Params", "FLOPs")
ALIGN = "lllrr"  # numbers right, text left


@dataclass
class Row:
    """One call of one module during the traced forward pass."""

    name: str
    kind: str
    depth: int
    output_shape: tuple[int, ...]
    params: int
    flops: int

    def _cells(self) -> tuple[str, ...]:
        return self.name, self.kind, _shape(self.output_shape), f"{self.params:,}", _flops(self.flops)


@dataclass(repr=False)
class Trace:
    """The table `trace` returns: shows as HTML in a notebook and as text in a terminal; `table()` gives
    it as a `d2lcnn.show.Table` (e.g. for its `to_markdown()`)."""

    model_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    rows: list[Row]
    total_params: int
    trainable_params: int
    total_flops: int

    def _totals(self) -> list[str]:
        return [
            f"Output: {_shape(self.output_shape)}",
            f"Parameters: {self.total_params:,} ({self.trainable_params:,} trainable)",
            f"FLOPs per forward pass: {_flops(self.total_flops)} ({self.total_flops:,})",
        ]

    def table(self) -> Table:
        """The rows as a `Table`: the model and its input above, the totals below, nested layers indented."""
        return Table(
            HEADER,
            [row._cells() for row in self.rows],
            align=ALIGN,
            caption=f"{self.model_name}: input {_shape(self.input_shape)}",
            notes=self._totals(),
            indent=[row.depth - 1 for row in self.rows],
            css_class="d2lcnn-trace",  # marks a shape trace among a chapter's outputs
        )

    def __str__(self) -> str:
        return self.table().to_text()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()


def parse_shape(shape: str | Sequence[int]) -> tuple[int, ...]:
    """The batch shape (N, C, H, W) from '3x224x224', (3, 224, 224) (then N is 1) or (N, C, H, W)."""
    if isinstance(shape, str):
        parts = re.split(r"[x,*]", shape.lower())
        sides = [int(p) if re.fullmatch(r"\s*[0-9]+\s*", p) else None for p in parts]
    elif isinstance(shape, Sequence):  # tuples, lists and torch.Size; numpy integers pass, floats do not
        sides = [None if isinstance(s, bool) or not hasattr(s, "__index__") else s.__index__() for s in shape]
    else:
        sides = [None]
    if len(sides) not in (3, 4) or any(s is None or s < 1 for s in sides):
        raise InputShapeError(
            f"{shape!r} is not an input shape: give (C, H, W) or (N, C, H, W) as whole numbers >= 1, "
            "e.g. (1, 28, 28) or '1x28x28'."
        )
    return tuple(sides) if len(sides) == 4 else (1, *sides)


def trace(model: nn.Module, input_shape: str | Sequence[int], depth: int | None = None) -> Trace:
    """Trace one forward pass of `model` on an input of `input_shape` ((C, H, W), (N, C, H, W) or
    '1x28x28'), layer by layer. `depth` shows modules nested at most that deep (1: only the model's
    children, blocks collapsed); None shows every layer. Print the result, or show it in a notebook."""
    shape = parse_shape(input_shape)
    if depth is not None and not (is_int(depth) and depth >= 1):
        raise ConfigError(f"depth={depth!r} is not valid: give a whole number >= 1, or None for every layer.")
    rows: list[Row] = []
    open_calls: list[tuple[Row, int]] = []  # (row, FLOPs counted when the call started)
    counter = FlopCounterMode(display=False)

    def before(name: str, module: nn.Module, inputs: tuple) -> None:
        params = sum(p.numel() for p in module.parameters())
        rows.append(Row(name, type(module).__name__, name.count(".") + 1, (), params, 0))
        open_calls.append((rows[-1], counter.get_total_flops()))

    def after(name: str, module: nn.Module, inputs: tuple, output) -> None:
        row, flops_before = open_calls.pop()
        row.flops = counter.get_total_flops() - flops_before
        if torch.is_tensor(output):
            row.output_shape = tuple(output.shape)

    try:
        with counter:
            output = run_on_meta(model, shape, before, after)
    except (RuntimeError, ValueError, IndexError) as err:
        problem = explain_input_error(model, shape)
        raise (problem or InputShapeError(f"Tracing failed on input {shape}: {err}")) from None
    shown = [r for r in rows if depth is None or r.depth <= depth]
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flops = counter.get_total_flops()
    return Trace(model_name(model), shape, tuple(output.shape), shown, params, trainable, flops)


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape) if shape else "-"


def _flops(flops: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return str(flops)
