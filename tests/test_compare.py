"""d2lcnn compare: models on the same data for the same seconds, each in its own process.

Everything runs on a tiny MNIST-like dataset written here into a temporary data root, so no real
dataset is needed. One comparison of three models (one of which fails on purpose) is shared by
most tests. How the budget is held is checked on a simulated clock: no test depends on how fast
this machine is.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch
from fake_data import make_mnist_like
from torch import nn

from d2lcnn import compare as cmp
from d2lcnn.cli import main
from d2lcnn.errors import CorruptDataError, UnknownNameError
from d2lcnn.models import create, list_models
from d2lcnn.settings import Settings, recipe_for
from d2lcnn.trace import trace
from d2lcnn.worker import run_in_process

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
    # lenet_bn gets images too small for it: its process fails, the models around it must not.
    too_small = recipe_for("lenet_bn").with_overrides(resize=8)
    models = ["lenet", "lenet_bn", "lenet_modern"]
    return cmp.compare("mnist", BUDGET, models, recipes={"lenet_bn": too_small}, log=None)


def test_each_row_measures_the_model_it_names(result):
    assert [r.model for r in result.rows] == ["lenet", "lenet_bn", "lenet_modern"]
    assert (result.dataset, result.train_examples, result.test_examples) == ("mnist", 300, 100)
    for row in (result.rows[0], result.rows[2]):
        assert row.error is None, row.error
        fresh = create(row.model, num_classes=10, in_channels=1)
        assert row.params == sum(p.numel() for p in fresh.parameters())
        assert row.flops == trace(fresh, (1, 28, 28)).total_flops > 0
        recipe = recipe_for(row.model)
        assert (row.input_size, row.lr, row.batch_size) == (28, recipe.settings.lr, recipe.batch_size)
        assert row.steps >= 1 and row.epochs == pytest.approx(row.steps / (300 // row.batch_size))
        assert row.train_seconds > 0 and row.warmup_seconds > 0
        assert row.examples_per_s == pytest.approx(row.steps * row.batch_size / row.train_seconds)
        assert row.epoch_seconds == pytest.approx(300 / row.examples_per_s)
        assert row.peak_memory_mb > row.base_memory_mb > 0 and 0 <= row.test_acc <= 1


def test_a_failing_model_gets_a_clear_error_and_the_others_keep_their_results(result):
    failed = result.rows[1]
    assert failed.input_size == 8 and f"cannot take input ({failed.batch_size}, 1, 8, 8)" in failed.error
    assert "28" in failed.error and "Traceback" not in failed.error  # the sides it takes
    assert failed.test_acc is None and failed.params is None
    assert all(r.error is None and r.test_acc is not None for r in (result.rows[0], result.rows[2]))


def test_a_recipe_a_model_cannot_be_built_with_fails_before_anything_trains(data_root):
    broken = recipe_for("vgg11").with_overrides(model_options={"no_such_option": 1})
    lines = []
    with pytest.raises(UnknownNameError, match="no_such_option"):
        cmp.compare("mnist", BUDGET, ["lenet", "vgg11"], recipes={"vgg11": broken}, log=lines.append)
    assert lines == []


def test_markdown_has_a_header_and_one_table_line_per_model(result, data_root):
    text = result.to_markdown()
    header = text.splitlines()[0]
    for part in (
        "mnist",
        "trains for 1.5 s",
        "on cpu",
        f"in {result.precision} precision",
        torch.__version__,
    ):
        assert part in header
    table = text.split("\n\n")[1].splitlines()
    assert len(table) == 2 + 3  # column names, alignment rule, one line per model
    assert len({len(line) for line in table}) == 1 and len({line.count("|") for line in table}) == 1
    assert text.split("\n\n")[2].startswith("Epochs: passes over the training set within the budget")
    assert [line.split("|")[1].strip() for line in table[2:]] == ["lenet", "lenet_bn", "lenet_modern"]
    assert "failed" in table[3] and "- lenet_bn: lenet_bn cannot take input" in text
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


def test_the_settings_are_each_models_recipe_and_every_model_takes_its_input():
    table = cmp.planned_settings_table().to_markdown()
    for name in (n for n in cmp.DEFAULT_MODELS if n in list_models()):
        recipe = recipe_for(name, generic=True)
        with torch.device("meta"):  # shapes only: builds even AlexNet in no time
            model = create(name, num_classes=10, in_channels=1, **recipe.model_options)
        side = recipe.resize or model.input_size
        assert trace(model, (1, side, side)).output_shape == (1, 10), name
        line = next(line for line in table.splitlines() if line.startswith(f"| {name} "))
        assert f"1x{side}x{side}" in line and f"lr {recipe.settings.lr:g}" in line and recipe.note in line


def made_up_comparison() -> cmp.Comparison:
    """A comparison of two models, one of which failed, without training anything."""
    planned = dict(input_size=28, options={"width": 0.5}, optimizer="sgd", lr=0.1, batch_size=128)
    done = cmp.Row("lenet", **planned, params=61_706, flops=833_040, steps=100, epochs=7.23,
                   train_seconds=20.0, epoch_seconds=2.77, examples_per_s=21_664.2, peak_memory_mb=750.3,
                   base_memory_mb=300.0, test_acc=0.901)  # fmt: skip
    failed = cmp.Row("vgg11", **planned, error="the process was killed by SIGKILL (out of memory?)")
    return cmp.Comparison(
        dataset="mnist", budget=10.0, device="cpu", precision="fp32", threads=2, torch="2", in_channels=1,
        train_examples=300, test_examples=100, seed=0, memory="peak RSS", rows=[done, failed],
    )  # fmt: skip


def test_results_and_settings_tables_hold_one_row_per_model():
    comparison = made_up_comparison()
    results = comparison.results_table()
    assert results.columns == cmp.RESULT_COLUMNS and results.alignment() == "l" + "r" * 9
    assert results.rows[0] == ("lenet", "1x28x28", "61,706", "833 K", "7.23", "20.0", "2.77", "21,664", "750",
                               "90.1%")  # fmt: skip
    assert results.rows[1][2:] == ("-",) * 7 + ("failed",)
    assert "about 300 MB before any model is built" in results.notes[0]
    settings = comparison.settings_table()
    assert settings.rows[1] == ("vgg11", "1x28x28", "width=0.5", "sgd, lr 0.1, batch 128", "-")
    planned = cmp.planned_settings_table(["vgg11", "lenet"])
    assert [row[0] for row in planned.rows] == ["vgg11", "lenet"] and planned.alignment() == "lrlll"


def test_in_a_notebook_a_comparison_shows_its_results_and_failures_but_not_its_settings():
    comparison = made_up_comparison()
    html = comparison._repr_html_()
    assert html.startswith('<div class="d2lcnn-table"') and html.count("<table") == 1
    assert html.index(comparison.header()) < html.index("<table")
    assert (
        html.index("</table>")
        < html.index("Epochs: passes")
        < html.index("vgg11 failed: the process was killed")
    )
    assert "Compared with d2l" not in html and "sgd, lr 0.1" not in html
    text = comparison.to_markdown()
    assert "\n\nFailed:\n- vgg11: the process was killed" in text
    assert text.endswith(comparison.settings_table().to_markdown() + "\n")


# ----------------------------------------------------------------------------- the budget


class FakeClock:
    """perf_counter of a machine whose every training step takes `pace` seconds."""

    def __init__(self) -> None:
        self.now, self.pace = 100.0, 1.0

    def __call__(self) -> float:
        return self.now


def run_schedule(clock: FakeClock, seconds: float, paces: dict[int, float]) -> list[tuple[float, float]]:
    """Step a WallClockSchedule until it is done; (time after the step, lr set for the next step) per step.
    `paces` changes the seconds per step from the given step on."""
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    schedule = cmp.WallClockSchedule(optimizer, Settings(lr=0.1), seconds, clock=clock)
    start, trace_ = clock.now, []
    for step, _ in enumerate(schedule.batches(itertools.repeat(None))):
        clock.pace = paces.get(step, clock.pace)
        clock.now += clock.pace
        optimizer.step()
        schedule.step()
        trace_.append((clock.now - start, optimizer.param_groups[0]["lr"]))
    assert schedule.steps == len(trace_) and schedule.elapsed() == trace_[-1][0]
    return trace_


@pytest.mark.parametrize(
    "paces", [{0: 1.0}, {0: 1.0, 5: 0.25}, {0: 0.5, 8: 2.0}], ids=["steady", "faster", "slower"]
)
def test_the_one_cycle_schedule_ends_with_the_budget_whatever_the_pace(paces):
    clock = FakeClock()
    steps = run_schedule(clock, 20.0, paces)
    used, last_lr = steps[-1]
    assert abs(used - 20.0) <= clock.pace / 2 + 1e-9  # the nearest whole step to the budget
    assert last_lr < 0.1 / 1000  # annealed to (nearly) nothing when the time is up
    lrs = [lr for _, lr in steps]
    peak = lrs.index(max(lrs))
    assert max(lrs) > 0.09 and 0.1 * 20 <= steps[peak][0] <= 0.3 * 20  # the peak after a fifth of the time
    assert lrs[peak:] == sorted(lrs[peak:], reverse=True)


def test_a_step_longer_than_the_budget_is_still_one_step():
    clock = FakeClock()
    clock.pace = 5.0
    assert len(run_schedule(clock, 1.0, {})) == 1


# ----------------------------------------------------------------------------- the worker process


WORKER_TARGETS = """
import os, signal
from d2lcnn.errors import ConfigError

