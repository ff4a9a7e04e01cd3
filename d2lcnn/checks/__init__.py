"""Self-checks for the chapters' exercises: `check(label, answer)` says right or wrong, never the answer.

Each chapter's checks live in a module of their own (`lenet`, `alexnet`, ...) and register under the
label of the exercise they check (``lenet-kernel``). A check function receives the student's answer and
either returns a sentence for a right answer or raises `Wrong` with what to look at; it computes what it
expects from the package's own models and helpers, so no answer is written down twice.

    >>> from d2lcnn.checks import check
    >>> check("lenet-kernel", my_lenet)          # prints and returns a Verdict; bool(verdict) is the result
"""

from __future__ import annotations

import html
import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import is_number, unknown_name
from ..models import create
from ..trace import trace

QUIZZES = Path(__file__).parent / "quizzes"
CHECKS: dict[str, Callable[..., str]] = {}


class Wrong(Exception):
    """Raised by a check function: the answer is not right; the message says what to look at."""


@dataclass(frozen=True, repr=False)
class Verdict:
    """The outcome of one check: `passed` and a message that never contains the expected answer."""

    label: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{'Right' if self.passed else 'Not yet'} ({self.label}): {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.passed else "#b35900"
        mark = "&#10004; Right" if self.passed else "&#10007; Not yet"
        return (
            f'<div class="d2lcnn-check" style="border-left:4px solid {colour};padding:4px 10px">'
            f'<b style="color:{colour}">{mark}</b> <code>{html.escape(self.label)}</code>: '
            f"{html.escape(self.message)}</div>"
        )


def register(label: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Decorator: make `function` the check of the exercise labelled `label`."""

    def add(function: Callable[..., str]) -> Callable[..., str]:
        if label in CHECKS:
            raise ValueError(f"two checks are registered as {label!r}")
        CHECKS[label] = function
        return function

    return add


def all_checks() -> dict[str, Callable[..., str]]:
    """Every registered check by label (imports each chapter's module once)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(CHECKS)


def check(label: str, *answers: object) -> Verdict:
    """Check the answer(s) to exercise `label`; returns a `Verdict` (shown as one line in a notebook).

    An answer left as ``...`` (the stub) is not yet an answer; an answer that raises while being checked
    (a model whose shapes do not fit, say) is wrong, with the error as what to look at.
    """
    checks = all_checks()
    if label not in checks:
        raise unknown_name("self-check", label, checks)
    if any(answer is Ellipsis for answer in answers):
        return Verdict(
            label, False, "replace the ... in the exercise cell with your answer, then run it again"
        )
    try:
        return Verdict(label, True, checks[label](*answers))
    except Wrong as wrong:
        return Verdict(label, False, str(wrong))
    except Exception as error:  # the student's code failed inside the check: say how, not a traceback
        return Verdict(label, False, f"checking it raised {type(error).__name__}: {error}")


def expect_number(answer: object, expected: float, *, what: str, look_at: str, rel_tol: float = 0.0) -> None:
    """Raise `Wrong` unless `answer` is a number equal to `expected` (within `rel_tol`): says whether it is
    too high or too low and what to look at, never the expected value."""
    if not is_number(answer):
        raise Wrong(f"{what} should be a number, not {type(answer).__name__}")
    if not math.isclose(float(answer), float(expected), rel_tol=rel_tol, abs_tol=1e-9):
        raise Wrong(f"{what} is too {'high' if answer > expected else 'low'}: {look_at}")


def on_meta(name: str, **options: object) -> nn.Module:
    """The registered model `name` built on the ``meta`` device: shapes only, nothing allocated."""
    with torch.device("meta"):
        return create(name, **options)


def expect_flops(answer: object, expected: int, *, what: str, look_at: str) -> None:
    """`expect_number` for a FLOP count, with a pointed message for the commonest slip: counting each
    multiply-add once instead of as 2 FLOPs."""
    if is_number(answer) and answer * 2 == expected:
        raise Wrong(f"{what} looks like a count of multiply-adds: each multiply-add is 2 FLOPs")
    expect_number(answer, expected, what=what, look_at=look_at)


def layer_shapes(model: nn.Module) -> list[tuple[str, tuple[tuple[int, ...], ...]]]:
    """Every module that holds parameters of its own, in order: its type and its parameters' shapes."""
    return [
        (type(m).__name__, tuple(tuple(p.shape) for p in m.parameters(recurse=False)))
        for m in model.modules()
        if next(m.parameters(recurse=False), None) is not None
    ]


def expect_model(answer: object, reference: nn.Module, input_shape: tuple[int, ...], *, look_at: str) -> str:
    """Raise `Wrong` unless `answer` is a module with the layers of `reference` (same types, same parameter
    shapes, in order) and its output shape on an input of `input_shape`; the message points at the first
    layer that differs, by its shapes in the student's model. Returns a summary for a right answer."""
    if not isinstance(answer, nn.Module):
        raise Wrong(f"the answer should be a network (a torch.nn.Module), not {type(answer).__name__}")
    got = trace(answer, input_shape)
    expected = trace(reference, input_shape)
    if got.output_shape != expected.output_shape:
        raise Wrong(
            f"on a {_dims(input_shape)} input your network outputs {_dims(got.output_shape)}; {look_at}"
        )
    mine, theirs = layer_shapes(answer), layer_shapes(reference)
    for number, (have, want) in enumerate(zip(mine, theirs), start=1):
        if have != want:
            shapes = ", ".join(_dims(s) for s in have[1])
            raise Wrong(
                f"layer {number} with parameters ({have[0]}, shapes {shapes}) is not the one asked for; "
                f"{look_at}"
            )
    if len(mine) != len(theirs):
        raise Wrong(
            f"your network has {len(mine)} layers with parameters, "
            f"{'more' if len(mine) > len(theirs) else 'fewer'} than asked for; {look_at}"
        )
    shape = _dims(got.output_shape)
    return f"{got.total_params:,} parameters, {got.total_flops:,} FLOPs per image, output {shape}"


def _dims(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape))


def quiz(chapter: str, shuffle_answers: bool = True) -> None:
    """Show chapter `chapter`'s check-your-understanding quiz (``quizzes/<chapter>.json``): questions whose
    answers are revealed on click, made with jupyterquiz. The answers are shuffled in the browser, so that
    the right one is not always where the quiz file lists it."""
    quizzes = {path.stem: path for path in QUIZZES.glob("*.json")}
    if chapter not in quizzes:
        raise unknown_name("quiz", chapter, quizzes)
    try:
        from jupyterquiz import display_quiz
    except ImportError:
        raise ImportError("The quizzes need jupyterquiz: pip install jupyterquiz") from None
    display_quiz(str(quizzes[chapter]), shuffle_answers=shuffle_answers)
