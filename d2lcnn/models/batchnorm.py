"""Batch normalisation (Ioffe & Szegedy, 2015) written out step by step, and d2l's LeNet that uses it.

During training, a batch norm layer standardises each channel (or, after a linear layer, each feature)
with the mean and variance of the current minibatch, then scales and shifts it by two learned
parameters, gamma and beta: y = gamma * (x - mean) / sqrt(var + eps) + beta. Since those statistics
change from batch to batch, the layer also keeps running averages of them; in evaluation mode it uses
these instead, so one image's prediction does not depend on which other images share its batch.

`BatchNorm` computes exactly what torch's nn.BatchNorm1d / nn.BatchNorm2d compute, so the two can be
swapped, weights and all (see `lenet_bn(scratch=True)`). The details that have to match:

- the running averages follow torch's convention, running = (1 - momentum) * running + momentum * batch,
  with momentum=0.1: each new batch gets weight 0.1. The current d2l edition's scratch version uses the
  same formula and value; earlier editions (and Keras, MXNet) write momentum * running + (1 - momentum)
  * batch with momentum=0.9, which is the same average under the other name;
- normalisation divides by the biased batch variance (sum of squares / n), but the running variance is
  updated with the unbiased one (sum of squares / (n - 1)), where n counts values per channel
  (batch x height x width). d2l's scratch version uses the biased variance for both;
- eps = 1e-5; train or eval follows `model.train()` / `model.eval()` (d2l's version checks
  `torch.is_grad_enabled()` instead);
- gamma and beta are stored as `weight` and `bias`, and the running statistics as buffers, so the
  state_dict has nn.BatchNorm2d's keys and shapes.
"""

from __future__ import annotations

import torch
from torch import nn

from d2lcnn.models.lenet import LeNet, torch_batch_norm
from d2lcnn.models.registry import register


class BatchNorm(nn.Module):
    """Batch normalisation from scratch, for a linear layer's output (num_dims 2) or a convolution's (4).

    Args:
        num_features: features of the linear layer, or channels of the convolution, it follows.
        num_dims: 2 for input of shape (N, C), 4 for input of shape (N, C, H, W).
        eps: added to the variance before the square root, so that a constant channel does not divide
            by zero.
        momentum: the weight of the current batch in the running mean and variance.
    """

    def __init__(self, num_features: int, num_dims: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        if num_dims not in (2, 4):
            raise ValueError(
                f"num_dims must be 2 (after a linear layer) or 4 (after a convolution), got {num_dims!r}"
            )
        self.num_features = num_features
        self.num_dims = num_dims
        self.eps = eps
        self.momentum = momentum
        # gamma and beta, under nn.BatchNorm's names so that state_dicts load either way.
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        # Unused here (torch reads it only when momentum is None); kept so the state_dict keys match.
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    @property
    def gamma(self) -> nn.Parameter:
        """The learned scale (the paper's gamma); the same tensor as `weight`."""
        return self.weight

    @property
    def beta(self) -> nn.Parameter:
        """The learned shift (the paper's beta); the same tensor as `bias`."""
        return self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.num_dims:
            raise ValueError(f"expected {self.num_dims}D input (got {x.dim()}D input)")
        # Statistics are per channel: averaged over the batch, and over height and width for images.
        axes = (0,) if self.num_dims == 2 else (0, 2, 3)
        shape = (1, -1) if self.num_dims == 2 else (1, -1, 1, 1)  # broadcasts one value per channel
        if self.training:
            n = x.numel() // x.shape[1]  # values per channel
            if n < 2:
                raise ValueError(
                    f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}"
                )
            mean = x.mean(dim=axes)
            var = ((x - mean.reshape(shape)) ** 2).mean(dim=axes)  # biased: divides by n
            with torch.no_grad():
                m = self.momentum
                self.running_mean.copy_((1 - m) * self.running_mean + m * mean)
                self.running_var.copy_((1 - m) * self.running_var + m * var * n / (n - 1))
                self.num_batches_tracked.add_(1)
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps)
        return self.gamma.reshape(shape) * x_hat + self.beta.reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_dims={self.num_dims}, eps={self.eps}, momentum={self.momentum}"


@register
def lenet_bn(num_classes: int = 10, in_channels: int = 1, scratch: bool = False) -> LeNet:
    """d2l's LeNet with batch norm: Sigmoid, average pools, BN before each activation. Input: C x 28 x 28.

    On the source LeNet's layout (first convolution padded, so 16 x 5 x 5 reaches the first linear
    layer). `scratch=True` uses the from-scratch `BatchNorm`, otherwise nn.BatchNorm2d/1d; both give
    the same state_dict keys and, from the same weights, the same outputs.
    """
    norm_layer = BatchNorm if scratch else torch_batch_norm
    return LeNet(num_classes, in_channels, nn.Sigmoid, nn.AvgPool2d, batch_norm=True, norm_layer=norm_layer)
