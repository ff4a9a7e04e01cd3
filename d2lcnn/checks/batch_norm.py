"""Self-checks of chapter 8 (batch normalisation)."""

from __future__ import annotations

import torch
from torch import nn

from ..models import create
from ..models.batchnorm import BatchNorm
from . import Wrong, expect_number, register

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@register("bn-bias")
def wasted_biases(count: object) -> str:
    model = create("lenet_bn")
    layers = [m for m in model.modules() if not list(m.children())]  # the layers, in the order they run
    expected = sum(
        a.bias.numel()
        for a, b in zip(layers, layers[1:])
        if isinstance(a, (nn.Conv2d, nn.Linear)) and isinstance(b, NORMS)
    )
    expect_number(
        count,
        expected,
        what="the number of wasted biases",
        look_at="count one bias per output channel of every convolution and linear layer that a batch-norm "
        "layer follows directly; the last linear layer has none after it",
    )
    return "every one of them is cancelled by the batch mean; beta takes over their job"


@register("bn-batch-size")
def values_per_channel(values: object) -> str:
    model = create("lenet_bn").train()
    seen: list[int] = []
    hooks = [
        m.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].numel() // inputs[0].shape[1]))
        for m in model.modules()
        if isinstance(m, NORMS)
    ]
    with torch.no_grad():
        model(torch.zeros(16, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    if not isinstance(values, (list, tuple)):
        raise Wrong(
            f"values_per_channel should be a list of numbers, one per batch-norm layer, not "
            f"{type(values).__name__}"
        )
    if len(values) != len(seen):
        raise Wrong(f"the BN LeNet has {len(seen)} batch-norm layers: give one number for each, in order")
    for number, (got, want) in enumerate(zip(values, seen), start=1):
        expect_number(
            got,
            want,
            what=f"the number for batch-norm layer {number}",
            look_at="a channel's mean is taken over the batch and, after a convolution, over every position "
            "of its feature map: multiply the batch size by the map's height and width (trace shows them)",
        )
    return "the two layers after the linear layers average over the batch alone"


def _steps_to_forget(momentum: float, share: float = 0.01) -> int:
    """Training steps until the package's BatchNorm keeps less than `share` of its initial running mean
    (0) when every batch has mean 1."""
    layer = BatchNorm(1, num_dims=2, momentum=momentum)
    batch = torch.ones(2, 1)
    steps = 0
    while 1 - layer.running_mean.item() >= share:
        layer(batch)
        steps += 1
    return steps


@register("bn-momentum")
def steps_to_forget(steps: object) -> str:
    if not isinstance(steps, dict):
        raise Wrong(f"steps should be a dict from momentum to a number of steps, not {type(steps).__name__}")
    momenta = (0.01, 0.1, 0.5)
    if sorted(steps) != sorted(momenta):
        raise Wrong(f"steps should have exactly the keys {momenta}, one per momentum")
    for momentum in momenta:
        expect_number(
            steps[momentum],
            _steps_to_forget(momentum),
            what=f"the number of steps for momentum {momentum}",
            look_at="after t steps the starting value keeps a weight of (1 - momentum) ** t; find the "
            "smallest whole t for which that is below 0.01",
        )
    return "the smaller the momentum, the longer the running averages remember early, wrong statistics"


def _random_pair(layer: nn.Module, norm: nn.Module) -> tuple[nn.Module, nn.Module]:
    """`layer` and `norm` with random weights and running statistics, `norm` in evaluation mode."""
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
        norm.running_mean.uniform_(-2.0, 2.0)
        norm.running_var.uniform_(0.5, 4.0)
    return layer.eval(), norm.eval()


@register("bn-fold")
def fold(fold_batch_norm: object) -> str:
    if not callable(fold_batch_norm):
        raise Wrong("fold_batch_norm should be a function of a layer and the batch-norm layer after it")
    torch.manual_seed(0)
    cases: list[tuple[str, nn.Module, nn.Module, tuple[int, ...]]] = [
        ("a convolution", nn.Conv2d(3, 8, kernel_size=3, padding=1), nn.BatchNorm2d(8), (4, 3, 10, 10)),
        ("a linear layer", nn.Linear(20, 12), nn.BatchNorm1d(12), (4, 20)),
        ("a convolution without bias", nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), (4, 3, 10, 10)),
    ]
    for what, layer, norm, shape in cases:
        layer, norm = _random_pair(layer, norm)
        x = torch.randn(shape)
        with torch.no_grad():
            expected = norm(layer(x))
            before = [t.clone() for t in (*layer.parameters(), *norm.parameters(), *norm.buffers())]
            folded = fold_batch_norm(layer, norm)
            after = [*layer.parameters(), *norm.parameters(), *norm.buffers()]
            if not all(torch.equal(a, b) for a, b in zip(before, after)):
                raise Wrong(
                    f"your function changed the weights of {what} or of its batch-norm layer: build new "
                    "parameters instead of changing the old ones in place"
                )
            if not isinstance(folded, nn.Module):
                raise Wrong(f"for {what} your function returned {type(folded).__name__}, not a layer")
            got = folded.eval()(x)
        if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-4, rtol=1e-4):
            raise Wrong(
                f"for {what} the folded layer does not compute what the layer and batch norm compute in "
                "evaluation mode: write the batch-norm formula with the running statistics for one output "
                "channel, then collect the factor of the layer's output and the constant (no bias: 0)"
            )
    return "convolutions and linear layers, with or without bias, fold exactly"
