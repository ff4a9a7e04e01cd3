"""What a training run keeps: its History, and checkpoints to look at or resume from.

A checkpoint is one file written atomically (a crash never leaves half of one) and read with
`torch.load(weights_only=True)`, so it holds tensors and plain Python values only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from d2lcnn.errors import ConfigError, CorruptDataError, DataNotFoundError
from d2lcnn.files import atomic_write, read_json, write_json
from d2lcnn.runtime import model_name, unwrap

FORMAT = "d2lcnn-checkpoint"


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
        """Write the history as JSON, atomically."""
        write_json(path, self.as_dict())

    @classmethod
    def from_json(cls, path: str | Path) -> History:
        """Read a history written by `to_json`."""
        return cls.from_dict(read_json(path, "history"))

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


# ----------------------------------------------------------------------------- saving and loading

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
    if extra is not None:
        _check_loadable(extra, "extra")
    state = {
        "format": FORMAT,
        "version": 1,
        "model_name": model_name(model),
        "model": unwrap(model).state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "history": None if history is None else history.as_dict(),
        "extra": extra,
    }
    atomic_write(Path(path), lambda f: torch.save(state, f))


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at `path` as a dict; a bare `model.state_dict()` file reads as one too."""
    path = Path(path)
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
                "d2lcnn.checkpoint.save_checkpoint instead."
            ) from None
        raise CorruptDataError(
            f"{str(path)!r} is not a readable PyTorch checkpoint (truncated, or another kind of file?): "
            f"{reason}"
        ) from None
    if isinstance(state, dict) and state.get("format") == FORMAT:
        return state
    if isinstance(state, dict) and state and all(torch.is_tensor(v) for v in state.values()):
        return {"format": FORMAT, "model": state}
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
    problems = [f"{len(reshaped)} tensor(s) differ in shape ({reshaped[0]})"] if reshaped else []
    problems += [f"{len(missing)} missing ({missing[0]})"] if missing else []
    problems += [f"{len(unexpected)} unexpected ({unexpected[0]})"] if unexpected else []
    if problems:
        origin = f" was saved from a {saved_name} and" if saved_name else ""
        raise ConfigError(
            f"Checkpoint {str(path)!r}{origin} does not fit this {model_name(model)}: {'; '.join(problems)}. "
            "Build the same architecture (same options and number of classes) before loading, or start "
            "over without resume."
        )
    model.load_state_dict(state)


def load_checkpoint(path: str | Path, model: nn.Module, optimizer=None, scheduler=None, scaler=None) -> dict:
    """Load a checkpoint into `model` (and the optimizer, scheduler, GradScaler given, whose
    states it must hold); return the whole checkpoint.

    The returned dict has "history" (as plain dicts; `History.from_dict` rebuilds it) and "extra".
    """
    path = Path(path)
    state = read_checkpoint(path)
    _load_model_state(unwrap(model), state["model"], path, state.get("model_name"))
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
    return state


def check_resumable(path: Path, state: dict, config: dict, keys: list[str]) -> None:
    """Refuse to resume a checkpoint not written by fit, or one whose run differs in `keys`."""
    extra = state.get("extra") or {}
    saved = extra.get("config")
    if not isinstance(saved, dict) or "epoch" not in extra or state.get("history") is None:
        raise ConfigError(
            f"{str(path)!r} was not written by fit (no epoch/config in it), so it cannot be resumed. "
            "Load its weights with load_checkpoint, or fit with another checkpoint path."
        )
    differ = [k for k in keys if saved.get(k) != config.get(k)]
    if differ:
        then = ", ".join(f"{k}={saved.get(k)!r}" for k in differ)
        now = ", ".join(f"{k}={config.get(k)!r}" for k in differ)
        raise ConfigError(
            f"Checkpoint {str(path)!r} is a run with {then}; this call has {now}. Resume with the "
            "same settings, or start a new run with another checkpoint path."
        )
