"""Model registry: `create("vgg11", num_classes=10)` and `list_models()`."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from d2lcnn.errors import unknown_name
from d2lcnn.models.base import check_options

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model builder under its function name."""
    _BUILDERS[builder.__name__] = builder
    return builder


def list_models() -> list[str]:
    """Names accepted by `create`, sorted."""
    return sorted(_BUILDERS)


def model_doc(name: str) -> str:
    """The one-line description of a model, including the input size it expects."""
    return (inspect.getdoc(_builder(name)) or "").split("\n")[0]


def create(name: str, **options) -> nn.Module:
    """Build the model `name` (see `list_models()`) with its builder's keyword `options`, e.g.
    ``create("resnet18", num_classes=10, stem="cifar")``; a bad value is a ConfigError naming valid ones."""
    builder = _builder(name)
    accepted = inspect.signature(builder).parameters
    for key in options:
        if key not in accepted:
            listing = ", ".join(f"{p.name}={p.default!r}" for p in accepted.values())
            raise unknown_name(f"{name} option", key, accepted, f"Its options are: {listing}")
    check_options(**options)  # here too for the options a builder handles itself (lenet_bn's scratch)
    model = builder(**options)
    model.name = name
    return model


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _BUILDERS:
        raise unknown_name("model", name, _BUILDERS)
    return _BUILDERS[name]
