"""Patch whitening: a first convolution whose weights are computed from the data, not learned.

Neighbouring pixels are strongly correlated, so the first layer of a network spends its early steps
learning to undo that. Whitening does it at once (Coates, Lee & Ng 2011; David Page's "bag of tricks"
ResNet-9 and airbench94 use it for fast CIFAR-10): the filters are the eigenvectors of the
covariance of k x k patches of training images, each divided by the square root of its eigenvalue,
so the layer's outputs are uncorrelated with unit variance. The weights are then frozen.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from d2lcnn.errors import ConfigError

EPS = 5e-4  # added to each eigenvalue: the faintest directions are scaled by at most 1 / sqrt(EPS) = 45
IMAGES = 5_000  # training images whose patches are used (airbench94's number)


def patches(images: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """Every kernel-sized patch (stride 1) of NCHW `images`, one per row: (count, C * kh * kw)."""
    kh, kw = kernel
    windows = images.unfold(2, kh, 1).unfold(3, kw, 1)  # N, C, H', W', kh, kw
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, images.shape[1] * kh * kw)


@torch.no_grad()
def whiten_(conv: nn.Conv2d, images: torch.Tensor, eps: float = EPS) -> nn.Conv2d:
    """Set `conv` to whiten the patches of `images` (normalised float NCHW), freeze its weight and
    zero its bias (which stays trainable). Returns `conv`.

    `conv` needs 2 * C * kh * kw outputs: the first half are the whitening filters, the second half
    their negatives, so that an activation after the layer keeps both signs of each direction.
    """
    c, (kh, kw) = conv.in_channels, conv.kernel_size
    size = c * kh * kw
    if conv.out_channels != 2 * size or conv.groups != 1:
        raise ConfigError(
            f"Whitening needs a first convolution with 2 x {c} x {kh} x {kw} = {2 * size} outputs, "
            f"got {conv.out_channels}: build it as nn.Conv2d({c}, {2 * size}, {conv.kernel_size})."
        )
    if images.ndim != 4 or images.shape[1] != c or not images.is_floating_point():
        raise ConfigError(
            f"Whitening needs normalised float images shaped (N, {c}, H, W); got {images.dtype} "
            f"{tuple(images.shape)}."
        )
    rows = patches(images.detach().cpu().double().contiguous(), (kh, kw))
    eigenvalues, eigenvectors = torch.linalg.eigh(rows.T @ rows / len(rows))
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)  # strongest first
    filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]
    filters = filters.reshape(size, c, kh, kw)
    conv.weight.copy_(torch.cat([filters, -filters]))
    conv.weight.requires_grad_(False)
    if conv.bias is not None:
        conv.bias.zero_()
    return conv


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The model's first 2-D convolution (in the order of its modules)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ConfigError(f"Whitening needs a convolution, and {type(model).__name__} has none.")
    return conv


def whiten_first_conv(
    model: nn.Module, batches: Iterable, count: int = IMAGES, to_input=lambda x: x
) -> nn.Conv2d:
    """Whiten the model's first convolution from the first `count` images of `batches` ((images,
    labels) pairs; `to_input` prepares a batch as the model would see it). Returns that layer."""
    taken, seen = [], 0
    for images, _ in batches:
        taken.append(to_input(images).float().cpu())
        seen += len(images)
        if seen >= count:
            break
    if not taken:
        raise ConfigError("Whitening needs training images, and the loader yielded none.")
    return whiten_(first_conv(model), torch.cat(taken)[:count])
