"""Where and how a model runs: device, precision, memory format, seeding and torchrun set-up,
decided in one place for training, evaluation, plots and the command line."""

from __future__ import annotations

import contextlib
import functools
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from d2lcnn.errors import ConfigError, unknown_name

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device asked for, else CUDA, then Apple's MPS, then the CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
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
        raise ConfigError("device='mps' but Apple's MPS backend is not available here: use device='cpu'.")
    return device


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16), which makes bf16 faster."""
    if "AMX" in torch.backends.cpu.get_cpu_capability():
        return True
    try:  # torch names AMX only in some builds; Linux lists the CPU's feature flags
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
    name = _ALIASES.get(str(precision).lower(), str(precision).lower())
    if name not in PRECISIONS:
        raise unknown_name("precision", str(precision), PRECISIONS)
    if device.type == "cuda":
        if name == "auto":
            # a T4 only emulates bf16 (slowly): fp16 is the fast choice there
            return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        if name == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("This GPU does not support bf16: use precision='fp16' or 'fp32'.")
        return name
    if device.type == "cpu":
        if name == "auto":
            return "bf16" if cpu_has_fast_bf16() else "fp32"
        if name == "fp16":
            raise ConfigError("fp16 training needs a CUDA GPU: on the CPU use 'bf16' or 'fp32'.")
        return name
    if name in ("auto", "fp32"):
        return "fp32"
    raise ConfigError(
        f"Mixed precision is supported on CUDA and the CPU, not on {device.type!r}: use precision='fp32'."
    )


def pick_channels_last(model: nn.Module, device: torch.device, channels_last: bool | None = None) -> bool:
    """Whether to run in channels_last memory format: as asked, or, for None, always on CUDA and on
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
    return sum(width >= 16 for width in widths) > len(widths) / 2


@dataclass(frozen=True)
class Runtime:
    """Where a model runs (device), in which precision, and in which memory format."""

    device: torch.device
    precision: str  # "bf16", "fp16" or "fp32"
    channels_last: bool

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        device: str | torch.device | None = None,
        precision: str = "auto",
        channels_last: bool | None = None,
    ) -> Runtime:
        """Pick device (default: where the model is, else the best available), precision and memory
        format for `model`, and move the model there."""
        device = pick_device(device) if device is not None else model_device(model) or pick_device()
        runtime = cls(
            device, pick_precision(device, precision), pick_channels_last(model, device, channels_last)
        )
        runtime.place(model)
        return runtime

    def place(self, model: nn.Module) -> None:
        """Move `model` to the device, in the memory format."""
        if self.channels_last:
            model.to(device=self.device, memory_format=torch.channels_last)
        else:
            model.to(device=self.device)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of images on the device, in the memory format."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass (nothing in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, active only for fp16 (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer (None for a model without tensors)."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return None if tensor is None else tensor.device


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode without autograd for the block, then the model's own mode back."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (torch's seeds every CUDA device too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def derived_seed(*numbers: int) -> int:
    """A well-mixed 32-bit seed from several integers (e.g. seed, epoch, rank)."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(1)[0])


# ----------------------------------------------------------------------------- distributed (torchrun)


@dataclass(frozen=True)
class Group:
    """This process's place among the processes of a torchrun launch (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process prints and saves."""
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Sum (or min) `tensor` over all processes, in place; returns it."""
        if self.world > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
        return tensor

    def broadcast(self, tensors: Iterable[torch.Tensor]) -> None:
        """Give every process rank 0's values of `tensors`."""
        if self.world > 1:
            for tensor in tensors:
                dist.broadcast(tensor, src=0)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to train: `model` itself, or a DistributedDataParallel copy under torchrun."""
        if self.world == 1:
            return model
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )


def join_group(device: str | torch.device | None) -> tuple[Group, torch.device]:
    """This process's Group and device; joins the torchrun process group when WORLD_SIZE > 1."""
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
        return Group(), pick_device(device)
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed.")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    picked = pick_device(device)
    if picked.type == "cuda" and (device is None or picked.index is None):
        picked = torch.device("cuda", local_rank % torch.cuda.device_count())
    if picked.type == "cuda":
        torch.cuda.set_device(picked)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if picked.type == "cuda" else "gloo")
    return Group(rank, world), picked


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DistributedDataParallel or torch.compile wrapper."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


def model_name(model: nn.Module) -> str:
    """The registry name of a d2lcnn model, else its class name."""
    name = getattr(unwrap(model), "name", None)
    return name if isinstance(name, str) else type(unwrap(model)).__name__
