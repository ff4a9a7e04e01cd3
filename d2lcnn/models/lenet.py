"""LeNet (LeCun et al., 1998) as in the first source write-up, for 1x28x28 images (MNIST, Fashion-MNIST)::

    Conv(1->6, 5x5, pad 2) - Tanh - AvgPool(2)      # 6 x 28 x 28 -> 6 x 14 x 14
    Conv(6->16, 5x5)       - Tanh - AvgPool(2)      # 16 x 10 x 10 -> 16 x 5 x 5
    Flatten - Linear(400->120) - Tanh - Linear(120->84) - Tanh - Linear(84->10)

The modern variant swaps Tanh for ReLU and average pooling for max pooling, and can add batch norm
after every convolution and hidden linear layer (Ioffe & Szegedy, 2015).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from d2lcnn.models.base import Classifier
from d2lcnn.models.registry import register


def torch_batch_norm(num_features: int, num_dims: int) -> nn.Module:
    """nn.BatchNorm2d after a convolution (num_dims 4), nn.BatchNorm1d after a linear layer (num_dims 2)."""
    return nn.BatchNorm2d(num_features) if num_dims == 4 else nn.BatchNorm1d(num_features)


class LeNet(Classifier):
    """LeNet-5: two conv/pool stages, then three linear layers. With `batch_norm`, `norm_layer(features,
    num_dims)` builds each normalisation layer (num_dims 4 after a convolution, 2 after a linear layer)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        activation: type[nn.Module] = nn.Tanh,
        pool: type[nn.Module] = nn.AvgPool2d,
        batch_norm: bool = False,
        norm_layer: Callable[[int, int], nn.Module] = torch_batch_norm,
    ) -> None:
        super().__init__(num_classes, in_channels, input_size=28, batch_norm=batch_norm)

        def block(layer: nn.Module, width: int, num_dims: int) -> list[nn.Module]:
            """`layer`, then batch norm if asked for, then the activation."""
            return [layer, norm_layer(width, num_dims), activation()] if batch_norm else [layer, activation()]

        self.features = nn.Sequential(
            *block(nn.Conv2d(in_channels, 6, kernel_size=5, padding=2), 6, 4),
            pool(kernel_size=2, stride=2),
            *block(nn.Conv2d(6, 16, kernel_size=5), 16, 4),
            pool(kernel_size=2, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            *block(nn.Linear(16 * 5 * 5, 120), 120, 2),
            *block(nn.Linear(120, 84), 84, 2),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register
def lenet(num_classes: int = 10, in_channels: int = 1) -> LeNet:
    """LeNet as in the first source: Tanh and average pooling. Input: C x 28 x 28."""
    return LeNet(num_classes, in_channels)


@register
def lenet_modern(num_classes: int = 10, in_channels: int = 1, batch_norm: bool = True) -> LeNet:
    """LeNet with ReLU, max pooling and (by default) batch normalisation. Input: C x 28 x 28."""
    return LeNet(num_classes, in_channels, nn.ReLU, nn.MaxPool2d, batch_norm)
