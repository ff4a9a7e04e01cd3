"""Command line: `d2lcnn train`, `trace`, `models`, `compare` and `data`; `d2lcnn COMMAND --help` tells
the options of each, e.g. ``python -m d2lcnn train --model lenet --dataset mnist --epochs 10``."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from d2lcnn import compare
from d2lcnn import data as datasets
from d2lcnn.checkpoint import History
from d2lcnn.data import Data
from d2lcnn.datafiles import dataset_info, describe_root, import_offline
from d2lcnn.errors import ConfigError, D2LCNNError, closest
from d2lcnn.files import atomic_write, make_folder, write_json
from d2lcnn.models import create, list_models, model_doc
from d2lcnn.runtime import PRECISIONS, pick_device
from d2lcnn.settings import OPTIMIZERS, Recipe, Settings, recipe_for
from d2lcnn.show import init_weights
from d2lcnn.trace import trace
from d2lcnn.train import fit, predict

EPILOG = "Run 'd2lcnn COMMAND --help' for the options of a command."
OPTION_HELP = "model option, e.g. --option width=0.5 (repeatable)"
ON_OFF = argparse.BooleanOptionalAction  # --flag / --no-flag; None (not given): the recipe's choice
# Every option of `d2lcnn train` named like a field of Recipe or Settings overrides the recipe's value.
RECIPE_FIELDS = {f.name for f in dataclasses.fields(Recipe)} | {f.name for f in dataclasses.fields(Settings)}
RUN_FILES = ("checkpoint.pt", "history.json", "recipe.json", "curves.png", "predictions.png", "confusion.png")
COMPARE_FILES = ("comparison.md", "comparison.json", "comparison.png")


class Parser(argparse.ArgumentParser):
    """argparse that suggests the closest word for a mistyped choice or option (exit code 2)."""

    def error(self, message: str):
        typo, valid = None, []
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        unknown = re.search(r"unrecognized arguments: (-\S+)", message)
        if choice:
            typo, valid = choice.group(1), re.findall(r"'?([\w.-]+)'?", choice.group(2))
        elif unknown:  # an option of any command: the top parser reports those
            commands = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
            parsers = [self, *(sub for a in commands for sub in a.choices.values())]
            typo, valid = unknown.group(1), [s for p in parsers for a in p._actions for s in a.option_strings]
        guess = typo and closest(typo, valid)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}.{f' Did you mean {guess!r}?' if guess else ''}\n")


def parse_option(text: str) -> tuple[str, object]:
    """'width=0.5' -> ('width', 0.5); values are Python literals, else strings."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE, e.g. --option width=0.5")
    key, value = text.split("=", 1)
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


