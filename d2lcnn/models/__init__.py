"""The models of the book, one file per family, all reachable through `create(name, ...)`."""

from d2lcnn.models import alexnet, lenet, resnet, vgg  # noqa: F401  (each registers its builders)
from d2lcnn.models.alexnet import AlexNet
from d2lcnn.models.base import Classifier, accepted_sizes
from d2lcnn.models.lenet import LeNet
from d2lcnn.models.registry import create, list_models, model_doc
from d2lcnn.models.resnet import ResidualBlock, ResNet
from d2lcnn.models.vgg import VGG, vgg_block

__all__ = [
    "AlexNet", "Classifier", "LeNet", "ResNet", "ResidualBlock", "VGG",
    "accepted_sizes", "create", "list_models", "model_doc", "vgg_block",
]  # fmt: skip
