"""The models of the book, one file per family, all reachable through `create(name, ...)`."""

# Importing a family's module registers its builders.
from d2lcnn.models import alexnet, batchnorm, densenet, googlenet, lenet, nin, resnet, vgg  # noqa: F401
from d2lcnn.models.alexnet import AlexNet
from d2lcnn.models.base import Classifier, accepted_sizes
from d2lcnn.models.batchnorm import BatchNorm
from d2lcnn.models.densenet import DenseBlock, DenseNet, transition_block
from d2lcnn.models.googlenet import GoogLeNet, Inception
from d2lcnn.models.lenet import LeNet
from d2lcnn.models.nin import NiN, nin_block
from d2lcnn.models.registry import create, list_models, model_doc
from d2lcnn.models.resnet import ResidualBlock, ResNet
from d2lcnn.models.vgg import VGG, vgg_block

__all__ = [
    "AlexNet", "BatchNorm", "Classifier", "DenseBlock", "DenseNet", "GoogLeNet", "Inception", "LeNet",
    "NiN", "ResNet", "ResidualBlock", "VGG",
    "accepted_sizes", "create", "list_models", "model_doc", "nin_block", "transition_block", "vgg_block",
]  # fmt: skip
