"""Every architecture of the book on the same data and the same compute budget, in one table.

``d2lcnn compare --dataset fashion_mnist --budget 60`` trains each model for about `budget` seconds
of wall-clock and measures parameters, FLOPs per image, seconds per epoch, throughput, peak memory
and test accuracy. How it keeps the comparison fair:

- Same data: every model sees the same images (no augmentation), resized to the input side of the
  `SETTINGS` table below, which also lists where that differs from d2l.
- Same budget, complete schedule: a few warm-up steps time one training step of the model, which
  gives the number of steps that fit in the budget; `fit` then runs exactly that many steps, so
  the one-cycle learning-rate schedule ends when the budget does. The warm-up is not counted.
- Own process: each model trains in a fresh Python process (``python -m d2lcnn.compare``), so the
  peak memory is that model's alone, and a model that fails (a bad option, an input it cannot
  take, a crash) leaves a message in its row instead of losing the other models' results.

The optimiser settings are each model's recipe (`d2lcnn.recipes`); a model without one gets
`GENERIC_RECIPE`.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from d2lcnn.errors import ConfigError, CorruptDataError, D2LCNNError, DataNotFoundError, unknown_name
from d2lcnn.files import atomic_write
from d2lcnn.recipes import RECIPES, Recipe

__all__ = [
    "DEFAULT_MODELS",
    "GENERIC_RECIPE",
    "SETTINGS",
    "Comparison",
    "Row",
    "Setting",
    "compare",
    "plot_comparison",
    "settings_markdown",
]

_FORMAT = "d2lcnn-comparison"


@dataclass(frozen=True)
class Setting:
    """How one model enters the comparison."""

    size: int  # side of the square input in pixels; the images are resized to it
    options: dict = field(default_factory=dict)  # keyword arguments of `create` besides classes/channels
    note: str = ""  # how this differs from d2l's chapter on the model


# Input sides follow d2l where a CPU can afford it. VGG-11 and ResNet-18 use their small-image
# variants at 32 px instead (d2l: 224 and 96 px), which is what makes them trainable on a CPU.
SETTINGS: dict[str, Setting] = {
    "lenet": Setting(28, note="as in d2l"),
    "lenet_bn": Setting(28, note="as in d2l"),
    "lenet_modern": Setting(28, note="not in d2l: ReLU, max pooling and batch norm"),
    "alexnet": Setting(224, note="as in d2l (AlexNet takes 195 to 226 px only)"),
    "vgg11": Setting(
        32,
        {"head": "cifar", "batch_norm": True, "width": 0.5},
        note="d2l: 224 px, 1/4 width, no batch norm",
    ),  # fmt: skip
    "nin": Setting(96, note="d2l: 224 px"),
    "googlenet": Setting(96, note="as in d2l"),
    "resnet18": Setting(32, {"stem": "cifar"}, note="d2l: 96 px with the ImageNet stem"),
    "densenet": Setting(96, note="as in d2l"),
}

# One model per family of the book, in the book's order; those not registered are left out.
DEFAULT_MODELS = ("lenet", "lenet_bn", "lenet_modern", "alexnet", "vgg11", "nin", "googlenet", "resnet18",
                  "densenet")  # fmt: skip


# For a model that has no recipe in d2lcnn.recipes (its dataset and epochs are not used here).
GENERIC_RECIPE = Recipe("fashion_mnist", epochs=1, lr=0.05, batch_size=128)


# ----------------------------------------------------------------------------- results


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
    params: int | None = None
    flops: int | None = None  # of one forward pass of one image
    steps: int | None = None  # optimizer steps taken within the budget
    epochs: float | None = None  # passes over the training set those steps made
    train_seconds: float | None = None  # measured wall-clock of the training, evaluation excluded
    epoch_seconds: float | None = None  # one full pass over the training set, at examples_per_s
    examples_per_s: float | None = None
    peak_memory_mb: float | None = None
    base_memory_mb: float | None = None  # of the process before the model was built (CPU only)
    test_acc: float | None = None  # a fraction in [0, 1]
    warmup_seconds: float | None = None  # spent timing the training step, outside the budget
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
        threads = f", {self.threads} thread{'s' if self.threads != 1 else ''}" if self.device == "cpu" else ""
        return (
            f"{self.dataset}: {self.train_examples:,} training / {self.test_examples:,} test images; "
            f"budget {self.budget:g} s of training per model; device {self.device}{threads}; "
            f"precision {self.precision}; torch {self.torch}"
        )

    def to_markdown(self, settings: bool = True) -> str:
        """The header line, the results table (one line per model), failures, and the settings."""
        lines = [
            self.header(),
            "",
            _markdown_table(_RESULT_COLUMNS, [_result_cells(self, r) for r in self.rows]),
        ]
        bases = [r.base_memory_mb for r in self.rows if r.base_memory_mb is not None]
        base = f", of which about {min(bases):,.0f} MB before any model is built" if bases else ""
        lines += ["", f"Peak MB: {self.memory}{base}. Epochs: passes over the training set in the budget."]
        failed = [r for r in self.rows if r.error]
        if failed:
            lines += ["", "Failed:", *(f"- {r.model}: {r.error}" for r in failed)]
        if settings:
            lines += ["", _settings_table(self.rows, self.in_channels)]
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict:
        """Plain dicts and lists (JSON-safe)."""
        return {"format": _FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> Comparison:
        """Inverse of `as_dict`."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise CorruptDataError("Not a d2lcnn comparison (no 'format': 'd2lcnn-comparison').")
        try:
            rows = [Row(**row) for row in data["rows"]]
            values = {f.name: data[f.name] for f in fields(cls) if f.name != "rows"}
        except (KeyError, TypeError) as err:
            raise CorruptDataError(f"Not a d2lcnn comparison (missing or malformed field: {err}).") from None
        return cls(**values, rows=rows)

    def to_json(self, path: str | Path) -> None:
        """Write the comparison as JSON, atomically."""
        text = json.dumps(self.as_dict(), indent=1)
        atomic_write(path, lambda f: f.write(text.encode()))

    @classmethod
    def from_json(cls, path: str | Path) -> Comparison:
        """Read a comparison written by `to_json`."""
        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError(f"No comparison file at {_shown(path)!r}; check the path.")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CorruptDataError(f"{_shown(path)!r} is not a JSON comparison file ({err}).") from None
        return cls.from_dict(data)

    def __repr__(self) -> str:
        done = sum(r.error is None for r in self.rows)
        return f"Comparison({self.dataset}, {self.budget:g} s, {done}/{len(self.rows)} models)"


