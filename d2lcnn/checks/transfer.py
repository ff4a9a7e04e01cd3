"""Self-checks of chapter 5 (transfer learning)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..show import count_params
from . import Wrong, expect_number, on_meta, register


def _top(name: str) -> str:
    """The top-level module a parameter belongs to: 'layer3' for 'layer3.0.conv1.weight'."""
    return name.split(".", 1)[0]


def expect_trainable(model: object, should_train: Callable[[str, nn.Module], bool], *, look_at: str) -> int:
    """Raise `Wrong` unless exactly the parameters for which `should_train(name, owner)` holds have
    requires_grad on; the message names the top-level modules that are wrong. Returns how many train."""
    if not isinstance(model, nn.Module) or not isinstance(getattr(model, "fc", None), nn.Linear):
        raise Wrong("the answer should be the chapter's ResNet-18 with its new head `fc`")
    owners = dict(model.named_modules())
    too_many, too_few = set(), set()
    for name, p in model.named_parameters():
        wanted = should_train(name, owners[name.rpartition(".")[0]])
        if p.requires_grad and not wanted:
            too_many.add(_top(name))
        elif wanted and not p.requires_grad:
            too_few.add(_top(name))
    if too_many:
        raise Wrong(f"some parameters of {', '.join(sorted(too_many))} still train; {look_at}")
    if too_few:
        raise Wrong(f"some parameters of {', '.join(sorted(too_few))} are frozen; {look_at}")
    return count_params(model, trainable=True)


@register("transfer-unfreeze")
def last_two_stages(model: object) -> str:
    trainable = expect_trainable(
        model,
        lambda name, owner: _top(name) in ("layer3", "layer4", "fc"),
        look_at="freeze the whole model first, then unfreeze layer3, layer4 and the head",
    )
    return f"{trainable:,} parameters train: the last two stages and the head"


@register("transfer-bn")
def batch_norms(model: object) -> str:
    trainable = expect_trainable(
        model,
        lambda name, owner: (
            isinstance(owner, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) or _top(name) == "fc"
        ),
        look_at="freeze everything, then unfreeze the head and every nn.BatchNorm2d (the shortcuts' too)",
    )
    return f"{trainable:,} parameters train: every batch norm's scale and shift, and the head"


@register("transfer-imagenet")
def imagenet_counts(frozen_trainable: object, fine_tuned_trainable: object) -> str:
    model = on_meta("resnet18", num_classes=5)  # full width, ImageNet stem, the five-way head
    imagenet = count_params(on_meta("resnet18", num_classes=1000))
    head = count_params(model.fc)
    expect_number(
        frozen_trainable,
        head,
        what="the frozen run's count of trainable parameters",
        look_at="only the new head trains: a linear layer from the 512 features to 5 classes, with biases",
    )
    expect_number(
        fine_tuned_trainable,
        count_params(model),
        what="the fine-tuned run's count of trainable parameters",
        look_at=f"everything trains: ResNet-18's {imagenet:,} parameters with its 1000-way head "
        "replaced by the five-way one",
    )
    return "both counts agree with the model"
