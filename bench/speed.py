"""Speed bench: the d2l 1.0.3 package's `train_ch6` against `d2lcnn.fit` on the same models and data,
then the fast CIFAR-10 recipes (`d2lcnn train --model fast_vgg|fast_resnet`) as one command each.

    python bench/speed.py                         # full mode (~35 min on 2 quiet cores), writes
                                                  # bench/results/speed.md
    python bench/speed.py --only lenet,fast_vgg   # some of the models
    python bench/speed.py --quick --out /tmp/speed.md   # a few steps on tiny subsets (CI)

bench/README.md says what each side does and what each column measures. Every configuration runs in
a process of its own (`d2lcnn.worker`), so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from d2lcnn.errors import ConfigError, D2LCNNError, DataNotFoundError, unknown_name
from d2lcnn.files import atomic_write
from d2lcnn.worker import run_in_process

if TYPE_CHECKING:  # torch is imported where it is used, so errors in the arguments come fast
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path("bench/results/speed.md")
COMPARED = ("lenet", "alexnet", "resnet18")  # each trained by d2l's train_ch6 and by fit
FAST = ("fast_vgg", "fast_resnet")  # each trained by its CLI recipe on CIFAR-10
MODELS = COMPARED + FAST
SIDES = ("baseline", "d2lcnn")
COLUMNS = (
    "Model", "Side", "Run", "Examples/s", "d2lcnn / baseline", "Time to acc", "Final acc",
    "Peak RSS (MB)", "GFLOP/s", "% of bf16 peak",
)  # fmt: skip
D2L_WORKERS = 4  # d2l's get_dataloader_workers(), whatever the number of cores
LENET_TARGET_ACC, LENET_TARGET_SECONDS = 0.90, 75.0
SPEEDUP_TARGET, PEAK_SHARE_TARGET = 3.0, 0.40
# The CLI recipes timed as a user runs them: the command, and its targets as (accuracy, seconds of the
# whole command) pairs, the first the aim and the others the least it should reach.
CLI_RECIPES = {
    "lenet": ["train", "--model", "lenet_modern", "--dataset", "fashion_mnist"],
    "fast_vgg": ["train", "--model", "fast_vgg", "--dataset", "cifar10"],
    "fast_resnet": ["train", "--model", "fast_resnet", "--dataset", "cifar10"],
}
FAST_TARGETS = {"fast_vgg": [(0.94, 900.0), (0.93, 900.0)], "fast_resnet": [(0.91, 600.0), (0.90, 300.0)]}


@dataclass(frozen=True)
class Workload:
    """One model's benchmark: data, batch size, learning rates and how long each side trains."""

    title: str
    dataset: str
    resize: int | None
    batch_size: int
    baseline_lr: float  # d2l's chapter
    d2lcnn_lr: float  # fit's peak learning rate (the CLI recipe's, where the model has one)
    epochs: int
    steps: int | None  # a fixed number of optimizer steps; None: whole epochs
    train_per_class: int | None = None  # class-balanced subsets (same images on both sides)
    test_per_class: int | None = None

    def epochs_for(self, steps_per_epoch: int) -> int:
        """The epochs to run: the workload's, or as many as its fixed number of steps needs."""
        return self.epochs if self.steps is None else math.ceil(self.steps / steps_per_epoch)

    @property
    def side(self) -> int:
        """The side of the images the model sees."""
        from d2lcnn.data import dataset_info

        return self.resize or dataset_info(self.dataset).image_size


FULL = {
    # d2l's LeNet chapter. fit's Nesterov momentum 0.9 at lr 0.1 takes steps the size of plain
    # SGD at lr 1 (lr / (1 - momentum)), close to d2l's 0.9.
    "lenet": Workload("LeNet", "fashion_mnist", None, 256, 0.9, 0.1, epochs=10, steps=None),
    "alexnet": Workload(
        "AlexNet", "fashion_mnist", 224, 128, 0.01, 0.01, epochs=1, steps=40, test_per_class=200
    ),
    # ResNet-18 from Xavier init: d2lcnn at lr 0.005 takes steps the size of d2l's plain SGD at 0.05.
    # (At lr 0.1, twenty times larger steps, 30 steps ended at 12.2% against the baseline's 15.9%.)
    "resnet18": Workload(
        "ResNet-18", "cifar10", None, 256, 0.05, 0.005, epochs=1, steps=30, test_per_class=200
    ),
}
# d2l's train_ch6 needs 5 batches or more an epoch (it plots every len(train_iter) // 5 batches).
QUICK = {
    "lenet": replace(FULL["lenet"], batch_size=32, epochs=2, train_per_class=16, test_per_class=5),
    "alexnet": replace(FULL["alexnet"], batch_size=8, steps=5, train_per_class=4, test_per_class=1),
    "resnet18": replace(FULL["resnet18"], batch_size=16, steps=5, train_per_class=8,
                        test_per_class=2),
}  # fmt: skip
QUICK_CLI = ["--epochs", "2", "--train-per-class", "20", "--test-per-class", "5", "--batch-size", "64"]


def workloads(quick: bool) -> dict[str, Workload]:
    """The workloads of quick or full mode, by model name."""
    return QUICK if quick else FULL