_RESULT_COLUMNS = [("Model", "<"), ("Input", ">"), ("Params", ">"), ("FLOPs/image", ">"), ("Epochs", ">"),
                   ("Train s", ">"), ("s/epoch", ">"), ("Images/s", ">"), ("Peak MB", ">"),
                   ("Test acc", ">")]  # fmt: skip


def _result_cells(comparison: Comparison, r: Row) -> list[str]:
    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    size = f"{comparison.in_channels}x{r.input_size}x{r.input_size}"
    acc = "failed" if r.error else number(None if r.test_acc is None else 100 * r.test_acc, ".1f") + "%"
    return [r.model, size, number(r.params, ","), "-" if r.flops is None else _si(r.flops),
            number(r.epochs, ".3g"), number(r.train_seconds, ".1f"), number(r.epoch_seconds, ".3g"),
            number(r.examples_per_s, ",.0f"), number(r.peak_memory_mb, ",.0f"), acc]  # fmt: skip


def _settings_table(rows: Sequence[Row], in_channels: int) -> str:
    columns = [
        ("Model", "<"),
        ("Input", ">"),
        ("Options", "<"),
        ("Training", "<"),
        ("Compared with d2l", "<"),
    ]
    body = []
    for r in rows:
        options = ", ".join(f"{k}={v}" for k, v in r.options.items()) or "-"
        training = f"{r.optimizer}, lr {r.lr:g}, batch {r.batch_size}"
        body.append(
            [r.model, f"{in_channels}x{r.input_size}x{r.input_size}", options, training, r.note or "-"]
        )
    return _markdown_table(columns, body)