def echo(spec):
    return {"doubled": 2 * spec["n"], "cwd": os.getcwd()}

def refuse(spec):
    raise ConfigError(f"no file at {os.path.join(os.getcwd(), 'data', 'x.npz')}: check the path")

def crash(spec):
    raise ZeroDivisionError("first line\\nsecond line")

def die(spec):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_worker_returns_the_result_or_one_line_saying_how_it_failed(tmp_path, monkeypatch):
    script = tmp_path / "targets.py"
    script.write_text(WORKER_TARGETS)
    monkeypatch.chdir(tmp_path)
    done = run_in_process(f"{script}:echo", {"n": 21})
    assert done.error is None and done.result == {"doubled": 42, "cwd": str(tmp_path)}
    assert done.peak_memory_mb > 0 and done.seconds > 0
    refused = run_in_process(f"{script}:refuse", {})  # relative to the working directory, not absolute
    assert refused.result is None and refused.error == f"no file at {Path('data', 'x.npz')}: check the path"
    assert run_in_process(f"{script}:crash", {}).error == "ZeroDivisionError: first line"
    assert run_in_process(f"{script}:die", {}).error == "the process was killed by SIGKILL (out of memory?)"
    missing = run_in_process("d2lcnn.compare:no_such_function", {}).error
    assert "AttributeError" in missing and "no_such_function" in missing


