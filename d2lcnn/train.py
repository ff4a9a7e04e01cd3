"""Training: `train_epoch` (one pass over the data: the loop itself), `fit`, `evaluate`, `predict`.

`fit` sets up, runs `train_epoch` once per epoch, evaluates and tells its events (d2lcnn.events).
Every epoch reseeds from (seed, epoch, rank) and the loaders shuffle from (their seed, epoch), so a
run resumed from a checkpoint repeats the uninterrupted run bit for bit on the CPU.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from d2lcnn.checkpoint import EpochStats, History
from d2lcnn.errors import ConfigError, unknown_name
from d2lcnn.events import Checkpoint, LiveCurves, Lookahead, Progress, Run, StopOnDivergence, notify
from d2lcnn.runtime import (
    Runtime,
    derived_seed,
    evaluating,
    join_group,
    model_name,
    seed_everything,
)
from d2lcnn.settings import Settings
from d2lcnn.whitening import whiten_first_conv


def train_epoch(
    model: nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: nn.Module,
    runtime: Runtime,
    scaler: torch.amp.GradScaler,
    on_step: Callable[[torch.Tensor], Any] | None = None,
) -> torch.Tensor:
    """One pass over `batches`; returns [summed loss, correct, examples] on the device."""
    sums = torch.zeros(3, dtype=torch.float64, device=runtime.device)
    for x, y in batches:
        x, y = runtime.inputs(x), y.to(runtime.device, non_blocking=True)
        with runtime.autocast():  # bf16/fp16 where fast and safe, else fp32
            logits = model(x)
            loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # scales only for fp16, whose gradients underflow
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()  # the learning rate changes every step
        sums[0] += loss.detach() * y.shape[0]
        sums[1] += (logits.detach().argmax(1) == y).sum()
        sums[2] += y.shape[0]
        if on_step is not None:
            on_step(sums)
    return sums


def fit(
    model: nn.Module,
    data: Any,
    settings: Settings | None = None,
    *,
    progress: bool = True,
    live_plot: bool = False,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    events: Iterable = (),
    log: Callable[[str], Any] | None = print,
    **overrides: Any,
) -> History:
    """Train `model` on `data.train`, evaluating on `data.test`; return the per-epoch History.

    `settings` (default `Settings()`) with `overrides` applied, e.g. ``fit(model, data, epochs=5,
    lr=0.1)``: see `d2lcnn.settings.Settings` for each one. `progress`: a line per epoch through
    `log` and a bar per epoch; `live_plot`: curves redrawn every epoch; `checkpoint`: saved after
    every epoch, continued only with `resume=True`; `events`: your own (see `d2lcnn.events`).
    Launched with torchrun, fit trains a DistributedDataParallel copy on this rank's shard of the data
    and returns the same History on every rank; only rank 0 prints and saves.
    """
    settings = (settings or Settings()).replace(**overrides)
    if resume and checkpoint is None:
        raise ConfigError("resume=True needs checkpoint=<path of the run to continue>.")
    saver = Checkpoint(checkpoint, resume) if checkpoint is not None else None
    train_loader, test_loader = _loaders(data)
    group, device = join_group(settings.device)
    if group.world > 1:
        train_loader = train_loader.shard(group.rank, group.world)
        test_loader = test_loader and test_loader.shard(group.rank, group.world)
    runtime = Runtime.for_model(model, device, settings.precision, settings.channels_last)
    # Every rank must take the same number of steps, or DDP's gradient all-reduce would hang.
    steps_per_epoch = int(group.all_reduce(torch.tensor(len(train_loader), device=device), "min").item())
    if steps_per_epoch == 0:
        raise ConfigError("The training loader is empty: it yields no batches.")
    total_steps = min(settings.epochs * steps_per_epoch, settings.max_steps or math.inf)

    seed_everything(settings.seed)
    if settings.whiten:  # before the optimizer is made: the whitened weights are not trained
        whiten_first_conv(model, train_loader, to_input=runtime.inputs)
    if settings.compile:
        model.compile()  # in place: d2lcnn models keep their own __call__ that explains bad inputs
    optimizer = make_optimizer(model, settings)
    run = Run(
        model, optimizer, make_schedule(optimizer, settings, total_steps), runtime.grad_scaler(),
        config=_config(model, data, settings, runtime, group, train_loader, steps_per_epoch, checkpoint),
        epochs=settings.epochs, steps_per_epoch=steps_per_epoch, num_classes=_num_classes(model, data),
        total_steps=total_steps, group=group,
    )  # fmt: skip
    run.history.config = run.config
    # Divergence first: a diverged epoch must be neither printed as a result nor saved.
    every = [StopOnDivergence(check_every=1 if device.type == "cpu" and group.world == 1 else 50)]
    every += [saver] if saver is not None else []  # before progress: it may resume the run
    every += [Lookahead()] if settings.lookahead else []
    every += [Progress(log)] if progress and log is not None and group.main else []
    every += [LiveCurves()] if live_plot and group.main else []
    return _train_epochs(run, runtime, train_loader, test_loader, settings, [*every, *events])


def _train_epochs(
    run: Run, runtime: Runtime, train_loader, test_loader, settings: Settings, events: list
) -> History:
    """The epochs of `fit`: train, evaluate, tell the events."""
    model, group = run.model, run.group
    train_model = group.wrap(model, runtime.device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    try:
        notify(events, "on_start", run)
        while run.epoch < run.epochs and run.global_step < run.total_steps:
            seed_everything(derived_seed(settings.seed, run.epoch, group.rank))
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(run.epoch)
            steps = min(run.steps_per_epoch, run.total_steps - run.global_step)
            train_model.train()
            keep_frozen_norms_in_eval(model)
            start = time.perf_counter()
            sums = train_epoch(
                train_model, _first_batches(train_loader, steps), run.optimizer, run.scheduler, loss_fn,
                runtime, run.scaler, on_step=lambda sums: notify(events, "on_step", run, sums),
            )  # fmt: skip
            run.epoch, run.global_step = run.epoch + 1, run.global_step + steps
            stats = _epoch_stats(run, runtime, group.all_reduce(sums), start, test_loader, settings)
            run.history.epochs.append(stats)
            notify(events, "on_epoch_end", run, stats)
    finally:
        notify(events, "on_end", run)
    group.broadcast(model.buffers())
    return run.history


def _epoch_stats(
    run: Run, runtime: Runtime, sums: torch.Tensor, start: float, test_loader, settings
) -> EpochStats:
    """Read the epoch's sums (one wait for the GPU per epoch), evaluate if due, time it."""
    loss_sum, correct, count = sums.tolist()
    if count == 0:
        raise ConfigError(f"The training loader yielded no batches in epoch {run.epoch}.")
    train_seconds = time.perf_counter() - start
    test_loss = test_acc = None
    due = (
        run.epoch % settings.eval_every == 0 or run.epoch == run.epochs or run.global_step >= run.total_steps
    )
    if test_loader is not None and due:
        run.group.broadcast(run.model.buffers())  # batch norm statistics differ across ranks: use rank 0's
        test_sums = _eval_sums(run.model, test_loader, runtime, settings.test_flip, settings.test_shift)
        test_sums = run.group.all_reduce(test_sums)
        test_loss_sum, test_correct, test_count = test_sums.tolist()
        if test_count:
            test_loss, test_acc = test_loss_sum / test_count, test_correct / test_count
    times = torch.tensor(
        [time.perf_counter() - start, train_seconds], dtype=torch.float64, device=runtime.device
    )
    run.group.broadcast([times])  # every rank reports rank 0's clock, so the histories agree
    seconds, train_seconds = times.tolist()
    last_lr = run.scheduler.base_lrs[0] * run.scheduler.lr_lambdas[0](run.global_step - 1)
    return EpochStats(
        epoch=run.epoch, train_loss=loss_sum / count, train_acc=correct / count, test_loss=test_loss,
        test_acc=test_acc, seconds=seconds, examples_per_s=count / train_seconds, lr=last_lr,
    )  # fmt: skip


