"""The command line, end to end, as a user runs it (a subprocess with its own data root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_data import make_mnist_like

from d2lcnn import cli, settings
from d2lcnn.cli import main
from d2lcnn.errors import InputShapeError
from d2lcnn.trace import parse_shape


def run(args: list[str], data_root: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "D2LCNN_DATA": str(data_root), "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "d2lcnn", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_train_writes_history_checkpoint_and_plots(tmp_path):
    make_mnist_like(tmp_path / "data")
    out = tmp_path / "run"
    args = ["train", "--model", "lenet", "--dataset", "mnist", "--epochs", "2", "--batch-size", "32",
            "--out", str(out), "--quiet"]  # fmt: skip
    result = run(args, tmp_path / "data", tmp_path)
    assert result.returncode == 0, result.stderr
    history = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert history["config"]["model"] == "lenet" and history["config"]["dataset"] == "mnist"
    assert history["epochs"][-1]["test_acc"] > 0.5  # the toy classes are easy to tell apart
    assert (out / "checkpoint.pt").stat().st_size > 0
    for name in ("curves.png", "predictions.png", "confusion.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "Test accuracy" in result.stdout
    assert "history.json, checkpoint.pt, recipe.json, curves.png, predictions.png and confusion.png" in (
        result.stdout
    )

    # Running again into the same folder must not overwrite the run.
    again = run(args, tmp_path / "data", tmp_path)
    assert again.returncode == 2
    assert "--resume" in again.stderr and "Traceback" not in again.stderr
    assert json.loads((out / "history.json").read_text()) == history
    saved = (out / "checkpoint.pt").read_bytes()

    assert args[5:7] == ["--epochs", "2"]
    resumed = run([*args[:6], "3", *args[7:], "--resume"], tmp_path / "data", tmp_path)
    assert resumed.returncode == 2, "a finished one-cycle run cannot be stretched to 3 epochs"
    assert "epochs=2" in resumed.stderr and "Traceback" not in resumed.stderr

    make_mnist_like(tmp_path / "data", name="fashion_mnist")
    other = run([*args[:4], "fashion_mnist", *args[5:], "--resume"], tmp_path / "data", tmp_path)
    assert other.returncode == 2, "a run on mnist cannot continue on fashion_mnist"
    assert "data='mnist'" in other.stderr and "Traceback" not in other.stderr
    assert (out / "checkpoint.pt").read_bytes() == saved
    assert json.loads((out / "history.json").read_text()) == history


def test_train_with_missing_data_explains_both_ways_to_get_it(tmp_path):
    result = run(["train", "--model", "lenet", "--dataset", "mnist", "--out", str(tmp_path / "r")],
                 tmp_path / "empty", tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "mnist.npz" in result.stderr and "d2lcnn data import" in result.stderr


@pytest.mark.parametrize(
    "args, suggestion",
    [
        (["trian"], "Did you mean 'train'?"),
        (["trace", "--model", "resnet81"], "Did you mean 'resnet18'?"),
        (["trace", "--model", "vgg11", "--imput", "3x32x32"], "Did you mean '--input'?"),
        (["train", "--model", "lenet", "--optimizer", "adamw2"], "Did you mean 'adamw'?"),
    ],
)
def test_typos_exit_2_with_a_suggestion(args, suggestion, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert suggestion in capsys.readouterr().err


def test_unknown_dataset_and_model_option_are_clear_errors(tmp_path, capsys):
    assert main(["train", "--model", "lenet", "--dataset", "minst", "--out", str(tmp_path)]) == 2
    assert "Did you mean 'mnist'?" in capsys.readouterr().err
    assert main(["trace", "--model", "vgg11", "--option", "widht=0.5"]) == 2
    assert "Did you mean 'width'?" in capsys.readouterr().err


def test_trace_prints_the_table_and_explains_bad_input(capsys):
    assert main(["trace", "--model", "vgg11", "--input", "3x224x224", "--depth", "2"]) == 0
    text = capsys.readouterr().out
    assert "features.4" in text and "Parameters: 128,807,306" in text
    assert main(["trace", "--model", "alexnet", "--input", "3x28x28"]) == 2
    err = capsys.readouterr().err
    assert "features.5" in err and "from 195 to 226 px" in err and "Traceback" not in err


def test_help_everywhere():
    for args in ([], ["train"], ["trace"], ["data"], ["data", "import"], ["models"]):
        result = subprocess.run([sys.executable, "-m", "d2lcnn", *args, "--help"], capture_output=True,
                                text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0 and "usage: d2lcnn" in result.stdout, args


def test_models_lists_each_model_with_its_input(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 10 and all("Input:" in line for line in lines)


def test_data_import_and_list(tmp_path, capsys, monkeypatch):
    make_mnist_like(tmp_path / "src")
    monkeypatch.setenv("D2LCNN_DATA", str(tmp_path / "root"))
    assert main(["data", "import", "--if-exists", str(tmp_path / "src" / "mnist.npz"),
                 str(tmp_path / "nowhere")]) == 0  # fmt: skip
    assert (tmp_path / "root" / "mnist.npz").exists()
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "mnist: mnist.npz" in out
    assert str(tmp_path) not in out  # no absolute paths in what users copy into notebooks


def test_test_flip_follows_the_flag_else_the_recipe_where_the_dataset_allows_flips(
    tmp_path, monkeypatch, capsys
):
    make_mnist_like(tmp_path / "data")
    monkeypatch.setenv("D2LCNN_DATA", str(tmp_path / "data"))
    monkeypatch.setitem(settings.RECIPES, "lenet", settings.RECIPES["lenet"].with_overrides(test_flip=True))

    def test_flip_of_a_run(name: str, *flags: str) -> bool:
        out = tmp_path / name
        args = ["train", "--model", "lenet", "--dataset", "mnist", "--epochs", "1", "--batch-size", "64",
                "--out", str(out), "--quiet", "--no-plots", *flags]  # fmt: skip
        assert main(args) == 0
        printed = capsys.readouterr().out  # --no-plots: it says it wrote only what it wrote
        assert "Wrote" in printed and "recipe.json." in printed and "png" not in printed
        assert not list(out.glob("*.png"))
        return json.loads((out / "history.json").read_text())["config"]["test_flip"]

    assert test_flip_of_a_run("recipe") is False, "a mirrored digit is not the same digit"
    assert test_flip_of_a_run("asked", "--test-flip") is True
    assert test_flip_of_a_run("refused", "--no-test-flip") is False


def test_a_run_killed_mid_training_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL a real training process after its first checkpoint, resume it, compare with a run
    that was never interrupted: same history, bit-identical weights (CPU)."""
    import signal
    import time

    import torch

    make_mnist_like(tmp_path / "data", per_class=50)
    env = {**os.environ, "D2LCNN_DATA": str(tmp_path / "data"), "MPLBACKEND": "Agg"}

    def args(out: Path) -> list[str]:
        return [sys.executable, "-m", "d2lcnn", "train", "--model", "lenet", "--dataset", "mnist",
                "--epochs", "12", "--batch-size", "32", "--out", str(out), "--quiet",
                "--no-plots"]  # fmt: skip

    whole = subprocess.run(args(tmp_path / "whole"), env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(args(killed_dir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = killed_dir / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    saved = torch.load(checkpoint, weights_only=True)  # the file is whole: it was written atomically
    assert 1 <= len(saved["history"]["epochs"]) < 12

    resumed = subprocess.run([*args(killed_dir), "--resume"], env=env, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "whole" / "history.json").read_text())["epochs"]
    b = json.loads((killed_dir / "history.json").read_text())["epochs"]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert [e[key] for e in a] == [e[key] for e in b], key
    weights_a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["model"]
    weights_b = torch.load(checkpoint, weights_only=True)["model"]
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def train_args(out: Path, *more: str) -> list[str]:
    return ["train", "--model", "lenet", "--dataset", "mnist", "--epochs", "2", "--batch-size", "32",
            "--out", str(out), "--quiet", "--no-plots", *more]  # fmt: skip


@pytest.mark.parametrize(
    "flag, value, named",
    [
        ("--epochs", "0", "got 0"),
        ("--lr", "0", "got 0.0"),
        ("--lr", "inf", "got inf"),
        ("--lr", "nan", "got nan"),
        ("--batch-size", "0", "got 0"),
        ("--train-per-class", "0", "got 0"),
        ("--test-per-class", "0", "got 0"),
        ("--option", "width=0", "width=0"),
    ],
)
def test_bad_numbers_are_refused_before_the_data_is_read(flag, value, named, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("D2LCNN_DATA", str(tmp_path / "no-data"))  # reading the data would fail: mnist.npz
    out = tmp_path / "runs" / "bad"
    args = train_args(out, flag, value)
    args[2] = "resnet18"  # a model with a width option
    assert main(args) == 2
    err = capsys.readouterr().err
    assert named in err and "mnist.npz" not in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_an_option_that_contradicts_the_data_is_refused(tmp_path, monkeypatch, capsys):
    make_mnist_like(tmp_path / "data")
    monkeypatch.setenv("D2LCNN_DATA", str(tmp_path / "data"))
    for option, fact in (("num_classes=5", "10 classes"), ("in_channels=3", "1 channel")):
        assert main(train_args(tmp_path / "run", "--option", option)) == 2
        err = capsys.readouterr().err
        assert f"--option {option}" in err and fact in err and "Drop the option" in err
    assert not (tmp_path / "run").exists()


def test_an_out_that_cannot_be_a_run_folder_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("D2LCNN_DATA", str(tmp_path / "no-data"))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for out in (a_file, a_file / "run"):
        assert main(train_args(out)) == 2
        err = capsys.readouterr().err
        assert f"{a_file} is a file, not a folder" in err and "another --out" in err
    assert a_file.read_text() == "mine"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_out_that_cannot_be_made_is_one_clear_error(tmp_path, monkeypatch, capsys):
    make_mnist_like(tmp_path / "data")
    monkeypatch.setenv("D2LCNN_DATA", str(tmp_path / "data"))
    assert main(train_args(Path("/proc/d2lcnn-run"))) == 2
    err = capsys.readouterr().err
    assert "--out /proc/d2lcnn-run" in err and ("another --out" in err or "Choose a folder" in err)
    assert "Traceback" not in err


@pytest.mark.parametrize("kept", ["history.json", "curves.png"])
def test_results_without_a_checkpoint_are_never_overwritten(kept, tmp_path, monkeypatch, capsys):
    make_mnist_like(tmp_path / "data")
    monkeypatch.setenv("D2LCNN_DATA", str(tmp_path / "data"))
    out = tmp_path / "run"
    out.mkdir()
    (out / kept).write_text("an earlier result")
    assert main(train_args(out)) == 2
    err = capsys.readouterr().err
    assert f"({kept})" in err and "no checkpoint.pt" in err and "another --out" in err
    assert main(train_args(out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "no checkpoint.pt" in err and "no run to continue" in err and "another --out" in err
    assert (out / kept).read_text() == "an earlier result" and len(list(out.iterdir())) == 1


def test_resume_with_nothing_to_resume_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("D2LCNN_DATA", str(tmp_path / "no-data"))
    assert main(train_args(tmp_path / "typo", "--resume")) == 2
    err = capsys.readouterr().err
    assert "no checkpoint.pt" in err and "Drop --resume" in err
    assert not (tmp_path / "typo").exists()


class CtrlC:
    """A fit event that presses Ctrl-C at the first step (after=None) or at the end of epoch `after`."""

    def __init__(self, after: int | None) -> None:
        self.after = after

    def on_step(self, run, sums) -> None:
        if self.after is None:
            raise KeyboardInterrupt

    def on_epoch_end(self, run, stats) -> None:
        if run.epoch == self.after:
            raise KeyboardInterrupt


def test_ctrl_c_says_what_was_saved_and_how_to_continue(tmp_path, monkeypatch, capsys):
    make_mnist_like(tmp_path / "data")
    monkeypatch.setenv("D2LCNN_DATA", str(tmp_path / "data"))
    real_fit = cli.fit

    def press_ctrl_c(after: int | None) -> None:
        def interrupted_fit(*args, events=(), **kwargs):
            return real_fit(*args, events=[*events, CtrlC(after)], **kwargs)

        monkeypatch.setattr(cli, "fit", interrupted_fit)

    press_ctrl_c(after=None)
    assert main(train_args(tmp_path / "runs" / "early")) == 130
    err = capsys.readouterr().err
    assert "no epoch finished" in err and "nothing was saved" in err and "--resume" not in err
    assert not (tmp_path / "runs").exists(), "an empty run folder is not left behind"

    press_ctrl_c(after=2)
    out = tmp_path / "runs" / "late"
    args = train_args(out)
    args[6] = "4"  # --epochs 4
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "last finished epoch" in err and "--resume" in err and f"--out {out}" in err

    monkeypatch.setattr(cli, "fit", real_fit)
    assert main([*args, "--resume"]) == 0  # what the message says to do works
    assert [e["epoch"] for e in json.loads((out / "history.json").read_text())["epochs"]] == [1, 2, 3, 4]


def test_sigint_in_a_real_run_exits_130_and_names_the_resume_command(tmp_path):
    import signal
    import time

    make_mnist_like(tmp_path / "data")
    env = {**os.environ, "D2LCNN_DATA": str(tmp_path / "data"), "MPLBACKEND": "Agg"}
    out = tmp_path / "run"
    args = train_args(out)
    args[6] = "200"  # --epochs: far more than can finish before the signal
    process = subprocess.Popen(
        [sys.executable, "-m", "d2lcnn", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )  # fmt: skip
    while not (out / "checkpoint.pt").exists() and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=300)[1]
    assert process.returncode == 130, err
    assert "last finished epoch" in err and "--resume" in err and "Traceback" not in err


def test_trace_reads_the_shape_with_the_same_parser_as_python(capsys):
    assert main(["trace", "--model", "lenet", "--input", "1x28.0x28"]) == 2
    err = capsys.readouterr().err
    with pytest.raises(InputShapeError) as raised:
        parse_shape("1x28.0x28")
    assert err == f"d2lcnn: error: {raised.value}\n"
    assert "'1x28.0x28'" in err and "'1x28x28'" in err