# ----------------------------------------------------------------------------- the command


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


def test_planned_settings_show_the_recipes_a_comparison_will_use():
    recipes = {"nin": recipe_for("nin").with_overrides(resize=64, model_options={"width": 0.5})}
    planned = cmp.planned_settings_table(["nin", "lenet"], recipes, in_channels=3).to_markdown()
    nin, lenet = (next(line for line in planned.splitlines() if f"| {m} " in line) for m in ("nin", "lenet"))
    assert "3x64x64" in nin and "width=0.5" in nin
    assert "3x28x28" in lenet  # no recipe given: its own


def test_recipes_carry_the_initialisation_their_chapters_use_and_the_comparison_applies_it():
    assert (recipe_for("alexnet").init, recipe_for("nin").init, recipe_for("lenet").init) == (
        "xavier", "kaiming", "default"
    )  # fmt: skip
    with pytest.raises(UnknownNameError, match="kaiming"):
        recipe_for("nin").with_overrides(init="he")
    planned = cmp.planned_settings_table(["alexnet", "lenet"])
    assert "xavier init" in planned.rows[0][3] and "init" not in planned.rows[1][3]
    row = cmp._planned_row("nin", recipe_for("nin"))
    assert row.init == "kaiming"  # measure() builds the model with init_weights(model, row.init)
