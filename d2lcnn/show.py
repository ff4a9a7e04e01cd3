"""Small helpers the chapters use: show a function's source, count parameters, re-initialise weights."""

from __future__ import annotations

import inspect
import textwrap

from torch import nn

from d2lcnn.errors import unknown_name

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
