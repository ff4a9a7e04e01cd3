"""Default training recipes: the dataset, model options and `fit` settings each model trains with
when the command line is given only `--model`.

The numbers are for a short run on a CPU or one Colab GPU; every one can be overridden on the
command line (`d2lcnn train --help`) or by passing other values to `fit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from d2lcnn.errors import unknown_name


@dataclass(frozen=True)
class Recipe:
    """How to train one model: data, model options and optimiser settings."""

    dataset: str
    epochs: int
    lr: float
    batch_size: int = 256
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: bool = False
    test_flip: bool = False  # evaluate on each image and its mirror image (datasets where flips are valid)
    resize: int | None = None
    model_options: dict = field(default_factory=dict)

    def with_overrides(self, **changes) -> Recipe:
        """A copy with the given fields replaced; None values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# The first source trains VGG-11 on CIFAR-10; d2lcnn uses the small-image head and half width.
_VGG_CIFAR = Recipe(
    "cifar10", epochs=15, lr=0.05, augment=True, label_smoothing=0.1, test_flip=True,
    model_options={"head": "cifar", "batch_norm": True, "width": 0.5},
)  # fmt: skip
# The first source's ResNet-18 on CIFAR-10, with the CIFAR stem.
_RESNET_CIFAR = Recipe(
    "cifar10", epochs=15, lr=0.1, augment=True, label_smoothing=0.1, test_flip=True,
    model_options={"stem": "cifar"},
)  # fmt: skip

RECIPES: dict[str, Recipe] = {
    # The source's LeNet: Tanh + average pooling, SGD.
    "lenet": Recipe("mnist", epochs=10, lr=0.1, batch_size=128, weight_decay=0.0),
    # ReLU + max pool + batch norm, for Fashion-MNIST (bench/speed.py times it).
    "lenet_modern": Recipe("fashion_mnist", epochs=8, lr=0.2, batch_size=128, label_smoothing=0.1),
    # d2l's AlexNet chapter: Fashion-MNIST resized to 224.
    "alexnet": Recipe("fashion_mnist", epochs=10, lr=0.01, batch_size=128, resize=224),
    # The second source trains on STL-10 at 227 px.
    "alexnet_paper": Recipe("stl10", epochs=30, lr=0.01, batch_size=128, resize=227, augment=True),
    "vgg11": _VGG_CIFAR,
    "vgg13": _VGG_CIFAR,
    "vgg16": replace(_VGG_CIFAR, epochs=20),
    "vgg19": replace(_VGG_CIFAR, epochs=20),
    "resnet18": _RESNET_CIFAR,
    "resnet34": _RESNET_CIFAR,
    # d2l's chapters on NiN, GoogLeNet, batch norm and DenseNet, all on Fashion-MNIST.
    "nin": Recipe("fashion_mnist", epochs=10, lr=0.05, batch_size=128, resize=224),
    "googlenet": Recipe("fashion_mnist", epochs=10, lr=0.1, batch_size=128, resize=96),
    "lenet_bn": Recipe("fashion_mnist", epochs=10, lr=0.1, batch_size=256),
    "densenet": Recipe("fashion_mnist", epochs=10, lr=0.1, batch_size=256, resize=96),
}


def recipe_for(model: str) -> Recipe:
    """The default recipe of `model`."""
    if model not in RECIPES:
        raise unknown_name("model", model, RECIPES)
    return RECIPES[model]