# ----------------------------------------------------------------------------- the d2l baseline


class CountedBatches:
    """A loader's first `max_steps` batches (all if None), counting the examples they hold; its len()
    is what train_ch6 reads to place the points of its plot."""

    def __init__(self, loader, max_steps: int | None) -> None:
        self.loader, self.max_steps, self.examples = loader, max_steps, 0

    def __len__(self) -> int:
        return min(len(self.loader), self.max_steps or len(self.loader))

    def __iter__(self):
        for _, (x, y) in zip(range(len(self)), self.loader):
            self.examples += len(y)
            yield x, y


def d2l_train_ch6(
    net: nn.Module, train_iter: DataLoader, test_iter: DataLoader, num_epochs: int, lr: float,
    max_steps: int | None = None,
) -> dict:  # fmt: skip
    """The d2l 1.0.3 package's own `train_ch6` (its Xavier init, SGD, loop, live plot and
    `evaluate_accuracy_gpu`), on the CPU, timed from outside; `max_steps` cuts its one epoch short.

    Returns the examples and seconds of training (data loading included, evaluation excluded) and,
    per epoch, the cumulative wall-clock seconds (evaluation included) and the test accuracy.
    """
    import io

    import torch

    try:
        from d2l import torch as d2l
    except ImportError:
        raise ConfigError(
            "The baseline is the d2l package itself: `pip install -r bench/requirements.txt` "
            "(`make setup` does it)."
        ) from None
    evaluations: list[tuple[float, float, float]] = []  # (end, seconds, accuracy) of each one
    evaluate = d2l.evaluate_accuracy_gpu

    def timed_evaluate(net, data_iter, device=None) -> float:
        start = time.perf_counter()
        acc = evaluate(net, data_iter, device)
        evaluations.append((time.perf_counter(), time.perf_counter() - start, acc))
        return acc

    batches = CountedBatches(train_iter, max_steps)
    d2l.evaluate_accuracy_gpu = timed_evaluate  # train_ch6 looks it up in its module at each call
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its plot's and summary's prints
            d2l.train_ch6(net, batches, test_iter, num_epochs, lr, torch.device("cpu"))
    finally:
        d2l.evaluate_accuracy_gpu = evaluate
    total = time.perf_counter() - start
    curve = [(end - start, acc) for end, _, acc in evaluations]
    train_seconds = total - sum(seconds for _, seconds, _ in evaluations)
    return {"steps": len(batches) * num_epochs, "examples": batches.examples, "train_seconds": train_seconds,
            "curve": curve}  # fmt: skip


