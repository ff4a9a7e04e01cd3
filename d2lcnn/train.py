"""Training: `fit`, `evaluate`, `predict`, and checkpoints.

The loop follows nanoGPT's: plain PyTorch, one optimizer step per batch, the learning-rate schedule
stepped per batch, mixed precision through `torch.autocast`. It never waits for the GPU inside an
epoch: loss and accuracy are summed as device tensors and read once per epoch (plus a few times a
second for the progress bar), so a CUDA run keeps the GPU busy.

Reproducibility: `fit(seed=...)` reseeds torch, numpy and `random` at the start of every epoch from
(seed, epoch, rank), and the loaders shuffle from (their seed, epoch). An epoch therefore depends
only on the weights, the optimizer state and the epoch number, which is why a run resumed from a
checkpoint repeats the uninterrupted run bit for bit on the CPU (the checkpoint holds no RNG state:
none is needed).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from d2lcnn.errors import (
    ConfigError,
    CorruptDataError,
    DataNotFoundError,
    TrainingDivergedError,
    unknown_name,
)
from d2lcnn.files import atomic_write

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_PRECISION_ALIASES = {
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "float32": "fp32",
    "float": "fp32",
}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_CHECKPOINT_FORMAT = "d2lcnn-checkpoint"
# Settings that shape the run's trajectory: resuming with other values would not continue the run.
_RESUME_KEYS = (
    "optimizer",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "schedule",
    "warmup",
    "label_smoothing",
    "lr_scale",
    "seed",
    "batch_size",
    "steps_per_epoch",
    "world_size",
)


# ----------------------------------------------------------------------------- history


@dataclass
class EpochStats:
    """What one epoch did. Accuracies are fractions in [0, 1]; `epoch` counts from 1."""

    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float | None
    test_acc: float | None
    seconds: float  # wall-clock, including data loading and evaluation
    examples_per_s: float  # training examples per second, including data loading
    lr: float  # learning rate of the epoch's last step


@dataclass
class History:
    """Per-epoch statistics of a `fit` run plus the settings it ran with (`config`)."""

    epochs: list[EpochStats] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain dicts and lists only (JSON- and `torch.load(weights_only=True)`-safe)."""
        return {"epochs": [asdict(e) for e in self.epochs], "config": dict(self.config)}

    @classmethod
    def from_dict(cls, data: dict) -> History:
        """Inverse of `as_dict`."""
        names = {f.name for f in fields(EpochStats)}
        try:
            epochs = [EpochStats(**{k: e[k] for k in names}) for e in data["epochs"]]
            return cls(epochs=epochs, config=dict(data.get("config") or {}))
        except (KeyError, TypeError, AttributeError) as err:
            raise CorruptDataError(
                f"Not a d2lcnn training history (missing or malformed field: {err})."
            ) from None

    def to_json(self, path: str | Path) -> None:
        """Write the history as JSON, atomically (a crash never leaves half a file)."""
        text = json.dumps(self.as_dict(), indent=1)
        atomic_write(Path(path), lambda f: f.write(text.encode()))

    @classmethod
    def from_json(cls, path: str | Path) -> History:
        """Read a history written by `to_json`."""
        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError(f"No history file at {str(path)!r}; check the path.")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CorruptDataError(f"{str(path)!r} is not a JSON history file ({err}).") from None
        if not isinstance(data, dict):
            raise CorruptDataError(f"{str(path)!r} does not hold a d2lcnn training history.")
        return cls.from_dict(data)

    @property
    def final_test_acc(self) -> float | None:
        """Test accuracy of the last evaluated epoch (None if never evaluated)."""
        accs = [e.test_acc for e in self.epochs if e.test_acc is not None]
        return accs[-1] if accs else None

    @property
    def best_test_acc(self) -> float | None:
        """Highest test accuracy over all evaluated epochs (None if never evaluated)."""
        accs = [e.test_acc for e in self.epochs if e.test_acc is not None]
        return max(accs) if accs else None

    @property
    def total_seconds(self) -> float:
        """Wall-clock seconds of all epochs (evaluation included)."""
        return sum(e.seconds for e in self.epochs)

    def time_to_accuracy(self, acc: float) -> float | None:
        """Cumulative seconds until the test accuracy first reached `acc` (a fraction), or None."""
        if not 0 < acc <= 1:
            raise ConfigError(f"acc is a fraction in (0, 1], got {acc!r}: use 0.98 for 98%.")
        elapsed = 0.0
        for e in self.epochs:
            elapsed += e.seconds
            if e.test_acc is not None and e.test_acc >= acc:
                return elapsed
        return None

    def __repr__(self) -> str:
        acc = self.final_test_acc
        acc_text = "not evaluated" if acc is None else f"final test acc {acc:.2%}"
        model = self.config.get("model", "model")
        return f"History({model}, {len(self.epochs)} epochs, {acc_text}, {self.total_seconds:.1f} s)"


