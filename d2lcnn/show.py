"""Small helpers the chapters use: show a function's source, count parameters, re-initialise weights,
and show a table (`Table`: HTML in a notebook and on the website, plain text in a terminal, markdown
for files).

>>> table = Table(["Model", "Params", "Test acc"], [["lenet", 61706, "90.1%"], ["alexnet", 46764746, "-"]])
>>> print(table)
-----------------------------
Model        Params  Test acc
-----------------------------
lenet        61,706     90.1%
alexnet  46,764,746         -
-----------------------------
>>> print(table.to_markdown())
| Model   |     Params | Test acc |
|---------|-----------:|---------:|
| lenet   |     61,706 |    90.1% |
| alexnet | 46,764,746 |        - |
"""

from __future__ import annotations

import html
import inspect
import math
import numbers
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from d2lcnn.errors import ConfigError, is_int, unknown_name

INITS = ("default", "xavier", "kaiming")


def show_source(obj: object) -> None:
    """Display the source code of a class or function (in a notebook as highlighted code)."""
    source = textwrap.dedent(inspect.getsource(obj))
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:  # not in Jupyter
        print(source)
        return
    display(Markdown(f"```python\n{source}\n```"))


def count_params(model: nn.Module, trainable: bool = False) -> int:
    """The number of parameters of `model` (only those that train, with `trainable=True`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def init_weights(model: nn.Module, kind: str = "xavier") -> nn.Module:
    """Re-initialise every convolution and linear layer of `model` in place; returns `model`.

    "xavier" is d2l's `init_cnn` (Xavier-uniform weights, biases kept); "kaiming" draws weights
    from N(0, 2 / fan-in) and zeroes the biases (He et al., 2015); "default" keeps PyTorch's.
    """
    if kind not in INITS:
        raise unknown_name("initialisation", kind, INITS)
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            if kind == "xavier":
                nn.init.xavier_uniform_(layer.weight)
            elif kind == "kaiming":
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
    return model


# ----------------------------------------------------------------------------- tables

# A cell that reads as a number: a sign, digits (optionally grouped by commas), a decimal part, an
# exponent, then optionally one unit: %, x (a ratio), an SI prefix (K, M, G, T), bytes (MB, GB) or
# seconds (s, ms). "1,234", "-0.5", "+3.1", "12.5%", "2.31x", "1.88 G", "76.9 M", "512 MB" and "1.5 s"
# are numbers; "1x28x28", "1 x 6 x 28 x 28", "nan" and "3 layers" are text.
_NUMBER = re.compile(
    r"[+\-\u2212]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?([eE][+\-]?\d+)?( ?(%|x|[kKMGT]?B|[kKMGT]|m?s))?"
)
_MISSING = {"", "-", "\u2014"}  # empty cells, and the dashes that stand for a missing value
_PADDING = "padding:0.25em 0.75em"
_INDENT_EM = 1.2  # one level of `Table.indent` in HTML (in text: two spaces)


@dataclass(repr=False)
class Table:
    """A table that shows as HTML in a notebook (and on the website), as plain text when printed, and as
    markdown with `to_markdown()`.

    `align`: 'l' or 'r' for each column, e.g. "lrr". By default a column is right-aligned when all its
    cells that are not empty (or "-") are numbers: ints and floats, or strings such as "1,234", "12.5%",
    "+3.1", "2.31x", "1.88 G", "512 MB" or "1.5 s" (a shape such as "1x28x28" is text).
    Cells: ints are written with thousands separators ("61,706"), floats to 4 significant digits (from
    1,000 on as whole numbers with separators), None as "-", anything else with str(); format a cell
    yourself to write it otherwise. `caption` goes above the table, each of `notes` below it. `indent`:
    for each row, how many levels to indent its first cell (e.g. a layer's depth in a model).
    `css_class`: more HTML classes for the table's box (e.g. "d2lcnn-trace").
    """

    columns: Sequence[str]
    rows: Sequence[Sequence[object]]
    align: str | None = None
    caption: str | None = None
    notes: Sequence[str] = ()
    indent: Sequence[int] = ()
    css_class: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.columns, str):
            raise ConfigError(f"columns={self.columns!r}: give a list of names, e.g. ['Model', 'Params'].")
        self.columns = tuple(str(c) for c in self.columns)
        self.rows = tuple(tuple(row) for row in self.rows)
        self.notes = (self.notes,) if isinstance(self.notes, str) else tuple(self.notes)
        self.indent = tuple(self.indent)
        self._check()

    def _check(self) -> None:
        n = len(self.columns)
        for i, row in enumerate(self.rows, 1):
            if len(row) != n:
                raise ConfigError(
                    f"Row {i} of the table has {len(row)} cells for the {n} columns {self.columns}."
                )
        if self.align is not None and not (
            isinstance(self.align, str) and re.fullmatch(f"[lr]{{{n}}}", self.align)
        ):
            raise ConfigError(
                f"align={self.align!r} is not valid: give 'l' (left) or 'r' (right) for each of the {n} "
                f"columns {self.columns}, e.g. align={'l' + 'r' * (n - 1)!r}; or None to right-align the "
                "columns of numbers."
            )
        levels_ok = all(is_int(level) and level >= 0 for level in self.indent)
        if self.indent and (len(self.indent) != len(self.rows) or not levels_ok):
            raise ConfigError(
                f"indent={self.indent!r} is not valid: give one whole number >= 0 for each of the "
                f"{len(self.rows)} rows, or none."
            )

    def alignment(self) -> str:
        """'l' or 'r' for each column: `align`, or by default numbers right and text left."""
        if self.align is not None:
            return self.align
        columns = zip(*self.rows) if self.rows else [()] * len(self.columns)
        return "".join("r" if _is_number_column(cells) else "l" for cells in columns)

    def _lines(self) -> list[list[str]]:
        """The header and the rows as one-line strings, first cells indented by two spaces a level."""
        rows = [[_cell_text(value) for value in row] for row in self.rows]
        for row, level in zip(rows, self.indent):
            row[0] = "  " * level + row[0]
        return [list(self.columns), *rows]

    def to_text(self) -> str:
        """The table as plain text, columns two spaces apart, between rules; caption above, notes below."""
        lines, alignment = self._lines(), self.alignment()
        widths = _widths(lines)

        def line(cells: list[str]) -> str:
            return "  ".join(
                c.rjust(w) if a == "r" else c.ljust(w) for c, a, w in zip(cells, alignment, widths)
            )

        rule = "-" * len(line(lines[0]))
        text = [rule, line(lines[0]).rstrip(), rule, *(line(cells).rstrip() for cells in lines[1:]), rule]
        if self.notes:
            text += [*self.notes, rule]
        return "\n".join([self.caption, *text] if self.caption else text)

    def to_markdown(self) -> str:
        """A markdown pipe table that lines up in a terminal too; the caption and each note are
        paragraphs above and below it."""
        lines = [[cell.replace("|", "\\|") for cell in cells] for cells in self._lines()]
        alignment, widths = self.alignment(), _widths(lines)

        def line(cells: list[str]) -> str:
            padded = (c.rjust(w) if a == "r" else c.ljust(w) for c, a, w in zip(cells, alignment, widths))
            return "| " + " | ".join(padded) + " |"

        rule = "|".join("-" * (w + 1) + ":" if a == "r" else "-" * (w + 2) for a, w in zip(alignment, widths))
        table = "\n".join([line(lines[0]), f"|{rule}|", *map(line, lines[1:])])
        return "\n\n".join([*([self.caption] if self.caption else []), table, *self.notes])

    def _repr_html_(self) -> str:
        """A padded HTML table, numbers right-aligned, in a box that scrolls sideways when too wide."""
        right = [a == "r" for a in self.alignment()]
        header = _html_row("th", self.columns, right)
        levels = self.indent or (0,) * len(self.rows)
        body = "".join(
            _html_row("td", map(_cell_text, row), right, level) for row, level in zip(self.rows, levels)
        )
        caption = f'<p style="margin:0 0 0.4em">{html.escape(self.caption)}</p>' if self.caption else ""
        notes = "".join(
            f'<p style="margin:0.3em 0 0; font-size:0.85em">{html.escape(n)}</p>' for n in self.notes
        )
        return (
            f'<div class="{" ".join(["d2lcnn-table", *self.css_class.split()])}" '
            f'style="overflow-x:auto; max-width:100%">{caption}'
            f'<table style="border-collapse:collapse; margin:0"><thead>{header}</thead>'
            f"<tbody>{body}</tbody></table>{notes}</div>"
        )

    def __str__(self) -> str:
        return self.to_text()

    __repr__ = __str__


def _widths(lines: list[list[str]]) -> list[int]:
    return [max(len(cell) for cell in column) for column in zip(*lines)]


def _cell_text(value: object) -> str:
    """A cell as one line of text (see `Table` for how numbers are written)."""
    if value is None:
        return "-"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        large = math.isfinite(value) and abs(value) >= 1000
        return f"{value:,.0f}" if large else f"{float(value):.4g}"
    return " ".join(str(value).splitlines())


def _is_number_column(cells: Sequence[object]) -> bool:
    """Whether every cell of a column that is not empty is a number, and at least one is."""
    shown = [cell for cell in cells if _cell_text(cell).strip() not in _MISSING]
    return bool(shown) and all(map(_is_number, shown))


def _is_number(cell: object) -> bool:
    """An int or a float (not a bool), or a string that reads as a number (see `_NUMBER`)."""
    if isinstance(cell, numbers.Real):
        return not isinstance(cell, bool)
    return _NUMBER.fullmatch(_cell_text(cell).strip()) is not None


def _html_row(tag: str, cells: Iterable[str], right: Sequence[bool], level: int = 0) -> str:
    """One row of padded <td> (or <th>) cells; those of the `right` (number) columns right-aligned, in
    digits of one width and never wrapped; the first cell indented by `level`."""
    tds = []
    for i, (text, number) in enumerate(zip(cells, right)):
        style = f"{_PADDING}; text-align:{'right' if number else 'left'}"
        if number:
            style += "; white-space:nowrap; font-variant-numeric:tabular-nums"
        if i == 0 and level:
            style += f"; padding-left:{0.75 + _INDENT_EM * level:g}em"
        if tag == "th":
            style += "; border-bottom:1px solid currentColor"
        tds.append(f'<{tag} style="{style}">{html.escape(text)}</{tag}>')
    return "<tr>" + "".join(tds) + "</tr>"
