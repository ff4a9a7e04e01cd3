"""d2lcnn compare: models on the same data for the same seconds, each in its own process.

Everything runs on a tiny MNIST-like dataset written here into a temporary data root, so no real
dataset is needed. One comparison of three models (one of which fails on purpose) is shared by
most tests; the whole file takes well under a minute.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch
from fake_data import make_mnist_like

from d2lcnn import compare as cmp
from d2lcnn.cli import main
from d2lcnn.errors import CorruptDataError
from d2lcnn.models import create, list_models
from d2lcnn.trace import trace

BUDGET = 1.5  # seconds of training per model
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_mnist_like(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("D2LCNN_DATA", str(root))  # the worker processes inherit it
        yield root


@pytest.fixture(scope="module")
def result(data_root) -> cmp.Comparison:
    # vgg11 gets an option it does not have: its process fails, the models around it must not.
    settings = {**cmp.SETTINGS, "vgg11": cmp.Setting(32, {"no_such_option": 1})}
    models = ["lenet", "vgg11", "lenet_modern"]
    return cmp.compare("mnist", BUDGET, models, settings=settings, log=None)


def test_each_row_measures_the_model_it_names(result):
    assert [r.model for r in result.rows] == ["lenet", "vgg11", "lenet_modern"]
    assert (result.dataset, result.train_examples, result.test_examples) == ("mnist", 300, 100)
    for row in (result.rows[0], result.rows[2]):
        assert row.error is None, row.error
        fresh = create(row.model, num_classes=10, in_channels=1)
        assert row.params == sum(p.numel() for p in fresh.parameters())
        assert row.flops == trace(fresh, (1, 28, 28)).total_flops > 0
        assert row.input_size == 28 and row.steps >= 1
        assert row.train_seconds > 0 and row.epoch_seconds > 0 and row.examples_per_s > 0
        assert row.train_seconds < 5 * BUDGET + 5  # loose: the steps were sized to fit the budget
        assert row.peak_memory_mb > 0 and 0 <= row.test_acc <= 1
        assert row.epochs == pytest.approx(row.steps / (300 // row.batch_size))


def test_a_failing_model_gets_a_clear_error_and_the_others_keep_their_results(result):
    failed = result.rows[1]
    assert "no_such_option" in failed.error and "Traceback" not in failed.error
    assert failed.test_acc is None and failed.params is None
    assert all(r.error is None and r.test_acc is not None for r in (result.rows[0], result.rows[2]))


def test_markdown_has_a_header_and_one_table_line_per_model(result, data_root):
    text = result.to_markdown()
    header = text.splitlines()[0]
    for part in ("mnist", "budget 1.5 s", "device cpu", f"precision {result.precision}", torch.__version__):
        assert part in header
    table = text.split("\n\n")[1].splitlines()
    assert len(table) == 2 + 3  # column names, alignment rule, one line per model
    assert len({line.count("|") for line in table}) == 1
    assert [line.split("|")[1].strip() for line in table[2:]] == ["lenet", "vgg11", "lenet_modern"]
    assert "failed" in table[3] and "no_such_option" in text
    settings = text.split("\n\n")[-1].splitlines()  # the settings table closes the text
    cells = [cell.strip() for cell in settings[2].split("|")[1:-1]]
    assert cells == ["lenet", "1x28x28", "-", "sgd, lr 0.1, batch 128", "as in d2l"]
    assert str(data_root) not in text and str(Path.home()) not in text and str(Path.cwd()) not in text


def test_json_round_trip(result, tmp_path):
    result.to_json(tmp_path / "c.json")
    assert cmp.Comparison.from_json(tmp_path / "c.json") == result
    (tmp_path / "bad.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(CorruptDataError):
        cmp.Comparison.from_json(tmp_path / "bad.json")


def test_plot_shows_accuracy_against_flops_and_seconds(result, tmp_path):
    fig = cmp.plot_comparison(result)
    flops_ax, seconds_ax = fig.axes
    assert flops_ax.get_xscale() == "log" and seconds_ax.get_xscale() == "linear"
    for ax in (flops_ax, seconds_ax):
        assert sorted(t.get_text() for t in ax.texts) == ["lenet", "lenet_modern"]  # failed: no point
    fig.savefig(tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC


def test_every_registered_model_of_the_settings_table_takes_its_input():
    for name in (n for n in cmp.SETTINGS if n in list_models()):
        setting = cmp.SETTINGS[name]
        with torch.device("meta"):  # shapes only: builds even AlexNet in no time
            model = create(name, num_classes=10, in_channels=1, **setting.options)
        assert trace(model, (1, setting.size, setting.size)).output_shape == (1, 10), name
    table = cmp.settings_markdown()
    assert all(f"| {name} " in table for name in cmp.DEFAULT_MODELS if name in list_models())


def test_cli_writes_table_json_and_plot_and_never_overwrites_them(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["compare", "--dataset", "mnist", "--budget", "1", "--models", "lenet", "--out", "out"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "| lenet " in out and "Wrote out/comparison.md" in out
    assert str(tmp_path) not in out + err and str(data_root) not in out + err
    saved = {name: (tmp_path / "out" / name).read_bytes() for name in ("comparison.md", "comparison.json")}
    assert cmp.Comparison.from_json(tmp_path / "out" / "comparison.json").rows[0].model == "lenet"
    assert (tmp_path / "out" / "comparison.png").read_bytes()[:8] == PNG_MAGIC

    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds results" in err and "--force" in err and "Traceback" not in err
    assert all((tmp_path / "out" / name).read_bytes() == data for name, data in saved.items())
    # --force gets past that check (here to the next one, so that nothing trains again).
    assert main([*args, "--force", "--budget", "0"]) == 2
    assert "--force" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "lenet,lenet_modren"], "Did you mean 'lenet_modern'?"),
        (["--dataset", "fashoin_mnist"], "Did you mean 'fashion_mnist'?"),
        (["--budget", "0"], "must be > 0"),
        (["--budget", "-5"], "must be > 0"),
        (["--train-per-class", "0"], "--train-per-class must be at least 1"),
    ],
)
def test_bad_input_exits_2_naming_the_fix(args, message, data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--dataset", "mnist", "--budget", "1", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written
