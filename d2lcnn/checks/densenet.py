"""Self-checks of chapter 9 (DenseNet)."""

from __future__ import annotations

from torch import nn

from ..models import DenseBlock, DenseNet, create, transition_block
from ..trace import trace
from . import Wrong, expect_model, expect_number, on_meta, register


@register("densenet-121-layout")
def layout_121(into_last: object, out_of_last: object) -> str:
    last = on_meta("densenet", arch=(6, 12, 24, 16)).blocks.dense4
    expect_number(
        into_last,
        last.out_channels - len(last.convs) * last.convs[0][2].out_channels,
        what="into_last, the channels entering the last dense block,",
        look_at="follow the channels block by block: a dense block adds its number of convolutions times 32, "
        "a transition halves (integer division)",
    )
    expect_number(
        out_of_last,
        last.out_channels,
        what="out_of_last, the channels the last dense block outputs,",
        look_at="the last block has 16 convolutions, each adding 32 channels to what enters it",
    )
    return "with longer blocks the channels grow much faster than in d2l's four blocks of four"


def bottleneck_block(num_convs: int, in_channels: int, growth_rate: int) -> DenseBlock:
    """A dense block of DenseNet-B layers: BN, ReLU, 1x1 conv to 4k, BN, ReLU, 3x3 conv to k (no biases)."""
    block = DenseBlock(num_convs, in_channels, growth_rate)
    k = growth_rate
    block.convs = nn.Sequential(
        *(
            nn.Sequential(
                nn.BatchNorm2d(c),
                nn.ReLU(),
                nn.Conv2d(c, 4 * k, kernel_size=1, bias=False),
                nn.BatchNorm2d(4 * k),
                nn.ReLU(),
                nn.Conv2d(4 * k, k, kernel_size=3, padding=1, bias=False),
            )  # fmt: skip
            for c in (in_channels + i * k for i in range(num_convs))
        )
    )
    return block


@register("densenet-bottleneck")
def bottleneck(block_class: object) -> str:
    if not (isinstance(block_class, type) and issubclass(block_class, nn.Module)):
        raise Wrong("BottleneckDenseBlock should be a class (a subclass of DenseBlock), not an instance")
    block = block_class(6, 64, 32)
    expected = bottleneck_block(6, 64, 32)
    if getattr(block, "out_channels", None) != expected.out_channels:
        raise Wrong("its out_channels should say how many channels the block outputs, as DenseBlock's does")
    return expect_model(
        block,
        expected,
        (1, 64, 14, 14),
        look_at="BottleneckDenseBlock(6, 64, 32) should hold six bottleneck_layer(64 + i * 32, 32), "
        "concatenating each one's output to its input as DenseBlock does",
    )


def compressed(compression: float, arch: tuple[int, ...] = (4, 4, 4, 4), growth_rate: int = 32) -> DenseNet:
    """d2l's DenseNet whose transitions keep int(compression * channels) channels. (Not an option of
    DenseNet itself: writing it is the exercise.)"""
    model = DenseNet(arch, growth_rate=growth_rate)
    channels = model.stem[0].out_channels
    model.blocks = nn.Sequential()
    for i, num_convs in enumerate(arch, start=1):
        dense = DenseBlock(num_convs, channels, growth_rate)
        model.blocks.add_module(f"dense{i}", dense)
        channels = dense.out_channels
        if i < len(arch):
            model.blocks.add_module(f"trans{i}", transition_block(channels, int(compression * channels)))
            channels = int(compression * channels)
    model.head[0] = nn.BatchNorm2d(channels)
    model.head[4] = nn.Linear(channels, model.head[4].out_features)
    return model


@register("densenet-compression")
def compression(compressed_densenet: object) -> str:
    if not callable(compressed_densenet):
        raise Wrong("compressed_densenet should be a function of the compression that returns a network")
    for theta in (1.0, 0.25):
        expect_model(
            compressed_densenet(theta),
            compressed(theta),
            (1, 1, 96, 96),
            look_at=f"with compression {theta}, each transition keeps int({theta} x its input channels) and "
            "the head's batch norm and linear layer read what the last dense block outputs",
        )
    return "both variants have the layers asked for"


@register("densenet-size")
def smallest_side(side: object) -> str:
    def last_map(size: int) -> int:
        rows = trace(create("densenet", width=0.5), (1, size, size)).rows
        return next(r.output_shape[-1] for r in rows if r.name == "blocks.dense4")

    expected = next(size for size in range(29, 200) if last_map(size) >= 2)
    expect_number(
        side,
        expected,
        what="the smallest side",
        look_at="follow one side through the stem (convolution: floor((n + 2 x 3 - 7) / 2) + 1, max pool: "
        "floor((n + 2 - 3) / 2) + 1) and three halvings; trace the model at sizes around your answer",
    )
    return "any smaller image leaves 1x1 maps in the last dense block"


@register("densenet-bias")
def conv_biases(count: object) -> str:
    model = create("densenet")
    expected = sum(m.bias.numel() for m in model.modules() if isinstance(m, nn.Conv2d) and m.bias is not None)
    expect_number(
        count,
        expected,
        what="the number of convolution biases",
        look_at="count one bias per output channel of every convolution: the stem's, the 16 in the dense "
        "blocks and the 3 in the transitions",
    )
    return "all of them feed batch-norm layers only, so none of them changes what the network computes"
