"""What every d2lcnn model shares: checked options, and an input it cannot take explained in words: the
forward pass, replayed on the ``meta`` device (shapes only), names the layer that failed, the shape that
reached it and the input sizes that work, where torch would fail deep inside a layer."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.func import functional_call

from d2lcnn.errors import ConfigError, InputShapeError, is_int, is_number
from d2lcnn.runtime import evaluating, model_name


def _is_count(value: object) -> bool:
    return is_int(value) and value >= 1


# What each model option must be: (test, the valid values in words).
OPTION_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "num_classes": (_is_count, "a whole number >= 1 (one output per class)"),
    "in_channels": (_is_count, "a whole number >= 1 (1 for grey images, 3 for colour)"),
    "width": (lambda v: is_number(v) and v > 0, "a number > 0 scaling the channels (1.0: as published)"),
    "dropout": (lambda v: is_number(v) and 0 <= v < 1, "a probability in [0, 1)"),
    "growth_rate": (_is_count, "a whole number >= 1 (channels each convolution adds)"),
    "arch": (
        lambda v: isinstance(v, (tuple, list)) and len(v) > 0 and all(_is_count(n) for n in v),
        "a non-empty list of whole numbers >= 1 (convolutions per dense block), e.g. (4, 4, 4, 4)",
    ),
    "batch_norm": (lambda v: isinstance(v, bool), "True or False"),
    "scratch": (lambda v: isinstance(v, bool), "True or False"),
    "paper": (lambda v: isinstance(v, bool), "True or False"),
}


def check_options(**options: object) -> None:
    """Raise a ConfigError for the first option breaking its rule in OPTION_RULES, with the valid values."""
    for name, value in options.items():
        if name in OPTION_RULES and not OPTION_RULES[name][0](value):
            raise ConfigError(f"{name}={value!r} is not valid: {name} must be {OPTION_RULES[name][1]}.")


def scaled(channels: int, width: float) -> int:
    """`channels` scaled by `width`, at least 1."""
    return max(1, round(channels * width))


class Classifier(nn.Module):
    """Base class of every d2lcnn model; `input_size` is the image side, in pixels, it is documented for."""

    def __init__(self, num_classes: int, in_channels: int, input_size: int, **options: object) -> None:
        check_options(num_classes=num_classes, in_channels=in_channels, **options)
        super().__init__()
        self.in_channels = in_channels
        self.input_size = input_size

    @property
    def num_classes(self) -> int:
        """Outputs of the last linear or convolution layer: still right after the head is replaced."""
        last = [m for m in self.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
        return last.out_features if isinstance(last, nn.Linear) else last.out_channels

    def __call__(self, x, *args, **kwargs):
        if torch.is_tensor(x) and not x.is_floating_point():
            raise InputShapeError(
                f"{model_name(self)} takes float images normalised like its training data, not {x.dtype}: "
                "convert with x.float() / 255, then normalise with the training data's mean and std "
                "(d2lcnn.data.load does both)."
            )
        try:
            return super().__call__(x, *args, **kwargs)
        except (RuntimeError, ValueError):  # batch norm raises ValueError for a 3-D input
            # On meta tensors this is one of the shape replays below, whose caller reads the failure.
            if not torch.is_tensor(x) or x.is_meta:
                raise
            problem = explain_input_error(self, tuple(x.shape))
            if problem is None:  # the input shape is fine, so the failure is something else
                raise
            raise problem from None


def run_on_meta(model: nn.Module, shape: tuple[int, ...], before=None, after=None) -> torch.Tensor:
    """Run `model` in eval mode on a meta tensor of `shape`: shapes are computed, nothing else is.
    `before(name, module, inputs)` and `after(name, module, inputs, output)` run around each submodule."""
    named = [*model.named_parameters(), *model.named_buffers()]  # functional_call ties shared weights
    state = {name: torch.empty_like(t, device="meta") for name, t in named}
    children = [(name, m) for name, m in model.named_modules() if m is not model]
    handles = [m.register_forward_pre_hook(partial(before, name)) for name, m in children if before]
    handles += [m.register_forward_hook(partial(after, name)) for name, m in children if after]
    try:
        with evaluating(model):
            return functional_call(model, state, (torch.empty(shape, device="meta"),))
    finally:
        for handle in handles:
            handle.remove()


def first_failure(model: nn.Module, shape: tuple[int, ...]) -> str | None:
    """Replay a forward pass on `shape`: None if it works, else which layer failed on which shape, and why."""
    reached = [("(input)", type(model).__name__, shape)]

    def remember(name: str, module: nn.Module, inputs: tuple) -> None:
        if inputs and torch.is_tensor(inputs[0]):
            reached.append((name, type(module).__name__, tuple(inputs[0].shape)))

    try:
        run_on_meta(model, shape, before=remember)
    except (RuntimeError, ValueError, IndexError) as err:
        layer, kind, got = reached[-1]
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"layer '{layer}' ({kind}) received {got} and failed ({reason})"
    return None


def accepted_sizes(model: Classifier) -> tuple[int, int | None]:
    """The smallest and largest square input side the model accepts (largest None: no limit), assuming
    the accepted sides form one interval around the documented ``input_size``."""
    channels, documented = model.in_channels, model.input_size

    def works(side: int) -> bool:
        return first_failure(model, (1, channels, side, side)) is None

    if not works(documented):
        raise InputShapeError(
            f"{model_name(model)} no longer takes its documented {channels}x{documented}x{documented} input: "
            "its layers were changed after it was built. d2lcnn.trace shows the shapes they pass on."
        )

    def last_working(good: int, bad: int) -> int:
        """Binary search between a side that works and one that fails."""
        while abs(bad - good) > 1:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if works(middle) else (good, middle)
        return good

    largest = None if works(8 * documented) else last_working(documented, 8 * documented)
    return last_working(documented, 0), largest


def explain_input_error(model: nn.Module, shape: tuple[int, ...]) -> InputShapeError | None:
    """An InputShapeError explaining why `model` cannot take a batch of `shape`, or None if it can."""
    if len(shape) != 4:
        fix = " Add a batch dimension: x.unsqueeze(0)." if len(shape) == 3 else ""
        message = f"takes a batch of images shaped (N, C, H, W); got a tensor of shape {shape}.{fix}"
    else:
        failure = first_failure(model, shape)
        if failure is None:
            return None
        message = f"cannot take input {shape}: {failure}."
    if isinstance(model, Classifier):
        lo, hi = accepted_sizes(model)
        sides = f"any side of at least {lo} px" if hi is None else f"sides from {lo} to {hi} px"
        c, s = model.in_channels, model.input_size
        message += f" It expects {c}-channel images, {sides} (documented size {c}x{s}x{s})."
        if len(shape) == 4 and shape[1] != c:
            message += f" Create the model with in_channels={shape[1]}, or give it {c}-channel images."
        elif len(shape) == 4:
            message += f" Resize the images, e.g. d2lcnn.data.load(..., resize={s})."
    return InputShapeError(f"{model_name(model)} {message}")