def _loaders(data: Any) -> tuple[Any, Any]:
    train_loader = getattr(data, "train", None)
    if train_loader is None:
        raise ConfigError(
            f"fit needs a dataset with .train and .test loaders (from d2lcnn.data.load), got a "
            f"{type(data).__name__}."
        )
    return train_loader, getattr(data, "test", None)


def _first_batches(loader: Iterable, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for item in itertools.islice(loader, steps):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ConfigError(
                f"A loader must yield (images, labels) pairs; this one yielded a {type(item).__name__}."
            )
        yield item


def _num_classes(model: nn.Module, data: Any) -> int | None:
    """The data's number of classes, after checking that the model has as many outputs."""
    classes = getattr(data, "classes", None)
    num_classes = len(classes) if classes else None
    outputs = getattr(model, "num_classes", None)
    if num_classes and isinstance(outputs, int) and outputs != num_classes:
        raise ConfigError(
            f"The model has {outputs} outputs but the data has {num_classes} classes: build it with "
            f"num_classes={num_classes} (e.g. create(name, num_classes={num_classes}))."
        )
    return num_classes


def _config(model, data, settings, runtime, group, train_loader, steps_per_epoch, checkpoint) -> dict:
    """What the run is: saved in its history and checkpoint, compared when it is resumed."""
    device = runtime.device
    return {
        "model": model_name(model),
        "data": getattr(data, "name", None),
        **settings.as_dict(),
        "device": str(device),
        "batch_size": getattr(train_loader, "batch_size", None),
        "steps_per_epoch": steps_per_epoch,
        "world_size": group.world,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "precision": runtime.precision,
        "channels_last": runtime.channels_last,
        "checkpoint": None if checkpoint is None else Path(checkpoint).name,
        "torch": str(torch.__version__),  # a str subclass that weights_only cannot load
    }


def _is_batch_norm(module: nn.Module) -> bool:
    """A layer with running statistics: torch's batch norms, and d2lcnn's from-scratch BatchNorm."""
    return isinstance(module.__dict__.get("_buffers", {}).get("running_mean"), torch.Tensor)


def keep_frozen_norms_in_eval(model: nn.Module) -> None:
    """Batch norm layers whose parameters are frozen keep their running statistics (eval mode):
    a frozen backbone must not change at all."""
    for module in model.modules():
        if _is_batch_norm(module):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()


def make_optimizer(model: nn.Module, settings: Settings) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum) or AdamW over the trainable parameters, with `settings.lr_scale`
    multipliers by module name, times `settings.norm_lr_scale` for batch norm layers. Weight decay
    shrinks conv and linear weights only: decaying biases and batch norm scales (tensors with < 2
    dims) only hurts (as in nanoGPT and most ImageNet recipes)."""
    names = {n for n, _ in model.named_modules() if n}
    for prefix in settings.lr_scale:
        if prefix not in names:
            raise unknown_name("module", prefix, [n for n in names if "." not in n])
    norms = {n for n, m in model.named_modules() if _is_batch_norm(m)}
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for param_name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        owners = [k for k in settings.lr_scale if param_name.startswith(k + ".")]
        scale = settings.lr_scale[max(owners, key=len)] if owners else 1.0  # the most specific prefix wins
        if param_name.rpartition(".")[0] in norms:
            scale *= settings.norm_lr_scale
        decay = settings.weight_decay if p.dim() >= 2 else 0.0
        groups.setdefault((scale, decay), []).append(p)
    if not groups:
        raise ConfigError("The model has no trainable parameters (requires_grad is off for all).")
    lr = settings.lr
    param_groups = [
        {"params": ps, "lr": lr * scale, "weight_decay": decay} for (scale, decay), ps in groups.items()
    ]
    # One fused kernel updates every tensor at once: a tenth of the for-loop's time on a CPU (fast_vgg:
    # 0.56 ms against 4.9 ms a step); torch has it for CPUs and CUDA.
    fused = all(p.device.type in ("cpu", "cuda") for group in param_groups for p in group["params"]) or None
    if settings.optimizer == "sgd":
        nesterov = settings.nesterov and settings.momentum > 0
        return torch.optim.SGD(
            param_groups, lr=lr, momentum=settings.momentum, nesterov=nesterov, fused=fused
        )
    return torch.optim.AdamW(param_groups, lr=lr, fused=fused)


def make_schedule(
    optimizer: torch.optim.Optimizer, settings: Settings, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step multiplier of each parameter group's own learning rate.

    "onecycle" has the shape of torch's OneCycleLR (cosine up from lr/25 to lr over the warmup, then
    cosine down to lr/250,000) but works for any number of steps, even one, and keeps momentum fixed.
    "cosine": linear warmup, then cosine down to 0. "triangle" (airbench's): linear from lr/5 up to lr
    over the warmup, then linear down to 0.07 lr at the end. "constant": lr throughout.
    """
    warmup_steps = int(settings.warmup * total_steps)

    def down(step: int) -> float:  # 1 at the end of the warmup, 0 at the last step
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return (1 + math.cos(math.pi * progress)) / 2

    def one_cycle(step: int) -> float:
        start, end = 1 / 25, 1 / 250_000
        if step < warmup_steps:
            return start + (1 - start) * (1 - math.cos(math.pi * step / warmup_steps)) / 2
        return end + (1 - end) * down(step)

    def cosine(step: int) -> float:
        return (step + 1) / warmup_steps if step < warmup_steps else down(step)

    def triangle(step: int) -> float:
        start, end = 0.2, 0.07
        if step < warmup_steps:
            return start + (1 - start) * step / warmup_steps
        return 1 + (end - 1) * min(1.0, (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps))

    factors = {"onecycle": one_cycle, "cosine": cosine, "triangle": triangle, "constant": lambda step: 1.0}
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors[settings.schedule])