class PILArrays:
    """uint8 NHWC arrays as (transformed PIL image, label) pairs, as torchvision's CIFAR10 gives."""

    def __init__(self, images, labels, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def d2l_datasets(work: Workload) -> tuple[Dataset, Dataset]:
    """Train and test datasets with d2l's per-sample transforms: Resize (if any), ToTensor."""
    import torchvision
    from torch.utils.data import Subset
    from torchvision import transforms

    from d2lcnn.data import balanced_subset, data_root, load_arrays

    trans = [transforms.ToTensor()]
    if work.resize:
        trans.insert(0, transforms.Resize(work.resize))
    trans = transforms.Compose(trans)
    if work.dataset == "fashion_mnist":
        try:
            train, test = (
                torchvision.datasets.FashionMNIST(str(data_root()), train=split, transform=trans)
                for split in (True, False)
            )
        except RuntimeError:
            raise DataNotFoundError(
                "The baseline reads Fashion-MNIST through torchvision, which needs the four "
                "uncompressed idx files in <data root>/FashionMNIST/raw. Unpack them with "
                "`python -m d2lcnn data import /usr/share/datasets/fashion-mnist`."
            ) from None
        train_labels, test_labels = train.targets.numpy(), test.targets.numpy()
    else:  # torchvision's CIFAR10 layout is not here: the same arrays through the same transforms
        arrays = load_arrays(work.dataset)
        train = PILArrays(arrays.train_images, arrays.train_labels, trans)
        test = PILArrays(arrays.test_images, arrays.test_labels, trans)
        train_labels, test_labels = arrays.train_labels, arrays.test_labels
    # The subsets d2lcnn.data.load(train_per_class=..., seed=0) takes, so both sides see the same.
    if work.train_per_class:
        train = Subset(train, balanced_subset(train_labels, work.train_per_class, seed=0).tolist())
    if work.test_per_class:
        test = Subset(test, balanced_subset(test_labels, work.test_per_class, seed=0).tolist())
    return train, test


def build_model(name: str) -> nn.Module:
    """The architecture both sides train, built from a fixed seed: the d2l package's `LeNet` and
    `resnet18` (CIFAR stem), and d2lcnn's `alexnet` (d2l's chapter defines AlexNet in the notebook,
    not in the package). Both sides then draw d2l's Xavier init from the same random state.
    """
    import torch

    from d2lcnn.models import create

    torch.manual_seed(0)
    if name == "alexnet":
        return create("alexnet", in_channels=1)
    from d2l import torch as d2l

    model, shape = (d2l.LeNet(), (1, 1, 28, 28)) if name == "lenet" else (d2l.resnet18(10, 3), (1, 3, 32, 32))
    with torch.no_grad():
        model.eval()(torch.zeros(shape))  # sizes d2l's lazy layers
    model.name = f"d2l.{type(model).__name__ if name == 'lenet' else 'resnet18'}"
    return model.train()


def traced(name: str, work: Workload):
    """The shape and FLOPs trace (`d2lcnn.trace`) of `name` on the workload's images."""
    from d2lcnn.data import dataset_info
    from d2lcnn.trace import trace

    return trace(build_model(name), (dataset_info(work.dataset).channels, work.side, work.side))


def run_baseline(name: str, work: Workload) -> dict:
    """Train `name` with the d2l loop and data pipeline; what it measured."""
    from torch.utils.data import DataLoader

    train, test = d2l_datasets(work)
    train_iter = DataLoader(train, work.batch_size, shuffle=True, num_workers=D2L_WORKERS)
    test_iter = DataLoader(test, work.batch_size, shuffle=False, num_workers=D2L_WORKERS)
    epochs = work.epochs_for(len(train_iter))
    result = d2l_train_ch6(build_model(name), train_iter, test_iter, epochs, work.baseline_lr, work.steps)
    length = f"{work.epochs} epochs" if work.steps is None else f"{result['steps']} steps"
    result["run"] = (
        f"d2l 1.0.3 train_ch6: fp32, SGD lr {work.baseline_lr:g}; DataLoader "
        f"({D2L_WORKERS} workers, PIL {'Resize, ' if work.resize else ''}ToTensor); "
        f"{length} of {work.batch_size}"
    )
    return result


# ----------------------------------------------------------------------------- the d2lcnn side


def d2lcnn_side(name: str, work: Workload):
    """The d2lcnn side's model, from the weights d2l_train_ch6 starts the baseline from, and its data."""
    from d2lcnn.data import load
    from d2lcnn.show import init_weights

    data = load(
        work.dataset, batch_size=work.batch_size, resize=work.resize, seed=0,
        train_per_class=work.train_per_class, test_per_class=work.test_per_class,
    )  # fmt: skip
    return init_weights(build_model(name)), data


def run_d2lcnn(name: str, work: Workload) -> dict:
    """Train `name` with `fit` defaults on `d2lcnn.data.load`; what it measured."""
    from d2lcnn.train import fit

    model, data = d2lcnn_side(name, work)
    steps_per_epoch = len(data.train)
    epochs = work.epochs_for(steps_per_epoch)
    history = fit(
        model, data, epochs=epochs, lr=work.d2lcnn_lr, max_steps=work.steps, progress=False, log=None
    )
    total_steps = work.steps or epochs * steps_per_epoch  # epochs_for covers the steps asked for
    examples, train_seconds, curve = 0, 0.0, []
    for epoch in history.epochs:
        steps = min(steps_per_epoch, total_steps - (epoch.epoch - 1) * steps_per_epoch)
        count = min(steps * work.batch_size, data.train.num_examples)  # full batches (drop_last)
        examples += count
        train_seconds += count / epoch.examples_per_s  # fit's examples_per_s is count / seconds
        elapsed = (curve[-1][0] if curve else 0.0) + epoch.seconds
        curve.append((elapsed, epoch.test_acc))
    config = history.config
    layout = ", channels_last" if config["channels_last"] else ""
    length = f"{len(history.epochs)} epochs" if work.steps is None else f"{total_steps} steps"
    run = (
        f"fit defaults: {config['precision']}{layout}, SGD Nesterov lr {work.d2lcnn_lr:g}, "
        f"onecycle, wd {config['weight_decay']:g}; DeviceLoader; {length} of {work.batch_size}"
    )
    return {
        "steps": total_steps, "examples": examples, "train_seconds": train_seconds,
        "curve": curve, "run": run,
    }  # fmt: skip


# Warm-up steps (oneDNN builds its kernels then) and profiled steps of the d2lcnn side.
PROFILE_STEPS = {
    "lenet": (5, 20), "alexnet": (2, 4), "resnet18": (2, 5), "fast_vgg": (3, 6), "fast_resnet": (3, 6),
}  # fmt: skip
QUICK_PROFILE_STEPS = (1, 2)
CATEGORIES = (
    "conv forward", "conv backward", "matmul", "batch norm", "pooling", "activations",
    "casts and copies", "loss", "optimizer step", "data", "other ops", "Python and framework",
)  # fmt: skip
_OPS = {
    "conv forward": ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution",
                     "aten::_nnpack_spatial_convolution", "aten::_slow_conv2d_forward"),
    "conv backward": ("aten::convolution_backward", "aten::_slow_conv2d_backward"),
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
    "batch norm": ("aten::native_batch_norm", "aten::native_batch_norm_backward",
                   "aten::_native_batch_norm_legit", "aten::_batch_norm_with_update",
                   "aten::batch_norm_backward", "aten::_batch_norm_impl_index"),
    "pooling": ("aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward",
                "aten::avg_pool2d", "aten::avg_pool2d_backward", "aten::_adaptive_avg_pool2d",
                "aten::_adaptive_avg_pool2d_backward", "aten::adaptive_avg_pool2d", "aten::mean",
                "aten::adaptive_max_pool2d", "aten::adaptive_max_pool2d_backward"),
    "activations": ("aten::relu", "aten::relu_", "aten::clamp_min", "aten::clamp_min_",
                    "aten::threshold_backward", "aten::sigmoid", "aten::sigmoid_backward",
                    "aten::tanh", "aten::tanh_backward", "aten::gelu", "aten::gelu_backward"),
    "casts and copies": ("aten::copy_", "aten::_to_copy", "aten::to", "aten::contiguous",
                         "aten::clone"),
    "loss": ("aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss_forward",
             "aten::nll_loss_backward", "aten::cross_entropy_loss"),
}  # fmt: skip
_CATEGORY_OF = {op: category for category, ops in _OPS.items() for op in ops}


