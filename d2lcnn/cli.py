"""Command line: `d2lcnn train`, `d2lcnn trace`, `d2lcnn models`, `d2lcnn data`, `d2lcnn compare`.

Examples::

    python -m d2lcnn train --model lenet --dataset mnist --epochs 10 --out runs/lenet
    python -m d2lcnn compare --dataset fashion_mnist --budget 60 --models lenet,alexnet,resnet18
    python -m d2lcnn trace --model vgg11 --input 3x224x224 --depth 2
    python -m d2lcnn data import ../shared/data /usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import os
import re
import sys
from pathlib import Path

import torch

from d2lcnn import compare
from d2lcnn import data as datasets
from d2lcnn.checkpoint import History
from d2lcnn.data import Data
from d2lcnn.datafiles import dataset_info, describe_root, import_offline
from d2lcnn.errors import ConfigError, D2LCNNError, closest
from d2lcnn.files import atomic_write, write_json
from d2lcnn.models import create, list_models, model_doc
from d2lcnn.runtime import PRECISIONS, pick_device
from d2lcnn.settings import OPTIMIZERS, Recipe, recipe_for
from d2lcnn.trace import trace
from d2lcnn.train import fit, predict

EPILOG = "Run 'd2lcnn COMMAND --help' for the options of a command."


class Parser(argparse.ArgumentParser):
    """argparse that suggests the closest word for a mistyped choice or option (exit code 2)."""

    def error(self, message: str):
        hint = ""
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            valid = re.findall(r"'?([\w.-]+)'?", choice.group(2))
            guess = closest(choice.group(1), valid)
            hint = f" Did you mean '{guess}'?" if guess else ""
        unknown = re.search(r"unrecognized arguments: (\S+)", message)
        if unknown and unknown.group(1).startswith("-"):
            options = [s for a in self._all_actions() for s in a.option_strings]
            guess = closest(unknown.group(1), options)
            hint = f" Did you mean '{guess}'?" if guess else ""
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}.{hint}\n")

    def _all_actions(self) -> list[argparse.Action]:
        actions = list(self._actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    actions += sub._actions
        return actions


def parse_option(text: str) -> tuple[str, object]:
    """'width=0.5' -> ('width', 0.5); values are Python literals, else strings."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE, e.g. --option width=0.5")
    key, value = text.split("=", 1)
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