# ----------------------------------------------------------------------------- device, precision


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train on: the one asked for, else CUDA, then Apple's MPS, then the CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise unknown_name("device", str(device), ["auto", "cpu", "cuda", "mps"]) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device='cuda' but no CUDA GPU is visible. Use device='cpu' (or None to pick the best "
            "available); on Colab choose Runtime > Change runtime type > GPU."
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device={str(device)!r} but only {torch.cuda.device_count()} GPU(s) exist.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device='mps' but Apple's MPS backend is not available here.")
    return device


@functools.cache
def _cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16), which makes bf16 faster."""
    cpu = getattr(torch._C, "_cpu", None)
    probes = [getattr(cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    probes = [probe for probe in probes if probe is not None]
    if probes:
        return any(probe() for probe in probes)
    if "AMX" in torch.backends.cpu.get_cpu_capability():
        return True
    # torch builds without those probes: Linux lists the CPU's feature flags.
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & set(flags.split()))


def pick_precision(device: str | torch.device, precision: str = "auto") -> str:
    """The autocast precision for `device`: "bf16", "fp16" (with a GradScaler) or "fp32".

    "auto": on CUDA bf16 where the GPU has it natively, else fp16; on the CPU bf16 if it computes
    bf16 natively (AMX or AVX512-BF16), else fp32; fp32 on other devices.
    """
    device = torch.device(device)
    name = _PRECISION_ALIASES.get(str(precision).lower(), str(precision).lower())
    if name not in PRECISIONS:
        raise unknown_name("precision", str(precision), PRECISIONS)
    if device.type == "cuda":
        if name == "auto":
            return "bf16" if _cuda_has_bf16() else "fp16"
        if name == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("This GPU does not support bf16: use precision='fp16' or 'fp32'.")
        return name
    if device.type == "cpu":
        if name == "auto":
            return "bf16" if _cpu_has_fast_bf16() else "fp32"
        if name == "fp16":
            raise ConfigError("fp16 training needs a CUDA GPU: on the CPU use 'bf16' or 'fp32'.")
        return name
    if name in ("auto", "fp32"):
        return "fp32"
    raise ConfigError(
        f"Mixed precision is supported on CUDA and the CPU, not on {device.type!r}: use precision='fp32'."
    )


def _cuda_has_bf16() -> bool:
    try:  # a T4 only emulates bf16 (slowly); fp16 is the fast choice there
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.3 has no including_emulation
        return torch.cuda.is_bf16_supported()


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def _grad_scaler(device: torch.device, enabled: bool):
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)  # torch < 2.3


# ----------------------------------------------------------------------------- evaluate, predict


def _model_device(model: nn.Module) -> torch.device | None:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return None if tensor is None else tensor.device


def pick_channels_last(model: nn.Module, device: torch.device, channels_last: bool | None = None) -> bool:
    """Whether to train in channels_last memory format: as asked, or, for None, always on CUDA and on
    the CPU when most convolutions have at least 16 output channels. With fewer (LeNet has 6 and 16),
    the CPU's channels_last kernels are slower than the default layout: LeNet went from 19 to 28 ms
    per batch of 128 here, while VGG and ResNet gained 20-30%. A few narrow layers in a wide network
    (NiN's last block has one channel per class) do not count against it: there, max pooling in
    the default layout was several times slower than in channels_last.
    """
    if channels_last is not None:
        return bool(channels_last)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    wide = sum(width >= 16 for width in widths)
    return wide > len(widths) / 2


def _prepare_model(model: nn.Module, device: torch.device, channels_last: bool | None) -> bool:
    channels_last = pick_channels_last(model, device, channels_last)
    if channels_last:
        model.to(device=device, memory_format=torch.channels_last)
    else:
        model.to(device=device)
    return channels_last


def _to_device(
    x: torch.Tensor, y: torch.Tensor | None, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    if y is not None:
        y = y.to(device, non_blocking=True)
    return x, y


def _batch(item: Any) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        x, y = item
    except (TypeError, ValueError):
        raise ConfigError(
            f"A loader must yield (images, labels) pairs; this one yielded a {type(item).__name__}."
        ) from None
    return x, y


def _eval_sums(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    precision: str,
    channels_last: bool,
    test_flip: bool = False,
) -> torch.Tensor:
    """[summed loss, correct, examples] over `loader`, on `device`, without a host sync.
    `test_flip` averages the logits of each image and its mirror image."""
    was_training = model.training
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    try:
        with torch.inference_mode():
            sums = torch.zeros(3, dtype=torch.float64, device=device)
            for item in loader:
                x, y = _to_device(*_batch(item), device, channels_last)
                with _autocast(device, precision):
                    logits = model(x).float()
                    if test_flip:
                        logits = (logits + model(x.flip(-1)).float()) / 2
                sums[0] += loss_fn(logits, y)
                sums[1] += (logits.argmax(1) == y).sum()
                sums[2] += y.shape[0]
            return sums.clone()
    finally:
        model.train(was_training)


def _eval_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return pick_device(device)
    return _model_device(model) or pick_device()


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: str | torch.device | None = None,
    precision: str = "auto",
    channels_last: bool | None = None,
    test_flip: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (a fraction) of `model` over `loader`.

    Runs in eval mode under `torch.inference_mode()` and restores the model's previous mode. The
    model is moved to `device` (default: where it already is). `test_flip`: test-time
    augmentation, averaging the logits of each image and its left-right mirror image (for data
    whose classes do not change under a flip, like CIFAR-10; not for digits).
    """
    device = _eval_device(model, device)
    precision = pick_precision(device, precision)
    channels_last = _prepare_model(model, device, channels_last)
    sums = _eval_sums(model, loader, device, precision, channels_last, test_flip)
    loss_sum, correct, count = sums.tolist()
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
    device = _eval_device(model, device)
    precision = pick_precision(device, precision)
    channels_last = _prepare_model(model, device, channels_last)
    if torch.is_tensor(loader_or_tensor):
        images = loader_or_tensor
        if not images.is_floating_point():
            raise ConfigError(
                f"predict needs float images normalised like the training data, got {images.dtype}"
                ": convert them first (e.g. x.float() / 255, then the dataset's normalisation)."
            )
        batches = ((chunk, None) for chunk in images.split(batch_size))
    else:
        batches = (_batch(item) for item in loader_or_tensor)
    predicted, true = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for x, y in batches:
                x, _ = _to_device(x, None, device, channels_last)
                with _autocast(device, precision):
                    logits = model(x)
                predicted.append(logits.argmax(1).cpu())
                if y is not None:
                    true.append(y.cpu())
    finally:
        model.train(was_training)
    if not predicted:
        raise ConfigError("predict got no images (an empty tensor or loader).")
    return torch.cat(predicted), (torch.cat(true) if true else None)


# ----------------------------------------------------------------------------- checkpoints


def _unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DistributedDataParallel or torch.compile wrapper."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


_PLAIN = (str, int, float, bool, type(None))


def _check_loadable(value: Any, where: str) -> None:
    """Refuse values that `torch.load(weights_only=True)` could not read back."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_loadable(key, f"{where} key")
            _check_loadable(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_loadable(item, f"{where}[{i}]")
    elif type(value) not in _PLAIN and not isinstance(value, torch.Tensor):
        # exact types: subclasses such as numpy.float64 or TorchVersion pickle as their own class
        raise ConfigError(
            f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which "
            "torch.load(weights_only=True) cannot read back: store plain Python values "
            "(int, float, str, list, dict) or tensors."
        )


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    history: History | None = None,
    extra: dict | None = None,
) -> None:
    """Save model (and optionally optimizer, scheduler, scaler, history) state atomically.

    `extra` must hold plain values or tensors so `torch.load(weights_only=True)` can read it back.
    """
    model = _unwrap(model)
    if extra is not None:
        _check_loadable(extra, "extra")
    state = {
        "format": _CHECKPOINT_FORMAT,
        "version": 1,
        "model_name": _model_name(model),
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "history": None if history is None else history.as_dict(),
        "extra": extra,
    }
    atomic_write(Path(path), lambda f: torch.save(state, f))


def _read_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise DataNotFoundError(f"No checkpoint file at {str(path)!r}; check the path.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise CorruptDataError(
                f"{str(path)!r} holds Python objects that torch.load(weights_only=True) refuses "
                "to unpickle (e.g. a whole pickled model). Save model.state_dict() or use "
                "d2lcnn.train.save_checkpoint instead."
            ) from None
        raise CorruptDataError(
            f"{str(path)!r} is not a readable PyTorch checkpoint (truncated or another kind of "
            f"file?): {reason}"
        ) from None
    if isinstance(state, dict) and state.get("format") == _CHECKPOINT_FORMAT:
        return state
    if isinstance(state, dict) and state and all(torch.is_tensor(v) for v in state.values()):
        return {"format": _CHECKPOINT_FORMAT, "model": state}  # a bare model.state_dict()
    raise CorruptDataError(
        f"{str(path)!r} is a PyTorch file but neither a d2lcnn checkpoint nor a model state_dict."
    )


def _load_model_state(model: nn.Module, state: dict, path: Path, saved_name: str | None) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and torch.is_tensor(state[k]) and state[k].shape != own[k].shape
    ]
    if missing or unexpected or reshaped:
        problems = []
        if reshaped:
            problems.append(f"{len(reshaped)} tensor(s) differ in shape ({reshaped[0]})")
        if missing:
            problems.append(f"{len(missing)} missing ({missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected ({unexpected[0]})")
        origin = f" was saved from a {saved_name} and" if saved_name else ""
        raise ConfigError(
            f"Checkpoint {str(path)!r}{origin} does not fit this {_model_name(model)}: "
            f"{'; '.join(problems)}. Build the same architecture (same options and number of "
            "classes) before loading, or start over without resume."
        )
    model.load_state_dict(state)


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
) -> dict:
    """Load a checkpoint into `model` (and the other objects given); return the whole checkpoint.

    The returned dict has "history" (as plain dicts; `History.from_dict` rebuilds it) and "extra".
    Uses `torch.load(weights_only=True)`; a bare `model.state_dict()` file also loads.
    """
    path = Path(path)
    state = _read_checkpoint(path)
    _apply_checkpoint(state, path, model, optimizer, scheduler, scaler)
    return state


def _apply_checkpoint(state: dict, path: Path, model, optimizer, scheduler, scaler) -> None:
    _load_model_state(_unwrap(model), state["model"], path, state.get("model_name"))
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if target is None:
            continue
        if state.get(name) is None:
            raise ConfigError(f"Checkpoint {str(path)!r} holds no {name} state to load.")
        try:
            target.load_state_dict(state[name])
        except (ValueError, KeyError, RuntimeError) as err:
            raise ConfigError(
                f"The {name} state in {str(path)!r} does not fit the {name} given "
                f"({str(err).strip().splitlines()[0]}). Build it the same way as when saving."
            ) from None


# ----------------------------------------------------------------------------- fit helpers


def _model_name(model: nn.Module) -> str:
    name = getattr(model, "name", None)
    return name if isinstance(name, str) else type(model).__name__


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _keep_frozen_norms_in_eval(model: nn.Module) -> None:
    # A frozen backbone must not change at all: batch norm layers whose parameters are frozen
    # keep their running statistics (eval mode) instead of updating them on the new data. Any
    # layer with running statistics counts, d2lcnn's from-scratch BatchNorm as well as torch's.
    for module in model.modules():
        if isinstance(module.__dict__.get("_buffers", {}).get("running_mean"), torch.Tensor):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()


def _make_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    lr_scale: dict[str, float] | None = None,
) -> torch.optim.Optimizer:
    # Weight decay shrinks conv and linear weights only; decaying biases and BatchNorm scales
    # (tensors with < 2 dims) only hurts (as in nanoGPT and most ImageNet recipes).
    lr_scale = dict(lr_scale or {})
    names = {n for n, _ in model.named_modules() if n}
    for prefix in lr_scale:
        if prefix not in names:
            raise unknown_name("module", prefix, [n for n in names if "." not in n])
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for param_name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        owner = [k for k in lr_scale if param_name.startswith(k + ".")]
        scale = lr_scale[max(owner, key=len)] if owner else 1.0  # the most specific prefix wins
        decay = weight_decay if p.dim() >= 2 else 0.0
        groups.setdefault((scale, decay), []).append(p)
    if not groups:
        raise ConfigError("The model has no trainable parameters (requires_grad is off for all).")
    param_groups = [
        {"params": ps, "lr": lr * scale, "weight_decay": decay} for (scale, decay), ps in groups.items()
    ]
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    first = param_groups[0]["params"][0]
    return torch.optim.AdamW(param_groups, lr=lr, fused=first.device.type == "cuda" or None)


def _make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, lr: float, total_steps: int, warmup: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step multiplier of each parameter group's own learning rate.

    "onecycle" has the shape of torch's OneCycleLR (cosine up from lr/25 to lr over the warmup, then
    cosine down to lr/250,000) but works for any number of steps, even one, and keeps momentum fixed.
    """
    warmup_steps = int(warmup * total_steps)

    def one_cycle(step: int) -> float:
        start, end = 1 / 25, 1 / 250_000
        if step < warmup_steps:
            return start + (1 - start) * (1 - math.cos(math.pi * step / warmup_steps)) / 2
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return end + (1 - end) * (1 + math.cos(math.pi * progress)) / 2

    def cosine(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    factors = {"onecycle": one_cycle, "cosine": cosine, "constant": lambda step: 1.0}
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors[schedule])


def _check_settings(settings: dict) -> None:
    epochs, lr, seed = settings["epochs"], settings["lr"], settings["seed"]
    eval_every, max_steps = settings["eval_every"], settings["max_steps"]
    momentum, weight_decay = settings["momentum"], settings["weight_decay"]
    warmup, label_smoothing = settings["warmup"], settings["label_smoothing"]

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(isinstance(epochs, int) and epochs >= 1, f"epochs must be an int >= 1, got {epochs!r}.")
    need(
        isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0,
        f"lr must be > 0, got {lr!r}.",
    )
    if settings["optimizer"] not in OPTIMIZERS:
        raise unknown_name("optimizer", str(settings["optimizer"]), OPTIMIZERS)
    if settings["schedule"] not in SCHEDULES:
        raise unknown_name("schedule", str(settings["schedule"]), SCHEDULES)
    need(0 <= momentum < 1, f"momentum must be in [0, 1), got {momentum!r}.")
    need(weight_decay >= 0, f"weight_decay must be >= 0, got {weight_decay!r}.")
    need(0 <= warmup < 1, f"warmup is a fraction of all steps in [0, 1), got {warmup!r}.")
    need(0 <= label_smoothing < 1, f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
    need(isinstance(seed, int) and seed >= 0, f"seed must be an int >= 0, got {seed!r}.")
    need(
        isinstance(eval_every, int) and eval_every >= 1,
        f"eval_every must be an int >= 1 (epochs between evaluations), got {eval_every!r}.",
    )
    need(
        max_steps is None or (isinstance(max_steps, int) and max_steps >= 1),
        f"max_steps must be None or an int >= 1, got {max_steps!r}.",
    )


def _setup_distributed(
    device: str | torch.device | None,
) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the torchrun process group when WORLD_SIZE > 1."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0")) if world > 1 else 0
        except ValueError:
            raise ConfigError(
                "WORLD_SIZE and RANK must be integers; launch with torchrun, which sets them."
            ) from None
        if world > 1 and "RANK" not in os.environ:
            raise ConfigError(
                f"WORLD_SIZE={world} but RANK is not set: launch with torchrun, which sets both."
            )
    if world <= 1:
        return 0, 1, pick_device(device)
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed.")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device is None and torch.cuda.is_available():
        picked = torch.device("cuda", local_rank % torch.cuda.device_count())
    else:
        picked = pick_device(device)
        if picked.type == "cuda" and picked.index is None:
            picked = torch.device("cuda", local_rank % torch.cuda.device_count())
    if picked.type == "cuda":
        torch.cuda.set_device(picked)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if picked.type == "cuda" else "gloo")
    return rank, world, picked