def _labelled_batches(loader, label: str, after_each: Callable[[], None]):
    """`loader` whose batches are fetched inside a profiler range named `label`."""
    from torch.profiler import record_function

    class Labelled:
        def __len__(self) -> int:
            return len(loader)

        def __getattr__(self, name: str):
            return getattr(loader, name)

        def __iter__(self):
            batches = iter(loader)
            while True:
                with record_function(label):
                    item = next(batches, None)
                if item is None:
                    return
                yield item
                after_each()

    return Labelled()


def event_category(event) -> str:
    """Where one profiler event's own (self) time belongs: its op kind, or the labelled region
    (optimizer step, data) it runs in, or Python and the framework between ops."""
    node = event
    while node is not None:
        if node.name.startswith("Optimizer."):
            return "optimizer step"
        if node.name == "d2lcnn: next batch":
            return "data"
        node = node.cpu_parent
    if event.name.startswith("ProfilerStep"):
        return "Python and framework"
    return _CATEGORY_OF.get(event.name, "other ops")


def profiled_run(name: str, quick: bool):
    """The model, data, fit settings and forward conv FLOPs per example that `run_profile` times:
    the d2lcnn side of a compared model, or a fast network with its recipe's settings."""
    from d2lcnn.data import load
    from d2lcnn.models import create
    from d2lcnn.settings import Settings, recipe_for
    from d2lcnn.trace import trace

    if name in FAST:
        recipe = recipe_for(name)
        batch = 64 if quick else recipe.batch_size
        data = load(recipe.dataset, batch_size=batch, augment=True, pad=recipe.pad, seed=0,
                    train_per_class=64 if quick else None, test_per_class=1)  # fmt: skip
        settings = recipe.settings.replace(whiten=False)  # the whitened stem is as fast as any
        model = create(name)
        rows = trace(model, (3, 32, 32)).rows
    else:
        work = workloads(quick)[name]
        model, data = d2lcnn_side(name, work)
        settings = Settings(lr=work.d2lcnn_lr)  # fit's defaults, as the d2lcnn side trains
        rows, batch = traced(name, work).rows, work.batch_size
    conv_flops = sum(row.flops for row in rows if row.kind == "Conv2d")  # forward, one example
    return model, data, settings, batch, conv_flops


def run_profile(name: str, quick: bool) -> dict:
    """Where a training step of `fit` spends its time: torch.profiler self CPU time of a few steps
    (after warm-up steps), by kind of work, and the convolutions' own GFLOP/s."""
    from types import SimpleNamespace

    from torch.profiler import ProfilerActivity, profile, schedule

    from d2lcnn.train import fit

    warmup, active = QUICK_PROFILE_STEPS if quick else PROFILE_STEPS[name]
    model, data, settings, batch_size, conv_flops = profiled_run(name, quick)
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    wall = [0.0]

    def tally(prof) -> None:  # called once, when the profiled steps are done
        for event in prof.events():
            seconds[event_category(event)] += event.self_cpu_time_total / 1e6
            if event.name.startswith("ProfilerStep"):
                wall[0] += event.cpu_time_total / 1e6

    steps = warmup + active
    epochs = math.ceil(steps / len(data.train))
    when = schedule(wait=0, warmup=warmup, active=active, repeat=1)
    with profile(activities=[ProfilerActivity.CPU], schedule=when, on_trace_ready=tally) as prof:
        batches = _labelled_batches(data.train, "d2lcnn: next batch", prof.step)
        fit(model, SimpleNamespace(train=batches, name=data.name), settings, epochs=epochs,
            max_steps=steps, progress=False, log=None)  # fmt: skip
    if not wall[0]:
        raise D2LCNNError(f"The profile of {name} recorded no complete step.")
    examples = active * batch_size
    return {
        "steps": active, "batch_size": batch_size, "wall_seconds": wall[0], "seconds": seconds,
        "conv_fwd_gflops": conv_flops * examples / max(seconds["conv forward"], 1e-9) / 1e9,
        "conv_bwd_gflops": 2 * conv_flops * examples / max(seconds["conv backward"], 1e-9) / 1e9,
    }  # fmt: skip


