"""What happens around the training loop: progress, live plot, checkpoints, divergence checks, and
weight averaging (Lookahead).

`fit` calls each event object at four moments, if it has the method:

- ``on_start(run)``: before the first epoch (a checkpoint event resumes the run here);
- ``on_step(run, sums)``: after every optimizer step, with the epoch's running
  [summed loss, correct, examples] as a device tensor (reading it waits for a GPU: do it rarely);
- ``on_epoch_end(run, stats)``: after every epoch, once `stats` is in `run.history`;
- ``on_end(run)``: when fit ends, also by an error or Ctrl-C.

Write your own the same way (fastai calls these callbacks) and pass it as ``fit(..., events=[...])``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from d2lcnn.checkpoint import (
    EpochStats,
    History,
    check_resumable,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from d2lcnn.errors import ConfigError, TrainingDivergedError
from d2lcnn.runtime import Group
from d2lcnn.settings import Settings


@dataclass
class Run:
    """The state of one `fit` call, as events see it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    config: dict  # settings and what the run is on: saved in the history and the checkpoint
    epochs: int
    steps_per_epoch: int
    num_classes: int | None
    total_steps: int
    group: Group = field(default_factory=Group)
    history: History = field(default_factory=History)
    epoch: int = 0  # epochs finished
    global_step: int = 0  # optimizer steps taken
    saved_epoch: int | None = None  # the last epoch a checkpoint holds


def notify(events: list, moment: str, *args: Any) -> None:
    """Call `moment` on every event that has it."""
    for event in events:
        method = getattr(event, moment, None)
        if method is not None:
            method(*args)


def epoch_line(stats: EpochStats, epochs: int) -> str:
    """One line per epoch: losses, accuracies, time, throughput and learning rate."""
    line = f"epoch {stats.epoch}/{epochs}  train loss {stats.train_loss:.4f} acc {stats.train_acc:.2%}"
    if stats.test_acc is not None:
        line += f"  test loss {stats.test_loss:.4f} acc {stats.test_acc:.2%}"
    return line + f"  {stats.seconds:.1f} s  {stats.examples_per_s:,.0f} ex/s  lr {stats.lr:.3g}"


class Progress:
    """A line when training starts and after every epoch, through `log`; a progress bar per epoch
    unless $D2LCNN_PROGRESS is 0 (notebooks executed for the website would store a frozen widget)."""

    def __init__(self, log=print, bar: bool | None = None) -> None:
        self.log = log
        self.show_bar = os.environ.get("D2LCNN_PROGRESS", "1") != "0" if bar is None else bar
        self.bar = None
        self.last_postfix = 0.0

    def on_start(self, run: Run) -> None:
        config = run.config
        if run.epoch >= run.epochs:
            self.log(f"{config['model']}: the checkpoint already holds all {run.epochs} epochs.")
            return
        what = f"resuming after epoch {run.epoch}" if run.epoch else "training"
        processes = f", {run.group.world} processes" if run.group.world > 1 else ""
        self.log(
            f"{what} {config['model']} on {config['data'] or 'data'}: {run.epochs} epochs x "
            f"{run.steps_per_epoch} steps, {config['device'].split(':')[0]}, {config['precision']}{processes}"
        )

    def on_step(self, run: Run, sums: torch.Tensor) -> None:
        if not self.show_bar:
            return
        if self.bar is None:
            total = min(run.steps_per_epoch, run.total_steps - run.global_step)
            self.bar = tqdm(total=total, desc=f"epoch {run.epoch + 1}/{run.epochs}", leave=False)
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.last_postfix > 0.5:  # reading sums waits for the GPU: only twice a second
            self.last_postfix = now
            loss_sum, correct, count = sums.tolist()
            self.bar.set_postfix(loss=f"{loss_sum / count:.4f}", acc=f"{correct / count:.3f}")

    def on_epoch_end(self, run: Run, stats: EpochStats) -> None:
        self.on_end(run)
        self.log(epoch_line(stats, run.epochs))

    def on_end(self, run: Run) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LiveCurves:
    """Loss and accuracy curves redrawn after every epoch (d2lcnn.plot.LivePlot)."""

    def on_start(self, run: Run) -> None:
        from d2lcnn.plot import LivePlot  # matplotlib only when a live plot is asked for

        self.plot = LivePlot(num_epochs=run.epochs)

    def on_epoch_end(self, run: Run, stats: EpochStats) -> None:
        self.plot.update(run.history)

    def on_end(self, run: Run) -> None:
        if getattr(self, "plot", None) is not None:
            self.plot.close()


