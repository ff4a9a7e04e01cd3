"""Batch normalisation (Ioffe & Szegedy, 2015) written out step by step, and d2l's LeNet that uses it.

In training, each channel (or feature, after a linear layer) is standardised with the mean and variance
of the minibatch, then scaled and shifted by two learned parameters: y = gamma * (x - mean) /
sqrt(var + eps) + beta. Evaluation mode uses running averages of those statistics instead, so a
prediction does not depend on the other images in the batch.

`BatchNorm` computes exactly what torch's nn.BatchNorm1d / nn.BatchNorm2d compute, so the two can be
swapped, weights and all (see `lenet_bn(scratch=True)`). The details that have to match:

- the running averages follow torch's convention, running = (1 - momentum) * running + momentum * batch
  with momentum=0.1, as d2l's scratch version does (Keras, MXNet and older d2l editions call 0.9 the
  momentum: the same average, the other weight named);
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
    """Batch normalisation from scratch after a linear layer (num_dims 2: input (N, C)) or a convolution
    (num_dims 4: input (N, C, H, W)) with `num_features` outputs. `eps` keeps a constant channel from
    dividing by zero; `momentum` is the weight of the current batch in the running statistics."""

    def __init__(self, num_features: int, num_dims: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        if num_dims not in (2, 4):
            raise ValueError(f"num_dims={num_dims!r}: use 2 after a linear layer, 4 after a convolution")
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
                raise ValueError(  # torch's own message
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

    On the source LeNet's layout (16 x 5 x 5 reaches the first linear layer). `scratch=True` uses the
    from-scratch `BatchNorm`, else nn.BatchNorm2d/1d: same state_dict keys, same outputs from same weights.
    """
    norm_layer = BatchNorm if scratch else torch_batch_norm
    return LeNet(num_classes, in_channels, nn.Sigmoid, nn.AvgPool2d, batch_norm=True, norm_layer=norm_layer)