def run_cli_recipe(name: str, quick: bool) -> dict:
    """The CLI recipe of `name` (CLI_RECIPES), e.g. `python -m d2lcnn train --model fast_vgg
    --dataset cifar10`, as a user runs it; its history, wall-clock and training FLOPs per example.

    This process imports no torch: the command's peak memory (RUSAGE_CHILDREN) is its own, not
    inflated by the pages of a big parent it was forked from.
    """
    command = CLI_RECIPES[name] + (QUICK_CLI if quick else [])
    with tempfile.TemporaryDirectory(prefix="d2lcnn-bench-") as tmp:
        out = Path(tmp) / "run"
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "d2lcnn", *command, "--quiet", "--no-plots", "--out", str(out)],
            cwd=tmp, capture_output=True, text=True,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise ConfigError(f"`d2lcnn {' '.join(command)}` failed: {_tail(done.stderr)}")
        history = json.loads((out / "history.json").read_text())
    epochs = history["epochs"]
    elapsed, curve = 0.0, []
    for epoch in epochs:
        elapsed += epoch["seconds"]
        curve.append((elapsed, epoch["test_acc"]))
    return {
        "run": f"`python -m d2lcnn {' '.join(command)}`", "epochs": len(epochs), "curve": curve,
        "command_seconds": seconds, "startup_seconds": seconds - elapsed,
        "examples_per_s": sum(e["examples_per_s"] for e in epochs) / len(epochs),
        "train_flops": 3 * _forward_flops(command), "config": history["config"],
    }  # fmt: skip


def _forward_flops(command: list[str]) -> float:
    """FLOPs of one forward pass of the command's model on one example of its dataset."""
    from d2lcnn.data import dataset_info
    from d2lcnn.models import create
    from d2lcnn.trace import trace

    model, dataset = command[command.index("--model") + 1], command[command.index("--dataset") + 1]
    info = dataset_info(dataset)
    shape = (info.channels, info.image_size, info.image_size)
    return trace(create(model, in_channels=info.channels), shape).total_flops


def measure_bf16_peak(quick: bool) -> dict:
    """GFLOP/s of a square bf16 matmul loop with one torch thread per core (best of 3 windows)."""
    import torch

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads)
    n, window = (2048, 0.2) if quick else (4096, 1.0)
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    out = a @ b  # warm-up: oneDNN picks and compiles its kernel
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while (seconds := time.perf_counter() - start) < window or count == 0:
            torch.mm(a, b, out=out)
            count += 1
        best = max(best, 2 * n**3 * count / seconds / 1e9)
    return {"gflops": best, "size": n, "threads": threads, "torch": str(torch.__version__)}


def run_one(spec: dict) -> dict:
    """Run one configuration ({"model", "side", "quick"}) in this process: what it measured.
    `run_task` starts it in a process of its own."""
    name, side, quick = spec["model"], spec["side"], spec["quick"]
    if side == "peak":
        return measure_bf16_peak(quick)
    if side == "recipe":
        return run_cli_recipe(name, quick)
    if side == "profile":
        return run_profile(name, quick)
    work = workloads(quick)[name]
    result = run_baseline(name, work) if side == "baseline" else run_d2lcnn(name, work)
    return {**result, "fwd_flops": traced(name, work).total_flops}


# ----------------------------------------------------------------------------- orchestration


def run_task(name: str, side: str, quick: bool) -> tuple[dict, float]:
    """Run one configuration in a fresh process (`d2lcnn.worker`), in a temporary working directory;
    what it measured, with its peak memory, and the process's wall-clock seconds."""
    with tempfile.TemporaryDirectory(prefix="d2lcnn-bench-") as tmp:
        spec = {"model": name, "side": side, "quick": quick}
        done = run_in_process(f"{Path(__file__).resolve()}:run_one", spec, cwd=tmp)
    if done.error is not None:
        raise D2LCNNError(f"The {name}:{side} run failed: {done.error}")
    # Children: DataLoader workers, or the d2lcnn command. `import torch` also runs `ldconfig -p`,
    # whose peak counts the pages of the process it was forked from: a run without workers has no
    # children worth reporting.
    children = (done.children_peak_memory_mb or 0.0) if side in ("baseline", "recipe") else 0.0
    return {**done.result, "rss_mb": done.peak_memory_mb, "children_rss_mb": children}, done.seconds


def _tail(text: str, lines: int = 8) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n".join(kept) or "(no output)"


def time_to(curve: list, acc: float) -> float | None:
    """Cumulative seconds at the first evaluation with accuracy >= `acc`, or None."""
    return next((t for t, a in curve if a is not None and a >= acc - 1e-9), None)


def common_threshold(*curves: list) -> float:
    """The highest whole percentage every curve reaches."""
    best = min(max((a for _, a in c if a is not None), default=0.0) for c in curves)
    return math.floor(best * 100 + 1e-6) / 100


def machine() -> str:
    """CPU model and core count."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} cores"


def git_commit() -> str:
    """Short hash of HEAD, "+dirty" if the working tree differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + ("+dirty" if dirty else "")


def _pct(acc: float | None) -> str:
    return "—" if acc is None else f"{acc:.1%}"


def _secs(seconds: float | None) -> str:
    return "not reached" if seconds is None else f"{seconds:.1f} s"


def _rss(result: dict) -> str:
    text = f"{result['rss_mb']:,.0f}"
    if result["children_rss_mb"] >= 1:
        text += f" (workers {result['children_rss_mb']:,.0f})"
    return text


