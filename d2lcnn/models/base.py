"""What every d2lcnn model shares: it knows the input it expects and explains a wrong one.

A wrong input (too small, wrong channel count, no batch dimension) makes torch fail somewhere deep
inside a layer with a message about kernels or matrix shapes. `Classifier.__call__` catches that
failure and replays the forward pass on the ``meta`` device (shapes only, no arithmetic) to find the
layer that failed, the shape that reached it, and the input sizes the model does accept.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

import torch
from torch import nn
from torch.func import functional_call

from d2lcnn.errors import ConfigError, InputShapeError

_probing = threading.local()


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# What each model option must be: (test, the valid values in words).
OPTION_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "num_classes": (_is_count, "a whole number >= 1 (one output per class)"),
    "in_channels": (_is_count, "a whole number >= 1 (1 for grey images, 3 for colour)"),
    "width": (
        lambda v: _is_number(v) and v > 0,
        "a number > 0 that scales the channel counts (1.0: as published, 0.5: half)",
    ),
    "dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a probability in [0, 1)"),
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
    """Raise a ConfigError naming the option, its value and the valid range for the first bad one.

    Options without a rule in OPTION_RULES (such as `head` or `stem`, which their model checks
    against its own list) are left alone.
    """
    for name, value in options.items():
        if name in OPTION_RULES and not OPTION_RULES[name][0](value):
            raise ConfigError(f"{name}={value!r} is not valid: {name} must be {OPTION_RULES[name][1]}.")


def scaled(channels: int, width: float) -> int:
    """`channels` scaled by `width`, at least 1."""
    return max(1, round(channels * width))


class Classifier(nn.Module):
    """Base class of every d2lcnn model.

    Args:
        num_classes: outputs of the model, one per class.
        in_channels: channels of the input images (1 for MNIST-like, 3 for colour).
        input_size: the side length, in pixels, of the images the model is documented for.
        options: the model's other options, checked against OPTION_RULES.
    """

    def __init__(self, num_classes: int, in_channels: int, input_size: int, **options: object) -> None:
        check_options(num_classes=num_classes, in_channels=in_channels, **options)
        super().__init__()
        self.in_channels = in_channels
        self.input_size = input_size

    @property
    def num_classes(self) -> int:
        """Outputs of the last linear or convolution layer: still right after the head is replaced."""
        for module in reversed(list(self.modules())):
            if isinstance(module, nn.Linear):
                return module.out_features
            if isinstance(module, nn.Conv2d):
                return module.out_channels
        raise AttributeError(f"{type(self).__name__} has no linear or convolution layer")

    def __call__(self, *args, **kwargs):
        if args and torch.is_tensor(args[0]) and not args[0].is_floating_point():
            name = getattr(self, "name", type(self).__name__)
            raise InputShapeError(
                f"{name} takes float images normalised like its training data; got a {args[0].dtype} "
                "tensor. Convert it first, e.g. x.float() / 255, then normalise with the training "
                "data's mean and std (d2lcnn.data.load does both)."
            )
        try:
            return super().__call__(*args, **kwargs)
        except RuntimeError:
            if getattr(_probing, "active", False) or not args or not torch.is_tensor(args[0]):
                raise
            problem = explain_input_error(self, tuple(args[0].shape))
            if problem is None:  # the input shape is fine, so the failure is something else
                raise
            raise problem from None


@contextmanager
def _probe() -> Iterator[None]:
    """Mark a shape-only replay, so failures inside it propagate instead of being explained again."""
    previous = getattr(_probing, "active", False)
    _probing.active = True
    try:
        yield
    finally:
        _probing.active = previous


def meta_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers of `model` as shape-only tensors on the meta device."""
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    return {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}