def _markdown_table(columns: Sequence[tuple[str, str]], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip([c for c, _ in columns], *body)]
    rule = "|" + "|".join(
        ("-" * (w + 1) + ":" if a == ">" else "-" * (w + 2)) for (_, a), w in zip(columns, widths)
    )
    lines = [_cells([c for c, _ in columns], columns, widths), rule + "|"]
    lines += [_cells(cells, columns, widths) for cells in body]
    return "\n".join(lines)


def _cells(cells: Sequence[str], columns: Sequence[tuple[str, str]], widths: Sequence[int]) -> str:
    return "| " + " | ".join(f"{str(c):{a}{w}}" for c, (_, a), w in zip(cells, columns, widths)) + " |"


def _si(number: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if number >= scale:
            return f"{number / scale:.3g} {unit}"
    return f"{number:g}"


def settings_markdown(models: Sequence[str] | None = None, dataset: str = "fashion_mnist") -> str:
    """The settings table of `models` (default: the registered `DEFAULT_MODELS`) as markdown, before
    anything is trained: input, options, optimiser and how each differs from d2l."""
    from d2lcnn.data import dataset_info

    channels = dataset_info(dataset).channels
    return _settings_table([_planned_row(name, SETTINGS) for name in _check_models(models)], channels)


# ----------------------------------------------------------------------------- plot


def plot_comparison(comparison: Comparison):
    """One figure, two panels: test accuracy against FLOPs per image (log scale) and against
    training seconds; each point is labelled with its model's name."""
    from d2lcnn.plot import _new_figure, _styled

    @_styled
    def draw():
        fig = _new_figure(10, 4)
        done = [r for r in comparison.rows if r.test_acc is not None]
        panels = [
            ("flops", "FLOPs per image (forward pass)", "log"),
            ("train_seconds", "training seconds", "linear"),
        ]
        for ax, (key, label, scale) in zip(fig.subplots(1, 2), panels):
            xs = [getattr(r, key) for r in done]
            ys = [100 * r.test_acc for r in done]
            ax.scatter(xs, ys, color="tab:blue", zorder=3)
            for r, x, y in zip(done, xs, ys):
                ax.annotate(r.model, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=9)
            ax.set_xscale(scale)
            ax.set_xlabel(label)
            ax.set_ylabel("test accuracy (%)")
            if not done:
                ax.text(0.5, 0.5, "no model finished", ha="center", va="center", transform=ax.transAxes)
        fig.suptitle(
            f"{comparison.dataset}: about {comparison.budget:g} s of training per model "
            f"({comparison.device}, {comparison.precision})"
        )
        return fig

    return draw()


# ----------------------------------------------------------------------------- running the comparison


def compare(
    dataset: str = "fashion_mnist",
    budget: float = 20.0,
    models: Sequence[str] | None = None,
    *,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int = 0,
    device: str | None = None,
    settings: Mapping[str, Setting] | None = None,
    log: Callable[[str], Any] | None = print,
    on_row: Callable[[Comparison], Any] | None = None,
) -> Comparison:
    """Train each of `models` on `dataset` for about `budget` seconds, each in its own process.

    - models: registered model names (default: `DEFAULT_MODELS` that are registered).
    - train_per_class, test_per_class: a class-balanced subset of that many images per class.
    - settings: input side and options per model (default `SETTINGS`); a model missing from it
      is built with its recipe's options, at its recipe's or its documented input size.
    - log: progress lines (None: silent). on_row: called with the comparison after every model,
      e.g. to save partial results.

    A model that fails gets a row with its `error`; the others are not affected.
    """
    from d2lcnn import data as datasets
    from d2lcnn.train import pick_device, pick_precision

    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise ConfigError(f"The budget is seconds of training per model and must be > 0, got {budget!r}.")
    info = datasets.dataset_info(dataset)
    chosen = _check_models(models)
    torch_device = pick_device(device)
    precision = pick_precision(torch_device, "auto")
    # Fail now, not once per model, if the data are missing or the subset is too large.
    probe = datasets.load(dataset, batch_size=1, train_per_class=train_per_class,
                          test_per_class=test_per_class, device="cpu", seed=seed)  # fmt: skip
    result = Comparison(
        dataset=dataset, budget=float(budget), device=torch_device.type, precision=precision,
        threads=torch.get_num_threads(), torch=str(torch.__version__), in_channels=info.channels,
        train_examples=probe.train.num_examples, test_examples=probe.test.num_examples, seed=seed,
        memory=("CUDA memory allocated by torch" if torch_device.type == "cuda" else
                "peak resident memory of the model's own process (Python, torch and the data included)"),
    )  # fmt: skip
    del probe
    say = log or (lambda line: None)
    say(result.header())
    for i, name in enumerate(chosen, 1):
        row = _planned_row(name, SETTINGS if settings is None else settings)
        options = ", ".join(f"{k}={v}" for k, v in row.options.items())
        say(f"[{i}/{len(chosen)}] {name} at {row.input_size} px{f' ({options})' if options else ''}...")
        recipe = _recipe(name)
        spec = {
            **asdict(row), "dataset": dataset, "budget": float(budget), "seed": seed,
            "train_per_class": train_per_class, "test_per_class": test_per_class,
            "device": str(torch_device), "precision": precision,
            "weight_decay": recipe.weight_decay, "label_smoothing": recipe.label_smoothing,
        }  # fmt: skip
        measured = _run_in_subprocess(spec)
        for key, value in measured.items():
            setattr(row, key, value)
        result.rows.append(row)
        if row.error:
            say(f"    failed: {row.error}")
        else:
            steps = f"{row.steps:,} step{'s' if row.steps != 1 else ''}"
            say(f"    {steps} ({row.epochs:.3g} epochs) in {row.train_seconds:.1f} s, "
                f"test accuracy {row.test_acc:.1%}")  # fmt: skip
        if on_row is not None:
            on_row(result)
    return result


def _check_models(models: Sequence[str] | None) -> list[str]:
    from d2lcnn.models import list_models

    registered = list_models()
    if models is None:
        return [m for m in DEFAULT_MODELS if m in registered]
    chosen = list(dict.fromkeys(m.strip() for m in models if m.strip()))
    if not chosen:
        raise ConfigError(f"No models given; name some, e.g. --models {','.join(DEFAULT_MODELS[:3])}.")
    for name in chosen:
        if name not in registered:
            raise unknown_name("model", name, registered)
    return chosen


def _recipe(name: str) -> Recipe:
    return RECIPES.get(name, GENERIC_RECIPE)


def _planned_row(name: str, settings: Mapping[str, Setting]) -> Row:
    recipe = _recipe(name)
    setting = settings.get(name)
    if setting is None:  # the model's recipe says how to build it, the model its input size
        from d2lcnn.models import create

        with torch.device("meta"):  # only to read the input size: no memory, no time
            size = recipe.resize or create(name, **recipe.model_options).input_size
        setting = Setting(size, recipe.model_options, note="not in the settings table: as its recipe")
    note = setting.note if recipe is not GENERIC_RECIPE else f"{setting.note}; no recipe: generic SGD"
    return Row(model=name, input_size=setting.size, options=dict(setting.options), optimizer=recipe.optimizer,
               lr=recipe.lr, batch_size=recipe.batch_size, note=note.strip("; "))  # fmt: skip


def _run_in_subprocess(spec: dict) -> dict:
    """Run `_train_one(spec)` in a fresh Python process; its measurements, or {'error': ...}."""
    package_parent = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])),
    }
    with tempfile.TemporaryDirectory(prefix="d2lcnn-compare-") as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "d2lcnn.compare", json.dumps(spec), str(out)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if out.is_file():
            return json.loads(out.read_text())
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return {"error": f"the process was killed by {name}{hint}"}
    last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no message"]
    return {"error": _scrub(f"the process exited with code {done.returncode}: {last[0]}")}