def build_parser() -> Parser:
    """The parser of every command and its options."""
    models = list_models()
    parser = Parser(
        prog="d2lcnn", description="Models, data and training for the d2lcnn book.", epilog=EPILOG
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    train = commands.add_parser("train", help="train a model; writes history, checkpoint and plots")
    tr = commands.add_parser("trace", help="print a model's layer-by-layer shapes, parameters and FLOPs")
    commands.add_parser("models", help="list the models and the input each expects")
    cmp = commands.add_parser("compare", help="train several models for the same seconds; table and plot")
    for command in (train, tr):
        command.add_argument("--model", required=True, choices=models, metavar="NAME", help=", ".join(models))
        command.add_argument(
            "--option", type=parse_option, action="append", metavar="KEY=VALUE", help=OPTION_HELP
        )
    tr.add_argument("--input", help="input shape CxHxW, e.g. 3x224x224 (default: the model's)")
    tr.add_argument("--depth", type=int, help="nesting depth shown (1: blocks collapsed)")

    train.add_argument("--dataset", help="mnist, fashion_mnist, cifar10, stl10 or an image folder path")
    cmp.add_argument("--dataset", default="fashion_mnist", help="mnist, fashion_mnist, cifar10 or stl10")
    for command in (train, cmp):
        command.add_argument("--train-per-class", type=int, help="use a class-balanced training subset")
        command.add_argument("--test-per-class", type=int)
        command.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
        command.add_argument("--seed", type=int, default=0)
    train.add_argument("--epochs", type=int, help="passes over the training data")
    train.add_argument("--lr", type=float, help="peak learning rate")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--label-smoothing", type=float)
    train.add_argument("--resize", type=int, help="resize images to this side (default: the model's)")
    train.add_argument("--augment", action=ON_OFF)
    train.add_argument(
        "--test-flip", action=ON_OFF, help="evaluate on mirror images too (if the classes allow)"
    )
    train.add_argument("--precision", choices=PRECISIONS, default="auto")
    train.add_argument("--channels-last", action=ON_OFF, help="memory format (default: the faster one)")
    train.add_argument("--compile", action="store_true", help="torch.compile the model")
    train.add_argument("--out", type=Path, help="output folder (default runs/MODEL-DATASET)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    train.add_argument("--no-plots", action="store_true")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    cmp.add_argument("--budget", type=float, default=20.0, help="seconds of training per model")
    cmp.add_argument("--models", metavar="A,B,...", help="model names (default: one per family of the book)")
    cmp.add_argument("--out", type=Path, default=Path("runs") / "compare", help="output folder")
    cmp.add_argument("--force", action="store_true", help="replace the results already in --out")

    data = commands.add_parser("data", help="offline datasets: import files, list what is there")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION", parser_class=Parser)
    imp = actions.add_parser("import", help="link .npz files and unpack idx files into the data root")
    imp.add_argument("sources", nargs="+", type=Path, help="files or folders")
    imp.add_argument("--if-exists", action="store_true", help="skip sources that do not exist")
    actions.add_parser("list", help="datasets available in the data root")

    room = commands.add_parser(
        "classroom", help="student notebooks and autograders of chapters (otter-grader)"
    )
    room.add_argument(
        "chapters", nargs="+", type=Path, help="chapter notebooks, e.g. notebooks/01_lenet.ipynb"
    )
    room.add_argument("--out", type=Path, default=Path("classroom"), help="output folder (default classroom)")
    room.add_argument("--overwrite", action="store_true", help="replace chapters already in --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `d2lcnn` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    commands = {
        "train": _train,
        "trace": _trace,
        "models": _models,
        "compare": _compare,
        "data": _data,
        "classroom": _classroom,
    }
    return report_errors("d2lcnn", functools.partial(commands[args.command], args))


def report_errors(prog: str, command: Callable[[], int]) -> int:
    """`command()`'s exit code; a D2LCNNError is one line `PROG: error: ...` and code 2, Ctrl-C code 130."""
    try:
        return command()
    except D2LCNNError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _classroom(args: argparse.Namespace) -> int:
    from d2lcnn.classroom import autograder_zip, write_classroom

    for folder in write_classroom(args.chapters, args.out, args.overwrite):
        print(f"{folder.name}: student/{folder.name}.ipynb, autograder/{autograder_zip(folder).name}")
    print(f"grade a notebook with: otter run -a {args.out}/<chapter>/autograder/<zip> <notebook>")
    return 0


def _models(args: argparse.Namespace) -> int:
    width = max(len(n) for n in list_models())
    for name in list_models():
        print(f"{name:<{width}}  {model_doc(name)}")
    return 0


def _trace(args: argparse.Namespace) -> int:
    model = create(args.model, **dict(args.option or []))
    print(trace(model, args.input or (model.in_channels, model.input_size, model.input_size), args.depth))
    return 0


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "import":
        lines = import_offline([s for s in args.sources if s.exists() or not args.if_exists])
    else:
        lines = describe_root()
    for line in lines:
        print(line)
    return 0


def _check_per_class(args: argparse.Namespace) -> None:
    for option in ("train_per_class", "test_per_class"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise ConfigError(f"--{option.replace('_', '-')} must be at least 1, got {value}.")


def _check_writable(out: Path) -> None:
    """Refuse an --out below a file, or in a folder the user cannot write to."""
    nearest = next(p for p in (out, *out.parents, Path(".")) if p.exists())
    if not nearest.is_dir():
        raise ConfigError(f"--out {out}: {nearest} is a file, not a folder. Choose another --out.")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {nearest} is not writable for you. Choose another --out.")


def _compare(args: argparse.Namespace) -> int:
    out, shown = args.out, os.path.relpath(args.out)
    existing = ", ".join(name for name in COMPARE_FILES if (out / name).exists())
    if existing and not args.force:
        fix = "add --force to replace them, or choose another --out"
        raise ConfigError(f"{shown} already holds results ({existing}): {fix}.")
    _check_writable(out)
    _check_per_class(args)
    plot = _plotting()

    def save(result: compare.Comparison) -> None:  # after every model, so a crash keeps what is done
        make_folder(out, f"Choose a folder you can write to instead of --out {out}.")
        result.to_json(out / "comparison.json")
        text = result.to_markdown()
        atomic_write(out / "comparison.md", lambda f: f.write(text.encode()))

    models = args.models and args.models.split(",")
    subsets = dict(train_per_class=args.train_per_class, test_per_class=args.test_per_class)
    log = functools.partial(print, file=sys.stderr)
    result = compare.compare(
        args.dataset, args.budget, models, **subsets, seed=args.seed, device=args.device, log=log, on_row=save
    )
    save(result)
    _save_png(plot.plot_comparison(result), out / "comparison.png")
    print(result.to_markdown(), end="")
    print(f"\nWrote {shown}/comparison.md, comparison.json and comparison.png.")
    failed = [r.model for r in result.rows if r.error]
    if failed:
        what = f"{len(failed)} of {len(result.rows)} models failed ({', '.join(failed)})"
        print(f"d2lcnn: {what}: see the table for why.", file=sys.stderr)
    return 1 if failed else 0


def _plotting():
    """d2lcnn.plot, drawing into files only (imported here: matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    from d2lcnn import plot

    return plot


def _save_png(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, functools.partial(figure.savefig, format="png", dpi=100, bbox_inches="tight"))
    plt.close(figure)


# ----------------------------------------------------------------------------- d2lcnn train
# Everything that can be checked without the data is checked first, and the run folder is made
# last, so that a refused run reads no data and leaves nothing behind.


def _train(args: argparse.Namespace) -> int:
    _check_per_class(args)
    pick_device(args.device)  # a device that is not there fails now, not after loading the data
    recipe = recipe_for(args.model).with_overrides(
        **{k: v for k, v in vars(args).items() if k in RECIPE_FIELDS}
    )
    options = {**recipe.model_options, **dict(args.option or [])}
    with torch.device("meta"):  # checks the options and tells the input size, without any memory
        input_size = create(args.model, **options).input_size
    dataset = Path(recipe.dataset).resolve().name if Path(recipe.dataset).is_dir() else recipe.dataset
    out = args.out or Path("runs") / f"{args.model}-{dataset}"
    _check_run_folder(out, args.resume)
    data, recipe = _train_data(args, recipe, input_size)
    options = _options_for(data, options)
    torch.manual_seed(recipe.settings.seed)  # the initial weights too come from --seed
    model = init_weights(create(args.model, **options), recipe.init)
    made = make_folder(out, f"Choose a folder you can write to instead of --out {out}.")
    sizes = f"{data.train.num_examples:,} train / {data.test.num_examples:,} test images"
    print(f"Training {args.model} on {data.name} ({sizes}) -> {out}")
    try:
        history = _fit(model, data, recipe, out, args)
    finally:
        for folder in made:  # deepest first; only folders this run made and left empty
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
    if history is None:
        return 130
    history.config.update(model=args.model, model_options=options, dataset=data.name)
    history.to_json(out / "history.json")
    write_json(out / "recipe.json", {**dataclasses.asdict(recipe), "model_options": options})
    written = ["history.json", "checkpoint.pt", "recipe.json"]
    if not args.no_plots:
        written += _save_plots(model, data, history, out)
    print(f"Test accuracy {history.final_test_acc:.2%} after {history.total_seconds:.0f} s.", end=" ")
    print(f"Wrote {out}/{', '.join(written[:-1])} and {written[-1]}.")
    return 0


def _check_run_folder(out: Path, resume: bool) -> None:
    """Refuse an --out that is no folder, or that holds a run (unless resumed) or nothing to resume."""
    _check_writable(out)
    found = [name for name in RUN_FILES if (out / name).exists()]
    listed = ", ".join(found)
    if resume and "checkpoint.pt" not in found:
        held, elsewhere = (f" (it holds only {listed})", " with another --out") if found else ("", "")
        problem = f"--resume: {out} holds no checkpoint.pt, so there is no run to continue{held}"
        raise ConfigError(f"{problem}. Drop --resume to start a new run{elsewhere}.")
    if found and not resume and "checkpoint.pt" in found:
        raise ConfigError(
            f"{out} already holds a run ({listed}): add --resume to continue it, or choose another --out."
        )
    if found and not resume:
        problem = f"{out} already holds results of a run ({listed}) but no checkpoint.pt to resume from"
        raise ConfigError(f"{problem}: choose another --out (or move those files away to start over).")


def _train_data(args: argparse.Namespace, recipe: Recipe, input_size: int) -> tuple[Data, Recipe]:
    """The data at the recipe's size, else the model's; test flips only where the classes allow them."""
    size, seed = recipe.resize or input_size, recipe.settings.seed
    common = dict(batch_size=recipe.batch_size, augment=recipe.augment, seed=seed, device=args.device)
    if Path(recipe.dataset).is_dir():
        return datasets.load_folder(recipe.dataset, image_size=size, **common), recipe
    if args.test_flip is None and not dataset_info(recipe.dataset).flip:  # another dataset than the recipe's
        recipe = recipe.with_overrides(test_flip=False)
    subsets = dict(train_per_class=args.train_per_class, test_per_class=args.test_per_class)
    return datasets.load(recipe.dataset, resize=size, pad=recipe.pad, **subsets, **common), recipe


def _options_for(data: Data, options: dict) -> dict:
    """The model options with num_classes and in_channels from the data; an --option that says
    otherwise would build a model that cannot train on it."""
    from_data = {"num_classes": data.num_classes, "in_channels": data.in_channels}
    for name, value in from_data.items():
        if name in options and options[name] != value:
            what = f"{value} classes" if name == "num_classes" else f"{value} channel(s)"
            problem = f"--option {name}={options[name]!r} contradicts the data: {data.name} has {what}"
            raise ConfigError(f"{problem}. Drop the option: the command sets {name} from the data.")
    return {**options, **from_data}


def _fit(model, data: Data, recipe: Recipe, out: Path, args: argparse.Namespace) -> History | None:
    """fit, saving to out/checkpoint.pt; None after Ctrl-C, saying what was kept and how to continue."""
    checkpoint = out / "checkpoint.pt"
    try:
        return fit(
            model, data, recipe.settings, progress=not args.quiet, checkpoint=checkpoint, resume=args.resume
        )
    except KeyboardInterrupt:
        if checkpoint.exists():  # fit writes it after each finished epoch, and only then
            told = (
                f"{checkpoint} holds the run up to its last finished epoch: run the same command with "
                f"--resume (same --out {out}) to continue from there."
            )
        else:
            told = "no epoch finished, so nothing was saved: run the same command again to start over."
        print(f"d2lcnn: interrupted; {told}", file=sys.stderr)
        return None


def _save_plots(model, data: Data, history: History, out: Path) -> list[str]:
    plot = _plotting()
    preds, labels = predict(model, data.test)
    figures = {
        "curves.png": plot.plot_history(history),
        "predictions.png": plot.show_predictions(model, data),
        "confusion.png": plot.plot_confusion_matrix(preds, labels, data.classes),
    }
    for name, figure in figures.items():
        _save_png(figure, out / name)
    return list(figures)