def run_on_meta(
    model: nn.Module, shape: tuple[int, ...], state: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """Run `model` on a meta tensor of `shape` in eval mode; shapes are computed, nothing else is."""
    state = meta_state(model) if state is None else state
    was_training = model.training
    model.eval()
    try:
        with _probe(), torch.no_grad():
            return functional_call(model, state, (torch.empty(shape, device="meta"),))
    finally:
        model.train(was_training)


def first_failure(
    model: nn.Module, shape: tuple[int, ...], state: dict[str, torch.Tensor] | None = None
) -> tuple[str, str, tuple[int, ...], str] | None:
    """Replay a forward pass on `shape`: None if it works, else (layer name, layer type, shape that
    reached the layer, torch's reason)."""
    names = {id(m): n for n, m in model.named_modules()}
    last: list[tuple[str, str, tuple[int, ...]]] = []

    def remember(module: nn.Module, inputs: tuple) -> None:
        if inputs and torch.is_tensor(inputs[0]) and module is not model:
            last.append((names.get(id(module), "?"), type(module).__name__, tuple(inputs[0].shape)))

    handles = [m.register_forward_pre_hook(remember) for m in model.modules()]
    try:
        run_on_meta(model, shape, state)
    except (RuntimeError, ValueError, IndexError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if last:
            return (*last[-1], reason)
        return ("(input)", type(model).__name__, shape, reason)
    finally:
        for handle in handles:
            handle.remove()
    return None


def accepted_sizes(model: Classifier) -> tuple[int, int | None]:
    """The smallest and largest square input side the model accepts (largest None: no limit).

    Assumes the accepted sides form one interval containing the documented ``input_size``.
    """
    state = meta_state(model)
    channels, start = model.in_channels, model.input_size

    @cache
    def works(side: int) -> bool:
        return first_failure(model, (1, channels, side, side), state) is None

    if not works(start):
        raise InputShapeError(
            f"{type(model).__name__} does not accept its own documented input "
            f"{channels}x{start}x{start}; its layers were changed. Use d2lcnn.trace to check shapes."
        )
    lo_bad, lo_ok = 0, start  # binary search for the smallest accepted side
    while lo_ok - lo_bad > 1:
        mid = (lo_bad + lo_ok) // 2
        lo_ok, lo_bad = (mid, lo_bad) if works(mid) else (lo_ok, mid)
    ceiling = 8 * start
    if works(ceiling):
        return lo_ok, None
    hi_ok, hi_bad = start, ceiling
    while hi_bad - hi_ok > 1:
        mid = (hi_ok + hi_bad) // 2
        hi_ok, hi_bad = (mid, hi_bad) if works(mid) else (hi_ok, mid)
    return lo_ok, hi_ok


def describe_accepted(model: Classifier) -> str:
    """'C×H×W images with sides from A to B' in words, for error messages and docs."""
    lo, hi = accepted_sizes(model)
    c, s = model.in_channels, model.input_size
    if hi is None:
        sides = f"any side of at least {lo} px"
    elif lo == hi:
        sides = f"exactly {lo}x{lo} px"
    else:
        sides = f"sides from {lo} to {hi} px"
    return f"{c}-channel images, {sides} (documented size {c}x{s}x{s})"


def explain_input_error(model: nn.Module, shape: tuple[int, ...]) -> InputShapeError | None:
    """An InputShapeError explaining why `model` cannot take a batch of `shape`, or None if it can."""
    model_name = getattr(model, "name", type(model).__name__)
    expects = describe_accepted(model) if isinstance(model, Classifier) else None
    expect_text = f" It expects {expects}." if expects else ""
    if len(shape) != 4:
        fix = " Add a batch dimension: x.unsqueeze(0)." if len(shape) == 3 else ""
        return InputShapeError(
            f"{model_name} takes a batch of images shaped (N, C, H, W); got a tensor of shape "
            f"{_fmt(shape)}.{fix}{expect_text}"
        )
    failure = first_failure(model, shape)
    if failure is None:
        return None
    layer, kind, reached, reason = failure
    channels = getattr(model, "in_channels", None)
    if channels is not None and shape[1] != channels:
        fix = f"Create the model with in_channels={shape[1]}, or convert the images to {channels} channel(s)."
    else:
        size = getattr(model, "input_size", None)
        fix = f"Resize the images, e.g. d2lcnn.data.load(..., resize={size})." if size else ""
    return InputShapeError(
        f"{model_name} cannot take input {_fmt(shape)}: layer '{layer}' ({kind}) received "
        f"{_fmt(reached)} and failed ({reason}).{expect_text} {fix}".rstrip()
    )


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"