def render(results: dict, peak: dict, meta: dict, quick: bool, names: list[str]) -> str:
    """The markdown page: metadata, the side-by-side table, LeNet's own recipes, where the time
    goes, and the targets."""
    lines = ["<!-- Written by bench/speed.py; rerun it instead of editing. -->", ""]
    if quick:
        lines += ["**Quick mode**: a few steps on tiny subsets. The numbers are meaningless; this "
                  "run only checks that the bench works.", ""]  # fmt: skip
    lines += [
        f"- Date: {meta['date']}",
        f"- Machine: {meta['machine']}, torch {peak['torch']}",
        f"- Commit: {meta['commit']}",
        f"- bf16 matmul peak: {peak['gflops']:,.0f} GFLOP/s ({peak['size']}x{peak['size']} "
        f"torch.mm, {peak['threads']} threads)",
        f"- Command: `{meta['command']}`",
        "",
    ]
    compared = [name for name in names if name in COMPARED]
    lines += render_speed(results, peak, quick, compared)
    lines += render_recipes(results)
    lines += render_fast(results, peak, [name for name in names if name in FAST])
    lines += render_profiles(results, peak, quick, names)
    lines += render_targets(results, peak, quick, names)
    return "\n".join(lines) + "\n"


def render_speed(results: dict, peak: dict, quick: bool, names: list[str]) -> list[str]:
    """The side-by-side table; adds examples_per_s, gflops and final_acc to each run's result."""
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * 2 + ["---"] + ["---:"] * 4) + "|",
    ]
    for name in names:
        base, ours = results[name]["baseline"], results[name]["d2lcnn"]
        threshold = common_threshold(base["curve"], ours["curve"])
        for side, r in (("baseline", base), ("d2lcnn", ours)):
            r["examples_per_s"] = r["examples"] / r["train_seconds"]
            r["gflops"] = 3 * r["fwd_flops"] * r["examples_per_s"] / 1e9
            r["final_acc"] = r["curve"][-1][1]
            cells = [
                workloads(quick)[name].title, side, r["run"], f"{r['examples_per_s']:,.1f}",
                f"{r['examples_per_s'] / base['examples_per_s']:.2f}",
                f"{_secs(time_to(r['curve'], threshold))} to {threshold:.0%}", _pct(r["final_acc"]), _rss(r),
                f"{r['gflops']:,.1f}", f"{r['gflops'] / peak['gflops']:.1%}",
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return lines + [
        "",
        "Examples/s: training examples per second of wall-clock, data loading included, "
        "evaluation excluded. Time to acc: cumulative wall-clock (evaluation included) until the "
        "test accuracy first reached the highest whole percentage both sides reach; runs of a "
        "fixed number of steps are evaluated once, at the end. GFLOP/s: 3 x forward FLOPs per "
        "example (`d2lcnn.trace`) x examples/s. Peak RSS: the peak resident memory of the run's own "
        "process (and of its largest DataLoader worker; a forked worker starts with its parent's "
        "pages, so the two do not add up). Both sides train the same architecture from the same "
        "initial weights (d2l's Xavier init) on the same images with the same batch size.",
    ]


def render_recipes(results: dict) -> list[str]:
    """LeNet on Fashion-MNIST with each side's own recipe (if the recipe run was made)."""
    recipe = results.get("lenet", {}).get("recipe")
    if recipe is None:
        return []
    base = results["lenet"]["baseline"]
    threshold = common_threshold(base["curve"], recipe["curve"])
    return [
        "",
        "LeNet on Fashion-MNIST, each side with its own recipe:",
        "",
        f"| Side | Recipe | Epochs | Final acc | Time to {LENET_TARGET_ACC:.0%} | "
        f"Time to {threshold:.0%} | Training (s) | Peak RSS (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| baseline | d2l's LeNet (sigmoid, average pooling): {base['run']} | "
        f"{len(base['curve'])} | {_pct(base['curve'][-1][1])} | "
        f"{_secs(time_to(base['curve'], LENET_TARGET_ACC))} | "
        f"{_secs(time_to(base['curve'], threshold))} | {base['curve'][-1][0]:.1f} | "
        f"{_rss(base)} |",
        f"| d2lcnn | {recipe['run']} (CLI default recipe) | {recipe['epochs']} | "
        f"{_pct(recipe['curve'][-1][1])} | "
        f"{_secs(time_to(recipe['curve'], LENET_TARGET_ACC))} | "
        f"{_secs(time_to(recipe['curve'], threshold))} | {recipe['curve'][-1][0]:.1f} | "
        f"{recipe['children_rss_mb']:,.0f} |",
        "",
        f"Training (s): the epochs' wall-clock, evaluation included. The whole d2lcnn command "
        f"(start-up, data loading, checkpoints) took {recipe['command_seconds']:.1f} s.",
    ]  # fmt: skip


def command_time_to(recipe: dict, acc: float) -> float | None:
    """Seconds of a CLI recipe's whole command (start-up and data loading included) until an
    evaluation first reached `acc`, or None."""
    reached = time_to(recipe["curve"], acc)
    return None if reached is None else reached + recipe["startup_seconds"]


def recipe_gflops(recipe: dict) -> float:
    """GFLOP/s of a CLI recipe's training: 3 x forward FLOPs per example x training examples/s."""
    return recipe["examples_per_s"] * recipe["train_flops"] / 1e9


def render_fast(results: dict, peak: dict, names: list[str]) -> list[str]:
    """The fast CIFAR-10 recipes, each run as its CLI command."""
    if not names:
        return []
    lines = [
        "",
        "Fast CIFAR-10 networks, each trained by its recipe as one command:",
        "",
        "| Model | Command | Epochs | Final acc (TTA) | Time to 90% | Whole command | Training examples/s "
        "| GFLOP/s | % of bf16 peak | Peak RSS (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        r = results[name]["recipe"]
        reached, gflops = command_time_to(r, 0.90), recipe_gflops(r)
        lines.append(
            f"| {name} | {r['run']} | {r['epochs']} | {_pct(r['curve'][-1][1])} | {_secs(reached)} | "
            f"{r['command_seconds']:.1f} s | {r['examples_per_s']:,.0f} | {gflops:,.0f} | "
            f"{gflops / peak['gflops']:.1%} | {r['children_rss_mb']:,.0f} |"
        )
    return lines + [
        "",
        "Final acc: the test accuracy after the last epoch, with the recipe's test-time views (each "
        "image, its mirror image and both shifted by a pixel). Time to 90%: the whole command's "
        "wall-clock until an evaluation first reached 90% (start-up and data loading included). "
        "Training examples/s: the epochs' mean, data included, evaluation excluded. GFLOP/s: 3 x "
        "forward FLOPs per example (`d2lcnn.trace`) x training examples/s.",
    ]


def render_targets(results: dict, peak: dict, quick: bool, names: list[str]) -> list[str]:
    """The targets table: each target, what was measured, and whether it was met."""
    lines = ["", "Targets:", "", "| Target | Measured | Met |", "|---|---|---|"]

    def verdict(ok: bool) -> str:
        return "— (quick mode)" if quick else ("yes" if ok else "**no**")

    for name in [name for name in names if name in COMPARED]:
        base, ours = results[name]["baseline"], results[name]["d2lcnn"]
        ratio = ours["examples_per_s"] / base["examples_per_s"]
        ok = ratio >= SPEEDUP_TARGET and ours["final_acc"] >= base["final_acc"]
        lines.append(
            f"| {workloads(quick)[name].title}: d2lcnn >= {SPEEDUP_TARGET:g}x the baseline's examples/s "
            f"at equal or better accuracy | {ratio:.2f}x; accuracy {_pct(ours['final_acc'])} vs "
            f"{_pct(base['final_acc'])} | {verdict(ok)} |"
        )
    recipe = results.get("lenet", {}).get("recipe")
    if recipe is not None:
        reached = time_to(recipe["curve"], LENET_TARGET_ACC)
        ok = reached is not None and reached <= LENET_TARGET_SECONDS
        lines.append(
            f"| lenet_modern (CLI default recipe) >= {LENET_TARGET_ACC:.0%} test accuracy within "
            f"{LENET_TARGET_SECONDS:.0f} s | {_secs(reached)} of training (final "
            f"{_pct(recipe['curve'][-1][1])}); whole command {recipe['command_seconds']:.1f} s "
            f"| {verdict(ok)} |"
        )
    for name in [name for name in names if name in FAST]:
        lines += fast_targets(name, results[name]["recipe"], peak, verdict)
    if "resnet18" in names:
        ours = results["resnet18"]["d2lcnn"]
        share = ours["gflops"] / peak["gflops"]
        lines.append(
            f"| ResNet-18 (CIFAR stem) training >= {PEAK_SHARE_TARGET:.0%} of the bf16 matmul peak "
            f"| {share:.1%} ({ours['gflops']:,.0f} of {peak['gflops']:,.0f} GFLOP/s, data "
            f"included) | {verdict(share >= PEAK_SHARE_TARGET)} |"
        )
    return lines


def fast_targets(name: str, recipe: dict, peak: dict, verdict: Callable[[bool], str]) -> list[str]:
    """The target rows of one fast recipe: accuracy within a time, and (fast_vgg) the share of peak."""
    lines = []
    for acc, seconds in FAST_TARGETS[name]:
        reached = command_time_to(recipe, acc)
        final = recipe["curve"][-1][1]
        margin = f"{(final - acc) * 100:+.2f} points" if final is not None else "—"
        lines.append(
            f"| `{name}` recipe: >= {acc:.0%} test accuracy within {seconds / 60:g} min (whole command) "
            f"| {_secs(reached)} to {acc:.0%}; final {_pct(final)} ({margin}) after "
            f"{recipe['command_seconds']:.0f} s | {verdict(reached is not None and reached <= seconds)} |"
        )
    if name == "fast_vgg":
        share = recipe_gflops(recipe) / peak["gflops"]
        lines.append(
            f"| `{name}` recipe: training at >= {PEAK_SHARE_TARGET:.0%} of the bf16 matmul peak | "
            f"{share:.1%} of {peak['gflops']:,.0f} GFLOP/s (data included) | "
            f"{verdict(share >= PEAK_SHARE_TARGET)} |"
        )
    return lines


def render_profiles(results: dict, peak: dict, quick: bool, names: list[str]) -> list[str]:
    """The "where the time goes" table of the d2lcnn side, one row per model."""
    profiled = [name for name in names if "profile" in results[name]]
    if not profiled:
        return []
    lines = [
        "",
        "Where the d2lcnn side's time goes: share of the profiled steps' CPU time (torch.profiler, "
        "self time of each op, after warm-up steps), and the convolutions' own speed:",
        "",
        "| Model | Steps | " + " | ".join(CATEGORIES) + " | conv fwd GFLOP/s | conv bwd GFLOP/s |",
        "|---|---:|" + "---:|" * (len(CATEGORIES) + 2),
    ]
    for name in profiled:
        r = results[name]["profile"]
        total = sum(r["seconds"].values()) or 1.0
        shares = [f"{r['seconds'][c] / total:.1%}" for c in CATEGORIES]
        conv = [f"{r[k]:,.0f} ({r[k] / peak['gflops']:.0%})" for k in ("conv_fwd_gflops", "conv_bwd_gflops")]
        title = name if name in FAST else workloads(quick)[name].title
        lines.append(f"| {title} | {r['steps']} x {r['batch_size']} | "
                     + " | ".join(shares + conv) + " |")  # fmt: skip
    lines += [
        "",
        "Conv GFLOP/s: the forward FLOPs of the model's convolutions (`d2lcnn.trace`; the backward "
        "pass does twice as many) over the time of those ops alone, with their share of the bf16 "
        "matmul peak in brackets. Data: fetching, resizing and normalising the batch on the "
        "device. Python and framework: time between ops (the training loop, autograd, dispatch).",
    ]
    return lines


def parse_only(text: str | None) -> list[str]:
    """The models named in --only (all by default), in the table's order."""
    if text is None:
        return list(MODELS)
    asked = [part.strip() for part in text.split(",") if part.strip()]
    if not asked:
        raise ConfigError(f"--only needs model names separated by commas: {', '.join(MODELS)}.")
    for name in asked:
        if name not in MODELS:
            raise unknown_name("model", name, MODELS)
    return [name for name in MODELS if name in asked]


def bench(names: list[str], quick: bool, out: Path | None, label: str, command: str) -> str:
    """Run every configuration of `names`, print progress and the table, write it to `out`
    (shown as `label`) if given."""
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "commit": git_commit(),
        "command": command,
    }
    print("measuring the bf16 matmul peak...", flush=True)
    peak, _ = run_task("peak", "peak", quick)
    print(f"  {peak['gflops']:,.0f} GFLOP/s", flush=True)
    results: dict[str, dict] = {}
    for name in names:
        sides = ["recipe", "profile"] if name in FAST else [*SIDES, "profile"]
        sides += ["recipe"] if name == "lenet" else []
        for side in sides:
            print(f"{name} {side}...", flush=True)
            result, seconds = run_task(name, side, quick)
            results.setdefault(name, {})[side] = result
            if side == "profile":
                print(f"  {result['steps']} steps profiled ({seconds:.0f} s in all)", flush=True)
                continue
            line = f"  test acc {_pct(result['curve'][-1][1])}"
            if "examples" in result:
                line += f", {result['examples'] / result['train_seconds']:,.1f} ex/s"
            print(f"{line} ({seconds:.0f} s in all)", flush=True)
    table = render(results, peak, meta, quick, names)
    print()
    print(table)
    if out is not None:
        atomic_write(out, lambda f: f.write(table.encode()))  # a killed bench leaves no half table
        print(f"Wrote {label}")
    else:
        print("Quick mode: the table was not written (give --out PATH to write it).")
    return table


def main(argv: list[str] | None = None) -> int:
    """Entry point; the exit code (2, with one clear message, on bad input or a failed run)."""
    from d2lcnn.cli import report_errors  # here: the runs' processes import this file without torch

    parser = argparse.ArgumentParser(
        prog="bench/speed.py", description="d2l's training loop against d2lcnn.fit, side by side."
    )
    parser.add_argument("--quick", action="store_true", help="a few steps on tiny subsets (CI)")
    parser.add_argument("--only", help=f"comma-separated models among {', '.join(MODELS)}")
    parser.add_argument("--out", type=Path, help=f"markdown file to write (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    return report_errors("speed.py", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    """The bench of the command line's `args`."""
    names = parse_only(args.only)
    out = args.out
    if args.quick and out is not None and out.resolve() == (REPO / DEFAULT_OUT).resolve():
        raise ConfigError(
            f"--quick would overwrite the full-mode table {DEFAULT_OUT} with meaningless "
            "numbers: give another --out (e.g. in /tmp)."
        )
    label = str(DEFAULT_OUT if out is None else out.name if out.is_absolute() else out)
    if out is None and not args.quick:
        out = REPO / DEFAULT_OUT
    command = "python bench/speed.py"  # without --out: the table shows no path of this machine
    command += " --quick" if args.quick else ""
    command += f" --only {','.join(names)}" if args.only else ""
    bench(names, args.quick, out, label, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
