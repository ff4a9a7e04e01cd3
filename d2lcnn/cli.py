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
import json
import os
import re
import sys
from pathlib import Path

from d2lcnn.errors import ConfigError, D2LCNNError, closest

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


def parse_shape(text: str) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224)."""
    try:
        shape = tuple(int(part) for part in re.split(r"[x,*]", text.lower()))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a shape; write it as CxHxW, e.g. 3x224x224"
        ) from None
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape; write it as CxHxW, e.g. 3x224x224")
    return shape


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
    from d2lcnn.models import list_models

    models = list_models()
    parser = Parser(
        prog="d2lcnn", description="Models, data and training for the d2lcnn book.", epilog=EPILOG
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    train = commands.add_parser("train", help="train a model; writes history, checkpoint and plots")
    train.add_argument("--model", required=True, choices=models, metavar="NAME", help=", ".join(models))
    train.add_argument("--dataset", help="mnist, fashion_mnist, cifar10, stl10 or an image folder path")
    train.add_argument("--epochs", type=int, help="passes over the training data")
    train.add_argument("--lr", type=float, help="peak learning rate")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--optimizer", choices=["sgd", "adamw"])
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
    train.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    train.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="memory format (default: chosen for the model and device)",
    )
    train.add_argument("--compile", action="store_true", help="torch.compile the model")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, default=None, help="output folder (default runs/MODEL-DATASET)")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    train.add_argument("--no-plots", action="store_true")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    tr = commands.add_parser("trace", help="print a model's layer-by-layer shapes, parameters and FLOPs")
    tr.add_argument("--model", required=True, choices=models, metavar="NAME", help=", ".join(models))
    tr.add_argument("--input", type=parse_shape, help="input shape CxHxW (default: the model's)")
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
    from d2lcnn.models import list_models, model_doc

    width = max(len(n) for n in list_models())
    for name in list_models():
        print(f"{name:<{width}}  {model_doc(name)}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")

    from d2lcnn import compare
    from d2lcnn.files import atomic_write

    out: Path = args.out
    names = ("comparison.md", "comparison.json", "comparison.png")
    existing = [name for name in names if (out / name).exists()]
    if existing and not args.force:
        raise ConfigError(
            f"{os.path.relpath(out)} already holds results ({', '.join(existing)}): add --force to "
            "replace them, or choose another --out."
        )
    for option in ("train_per_class", "test_per_class"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise ConfigError(f"--{option.replace('_', '-')} must be at least 1, got {value}.")

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
    figure = compare.plot_comparison(result)
    atomic_write(
        out / "comparison.png", lambda f: figure.savefig(f, format="png", dpi=100, bbox_inches="tight")
    )
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
    from d2lcnn.models import create
    from d2lcnn.trace import trace

    model = create(args.model, **dict(args.option))
    shape = args.input or (model.in_channels, model.input_size, model.input_size)
    print(trace(model, shape, depth=args.depth))
    return 0


def _data(args: argparse.Namespace) -> int:
    from d2lcnn import data

    if args.data_command == "import":
        sources = [s for s in args.sources if s.exists() or not args.if_exists]
        for line in data.import_offline(sources):
            print(line)
        return 0
    for line in data.describe_root():
        print(line)
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch

    from d2lcnn import data as datasets
    from d2lcnn.models import create
    from d2lcnn.recipes import recipe_for
    from d2lcnn.train import fit

    recipe = recipe_for(args.model).with_overrides(
        dataset=args.dataset, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        optimizer=args.optimizer, weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        augment=args.augment, resize=args.resize, test_flip=args.test_flip,
    )  # fmt: skip
    options = {**recipe.model_options, **dict(args.option)}
    probe = create(args.model, **options)
    dataset = recipe.dataset
    if Path(dataset).is_dir():
        data = datasets.load_folder(dataset, image_size=recipe.resize or probe.input_size,
                                    batch_size=recipe.batch_size, augment=recipe.augment,
                                    seed=args.seed, device=args.device)  # fmt: skip
    else:
        info = datasets.dataset_info(dataset)
        resize = recipe.resize
        if resize is None and info.image_size != probe.input_size:
            resize = probe.input_size
        if args.test_flip is None and not info.flip:  # the recipe's dataset was overridden
            recipe = recipe.with_overrides(test_flip=False)
        data = datasets.load(
            dataset, batch_size=recipe.batch_size, train_per_class=args.train_per_class,
            test_per_class=args.test_per_class, resize=resize, augment=recipe.augment,
            device=args.device, seed=args.seed,
        )  # fmt: skip
    options.setdefault("num_classes", len(data.classes))
    options.setdefault("in_channels", data.in_channels)
    torch.manual_seed(args.seed)  # the initial weights too come from --seed
    model = create(args.model, **options)
    out = args.out or Path("runs") / f"{args.model}-{data.name}"
    if (out / "checkpoint.pt").exists() and not args.resume:
        raise ConfigError(f"{out} already holds a run: add --resume to continue it, or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    print(f"Training {args.model} on {data.name} ({data.train.num_examples:,} train / "
          f"{data.test.num_examples:,} test images) -> {out}")  # fmt: skip
    history = fit(
        model, data, epochs=recipe.epochs, lr=recipe.lr, optimizer=recipe.optimizer,
        weight_decay=recipe.weight_decay, label_smoothing=recipe.label_smoothing,
        test_flip=recipe.test_flip, device=args.device, precision=args.precision,
        channels_last=args.channels_last, compile=args.compile,
        seed=args.seed, progress=not args.quiet, checkpoint=out / "checkpoint.pt", resume=args.resume,
    )  # fmt: skip
    history.config.update(model=args.model, model_options=options, dataset=data.name)
    history.to_json(out / "history.json")
    (out / "recipe.json").write_text(json.dumps({**recipe.__dict__, "model_options": options}, indent=1))
    if not args.no_plots:
        _save_plots(model, data, history, out)
    acc = history.final_test_acc
    print(f"Test accuracy {acc:.2%} after {history.total_seconds:.0f} s. Wrote {out}/history.json, "
          f"checkpoint.pt and plots.")  # fmt: skip
    return 0


def _save_plots(model, data, history, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from d2lcnn import plot
    from d2lcnn.train import predict

    preds, labels = predict(model, data.test)
    figures = {
        "curves.png": plot.plot_history(history),
        "predictions.png": plot.show_predictions(model, data),
        "confusion.png": plot.plot_confusion_matrix(preds, labels, data.classes),
    }
    for name, figure in figures.items():
        figure.savefig(out / name, dpi=100, bbox_inches="tight")
        plt.close(figure)