# ----------------------------------------------------------------------------- evaluate, predict


def tta_logits(model: nn.Module, x: torch.Tensor, flip: bool = False, shift: int = 0) -> torch.Tensor:
    """The model's float logits for `x`, averaged over views of it (test-time augmentation).

    `flip`: the mean over each image and its mirror image. `shift`: then half of that, plus a quarter
    each of the same for the images shifted by `shift` pixels up-left and down-right (edges
    reflected), as airbench94 weights them.
    """

    def views(images: torch.Tensor) -> torch.Tensor:
        logits = model(images).float()
        return (logits + model(images.flip(-1)).float()) / 2 if flip else logits

    logits = views(x)
    if shift:
        height, width = x.shape[-2:]
        if shift >= min(height, width):
            raise ConfigError(f"test_shift={shift} does not fit {height}x{width} images: use 1 or 2.")
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else None
        padded = F.pad(x, (shift,) * 4, mode="reflect")
        for shifted in (padded[..., :height, :width], padded[..., 2 * shift :, 2 * shift :]):
            shifted = shifted.contiguous(memory_format=layout or torch.contiguous_format)
            logits = logits + views(shifted) / 2
        logits = logits / 2
    return logits


def _eval_sums(
    model: nn.Module, loader: Iterable, runtime: Runtime, test_flip: bool = False, test_shift: int = 0
) -> torch.Tensor:
    """[summed loss, correct, examples] over `loader`, on the device, without waiting for it,
    with `tta_logits`'s views."""
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    sums = torch.zeros(3, dtype=torch.float64, device=runtime.device)
    with evaluating(model):
        for x, y in _first_batches(loader, None):
            x, y = runtime.inputs(x), y.to(runtime.device, non_blocking=True)
            with runtime.autocast():
                logits = tta_logits(model, x, test_flip, test_shift)
            sums[0] += loss_fn(logits, y)
            sums[1] += (logits.argmax(1) == y).sum()
            sums[2] += y.shape[0]
    return sums


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: str | torch.device | None = None,
    precision: str = "auto",
    channels_last: bool | None = None,
    test_flip: bool = False,
    test_shift: int = 0,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (a fraction) of `model` over `loader`.

    Runs in eval mode without autograd and restores the model's mode. The model is moved to `device`
    (default: where it already is). `test_flip`: test-time augmentation, averaging the logits of each
    image and its left-right mirror image (for classes a flip keeps, like CIFAR-10's; not for digits);
    `test_shift`: also on shifted copies (see `tta_logits`).
    """
    runtime = Runtime.for_model(model, device, precision, channels_last)
    loss_sum, correct, count = _eval_sums(model, loader, runtime, test_flip, test_shift).tolist()
    if count == 0:
        raise ConfigError("evaluate got a loader that yielded no batches.")
    return loss_sum / count, correct / count


def predict(
    model: nn.Module,
    loader_or_tensor: Iterable | torch.Tensor,
    *,
    device: str | torch.device | None = None,
    precision: str = "auto",
    channels_last: bool | None = None,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Predicted class indices (on the CPU) for a batch of images or every batch of a loader.

    Returns (predicted, true): `true` holds the loader's labels, or None when a tensor of images
    (N, C, H, W), normalised like the training data, was given.
    """
    runtime = Runtime.for_model(model, device, precision, channels_last)
    if torch.is_tensor(loader_or_tensor):
        if not loader_or_tensor.is_floating_point():
            raise ConfigError(
                f"predict needs float images normalised like the training data, got {loader_or_tensor.dtype}"
                ": convert them first (e.g. x.float() / 255, then the dataset's normalisation)."
            )
        batches = ((chunk, None) for chunk in loader_or_tensor.split(batch_size))
    else:
        batches = _first_batches(loader_or_tensor, None)
    predicted, true = [], []
    with evaluating(model):
        for x, y in batches:
            with runtime.autocast():
                predicted.append(model(runtime.inputs(x)).argmax(1).cpu())
            if y is not None:
                true.append(y.cpu())
    if not predicted:
        raise ConfigError("predict got no images (an empty tensor or loader).")
    return torch.cat(predicted), (torch.cat(true) if true else None)