def _all_reduce(tensor: torch.Tensor, world: int, op: str = "sum") -> torch.Tensor:
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
    return tensor


def _broadcast(tensors: Iterable[torch.Tensor], world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        for tensor in tensors:
            dist.broadcast(tensor, src=0)


def _diverged(loss: float, epoch: int, step: int, lr: float, checkpoint: Path | None):
    what = "nan" if math.isnan(loss) else "inf"
    kept = f" The checkpoint {checkpoint.name} keeps the last finished epoch." if checkpoint else ""
    return TrainingDivergedError(
        f"loss became {what} at epoch {epoch} step {step}; lower the learning rate "
        f"(now {lr:g}), e.g. lr={lr / 10:g}.{kept}"
    )


def _resume_state(
    path: Path, model: nn.Module, optimizer, scheduler, scaler, config: dict
) -> tuple[History, int, int]:
    """Load a fit checkpoint; return (history, finished epochs, global step)."""
    state = _read_checkpoint(path)
    extra = state.get("extra") or {}
    saved = extra.get("config")
    complete = all(key in extra for key in ("epoch", "global_step"))
    if not isinstance(saved, dict) or not complete or state.get("history") is None:
        raise ConfigError(
            f"{str(path)!r} was not written by fit (no epoch/config in it), so it cannot be "
            "resumed. Load its weights with load_checkpoint, or fit with another checkpoint path."
        )
    keys = list(_RESUME_KEYS)
    if config["schedule"] != "constant":  # the schedule's length depends on these
        keys += ["epochs", "max_steps"]
    differ = [k for k in keys if saved.get(k) != config.get(k)]
    if differ:
        then = ", ".join(f"{k}={saved.get(k)!r}" for k in differ)
        now = ", ".join(f"{k}={config.get(k)!r}" for k in differ)
        raise ConfigError(
            f"Checkpoint {str(path)!r} is a run with {then}; this call has {now}. Resume with the "
            "same settings, or start a new run with another checkpoint path."
        )
    if not state.get("scaler"):  # saved without fp16 (an empty state): keep the fresh scaler
        scaler = None
    _apply_checkpoint(state, path, model, optimizer, scheduler, scaler)
    return History.from_dict(state["history"]), int(extra["epoch"]), int(extra["global_step"])


# ----------------------------------------------------------------------------- fit


def fit(
    model: nn.Module,
    data: Any,
    *,
    epochs: int,
    lr: float,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 5e-4,
    schedule: str = "onecycle",
    warmup: float = 0.2,
    label_smoothing: float = 0.0,
    device: str | torch.device | None = None,
    precision: str = "auto",
    channels_last: bool | None = None,
    compile: bool = False,
    seed: int = 0,
    progress: bool = True,
    live_plot: bool = False,
    eval_every: int = 1,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    lr_scale: dict[str, float] | None = None,
    test_flip: bool = False,
    log: Callable[[str], Any] | None = print,
) -> History:
    """Train `model` on `data.train`, evaluating on `data.test`; return the per-epoch History.

    - optimizer: "sgd" (with `momentum`, Nesterov if `nesterov`) or "adamw" (ignores momentum).
      `weight_decay` applies to conv/linear weights, not to biases or BatchNorm parameters.
    - schedule, stepped every batch: "onecycle" (peak `lr` after `warmup` of all steps, then
      cosine down), "cosine" (linear warmup then cosine to 0) or "constant". Momentum stays fixed.
    - precision: "auto" picks bf16/fp16/fp32 for the device (see `pick_precision`); `device` None
      picks CUDA, then MPS, then the CPU. The model is moved there; channels_last None decides by
      `pick_channels_last`.
    - compile: `model.compile()` (in place, torch >= 2.2); the first epoch is slower.
    - seed: reseeds torch, numpy and random every epoch; same seed on the CPU, same result.
    - eval_every: evaluate every that many epochs (always after the last one).
    - checkpoint: saved atomically after every epoch. An existing file is only continued with
      `resume=True`, never overwritten; a finished run resumes to its stored History at once.
    - max_steps: stop after that many optimizer steps in all (the schedule is shortened to match).
    - lr_scale: learning-rate multipliers by module name, e.g. {"fc": 10.0} trains a new head ten
      times faster than a pretrained backbone. Frozen parameters (requires_grad False) are skipped,
      and batch norm layers whose parameters are frozen stay in eval mode (their statistics too).
    - test_flip: evaluate with test-time flips (see `evaluate`).
    - progress: a progress bar per epoch and one summary line per epoch through `log`;
      progress=False is silent. live_plot: a figure updated after every epoch.

    The train loss includes label smoothing; the test loss is plain cross-entropy. Launched with
    torchrun (WORLD_SIZE > 1), fit joins the process group, trains a DistributedDataParallel copy
    on this rank's shard and returns the same History on every rank; only rank 0 prints and saves.
    Raises TrainingDivergedError as soon as the loss becomes NaN or infinite.
    """
    settings = {
        "epochs": epochs,
        "lr": lr,
        "optimizer": optimizer,
        "momentum": momentum,
        "nesterov": nesterov,
        "weight_decay": weight_decay,
        "schedule": schedule,
        "warmup": warmup,
        "label_smoothing": label_smoothing,
        "seed": seed,
        "eval_every": eval_every,
        "max_steps": max_steps,
        "lr_scale": dict(lr_scale or {}),
        "test_flip": test_flip,
    }
    _check_settings(settings)
    train_loader = getattr(data, "train", None)
    if train_loader is None:
        raise ConfigError(
            f"fit needs a dataset with .train and .test loaders (from d2lcnn.data.load), got a "
            f"{type(data).__name__}."
        )
    test_loader = getattr(data, "test", None)
    if resume and checkpoint is None:
        raise ConfigError("resume=True needs checkpoint=<path of the run to continue>.")
    checkpoint = None if checkpoint is None else Path(checkpoint)
    if checkpoint is not None and checkpoint.exists() and not resume:
        raise ConfigError(
            f"Checkpoint {str(checkpoint)!r} already exists. Pass resume=True to continue that "
            "run, or choose another path (or delete the file) to start over."
        )

    rank, world, device = _setup_distributed(device)
    precision = pick_precision(device, precision)
    main_process = rank == 0
    if world > 1:
        train_loader = train_loader.shard(rank, world)
        if test_loader is not None:
            test_loader = test_loader.shard(rank, world)
    # Every rank must take the same number of steps, or DDP's gradient all-reduce would hang.
    steps_per_epoch = int(_all_reduce(torch.tensor(len(train_loader), device=device), world, "min").item())
    if steps_per_epoch == 0:
        raise ConfigError("The training loader is empty: it yields no batches.")
    total_steps = epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)

    channels_last = pick_channels_last(model, device, channels_last)
    config = {
        "model": _model_name(model),
        "data": getattr(data, "name", None),
        **settings,
        "batch_size": getattr(train_loader, "batch_size", None),
        "steps_per_epoch": steps_per_epoch,
        "world_size": world,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "precision": precision,
        "channels_last": channels_last,
        "compile": compile,
        "checkpoint": None if checkpoint is None else checkpoint.name,
        "torch": str(torch.__version__),  # a str subclass that weights_only cannot load
    }

    _seed_everything(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    _prepare_model(model, device, channels_last)
    if compile:
        if not hasattr(model, "compile"):
            raise ConfigError("compile=True needs torch >= 2.2 (nn.Module.compile).")
        model.compile()  # in place: d2lcnn models keep their own __call__ that explains bad inputs
    opt = _make_optimizer(model, optimizer, lr, momentum, nesterov, weight_decay, lr_scale)
    scheduler = _make_scheduler(opt, schedule, lr, total_steps, warmup)
    scaler = _grad_scaler(device, enabled=precision == "fp16")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    history, start_epoch, global_step = History(config=config), 0, 0
    if resume and checkpoint is not None and checkpoint.exists():
        history, start_epoch, global_step = _resume_state(checkpoint, model, opt, scheduler, scaler, config)
        history.config = config
    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    say = log if (progress and main_process and log is not None) else None
    if say and start_epoch >= epochs:
        say(f"{config['model']}: the checkpoint already holds all {epochs} epochs.")
    elif say:
        what = f"resuming after epoch {start_epoch}" if start_epoch else "training"
        say(
            f"{what} {config['model']} on {config['data'] or 'data'}: {epochs} epochs x "
            f"{steps_per_epoch} steps, {device.type}, {precision}"
            + (f", {world} processes" if world > 1 else "")
        )
    bar_cls = None
    # D2LCNN_PROGRESS=0 keeps the per-epoch lines but drops the live bar: notebooks executed
    # headless for the website would otherwise store a frozen widget instead of a finished bar.
    if progress and main_process and os.environ.get("D2LCNN_PROGRESS", "1") != "0":
        from tqdm.auto import tqdm as bar_cls
    plot = None
    if live_plot and main_process:
        from d2lcnn.plot import LivePlot

        plot = LivePlot(num_epochs=epochs)
    # On the CPU reading the loss is free, so check it every step; elsewhere that would stall the
    # GPU, so check the running sum every 50 steps (and at the end of every epoch).
    check_every = 1 if device.type == "cpu" and world == 1 else 50

    bar = None
    try:
        for epoch in range(start_epoch, epochs):
            if max_steps is not None and global_step >= max_steps:
                break
            _seed_everything(_epoch_seed(seed, epoch, rank))
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            steps = min(steps_per_epoch, total_steps - global_step)
            if bar_cls is not None:
                bar = bar_cls(total=steps, desc=f"epoch {epoch + 1}/{epochs}", leave=False)
            train_model.train()
            _keep_frozen_norms_in_eval(model)
            t0 = last_postfix = time.perf_counter()
            sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, examples
            last_lr = opt.param_groups[0]["lr"]
            steps_before = global_step
            for step, item in enumerate(train_loader):
                if step == steps:
                    break
                x, y = _to_device(*_batch(item), device, channels_last)
                with _autocast(device, precision):
                    logits = train_model(x)
                    loss = loss_fn(logits, y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                last_lr = opt.param_groups[0]["lr"]
                scheduler.step()
                global_step += 1

                sums[0] += loss.detach() * y.shape[0]
                sums[1] += (logits.detach().argmax(1) == y).sum()
                sums[2] += y.shape[0]
                if (step + 1) % check_every == 0:
                    running = _all_reduce(sums[0].clone(), world).item()
                    if not math.isfinite(running):
                        raise _diverged(running, epoch + 1, step + 1, lr, checkpoint)
                if bar is not None:
                    bar.update(1)
                    now = time.perf_counter()
                    if now - last_postfix > 0.5:  # .item() waits for the GPU: only twice a second
                        last_postfix = now
                        loss_sum, correct, count = sums.tolist()
                        bar.set_postfix(loss=f"{loss_sum / count:.4f}", acc=f"{correct / count:.3f}")
            if bar is not None:
                bar.close()
            if global_step == steps_before:
                raise ConfigError(f"The training loader yielded no batches in epoch {epoch + 1}.")

            loss_sum, correct, count = _all_reduce(sums, world).tolist()  # one sync per epoch
            if not math.isfinite(loss_sum):
                raise _diverged(loss_sum, epoch + 1, steps, lr, checkpoint)
            train_seconds = time.perf_counter() - t0
            test_loss = test_acc = None
            last_epoch = epoch + 1 == epochs or global_step >= total_steps
            if test_loader is not None and ((epoch + 1) % eval_every == 0 or last_epoch):
                # BatchNorm statistics differ across ranks (each saw its own batches): use rank 0's.
                _broadcast(model.buffers(), world)
                test_sums = _eval_sums(model, test_loader, device, precision, channels_last, test_flip)
                test_loss_sum, test_correct, test_count = _all_reduce(test_sums, world).tolist()
                if test_count:
                    test_loss, test_acc = test_loss_sum / test_count, test_correct / test_count
            times = torch.tensor(
                [time.perf_counter() - t0, train_seconds], dtype=torch.float64, device=device
            )
            _broadcast([times], world)  # every rank reports rank 0's clock, so histories agree
            seconds, train_seconds = times.tolist()
            stats = EpochStats(
                epoch=epoch + 1,
                train_loss=loss_sum / count,
                train_acc=correct / count,
                test_loss=test_loss,
                test_acc=test_acc,
                seconds=seconds,
                examples_per_s=count / train_seconds,
                lr=last_lr,
            )
            history.epochs.append(stats)
            if say:
                say(_epoch_line(stats, epochs))
            if plot is not None:
                plot.update(history)
            if checkpoint is not None and main_process:
                extra = {"epoch": epoch + 1, "global_step": global_step, "config": config}
                save_checkpoint(
                    checkpoint,
                    model=model,
                    optimizer=opt,
                    scheduler=scheduler,
                    scaler=scaler,
                    history=history,
                    extra=extra,
                )
    finally:
        if bar is not None:
            bar.close()
        if plot is not None:
            plot.close()
    _broadcast(model.buffers(), world)
    return history


def _epoch_line(stats: EpochStats, epochs: int) -> str:
    line = f"epoch {stats.epoch}/{epochs}  train loss {stats.train_loss:.4f} acc {stats.train_acc:.2%}"
    if stats.test_acc is not None:
        line += f"  test loss {stats.test_loss:.4f} acc {stats.test_acc:.2%}"
    return line + f"  {stats.seconds:.1f} s  {stats.examples_per_s:,.0f} ex/s  lr {stats.lr:.3g}"
