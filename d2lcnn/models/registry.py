"""Model registry: `create("vgg11", num_classes=10)` and `list_models()`."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from d2lcnn.errors import UnknownNameError, unknown_name
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
    doc = inspect.getdoc(_builder(name)) or ""
    return doc.splitlines()[0] if doc else ""


def create(name: str, **kwargs) -> nn.Module:
    """Build the model `name` (see `list_models()`); keyword arguments go to its builder.

    A bad option value (e.g. width=0 or num_classes=0) is a ConfigError naming the valid range.
    Example: ``create("resnet18", num_classes=10, stem="cifar")``.
    """
    builder = _builder(name)
    accepted = inspect.signature(builder).parameters
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        options = ", ".join(f"{p.name}={p.default!r}" for p in accepted.values())
        hints = []
        for key in unknown:
            err = unknown_name("option", key, accepted)
            hints.append(str(err).split(" Valid")[0])
        raise UnknownNameError(f"{name} got {' '.join(hints)} Its options are: {options}.")
    check_options(**kwargs)  # here too for the options a builder handles itself (lenet_bn's scratch)
    model = builder(**kwargs)
    model.name = name
    return model


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _BUILDERS:
        raise unknown_name("model", name, _BUILDERS)
    return _BUILDERS[name]
