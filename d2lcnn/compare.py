"""Every architecture of the book on the same data for the same seconds of training, in one table.

Each model trains with its recipe (`d2lcnn.settings`) on the same images resized to its input side,
in a process of its own (`d2lcnn.worker`: the peak memory is its own, a crash costs only its row),
for `budget` seconds of wall clock over which its learning-rate schedule runs (`WallClockSchedule`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from d2lcnn import data as datasets
from d2lcnn.errors import ConfigError, CorruptDataError, TrainingDivergedError, is_number
from d2lcnn.files import read_json, write_json
from d2lcnn.models import create, list_models
from d2lcnn.runtime import Runtime, pick_device, pick_precision, seed_everything
from d2lcnn.settings import Recipe, Settings, recipe_for
from d2lcnn.show import Table, init_weights
from d2lcnn.trace import trace
from d2lcnn.train import evaluate, make_optimizer, make_schedule, train_epoch
from d2lcnn.worker import memory_mb, run_in_process

FORMAT = "d2lcnn-comparison"
# One model per family of the book, in the book's order; those not registered are left out.
DEFAULT_MODELS = ("lenet", "lenet_bn", "lenet_modern", "alexnet", "vgg11", "nin", "googlenet", "resnet18",
                  "densenet")  # fmt: skip
RESULT_COLUMNS = ("Model", "Input", "Params", "FLOPs/image", "Epochs", "Train s", "s/epoch", "Images/s",
                  "Peak MB", "Test acc")  # fmt: skip
RESULT_ALIGN = "l" + "r" * (len(RESULT_COLUMNS) - 1)  # the model's name left, the numbers right
SETTINGS_COLUMNS = ("Model", "Input", "Options", "Training", "Compared with d2l")
SETTINGS_ALIGN = "lrlll"
CUDA_MEMORY = "CUDA memory allocated by torch"  # what peak_memory_mb measures
PROCESS_MEMORY = "peak resident memory of the model's own process (Python, torch and the data included)"


@dataclass
class Row:
    """One model's settings and measurements; measurements are None if the model failed (`error`)."""

    model: str
    input_size: int
    options: dict
    optimizer: str
    lr: float
    batch_size: int
    note: str = ""
    init: str = "default"  # the recipe's initial weights (d2lcnn.show.init_weights)
    params: int | None = None
    flops: int | None = None  # of one forward pass of one image
    steps: int | None = None  # optimizer steps taken within the budget
    epochs: float | None = None  # passes over the training set those steps made
    train_seconds: float | None = None  # wall-clock the training took (about the budget), evaluation excluded
    epoch_seconds: float | None = None  # one full pass over the training set, at examples_per_s
    examples_per_s: float | None = None
    peak_memory_mb: float | None = None
    base_memory_mb: float | None = None  # of the process before the model was built (CPU only)
    test_acc: float | None = None  # a fraction in [0, 1]
    warmup_seconds: float | None = None  # of the warm-up step before the training, outside the budget
    error: str | None = None


