"""Shape tracing: what each layer of a model does to the shape of one input, with parameters and FLOPs.

The forward pass runs on the ``meta`` device, so tracing VGG-19 at 224 px takes milliseconds and no
memory. FLOPs are counted by torch's own `torch.utils.flop_counter.FlopCounterMode` (a multiply-add
counts as 2 FLOPs; element-wise ops such as ReLU, pooling and batch norm count as 0).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from d2lcnn.errors import ConfigError, InputShapeError
from d2lcnn.models.base import explain_input_error, meta_state, run_on_meta


@dataclass
class Row:
    """One call of one module during the traced forward pass."""

    name: str
    kind: str
    depth: int
    output_shape: tuple[int, ...]
    params: int
    flops: int


@dataclass(repr=False)
class Trace:
    """The table `trace` returns: shows as HTML in a notebook and as text in a terminal."""

    model_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    rows: list[Row]
    total_params: int
    trainable_params: int
    total_flops: int
    depth: int | None

    def __str__(self) -> str:
        header = ("Layer", "Type", "Output shape", "Params", "FLOPs")
        body = [
            ("  " * (r.depth - 1) + r.name, r.kind, _shape(r.output_shape), f"{r.params:,}",
             _flops(r.flops))
            for r in self.rows
        ]  # fmt: skip
        widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(5)]
        align = ["<", "<", "<", ">", ">"]

        def fmt(line: tuple) -> str:
            return "  ".join(f"{str(v):{a}{w}}" for v, a, w in zip(line, align, widths)).rstrip()

        rule = "-" * len(fmt(header))
        lines = [f"{self.model_name}: input {_shape(self.input_shape)}", rule, fmt(header), rule]
        lines += [fmt(line) for line in body]
        lines += [rule, *self._totals(), rule]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _totals(self) -> list[str]:
        return [
            f"Output: {_shape(self.output_shape)}",
            f"Parameters: {self.total_params:,} ({self.trainable_params:,} trainable)",
            f"FLOPs per forward pass: {_flops(self.total_flops)} ({self.total_flops:,})",
        ]

    def _repr_html_(self) -> str:
        cells = []
        for r in self.rows:
            indent = 1.2 * (r.depth - 1)
            cells.append(
                "<tr>"
                f"<td style='text-align:left;padding-left:{indent:.1f}em'><code>"
                f"{html.escape(r.name)}</code></td>"
                f"<td style='text-align:left'>{html.escape(r.kind)}</td>"
                f"<td style='text-align:left'>{_shape(r.output_shape)}</td>"
                f"<td style='text-align:right'>{r.params:,}</td>"
                f"<td style='text-align:right'>{_flops(r.flops)}</td>"
                "</tr>"
            )
        totals = "<br>".join(html.escape(t) for t in self._totals())
        return (
            f"<div class='d2lcnn-trace'><p><b>{html.escape(self.model_name)}</b>: input "
            f"{_shape(self.input_shape)}</p><table><thead><tr>"
            "<th style='text-align:left'>Layer</th><th style='text-align:left'>Type</th>"
            "<th style='text-align:left'>Output shape</th><th style='text-align:right'>Params</th>"
            "<th style='text-align:right'>FLOPs</th></tr></thead><tbody>"
            + "".join(cells)
            + f"</tbody></table><p>{totals}</p></div>"
        )


def parse_shape(shape: str | Sequence[int]) -> tuple[int, ...]:
    """An input shape from '3x224x224' or (3, 224, 224): (C, H, W) or (N, C, H, W), whole numbers >= 1."""
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
    return tuple(sides)


def trace(model: nn.Module, input_shape: str | Sequence[int], depth: int | None = None) -> Trace:
    """Trace one forward pass of `model` on an input of `input_shape`, layer by layer.

    Args:
        model: any `nn.Module`; d2lcnn models also explain an input they cannot take.
        input_shape: (C, H, W) for one image, or (N, C, H, W); or a string such as '1x28x28'.
        depth: show modules nested at most this deep (1: only the model's direct children, so blocks
            show collapsed); None shows every layer.

    Returns:
        A `Trace`; print it, or leave it last in a notebook cell for an HTML table.
    """
    shape = parse_shape(input_shape)
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ConfigError(
            f"depth={depth!r} is not valid: give a whole number >= 1 (1: only the model's direct "
            "children), or None (the default) for every layer."
        )
    if len(shape) == 3:
        shape = (1, *shape)
    names = {id(m): n for n, m in model.named_modules() if m is not model}
    rows: list[Row] = []
    open_calls: list[tuple[int, int]] = []  # (row index, FLOPs counted when the call started)
    counter = FlopCounterMode(display=False)

    def before(module: nn.Module, inputs: tuple) -> None:
        name = names[id(module)]
        row_depth = name.count(".") + 1
        rows.append(Row(name, type(module).__name__, row_depth, (), _param_count(module), 0))
        open_calls.append((len(rows) - 1, counter.get_total_flops()))

    def after(module: nn.Module, inputs: tuple, output) -> None:
        index, flops_before = open_calls.pop()
        rows[index].flops = counter.get_total_flops() - flops_before
        if torch.is_tensor(output):
            rows[index].output_shape = tuple(output.shape)

    handles = []
    for module in model.modules():
        if module is not model:
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after))
    try:
        with counter:
            output = run_on_meta(model, shape, meta_state(model))
    except (RuntimeError, ValueError, IndexError) as err:
        problem = explain_input_error(model, shape)
        raise (problem or InputShapeError(f"Tracing failed on input {shape}: {err}")) from None
    finally:
        for handle in handles:
            handle.remove()

    shown = [r for r in rows if depth is None or r.depth <= depth]
    params = list(model.parameters())
    return Trace(
        model_name=getattr(model, "name", type(model).__name__),
        input_shape=shape,
        output_shape=tuple(output.shape),
        rows=shown,
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_flops=counter.get_total_flops(),
        depth=depth,
    )


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape) if shape else "-"


def _flops(flops: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return str(flops)
