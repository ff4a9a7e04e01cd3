"""The models of the book, one file per family, all reachable through `create(name, ...)`."""

# ruff: noqa: F401  (the names below are re-exported; importing a family's module registers its builders)
from d2lcnn.models.alexnet import AlexNet
from d2lcnn.models.base import Classifier, accepted_sizes
from d2lcnn.models.batchnorm import BatchNorm
from d2lcnn.models.densenet import DenseBlock, DenseNet, transition_block
from d2lcnn.models.fast_resnet import FastResNet
from d2lcnn.models.fast_vgg import FastVGG
from d2lcnn.models.googlenet import GoogLeNet, Inception
from d2lcnn.models.lenet import LeNet
from d2lcnn.models.nin import NiN, nin_block
from d2lcnn.models.registry import create, list_models, model_doc
from d2lcnn.models.resnet import PreActivationBlock, ResidualBlock, ResNet
from d2lcnn.models.vgg import VGG, vgg_block