def _scrub(text: str) -> str:
    """`text` without this machine's absolute paths (working directory and home)."""
    text = text.replace(str(Path.cwd()) + os.sep, "")
    return text.replace(str(Path.home()), "~")


# ----------------------------------------------------------------------------- inside the subprocess


def _train_one(spec: dict) -> dict:
    """Build, time, train and evaluate one model as `spec` says; return its measurements."""
    from d2lcnn import data as datasets
    from d2lcnn.models import create
    from d2lcnn.trace import trace
    from d2lcnn.train import evaluate, fit

    info = datasets.dataset_info(spec["dataset"])
    size = spec["input_size"]
    data = datasets.load(
        spec["dataset"], batch_size=spec["batch_size"], train_per_class=spec["train_per_class"],
        test_per_class=spec["test_per_class"], resize=None if size == info.image_size else size,
        device=spec["device"], seed=spec["seed"],
    )  # fmt: skip
    base_memory = None if torch.device(spec["device"]).type == "cuda" else _memory_mb("VmRSS")
    options = {"num_classes": data.num_classes, "in_channels": data.in_channels, **spec["options"]}

    def build() -> torch.nn.Module:
        torch.manual_seed(spec["seed"])  # the same initial weights every time
        return create(spec["model"], **options)

    model = build()
    traced = trace(model, (data.in_channels, size, size))
    train_only = SimpleNamespace(train=data.train, test=None, name=data.name)  # fit evaluates nothing
    train = {
        "lr": spec["lr"], "optimizer": spec["optimizer"], "weight_decay": spec["weight_decay"],
        "label_smoothing": spec["label_smoothing"], "device": spec["device"], "precision": spec["precision"],
        "seed": spec["seed"], "progress": False,
    }  # fmt: skip
    per_step, warmup = _seconds_per_step(model, train_only, spec["budget"], train)
    del model  # timed on a throwaway copy: training starts from the initial weights
    model = build()
    steps = max(1, round(spec["budget"] / per_step))
    steps_per_epoch = len(data.train)
    history = fit(model, train_only, epochs=math.ceil(steps / steps_per_epoch), max_steps=steps, **train)
    _, test_acc = evaluate(model, data.test, precision=spec["precision"])
    seconds = history.total_seconds
    examples = steps * min(data.train.batch_size, data.train.num_examples)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "flops": traced.total_flops,
        "steps": steps,
        "epochs": steps / steps_per_epoch,
        "train_seconds": seconds,
        "epoch_seconds": data.train.num_examples * seconds / examples,
        "examples_per_s": examples / seconds,
        "peak_memory_mb": _peak_memory_mb(torch.device(spec["device"])),
        "base_memory_mb": base_memory,
        "test_acc": test_acc,
        "warmup_seconds": warmup,
    }