@dataclass
class Comparison:
    """The result of `compare`: what it ran on, and one `Row` per model."""

    dataset: str
    budget: float  # seconds of training per model
    device: str
    precision: str
    threads: int  # torch's intra-op threads on the CPU
    torch: str
    in_channels: int
    train_examples: int
    test_examples: int
    seed: int
    memory: str  # what peak_memory_mb measures
    rows: list[Row] = field(default_factory=list)

    def header(self) -> str:
        """One line saying what the numbers were measured on."""
        plural = "s" if self.threads != 1 else ""
        threads = f" with {self.threads} thread{plural}" if self.device == "cpu" else ""
        return (
            f"{self.dataset}: {self.train_examples:,} training and {self.test_examples:,} test images; "
            f"each model trains for {self.budget:g} s on {self.device}{threads}, in {self.precision} "
            f"precision (torch {self.torch})."
        )

    def results_table(self) -> Table:
        """The measurements, one row per model ("-" where a model failed), with a note on the columns."""
        bases = [r.base_memory_mb for r in self.rows if r.base_memory_mb is not None]
        base = f", of which about {min(bases):,.0f} MB before any model is built" if bases else ""
        note = (
            "Epochs: passes over the training set within the budget; s/epoch: the seconds one pass takes "
            f"at the measured Images/s (training images per second). Peak MB: {self.memory}{base}."
        )
        rows = [_result_cells(r, self.in_channels) for r in self.rows]
        return Table(RESULT_COLUMNS, rows, align=RESULT_ALIGN, notes=[note])

    def settings_table(self) -> Table:
        """Each model's input, options and optimiser settings, and how they differ from d2l's."""
        return _settings_table(self.rows, self.in_channels, caption="Each model's settings, from its recipe:")

    def to_markdown(self, settings: bool = True) -> str:
        """The header line, the results table, the failures and (with `settings`) the settings table."""
        lines = [self.header(), "", self.results_table().to_markdown()]
        failed = [r for r in self.rows if r.error]
        if failed:
            lines += ["", "Failed:", *(f"- {r.model}: {r.error}" for r in failed)]
        if settings:
            lines += ["", self.settings_table().to_markdown()]
        return "\n".join(lines) + "\n"

    def _repr_html_(self) -> str:
        """In a notebook: the header line, the results table with its note, and why models failed."""
        table = self.results_table()
        failures = [f"{r.model} failed: {r.error}" for r in self.rows if r.error]
        return replace(table, caption=self.header(), notes=[*table.notes, *failures])._repr_html_()

    def to_json(self, path: str | Path) -> None:
        """Write the comparison as JSON, atomically."""
        write_json(path, {"format": FORMAT, **asdict(self)})

    @classmethod
    def from_json(cls, path: str | Path) -> Comparison:
        """Read a comparison written by `to_json`."""
        data = read_json(path, "comparison")
        if data.get("format") != FORMAT:
            raise CorruptDataError(f"Not a d2lcnn comparison (no 'format': '{FORMAT}').")
        try:
            rows = [Row(**row) for row in data["rows"]]
            return cls(**{f.name: data[f.name] for f in fields(cls) if f.name != "rows"}, rows=rows)
        except (KeyError, TypeError) as err:
            raise CorruptDataError(f"Not a d2lcnn comparison (missing or malformed field: {err}).") from None


def _result_cells(r: Row, in_channels: int) -> list[str]:
    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    acc = "failed" if r.error else number(None if r.test_acc is None else 100 * r.test_acc, ".1f") + "%"
    flops = "-" if r.flops is None else _si(r.flops)
    return [r.model, f"{in_channels}x{r.input_size}x{r.input_size}", number(r.params, ","), flops,
            number(r.epochs, ".3g"), number(r.train_seconds, ".1f"), number(r.epoch_seconds, ".3g"),
            number(r.examples_per_s, ",.0f"), number(r.peak_memory_mb, ",.0f"), acc]  # fmt: skip


def _settings_table(rows: Sequence[Row], in_channels: int, caption: str | None = None) -> Table:
    body = []
    for r in rows:
        options = ", ".join(f"{k}={v}" for k, v in r.options.items()) or "-"
        initial = "" if r.init == "default" else f", {r.init} init"
        training = f"{r.optimizer}, lr {r.lr:g}, batch {r.batch_size}{initial}"
        size = f"{in_channels}x{r.input_size}x{r.input_size}"
        body.append([r.model, size, options, training, r.note or "-"])
    return Table(SETTINGS_COLUMNS, body, align=SETTINGS_ALIGN, caption=caption)


