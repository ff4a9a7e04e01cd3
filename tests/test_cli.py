"""The command line, end to end, as a user runs it (a subprocess with its own data root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_data import make_mnist_like

from d2lcnn.cli import main


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

    # Running again into the same folder must not overwrite the run.
    again = run(args, tmp_path / "data", tmp_path)
    assert again.returncode == 2
    assert "--resume" in again.stderr and "Traceback" not in again.stderr
    assert json.loads((out / "history.json").read_text()) == history

    resumed = run([*args[:5], "3", *args[6:], "--resume"], tmp_path / "data", tmp_path)
    assert resumed.returncode == 2, "a finished one-cycle run cannot be stretched to 3 epochs"
    assert "Traceback" not in resumed.stderr


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


def test_test_flip_follows_the_flag_else_the_recipe_where_the_dataset_allows_flips(tmp_path, monkeypatch):
    from d2lcnn import recipes

    make_mnist_like(tmp_path / "data")
    monkeypatch.setenv("D2LCNN_DATA", str(tmp_path / "data"))
    monkeypatch.setitem(recipes.RECIPES, "lenet", recipes.RECIPES["lenet"].with_overrides(test_flip=True))

    def test_flip_of_a_run(name: str, *flags: str) -> bool:
        out = tmp_path / name
        args = ["train", "--model", "lenet", "--dataset", "mnist", "--epochs", "1", "--batch-size", "64",
                "--out", str(out), "--quiet", "--no-plots", *flags]  # fmt: skip
        assert main(args) == 0
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