def _seconds_per_step(model: torch.nn.Module, data: Any, budget: float, train: dict) -> tuple[float, float]:
    """Seconds of one training step, timed with `fit` itself (same precision, memory format and
    loader as the real run), and the seconds the timing took. Trains `model`: pass a throwaway."""
    from d2lcnn.train import fit

    def timed(steps: int) -> float:
        epochs = math.ceil(steps / len(data.train))
        return fit(model, data, epochs=epochs, max_steps=steps, **train).total_seconds

    start = time.perf_counter()
    first = timed(1)  # allocates memory and picks kernels: slower than the rest, so discarded
    n = min(20, int(0.05 * budget / first))
    # A slow step: one more is timing enough. A fast one: the difference of two runs cancels fit's
    # fixed start-up cost.
    per_step = timed(1) if n < 2 else (timed(1 + n) - timed(1)) / n
    return max(per_step, 1e-6), time.perf_counter() - start


def _memory_mb(field: str) -> float | None:
    """A memory field of Linux's /proc/self/status in MB (VmRSS: now, VmHWM: peak), else None."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(rf"{field}:\s*(\d+) kB", status).group(1)) / 1024
    except (OSError, AttributeError):
        return None


def _peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # Linux's VmHWM is this process's own peak; ru_maxrss would include the parent's, inherited at fork.
    peak = _memory_mb("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _shown(path: Path) -> str:
    """`path` relative to the working directory, so no absolute path is ever printed."""
    return os.path.relpath(path)


def _worker(argv: list[str]) -> int:
    """`python -m d2lcnn.compare SPEC_JSON RESULT_PATH`: what `_run_in_subprocess` starts."""
    spec, out = json.loads(argv[0]), Path(argv[1])
    try:
        result = _train_one(spec)
    except D2LCNNError as err:
        result = {"error": _scrub(str(err))}
    except Exception as err:  # any other failure of this model is reported in its row
        result = {"error": _scrub(f"{type(err).__name__}: {err}".splitlines()[0])}
    atomic_write(out, lambda f: f.write(json.dumps(result).encode()))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