def _si(number: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if number >= scale:
            return f"{number / scale:.3g} {unit}"
    return f"{number:g}"


def planned_settings_table(
    models: Sequence[str] | None = None, recipes: Mapping[str, Recipe] | None = None, in_channels: int = 1
) -> Table:
    """The settings `compare` trains `models` with (default: the registered `DEFAULT_MODELS`), with
    `recipes` as in `compare`, on images of `in_channels` channels (1: Fashion-MNIST, 3: CIFAR-10),
    before anything trains: each model's input, options, optimiser and how it differs from d2l.
    Shows as HTML in a notebook; `to_markdown()` for a file."""
    rows = [_planned_row(name, _recipe_of(name, recipes)) for name in _check_models(models)]
    return _settings_table(rows, in_channels=in_channels)


def _recipe_of(name: str, recipes: Mapping[str, Recipe] | None) -> Recipe:
    return (recipes or {}).get(name) or recipe_for(name, generic=True)


def compare(
    dataset: str = "fashion_mnist",
    budget: float = 20.0,
    models: Sequence[str] | None = None,
    *,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int = 0,
    device: str | None = None,
    recipes: Mapping[str, Recipe] | None = None,
    log: Callable[[str], Any] | None = print,
    on_row: Callable[[Comparison], Any] | None = None,
) -> Comparison:
    """Train each of `models` (default: the registered `DEFAULT_MODELS`) on `dataset` for about `budget`
    seconds, each in its own process. `recipes`: one by model name instead of its own, e.g. ``{"nin":
    recipe_for("nin").with_overrides(resize=64)}``; `on_row(comparison)` is called after every model.
    A recipe a model cannot be built with fails before anything trains; a model that fails in training
    gets its `error` in its row."""
    if not (is_number(budget) and budget > 0):
        raise ConfigError(f"The budget is seconds of training per model and must be > 0, got {budget!r}.")
    names = _check_models(models)
    chosen = {name: _recipe_of(name, recipes) for name in names}
    rows = {name: _planned_row(name, recipe) for name, recipe in chosen.items()}  # a bad recipe fails here
    torch_device = pick_device(device)
    subsets = dict(train_per_class=train_per_class, test_per_class=test_per_class)
    # Loaded once, so that missing data or a subset larger than the data fails now, not once per model.
    data = datasets.load(dataset, batch_size=1, device="cpu", seed=seed, **subsets)
    result = Comparison(
        dataset=dataset, budget=float(budget), device=str(torch_device),
        precision=pick_precision(torch_device, "auto"),
        threads=torch.get_num_threads(), torch=str(torch.__version__), in_channels=data.in_channels,
        train_examples=data.train.num_examples, test_examples=data.test.num_examples, seed=seed,
        memory=CUDA_MEMORY if torch_device.type == "cuda" else PROCESS_MEMORY,
    )  # fmt: skip
    say = log or (lambda line: None)
    say(result.header())
    for i, (name, recipe) in enumerate(chosen.items(), 1):
        row = rows[name]
        options = ", ".join(f"{k}={v}" for k, v in row.options.items())
        say(f"[{i}/{len(chosen)}] {name} at {row.input_size} px{f' ({options})' if options else ''}...")
        settings = recipe.settings.replace(device=result.device, precision=result.precision, seed=seed)
        job = {**asdict(row), **subsets, "settings": settings.as_dict(), "dataset": dataset, "budget": budget}
        outcome = run_in_process("d2lcnn.compare:measure", job)
        for key, value in (outcome.result or {"error": outcome.error}).items():
            setattr(row, key, value)
        result.rows.append(row)
        if row.error:
            say(f"    failed: {row.error}")
        else:
            steps = f"{row.steps:,} steps ({row.epochs:.3g} epochs)"
            done = f"{steps} in {row.train_seconds:.1f} s of {budget:g} s"
            say(f"    {done}, test accuracy {row.test_acc:.1%}")
        if on_row is not None:
            on_row(result)
    return result


def _check_models(models: Sequence[str] | None) -> list[str]:
    """The models asked for, each once (an unknown name fails in `_planned_row`)."""
    if models is None:
        return [m for m in DEFAULT_MODELS if m in list_models()]
    chosen = list(dict.fromkeys(m.strip() for m in models if m.strip()))
    if not chosen:
        raise ConfigError(f"No models given; name some, e.g. --models {','.join(DEFAULT_MODELS[:3])}.")
    return chosen


def _planned_row(name: str, recipe: Recipe) -> Row:
    """The row of `name` before it trains: its recipe, and its input side (the recipe's, else the
    model's). Builds the model on the meta device (no memory, no time): bad options fail here."""
    with torch.device("meta"):
        model = create(name, **recipe.model_options)
    return Row(model=name, input_size=recipe.resize or model.input_size, options=dict(recipe.model_options),
               optimizer=recipe.settings.optimizer, lr=recipe.settings.lr, batch_size=recipe.batch_size,
               note=recipe.note, init=recipe.init)  # fmt: skip


# ----------------------------------------------------------------------------- inside a model's process


class WallClockSchedule:
    """The learning-rate schedule of `settings` (one-cycle by default) laid over `seconds` of wall
    clock instead of a number of steps: after every step the rate is set for the share of the budget
    spent, so the schedule ends with the budget even if the pace changes on the way (another process
    starts, the CPU throttles). `batches(loader)` stops where the budget is nearest a whole step."""

    TICKS = 10_000  # the schedule's resolution: steps of `make_schedule` over the budget

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        settings: Settings,
        seconds: float,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.schedule = make_schedule(optimizer, settings, self.TICKS)
        self.seconds, self.clock = seconds, clock
        self.steps = 0
        self.start = clock()

    def elapsed(self) -> float:
        """Seconds since the schedule was made."""
        return self.clock() - self.start

    @property
    def done(self) -> bool:
        """Whether the next step, at the pace so far, would end more than half a step past the budget."""
        return self.steps > 0 and self.elapsed() * (1 + 0.5 / self.steps) >= self.seconds

    def step(self) -> None:
        """After an optimizer step (`train_epoch` calls it): the learning rate for the time spent."""
        self.steps += 1
        spent = min(1.0, self.elapsed() / max(self.seconds, 1e-9))
        self.schedule.last_epoch = int(self.TICKS * spent) - 1
        self.schedule.step()

    def batches(self, loader: Iterable) -> Iterator[Any]:
        """The batches of `loader` until the budget is spent."""
        for batch in loader:
            yield batch  # the step on it is taken before this generator goes on
            if self.done:
                return


def _train_for(model: nn.Module, loader: Any, settings: Settings, seconds: float) -> tuple[int, int, float]:
    """Train `model` for about `seconds` (at least one step) over as many passes of `loader` as fit;
    the steps, examples and seconds it took."""
    runtime = Runtime.for_model(model, settings.device, settings.precision, settings.channels_last)
    optimizer = make_optimizer(model, settings)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    scaler, examples, epoch = runtime.grad_scaler(), 0, 0
    model.train()
    clock = WallClockSchedule(optimizer, settings, seconds)
    while not clock.done:
        loader.set_epoch(epoch)
        sums = train_epoch(model, clock.batches(loader), optimizer, clock, loss_fn, runtime, scaler)
        loss_sum, _, count = sums.tolist()  # waits for the device
        if not math.isfinite(loss_sum):
            raise TrainingDivergedError(
                f"Training diverged: the loss became {loss_sum}. Lower the recipe's learning rate "
                f"(now {settings.lr:g}), e.g. to {settings.lr / 10:g}."
            )
        examples, epoch = examples + int(count), epoch + 1
    return clock.steps, examples, clock.elapsed()


def measure(spec: dict) -> dict:
    """What one model's process does (`compare` starts it through `d2lcnn.worker`): build the model,
    warm up, train it for the budget, evaluate it; its row's measurements."""
    settings = Settings(**spec["settings"])
    size = spec["input_size"]
    data = datasets.load(
        spec["dataset"], batch_size=spec["batch_size"], train_per_class=spec["train_per_class"],
        test_per_class=spec["test_per_class"], resize=size, device=settings.device, seed=settings.seed,
    )  # fmt: skip
    on_cuda = torch.device(settings.device).type == "cuda"
    base_memory = None if on_cuda else memory_mb(peak=False)
    options = {"num_classes": data.num_classes, "in_channels": data.in_channels, **spec["options"]}

    def build() -> nn.Module:
        seed_everything(settings.seed)  # the same initial weights every time
        return init_weights(create(spec["model"], **options), spec["init"])

    # One step of a throwaway copy allocates the memory and picks the kernels: not counted.
    _, _, warmup = _train_for(build(), data.train, settings, seconds=0)
    model = build()
    flops = trace(model, (data.in_channels, size, size)).total_flops
    steps, examples, seconds = _train_for(model, data.train, settings, spec["budget"])
    _, test_acc = evaluate(model, data.test, precision=settings.precision)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "flops": flops,
        "steps": steps,
        "epochs": steps / len(data.train),
        "train_seconds": seconds,
        "epoch_seconds": data.train.num_examples * seconds / examples,
        "examples_per_s": examples / seconds,
        "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if on_cuda else memory_mb(),
        "base_memory_mb": base_memory,
        "test_acc": test_acc,
        "warmup_seconds": warmup,
    }