class Checkpoint:
    """Save the run after every epoch; with `resume`, continue the run a file already holds.

    An existing file is never overwritten without `resume=True`: it is someone's earlier run.
    """

    def __init__(self, path: str | Path, resume: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not resume:
            raise ConfigError(
                f"Checkpoint {str(self.path)!r} already exists. Pass resume=True to continue that "
                "run, or choose another path (or delete the file) to start over."
            )
        self.resume = resume

    def on_start(self, run: Run) -> None:
        if not (self.resume and self.path.exists()):
            return
        state = read_checkpoint(self.path)
        keys = [*Settings.trajectory_fields(), "data", "batch_size", "steps_per_epoch", "world_size"]
        if run.config["schedule"] != "constant":  # the schedule's length depends on these
            keys += ["epochs", "max_steps"]
        check_resumable(self.path, state, run.config, keys)
        load_checkpoint(
            self.path, run.model, run.optimizer, run.scheduler, run.scaler if state.get("scaler") else None
        )
        run.history = History.from_dict(state["history"])
        run.history.config = run.config
        run.epoch = run.saved_epoch = int(state["extra"]["epoch"])
        run.global_step = int(state["extra"]["global_step"])

    def on_epoch_end(self, run: Run, stats: EpochStats) -> None:
        if run.group.main:
            extra = {"epoch": run.epoch, "global_step": run.global_step, "config": run.config}
            save_checkpoint(
                self.path, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler,
                scaler=run.scaler, history=run.history, extra=extra,
            )  # fmt: skip
        run.saved_epoch = run.epoch


class StopOnDivergence:
    """Stop with a clear error when the training loss becomes NaN or infinite, or when an epoch's
    mean loss stays far above chance level (ln(classes), the loss of a uniform guess).

    `check_every` steps the running loss is read (on a GPU that waits for it, so not every step).
    """

    def __init__(self, check_every: int = 1, chance_factor: float = 4.0) -> None:
        self.check_every = check_every
        self.chance_factor = chance_factor

    def on_start(self, run: Run) -> None:
        self.steps = 0  # run.global_step counts whole epochs: it stays put during one

    def on_step(self, run: Run, sums: torch.Tensor) -> None:
        self.steps += 1
        if self.steps % self.check_every == 0:
            loss_sum = run.group.all_reduce(sums[0].clone()).item()
            if not math.isfinite(loss_sum):
                raise self._error(run, f"the loss became {loss_sum} during epoch {run.epoch + 1}")

    def on_epoch_end(self, run: Run, stats: EpochStats) -> None:
        if not math.isfinite(stats.train_loss):
            raise self._error(run, f"the loss became {stats.train_loss} in epoch {stats.epoch}")
        if run.num_classes and run.num_classes > 1:
            chance = math.log(run.num_classes)
            if stats.train_loss > self.chance_factor * chance:
                raise self._error(
                    run,
                    f"epoch {stats.epoch}'s mean training loss is {stats.train_loss:.4g}, over "
                    f"{self.chance_factor:g}x the loss of a uniform guess "
                    f"(ln {run.num_classes} = {chance:.3f})",
                )

    @staticmethod
    def _error(run: Run, what: str) -> TrainingDivergedError:
        lr = run.config["lr"]
        kept = ""
        if run.saved_epoch:
            kept = f" The checkpoint {run.config['checkpoint']} holds the run up to epoch {run.saved_epoch}."
        return TrainingDivergedError(
            f"Training diverged: {what}. Lower the learning rate (now {lr:g}), e.g. lr={lr / 10:g}.{kept}"
        )


class Lookahead:
    """Weight averaging (airbench94's "lookahead"): every `every` steps, an average of the model's
    weights and batch norm statistics moves toward the model, and the model is set to the average.

    The average's memory grows as training ends, decay = base**every x (step / total)**power: early
    on it just follows the model; in the last steps it smooths over the noise of SGD. At the last
    step the model becomes the average. The average is not in checkpoints: a resumed run starts it
    again from the model (Zhang et al. 2019, "Lookahead optimizer: k steps forward, 1 step back").
    """

    def __init__(self, every: int = 5, base: float = 0.95, power: float = 3.0) -> None:
        if not (every >= 1 and 0 <= base <= 1 and power >= 0):
            raise ConfigError(
                f"Lookahead needs every >= 1, 0 <= base <= 1 and power >= 0; got every={every}, "
                f"base={base}, power={power}."
            )
        self.every, self.base, self.power = every, base, power

    @staticmethod
    def _tensors(model: nn.Module) -> list[torch.Tensor]:
        return [t for t in model.state_dict().values() if t.is_floating_point()]

    def on_start(self, run: Run) -> None:
        self.step = run.global_step
        self.average = [t.detach().clone() for t in self._tensors(run.model)]

    @torch.no_grad()
    def on_step(self, run: Run, sums: torch.Tensor) -> None:
        self.step += 1
        last = self.step >= run.total_steps
        if self.step % self.every and not last:
            return
        decay = 1.0 if last else self.base**self.every * (self.step / run.total_steps) ** self.power
        for average, current in zip(self.average, self._tensors(run.model)):
            average.lerp_(current, 1 - decay)
            current.copy_(average)