def _add_train(commands, models: list[str]) -> None:
    train = commands.add_parser("train", help="train a model; writes history, checkpoint and plots")
    train.add_argument("--model", required=True, choices=models, metavar="NAME", help=", ".join(models))
    train.add_argument("--dataset", help="mnist, fashion_mnist, cifar10, stl10 or an image folder path")
    train.add_argument("--epochs", type=int, help="passes over the training data")
    train.add_argument("--lr", type=float, help="peak learning rate")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--label-smoothing", type=float)
    train.add_argument("--resize", type=int, help="resize images to this side (default: the model's)")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--test-flip", action=argparse.BooleanOptionalAction, default=None,
                       help="evaluate on each image and its mirror image (default: the recipe's, "
                       "where the dataset's classes allow flips)")  # fmt: skip
    train.add_argument("--train-per-class", type=int, help="use a class-balanced subset")
    train.add_argument("--test-per-class", type=int)
    train.add_argument("--option", type=parse_option, action="append", default=[], metavar="KEY=VALUE",
                       help="model option, e.g. --option width=0.5 (repeatable)")  # fmt: skip
    train.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    train.add_argument("--precision", choices=PRECISIONS, default="auto")
    train.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="memory format (default: chosen for the model and device)",
    )
    train.add_argument("--compile", action="store_true", help="torch.compile the model")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, default=None, help="output folder (default runs/MODEL-DATASET)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last finished epoch"
    )
    train.add_argument("--no-plots", action="store_true")
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> Parser:
    models = list_models()
    parser = Parser(
        prog="d2lcnn", description="Models, data and training for the d2lcnn book.", epilog=EPILOG
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    _add_train(commands, models)

    tr = commands.add_parser("trace", help="print a model's layer-by-layer shapes, parameters and FLOPs")
    tr.add_argument("--model", required=True, choices=models, metavar="NAME", help=", ".join(models))
    tr.add_argument("--input", help="input shape CxHxW, e.g. 3x224x224 (default: the model's)")
    tr.add_argument("--depth", type=int, default=None, help="nesting depth shown (1: blocks collapsed)")
    tr.add_argument("--option", type=parse_option, action="append", default=[], metavar="KEY=VALUE")

    commands.add_parser("models", help="list the models and the input each expects")

    cmp = commands.add_parser(
        "compare", help="train several models for the same seconds on the same data; table and plot"
    )
    cmp.add_argument("--dataset", default="fashion_mnist", help="mnist, fashion_mnist, cifar10 or stl10")
    cmp.add_argument("--budget", type=float, default=20.0, help="seconds of training per model")
    cmp.add_argument("--models", type=lambda text: text.split(","), default=None, metavar="A,B,...",
                     help="comma-separated model names (default: one per family of the book)")  # fmt: skip
    cmp.add_argument("--train-per-class", type=int, help="use a class-balanced training subset")
    cmp.add_argument("--test-per-class", type=int)
    cmp.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--out", type=Path, default=Path("runs") / "compare", help="output folder")
    cmp.add_argument("--force", action="store_true", help="replace the results already in --out")

    data = commands.add_parser("data", help="offline datasets: import files, list what is there")
    data_commands = data.add_subparsers(
        dest="data_command", required=True, metavar="ACTION", parser_class=Parser
    )
    imp = data_commands.add_parser("import", help="link .npz files and unpack idx files into the data root")
    imp.add_argument("sources", nargs="+", type=Path, help="files or folders")
    imp.add_argument("--if-exists", action="store_true", help="skip sources that do not exist")
    data_commands.add_parser("list", help="datasets available in the data root")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `d2lcnn` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "trace":
            return _trace(args)
        if args.command == "models":
            return _models()
        if args.command == "compare":
            return _compare(args)
        return _data(args)
    except D2LCNNError as err:
        print(f"d2lcnn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("d2lcnn: interrupted", file=sys.stderr)
        return 130


def _models() -> int:
    width = max(len(n) for n in list_models())
    for name in list_models():
        print(f"{name:<{width}}  {model_doc(name)}")
    return 0


def _check_per_class(args: argparse.Namespace) -> None:
    for option in ("train_per_class", "test_per_class"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise ConfigError(f"--{option.replace('_', '-')} must be at least 1, got {value}.")


def _plotting():
    """d2lcnn.plot, drawing into files only (imported here: matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    from d2lcnn import plot

    return plot


def _compare(args: argparse.Namespace) -> int:
    plot = _plotting()
    out: Path = args.out
    names = ("comparison.md", "comparison.json", "comparison.png")
    existing = [name for name in names if (out / name).exists()]
    if existing and not args.force:
        raise ConfigError(
            f"{os.path.relpath(out)} already holds results ({', '.join(existing)}): add --force to "
            "replace them, or choose another --out."
        )
    _check_per_class(args)

    def save(result: compare.Comparison) -> None:  # after every model, so a crash keeps what is done
        result.to_json(out / "comparison.json")
        text = result.to_markdown()
        atomic_write(out / "comparison.md", lambda f: f.write(text.encode()))

    result = compare.compare(
        args.dataset, args.budget, args.models, train_per_class=args.train_per_class,
        test_per_class=args.test_per_class, seed=args.seed, device=args.device,
        log=lambda line: print(line, file=sys.stderr), on_row=save,
    )  # fmt: skip
    save(result)
    _save_png(plot.plot_comparison(result), out / "comparison.png")
    print(result.to_markdown(), end="")
    shown = os.path.relpath(out)
    print(f"\nWrote {shown}/comparison.md, comparison.json and comparison.png.")
    failed = [r.model for r in result.rows if r.error]
    if failed:
        print(f"d2lcnn: {len(failed)} of {len(result.rows)} models failed ({', '.join(failed)}): see the "
              "table for why.", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _trace(args: argparse.Namespace) -> int:
    model = create(args.model, **dict(args.option))
    shape = args.input or (model.in_channels, model.input_size, model.input_size)
    print(trace(model, shape, depth=args.depth))
    return 0


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "import":
        sources = [s for s in args.sources if s.exists() or not args.if_exists]
        lines = import_offline(sources)
    else:
        lines = describe_root()
    for line in lines:
        print(line)
    return 0


# ----------------------------------------------------------------------------- d2lcnn train
# settings -> data -> model -> run folder -> fit -> outputs. Everything that can be checked without
# the data is checked first, and the run folder is made last, so a refused run leaves nothing behind.

RUN_FILES = ("checkpoint.pt", "history.json", "recipe.json", "curves.png", "predictions.png", "confusion.png")


def _train(args: argparse.Namespace) -> int:
    recipe = _train_recipe(args)
    options = {**recipe.model_options, **dict(args.option)}
    with torch.device("meta"):  # checks the options and tells the input size, without any memory
        probe = create(args.model, **options)
    out = args.out or Path("runs") / f"{args.model}-{_dataset_label(recipe.dataset)}"
    _check_run_folder(out, args.resume)
    data, recipe = _train_data(args, recipe, probe.input_size)
    options = _options_for(data, options)
    torch.manual_seed(recipe.settings.seed)  # the initial weights too come from --seed
    model = create(args.model, **options)
    made = _make_folder(out)
    print(f"Training {args.model} on {data.name} ({data.train.num_examples:,} train / "
          f"{data.test.num_examples:,} test images) -> {out}")  # fmt: skip
    try:
        history = _fit(model, data, recipe, out, args)
    finally:
        for folder in made:  # deepest first; only folders this run made and left empty
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
    if history is None:
        return 130
    history.config.update(model=args.model, model_options=options, dataset=data.name)
    written = _write_outputs(model, data, history, recipe, options, out, plots=not args.no_plots)
    print(f"Test accuracy {history.final_test_acc:.2%} after {history.total_seconds:.0f} s. Wrote "
          f"{out}/{_listing(written)}.")  # fmt: skip
    return 0


def _train_recipe(args: argparse.Namespace) -> Recipe:
    """The model's recipe with the command line's changes, checked before any data is read."""
    _check_per_class(args)
    pick_device(args.device)  # a device that is not there fails now, not after loading the data
    return recipe_for(args.model).with_overrides(
        dataset=args.dataset, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        optimizer=args.optimizer, weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        augment=args.augment, resize=args.resize, test_flip=args.test_flip, device=args.device,
        precision=args.precision, channels_last=args.channels_last, compile=args.compile, seed=args.seed,
    )  # fmt: skip


def _dataset_label(dataset: str) -> str:
    """The name a dataset's runs go under: its own, or an image folder's."""
    return Path(dataset).resolve().name if Path(dataset).is_dir() else dataset


def _check_run_folder(out: Path, resume: bool) -> None:
    """Refuse an --out that is a file, or that holds a run (unless resumed) or nothing to resume."""
    nearest = next(p for p in (out, *out.parents, Path(".")) if p.exists())
    if not nearest.is_dir():
        raise ConfigError(f"--out {out}: {nearest} is a file, not a folder. Choose another --out.")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {nearest} is not writable for you. Choose another --out.")
    found = [name for name in RUN_FILES if (out / name).exists()]
    has_checkpoint = "checkpoint.pt" in found
    if resume and not has_checkpoint:
        held = f" (it holds only {', '.join(found)})" if found else ""
        elsewhere = " with another --out" if found else ""
        raise ConfigError(
            f"--resume: {out} holds no checkpoint.pt, so there is no run to continue{held}. "
            f"Drop --resume to start a new run{elsewhere}."
        )
    if found and not resume:
        if has_checkpoint:
            raise ConfigError(
                f"{out} already holds a run ({', '.join(found)}): add --resume to continue it, or "
                "choose another --out."
            )
        raise ConfigError(
            f"{out} already holds results of a run ({', '.join(found)}) but no checkpoint.pt to resume "
            "from: choose another --out (or move those files away to start over there)."
        )


def _train_data(args: argparse.Namespace, recipe: Recipe, input_size: int) -> tuple[Data, Recipe]:
    """The training data, resized for the model where the recipe does not say; test flips only
    where the dataset's classes allow mirror images."""
    dataset, seed = recipe.dataset, recipe.settings.seed
    if Path(dataset).is_dir():
        data = datasets.load_folder(dataset, image_size=recipe.resize or input_size,
                                    batch_size=recipe.batch_size, augment=recipe.augment, seed=seed,
                                    device=args.device)  # fmt: skip
        return data, recipe
    info = dataset_info(dataset)
    resize = recipe.resize
    if resize is None and info.image_size != input_size:
        resize = input_size
    if args.test_flip is None and not info.flip:  # the recipe's dataset was overridden
        recipe = recipe.with_overrides(test_flip=False)
    data = datasets.load(
        dataset, batch_size=recipe.batch_size, train_per_class=args.train_per_class,
        test_per_class=args.test_per_class, resize=resize, augment=recipe.augment,
        device=args.device, seed=seed,
    )  # fmt: skip
    return data, recipe


def _options_for(data: Data, options: dict) -> dict:
    """The model options with num_classes and in_channels from the data; an --option that says
    otherwise would build a model that cannot train on it."""
    from_data = {"num_classes": data.num_classes, "in_channels": data.in_channels}
    for name, value in from_data.items():
        if name in options and options[name] != value:
            what = f"{value} classes" if name == "num_classes" else f"{value} channel(s)"
            raise ConfigError(
                f"--option {name}={options[name]!r} contradicts the data: {data.name} has {what}. "
                f"Drop the option: the command sets {name} from the data."
            )
    return {**options, **from_data}


def _make_folder(out: Path) -> list[Path]:
    """Make the run folder; return the folders made (deepest first), to remove if nothing lands there."""
    made = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"Cannot make the run folder --out {out}: {err.strerror or err}. Choose a folder you can "
            "write to, e.g. --out runs/my-run."
        ) from None
    return made


def _fit(model, data: Data, recipe: Recipe, out: Path, args: argparse.Namespace) -> History | None:
    """fit, saving to out/checkpoint.pt; None after Ctrl-C, with what was kept and how to continue."""
    checkpoint = out / "checkpoint.pt"
    try:
        return fit(model, data, recipe.settings, progress=not args.quiet, checkpoint=checkpoint,
                   resume=args.resume)  # fmt: skip
    except KeyboardInterrupt:
        if checkpoint.exists():  # fit writes it after each finished epoch, and only then
            told = (f"{checkpoint} holds the run up to its last finished epoch: run the same command with "
                    f"--resume (same --out {out}) to continue from there.")  # fmt: skip
        else:
            told = "no epoch finished, so nothing was saved: run the same command again to start over."
        print(f"d2lcnn: interrupted; {told}", file=sys.stderr)
        return None


def _write_outputs(model, data: Data, history: History, recipe: Recipe, options: dict, out: Path,
                   plots: bool) -> list[str]:  # fmt: skip
    """history.json, recipe.json and (with `plots`) the figures; returns the names of all files written."""
    history.to_json(out / "history.json")
    write_json(out / "recipe.json", {**dataclasses.asdict(recipe), "model_options": options})
    written = ["history.json", "checkpoint.pt", "recipe.json"]
    if plots:
        written += _save_plots(model, data, history, out)
    return written


def _listing(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


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


def _save_png(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, functools.partial(figure.savefig, format="png", dpi=100, bbox_inches="tight"))
    plt.close(figure)
