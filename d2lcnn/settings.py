"""Training settings: `Settings`, every setting of `fit` once, validated when made; and `RECIPES`,
how each model trains by default (dataset, data and model options, settings) for a short run on a
CPU or one Colab GPU. Every value can be overridden: `d2lcnn train --help`, or `fit(..., lr=0.05)`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

from d2lcnn.errors import ConfigError, is_int, is_number, unknown_name
from d2lcnn.show import INITS

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "triangle", "constant")


@dataclass(frozen=True)
class Settings:
    """How `fit` trains. Fields marked `trajectory` shape the run: a resumed run must keep them."""

    epochs: int = 10
    lr: float = field(default=0.1, metadata={"trajectory": True})  # the peak of the schedule
    optimizer: str = field(default="sgd", metadata={"trajectory": True})  # "sgd" (Nesterov) or "adamw"
    momentum: float = field(default=0.9, metadata={"trajectory": True})
    nesterov: bool = field(default=True, metadata={"trajectory": True})
    weight_decay: float = field(default=5e-4, metadata={"trajectory": True})  # conv/linear weights only
    schedule: str = field(default="onecycle", metadata={"trajectory": True})  # see d2lcnn.train.schedule
    warmup: float = field(default=0.2, metadata={"trajectory": True})  # fraction of all steps
    label_smoothing: float = field(default=0.0, metadata={"trajectory": True})
    # learning-rate multipliers by module name, e.g. {"fc": 10.0} for a new head on a pretrained backbone
    lr_scale: dict = field(default_factory=dict, metadata={"trajectory": True})
    norm_lr_scale: float = field(default=1.0, metadata={"trajectory": True})  # lr multiplier of batch norms
    # set the first convolution to whiten patches of the training images, then freeze it (d2lcnn.whitening)
    whiten: bool = field(default=False, metadata={"trajectory": True})
    lookahead: bool = field(default=False, metadata={"trajectory": True})  # events.Lookahead: averaging
    seed: int = field(default=0, metadata={"trajectory": True})
    max_steps: int | None = None  # stop after that many optimizer steps (the schedule ends there)
    eval_every: int = 1  # epochs between evaluations (the last epoch is always evaluated)
    test_flip: bool = False  # evaluate on each image and its mirror image (where flips keep the class)
    test_shift: int = 0  # and on the images shifted by this many pixels, up-left and down-right
    device: str | None = None  # None: CUDA, then MPS, then the CPU
    precision: str = "auto"  # "auto", "bf16", "fp16" or "fp32" (see d2lcnn.runtime.pick_precision)
    channels_last: bool | None = None  # None: chosen for the model and device
    compile: bool = False  # model.compile() in place (torch >= 2.2); the first epoch is slower

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_scale", dict(self.lr_scale or {}))
        if self.optimizer not in OPTIMIZERS:
            raise unknown_name("optimizer", str(self.optimizer), OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise unknown_name("schedule", str(self.schedule), SCHEDULES)
        checks = [(name, getattr(self, name), rule) for name, rule in _RULES.items()]
        checks += [
            (f"lr_scale[{name!r}]", scale, _RULES["weight_decay"]) for name, scale in self.lr_scale.items()
        ]
        for name, value, (ok, what) in checks:
            if not ok(value):
                raise ConfigError(f"{name} must be {what}, got {value!r}.")

    def replace(self, **changes) -> Settings:
        """A copy with `changes` applied (validated like the original); unknown names are an error."""
        names = [f.name for f in fields(self)]
        for name in changes:
            if name not in names:
                raise unknown_name("setting", name, names)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """The settings as plain values (for a history or a checkpoint)."""
        return {
            f.name: (dict(v) if isinstance(v := getattr(self, f.name), dict) else v) for f in fields(self)
        }

    @classmethod
    def trajectory_fields(cls) -> list[str]:
        """The settings that a resumed run must share with the run it continues."""
        return [f.name for f in fields(cls) if f.metadata.get("trajectory")]


# What each numeric setting must be: (test, the words that say so in an error).
_RULES = {
    "epochs": (lambda v: is_int(v) and v >= 1, "a whole number >= 1"),
    "lr": (lambda v: is_number(v) and v > 0, "a finite number > 0 (try 0.1 for SGD, 1e-3 for AdamW)"),
    "momentum": (lambda v: is_number(v) and 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "warmup": (lambda v: is_number(v) and 0 <= v < 1, "a fraction of all steps in [0, 1)"),
    "label_smoothing": (lambda v: is_number(v) and 0 <= v < 1, "in [0, 1)"),
    "norm_lr_scale": (lambda v: is_number(v) and v > 0, "a finite number > 0"),
    "test_shift": (lambda v: is_int(v) and v >= 0, "a whole number of pixels >= 0 (1 for CIFAR-10)"),
    "seed": (lambda v: is_int(v) and v >= 0, "a whole number >= 0"),
    "max_steps": (lambda v: v is None or (is_int(v) and v >= 1), "None or a whole number >= 1"),
    "eval_every": (lambda v: is_int(v) and v >= 1, "a whole number >= 1 (epochs between evaluations)"),
}


# ----------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """How to train one model by default: dataset, data options, model options and `Settings`."""

    dataset: str
    settings: Settings
    batch_size: int = 256
    augment: bool = False
    resize: int | None = None  # None: the dataset's own size (or the model's, where it needs another)
    pad: int | None = None  # augment's random shifts, up to this many pixels (None: the dataset's own)
    model_options: dict = field(default_factory=dict)
    note: str = ""  # how this differs from d2l's chapter on the model
    init: str = "default"  # the initial weights: a kind of d2lcnn.show.init_weights (default: PyTorch's)

    def with_overrides(self, **changes) -> Recipe:
        """A copy with the given recipe fields or settings replaced; None values are ignored."""
        changes = {k: v for k, v in changes.items() if v is not None}
        own = {f.name for f in fields(self)} - {"settings"}
        settings = self.settings.replace(**{k: v for k, v in changes.items() if k not in own})
        recipe = dataclasses.replace(
            self, settings=settings, **{k: v for k, v in changes.items() if k in own}
        )
        for name, value in (("batch_size", recipe.batch_size), ("resize", recipe.resize or 1)):
            if not (is_int(value) and value >= 1):
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}.")
        if recipe.pad is not None and not (is_int(recipe.pad) and recipe.pad >= 0):
            raise ConfigError(f"pad must be a whole number of pixels >= 0, got {recipe.pad!r}.")
        if recipe.init not in INITS:
            raise unknown_name("initialisation", recipe.init, INITS)
        return recipe


def _recipe(dataset: str, *, batch_size: int = 256, augment: bool = False, resize: int | None = None,
            pad: int | None = None, model_options: dict | None = None, note: str = "",
            init: str = "default", **settings) -> Recipe:  # fmt: skip
    return Recipe(
        dataset, Settings(**settings), batch_size, augment, resize, pad, dict(model_options or {}), note, init
    )


# The first source trains VGG-11 on CIFAR-10; d2lcnn uses the small-image head and half width.
_VGG_CIFAR = _recipe(
    "cifar10", epochs=15, lr=0.05, augment=True, label_smoothing=0.1, test_flip=True,
    model_options={"head": "cifar", "batch_norm": True, "width": 0.5},
    note="d2l: 224 px, 1/4 width, no batch norm",
)  # fmt: skip
# The first source's ResNet-18 on CIFAR-10, with the CIFAR stem.
_RESNET_CIFAR = _recipe(
    "cifar10", epochs=15, lr=0.1, augment=True, label_smoothing=0.1, test_flip=True,
    model_options={"stem": "cifar"}, note="d2l: 96 px with the ImageNet stem",
)  # fmt: skip

# Wide, shallow networks for CIFAR-10: airbench94's recipe (KellerJordan/cifar10-airbench) in fit's
# settings. Its lr 11.5 / (1024 x (1 + 1 / (1 - momentum))) on a loss summed over the batch is 0.75 on
# fit's mean loss over 512 images; the weights shrink by lr x weight decay = 1e-3 a step as there;
# batch norm shifts learn 64x faster. Evaluating with six views per image takes about a quarter of an
# epoch's time on a CPU: every other epoch is enough.
_FAST_CIFAR = _recipe(
    "cifar10", epochs=15, eval_every=2, batch_size=512, augment=True, pad=2, lr=0.75, momentum=0.85,
    weight_decay=1.33e-3, schedule="triangle", warmup=0.23, label_smoothing=0.2, norm_lr_scale=64.0,
    whiten=True, lookahead=True, test_flip=True, test_shift=1,
)  # fmt: skip

RECIPES: dict[str, Recipe] = {
    # The source's LeNet: Tanh + average pooling, SGD.
    "lenet": _recipe("mnist", epochs=10, lr=0.1, batch_size=128, weight_decay=0.0, note="as in d2l"),
    # ReLU + max pool + batch norm, for Fashion-MNIST (bench/speed.py times it).
    "lenet_modern": _recipe(
        "fashion_mnist",
        epochs=8,
        lr=0.2,
        batch_size=128,
        label_smoothing=0.1,
        note="not in d2l: ReLU, max pooling and batch norm",
    ),  # fmt: skip
    # d2l's AlexNet chapter: Fashion-MNIST resized to 224.
    "alexnet": _recipe(
        "fashion_mnist", epochs=10, lr=0.01, batch_size=128, resize=224, init="xavier", note="as in d2l"
    ),
    # The second source trains on STL-10 at 227 px.
    "alexnet_paper": _recipe("stl10", epochs=30, lr=0.01, batch_size=128, resize=227, augment=True),
    "vgg11": _VGG_CIFAR,
    "vgg13": _VGG_CIFAR,
    "vgg16": _VGG_CIFAR.with_overrides(epochs=20),
    "vgg19": _VGG_CIFAR.with_overrides(epochs=20),
    "resnet18": _RESNET_CIFAR,
    "resnet34": _RESNET_CIFAR,
    # d2l's chapters on NiN, GoogLeNet, batch norm and DenseNet, all on Fashion-MNIST.
    # NiN and GoogLeNet stay at chance for long from PyTorch's initialisation (chapters 6 and 7).
    "nin": _recipe(
        "fashion_mnist", epochs=10, lr=0.05, batch_size=128, resize=224, init="kaiming", note="d2l: Xavier"
    ),
    "googlenet": _recipe(
        "fashion_mnist", epochs=10, lr=0.1, batch_size=128, resize=96, init="kaiming", note="d2l: Xavier"
    ),
    "lenet_bn": _recipe("fashion_mnist", epochs=10, lr=0.1, batch_size=256, note="as in d2l"),
    "densenet": _recipe("fashion_mnist", epochs=10, lr=0.1, batch_size=256, resize=96, note="as in d2l"),
    "fast_vgg": _FAST_CIFAR.with_overrides(note="not in d2l: VGG with a modern recipe"),
    "fast_resnet": _FAST_CIFAR.with_overrides(epochs=10, note="not in d2l: ResNet-9"),
}

# For a model that has no recipe above: plain SGD on Fashion-MNIST.
GENERIC_RECIPE = _recipe("fashion_mnist", epochs=1, lr=0.05, batch_size=128, note="no recipe: generic SGD")


def recipe_for(model: str, *, generic: bool = False) -> Recipe:
    """The default recipe of `model` (with `generic=True`, GENERIC_RECIPE for a model without one)."""
    if model in RECIPES:
        return RECIPES[model]
    if generic:
        return GENERIC_RECIPE
    raise unknown_name("model", model, RECIPES)
