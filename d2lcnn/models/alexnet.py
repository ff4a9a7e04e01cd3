"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012). `alexnet`, the first source's and d2l's form, for 224x224::

    Conv(96, 11x11, stride 4) - ReLU - MaxPool(3, 2)        # 96 x 54 x 54 -> 96 x 26 x 26
    Conv(256, 5x5, pad 2)     - ReLU - MaxPool(3, 2)        # 256 x 26 x 26 -> 256 x 12 x 12
    Conv(384, 3x3, pad 1) - ReLU - Conv(384) - ReLU - Conv(256) - ReLU - MaxPool(3, 2)  # 256 x 5 x 5
    Flatten - Linear(6400->4096) - ReLU - Dropout(0.5) - Linear(4096->4096) - ReLU - Dropout(0.5)
            - Linear(4096->classes)

`alexnet_paper`, the second source's, is closer to the 2012 paper: 227x227 input, local response
normalisation after conv1 and conv2, adaptive average pooling to 6x6, dropout before every linear layer,
N(0, 0.01) weights and biases of 1 in conv2, conv4 and conv5 (so the ReLUs start with positive inputs).
Neither splits the channels over two GPUs as the paper did.
"""

from __future__ import annotations

from torch import nn

from d2lcnn.models.base import Classifier
from d2lcnn.models.registry import register


class AlexNet(Classifier):
    """Five convolutions and three linear layers; `paper=True` gives the second source's form."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, paper: bool = False) -> None:
        super().__init__(num_classes, in_channels, input_size=227 if paper else 224, paper=paper)

        def lrn() -> list[nn.Module]:
            # The paper's n=5, k=2, alpha=1e-4, beta=0.75. PyTorch divides alpha by size, so the
            # paper's alpha is 5 x 1e-4 here.
            return [nn.LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2)] if paper else []

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 96, kernel_size=11, stride=4), nn.ReLU(), *lrn(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(), *lrn(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )  # fmt: skip
        if paper:
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))  # 227 px already gives 6 x 6
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(),
                nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
                nn.Dropout(0.5), nn.Linear(4096, num_classes),
            )  # fmt: skip
            self._init_as_in_paper()
        else:
            self.avgpool = None
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Linear(256 * 5 * 5, 4096), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(4096, num_classes),
            )  # fmt: skip

    def _init_as_in_paper(self) -> None:
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(layer.weight, mean=0.0, std=0.01)
                nn.init.zeros_(layer.bias)
        for i in (1, 3, 4):  # conv2, conv4, conv5
            nn.init.ones_(self.convs()[i].bias)

    def convs(self) -> list[nn.Conv2d]:
        """The five convolutions, in order."""
        return [m for m in self.features if isinstance(m, nn.Conv2d)]

    def forward(self, x):
        x = self.features(x)
        if self.avgpool is not None:
            x = self.avgpool(x)
        return self.classifier(x)


@register
def alexnet(num_classes: int = 10, in_channels: int = 3) -> AlexNet:
    """AlexNet as in the first source and d2l: no LRN, Linear(5*5*256 -> 4096). Input: C x 224 x 224."""
    return AlexNet(num_classes, in_channels, paper=False)


@register
def alexnet_paper(num_classes: int = 1000, in_channels: int = 3) -> AlexNet:
    """AlexNet as in the second source: LRN, 6x6 adaptive pool, N(0, 0.01) init. Input: C x 227 x 227."""
    return AlexNet(num_classes, in_channels, paper=True)
