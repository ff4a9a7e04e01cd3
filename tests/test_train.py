"""Tests for d2lcnn.train on tiny synthetic data (plus one slow test on the real MNIST)."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from d2lcnn import runtime, train
from d2lcnn.checkpoint import EpochStats, History, load_checkpoint, save_checkpoint
from d2lcnn.errors import (
    ConfigError,
    CorruptDataError,
    D2LCNNError,
    DataNotFoundError,
    TrainingDivergedError,
    UnknownNameError,
)
from d2lcnn.settings import Settings

TESTS = Path(__file__).resolve().parent
SHARED_DATA = Path(os.environ.get("D2LCNN_SHARED_DATA", TESTS.parents[1] / "shared" / "data"))


class TensorLoader:
    """The d2lcnn loader interface over in-memory tensors: shuffles from (seed, epoch)."""

    def __init__(self, images, labels, batch_size, *, shuffle=True, seed=0):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self, rank: int, world_size: int) -> TensorLoader:
        return TensorLoader(
            self.images[rank::world_size],
            self.labels[rank::world_size],
            self.batch_size,
            shuffle=self.shuffle,
            seed=self.seed,
        )

    def __iter__(self):
        n = len(self.labels)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.images[index], self.labels[index]


def quadrant_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1x8x8 noisy images; class c has a bright patch in quadrant c (linearly separable)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=generator)
    images = torch.randn(n, 1, 8, 8, generator=generator)
    for c in range(4):
        row, col = divmod(c, 2)
        images[labels == c, :, row * 4 : row * 4 + 3, col * 4 : col * 4 + 3] += 1.5
    return images, labels


def quadrant_data(n_train: int = 512, batch_size: int = 64) -> SimpleNamespace:
    train_set, test_set = quadrant_images(n_train, 0), quadrant_images(256, 1)
    return SimpleNamespace(
        train=TensorLoader(*train_set, batch_size),
        test=TensorLoader(*test_set, 128, shuffle=False),
        classes=["top left", "top right", "bottom left", "bottom right"],
        name="quadrants",
    )


def small_cnn(seed: int = 0, dropout: float = 0.2) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(8 * 4 * 4, 4),
    )


def metrics(history: History) -> list[tuple]:
    """Everything in a history that does not depend on the clock."""
    return [(e.train_loss, e.train_acc, e.test_loss, e.test_acc, e.lr) for e in history.epochs]


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


QUIET = {"progress": False, "device": "cpu"}


# ----------------------------------------------------------------------------- learning


def test_fit_learns_a_separable_task():
    data, model = quadrant_data(), small_cnn()
    _, acc_before = train.evaluate(model, data.test)
    history = train.fit(model, data, epochs=3, lr=0.1, **QUIET)

    assert acc_before < 0.5
    assert len(history.epochs) == 3
    assert [e.epoch for e in history.epochs] == [1, 2, 3]
    assert history.final_test_acc >= 0.95
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss
    assert all(e.seconds > 0 and e.examples_per_s > 0 for e in history.epochs)
    # The model object itself was trained: evaluating it agrees with the last epoch.
    test_loss, test_acc = train.evaluate(model, data.test)
    assert test_acc == pytest.approx(history.final_test_acc)
    assert test_loss == pytest.approx(history.epochs[-1].test_loss, rel=1e-3, abs=1e-6)
    assert history.config["model"] == "Sequential" and history.config["data"] == "quadrants"
    assert history.config["steps_per_epoch"] == 8 and history.config["batch_size"] == 64


def test_onecycle_lr_rises_then_falls_and_adamw_cosine_runs():
    onecycle = train.fit(small_cnn(), quadrant_data(), epochs=5, lr=0.1, warmup=0.3, **QUIET)
    lrs = [e.lr for e in onecycle.epochs]
    assert max(lrs) == pytest.approx(0.1, rel=0.05) and lrs.index(max(lrs)) in (1, 2)
    assert lrs[0] < lrs[1] and lrs[-1] < 1e-3

    cosine = train.fit(
        small_cnn(),
        quadrant_data(),
        epochs=3,
        lr=2e-2,
        optimizer="adamw",
        schedule="cosine",
        **QUIET,
    )
    assert cosine.final_test_acc >= 0.9
    assert cosine.epochs[-1].lr < cosine.epochs[0].lr


def test_max_steps_stops_after_that_many_optimizer_steps():
    model, calls = small_cnn(), []
    model.register_forward_hook(lambda module, inputs, output: calls.append(module.training))
    history = train.fit(model, quadrant_data(), epochs=10, lr=0.05, max_steps=11, **QUIET)
    assert calls.count(True) == 11  # training forwards; evaluation runs in eval mode
    assert len(history.epochs) == 2 and history.epochs[-1].test_acc is not None


def test_eval_every_skips_evaluation_but_always_evaluates_the_last_epoch():
    history = train.fit(small_cnn(), quadrant_data(), epochs=3, lr=0.05, eval_every=2, **QUIET)
    assert [e.test_acc is None for e in history.epochs] == [True, False, False]


def test_precision_and_channels_last_reach_the_model():
    seen = {}

    def record(module, inputs, output):
        seen["channels_last"] = not output.is_contiguous()  # (N, 8, 8, 8) is one or the other
        seen["dtype"] = output.dtype

    data = quadrant_data()
    for precision, channels_last in (("bf16", True), ("fp32", False)):
        model = small_cnn()
        model[0].register_forward_hook(record)
        history = train.fit(
            model,
            data,
            epochs=1,
            lr=0.05,
            precision=precision,
            channels_last=channels_last,
            max_steps=1,
            **QUIET,
        )
        expected_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        assert seen == {"channels_last": channels_last, "dtype": expected_dtype}
        assert history.config["precision"] == precision


# ----------------------------------------------------------------------------- reproducibility


def test_same_seed_gives_bit_identical_runs():
    runs = []
    for seed in (7, 7, 8):
        model = small_cnn(dropout=0.5)
        history = train.fit(model, quadrant_data(), epochs=2, lr=0.05, seed=seed, **QUIET)
        runs.append((model, metrics(history)))
    assert runs[0][1] == runs[1][1]
    assert_same_weights(runs[0][0], runs[1][0])
    assert runs[0][1] != runs[2][1]  # the seed matters (it drives dropout)


class Killed(RuntimeError):
    pass


class KilledAtEpoch(TensorLoader):
    """A training loader whose process 'dies' when epoch `kill_at` (0-based) is about to start."""

    def __init__(self, loader: TensorLoader, kill_at: int):
        super().__init__(loader.images, loader.labels, loader.batch_size, seed=loader.seed)
        self.kill_at = kill_at

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.kill_at:
            raise Killed(f"killed before epoch {epoch}")
        super().set_epoch(epoch)


@pytest.mark.parametrize(
    "settings",
    [
        {"optimizer": "sgd", "schedule": "onecycle", "lr": 0.05},
        {"optimizer": "adamw", "schedule": "cosine", "lr": 3e-3, "label_smoothing": 0.1},
    ],
    ids=["sgd-onecycle", "adamw-cosine"],
)
def test_resume_after_a_kill_repeats_the_uninterrupted_run(tmp_path, settings):
    whole_model = small_cnn(dropout=0.5)
    whole = train.fit(
        whole_model,
        quadrant_data(),
        epochs=3,
        checkpoint=tmp_path / "whole.pt",
        **settings,
        **QUIET,
    )

    data = quadrant_data()
    data.train = KilledAtEpoch(data.train, kill_at=2)
    with pytest.raises(Killed):
        train.fit(
            small_cnn(dropout=0.5),
            data,
            epochs=3,
            checkpoint=tmp_path / "run.pt",
            **settings,
            **QUIET,
        )
    saved = torch.load(tmp_path / "run.pt", weights_only=True)
    assert saved["extra"]["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt", "whole.pt"]  # no temp files

    resumed_model = small_cnn(seed=123, dropout=0.5)  # fresh weights, loaded from the checkpoint
    lines = []
    resumed = train.fit(
        resumed_model,
        quadrant_data(),
        epochs=3,
        checkpoint=tmp_path / "run.pt",
        resume=True,
        device="cpu",
        log=lines.append,
        **settings,
    )
    assert metrics(resumed) == metrics(whole)
    assert_same_weights(resumed_model, whole_model)
    assert lines[0].startswith("resuming after epoch 2")
    assert [line.split()[:2] for line in lines[1:]] == [["epoch", "3/3"]]

    # Resuming a finished run trains nothing and returns its history.
    again_model = small_cnn(seed=5, dropout=0.5)
    again = train.fit(
        again_model,
        quadrant_data(),
        epochs=3,
        checkpoint=tmp_path / "run.pt",
        resume=True,
        **settings,
        **QUIET,
    )
    assert metrics(again) == metrics(whole)
    assert_same_weights(again_model, whole_model)


def test_resume_without_a_checkpoint_file_starts_fresh(tmp_path):
    history = train.fit(
        small_cnn(),
        quadrant_data(),
        epochs=1,
        lr=0.05,
        checkpoint=tmp_path / "new.pt",
        resume=True,
        **QUIET,
    )
    assert len(history.epochs) == 1 and (tmp_path / "new.pt").is_file()


def test_existing_checkpoint_is_never_overwritten_without_resume(tmp_path):
    path = tmp_path / "run.pt"
    path.write_bytes(b"someone's file")
    with pytest.raises(ConfigError, match="resume=True"):
        train.fit(small_cnn(), quadrant_data(), epochs=1, lr=0.05, checkpoint=path, **QUIET)
    assert path.read_bytes() == b"someone's file"


def test_resume_refuses_other_settings_and_other_models(tmp_path):
    path = tmp_path / "run.pt"
    train.fit(small_cnn(), quadrant_data(), epochs=2, lr=0.05, checkpoint=path, **QUIET)
    with pytest.raises(ConfigError, match=r"lr=0\.05.*lr=0\.1"):
        train.fit(small_cnn(), quadrant_data(), epochs=2, lr=0.1, checkpoint=path, resume=True, **QUIET)

    other = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Flatten(), nn.Linear(1024, 4))
    with pytest.raises(D2LCNNError, match=r"does not fit this Sequential.*0\.weight") as info:
        train.fit(other, quadrant_data(), epochs=2, lr=0.05, checkpoint=path, resume=True, **QUIET)
    assert info.value.__context__ is None  # no torch traceback chained to it

    other_data = quadrant_data()
    other_data.name = "fashion_mnist"
    with pytest.raises(ConfigError, match=r"data='quadrants'.*data='fashion_mnist'"):
        train.fit(small_cnn(), other_data, epochs=2, lr=0.05, checkpoint=path, resume=True, **QUIET)


# ----------------------------------------------------------------------------- divergence


def test_huge_learning_rate_stops_with_a_clear_error():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    with pytest.raises(TrainingDivergedError) as info:
        train.fit(model, quadrant_data(), epochs=3, lr=1e6, schedule="constant", **QUIET)
    message = str(info.value)
    assert "diverged" in message and "epoch 1" in message
    assert "1e+06" in message and "lr=100000" in message
    assert "checkpoint" not in message  # there is none, so the message promises none


class Scaled(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def test_a_finite_loss_far_above_chance_stops_the_run(tmp_path):
    # Logits a thousand times too large: the loss is finite but far above ln(4), the loss of a guess.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), Scaled(1000.0))
    with pytest.raises(TrainingDivergedError) as info:
        train.fit(model, quadrant_data(), epochs=2, lr=1e-9, checkpoint=tmp_path / "run.pt", **QUIET)
    message = str(info.value)
    assert "epoch 1" in message and "ln 4" in message and "lr=1e-10" in message
    assert "checkpoint" not in message and not (tmp_path / "run.pt").exists()  # nothing finished to keep


def test_data_with_other_classes_than_the_model_is_refused():
    model = small_cnn()
    model.num_classes = 5  # as d2lcnn models record it
    with pytest.raises(ConfigError, match=r"5 outputs.*4 classes.*num_classes=4"):
        train.fit(model, quadrant_data(), epochs=1, lr=0.1, **QUIET)


class NaNAtEpoch(TensorLoader):
    """Images turn into NaN from epoch `bad_epoch` (0-based) on."""

    def __init__(self, loader: TensorLoader, bad_epoch: int):
        super().__init__(loader.images, loader.labels, loader.batch_size, seed=loader.seed)
        self.bad_epoch = bad_epoch

    def __iter__(self):
        for images, labels in super().__iter__():
            yield (images * math.nan if self.epoch >= self.bad_epoch else images), labels


def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path):
    data = quadrant_data()
    data.train = NaNAtEpoch(data.train, bad_epoch=1)
    model, calls = small_cnn(), []
    model.register_forward_hook(lambda module, inputs, output: calls.append(module.training))
    with pytest.raises(TrainingDivergedError, match=r"nan during epoch 2") as info:
        train.fit(model, data, epochs=3, lr=0.05, checkpoint=tmp_path / "run.pt", **QUIET)
    assert "run.pt holds the run up to epoch 1" in str(info.value) and str(tmp_path) not in str(info.value)
    assert calls.count(True) == 8 + 1  # epoch 1, then the first step of epoch 2
    saved = torch.load(tmp_path / "run.pt", weights_only=True)
    assert saved["extra"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = small_cnn()
    history = train.fit(model, quadrant_data(), epochs=2, lr=0.05, **QUIET)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    optimizer.step()  # some momentum state worth saving
    scheduler.step()
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(
        path,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        history=history,
        extra={"note": "two epochs", "numbers": [1, 2.5], "mask": torch.ones(3)},
    )

    raw = torch.load(path, weights_only=True)  # loads without trusting pickled code
    assert raw["extra"]["note"] == "two epochs" and torch.equal(raw["extra"]["mask"], torch.ones(3))

    fresh = small_cnn(seed=99)
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    fresh_scheduler = torch.optim.lr_scheduler.OneCycleLR(fresh_optimizer, max_lr=0.1, total_steps=10)
    state = load_checkpoint(path, fresh, fresh_optimizer, fresh_scheduler)
    assert_same_weights(fresh, model)
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(optimizer.state[p]["momentum_buffer"], fresh_optimizer.state[q]["momentum_buffer"])
    assert fresh_scheduler.state_dict() == scheduler.state_dict()
    assert metrics(History.from_dict(state["history"])) == metrics(history)

    # A bare state_dict file loads too.
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    load_checkpoint(tmp_path / "bare.pt", small_cnn(seed=3))


def test_save_checkpoint_refuses_extra_it_could_not_load_back(tmp_path):
    path = tmp_path / "model.pt"
    with pytest.raises(ConfigError, match=r"extra\['score'\] is a numpy.float64"):
        save_checkpoint(path, model=small_cnn(), extra={"score": np.float64(0.9)})
    assert not path.exists()


def test_bad_checkpoint_files_raise_clear_errors(tmp_path):
    model = small_cnn()
    with pytest.raises(DataNotFoundError, match="No checkpoint file at"):
        load_checkpoint(tmp_path / "missing.pt", model)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CorruptDataError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(garbage, model)

    good = tmp_path / "good.pt"
    save_checkpoint(good, model=model)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CorruptDataError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(truncated, model)

    pickled_model = tmp_path / "pickled.pt"
    torch.save(model, pickled_model)  # a whole module: refused by weights_only=True
    with pytest.raises(CorruptDataError, match="weights_only=True"):
        load_checkpoint(pickled_model, model)

    not_ours = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_ours)
    with pytest.raises(CorruptDataError, match="neither a d2lcnn checkpoint nor a model state"):
        load_checkpoint(not_ours, model)

    wider = small_cnn()
    wider[-1] = nn.Linear(8 * 4 * 4, 10)
    with pytest.raises(ConfigError, match=r"6\.weight: checkpoint \(4, 128\) vs model"):
        load_checkpoint(good, wider)


# ----------------------------------------------------------------------------- history


def test_history_json_round_trip_and_summaries(tmp_path):
    history = train.fit(small_cnn(), quadrant_data(), epochs=3, lr=0.1, eval_every=2, **QUIET)
    path = tmp_path / "history.json"
    history.to_json(path)
    loaded = History.from_json(path)
    assert loaded.as_dict() == history.as_dict()
    assert loaded.config["precision"] in ("bf16", "fp32")

    rows = [
        EpochStats(1, 1.0, 0.5, 0.9, 0.6, 10.0, 100.0, 0.1),
        EpochStats(2, 0.5, 0.8, 0.4, 0.9, 12.0, 100.0, 0.05),
        EpochStats(3, 0.4, 0.9, None, None, 11.0, 100.0, 0.02),
        EpochStats(4, 0.3, 0.95, 0.45, 0.85, 13.0, 100.0, 0.01),
    ]
    made = History(rows, {"model": "toy"})
    assert made.total_seconds == 46.0
    assert made.final_test_acc == 0.85 and made.best_test_acc == 0.9
    assert made.time_to_accuracy(0.9) == 22.0 and made.time_to_accuracy(0.95) is None
    assert "final test acc 85.00%" in repr(made)
    with pytest.raises(ConfigError, match="use 0.98 for 98%"):
        made.time_to_accuracy(98)

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CorruptDataError, match="not a JSON history"):
        History.from_json(bad)
    bad.write_text('{"epochs": [{"epoch": 1}]}')
    with pytest.raises(CorruptDataError, match="missing or malformed field"):
        History.from_json(bad)
    with pytest.raises(DataNotFoundError):
        History.from_json(tmp_path / "absent.json")


# ----------------------------------------------------------------------------- output


def test_progress_lines_show_no_machine_paths_and_progress_false_is_silent(tmp_path, capsys):
    lines = []
    train.fit(
        small_cnn(),
        quadrant_data(),
        epochs=2,
        lr=0.05,
        device="cpu",
        log=lines.append,
        checkpoint=tmp_path / "run.pt",
    )
    captured = capsys.readouterr()
    assert len(lines) == 3 and lines[0].startswith("training Sequential on quadrants")
    assert lines[2].startswith("epoch 2/2") and "test loss" in lines[2]
    assert all(str(tmp_path) not in text for text in [*lines, captured.out, captured.err])

    train.fit(small_cnn(), quadrant_data(), epochs=1, lr=0.05, checkpoint=tmp_path / "b.pt", **QUIET)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_live_plot_is_updated_every_epoch_and_closed(monkeypatch):
    import d2lcnn.plot

    events = []

    class RecordingPlot:
        def __init__(self, **kwargs):
            events.append(("init", kwargs))

        def update(self, history):
            events.append(("update", len(history.epochs)))

        def close(self):
            events.append(("close",))

    monkeypatch.setattr(d2lcnn.plot, "LivePlot", RecordingPlot)
    train.fit(small_cnn(), quadrant_data(), epochs=2, lr=0.05, live_plot=True, **QUIET)
    assert events == [("init", {"num_epochs": 2}), ("update", 1), ("update", 2), ("close",)]


# ----------------------------------------------------------------------------- evaluate, predict


def test_evaluate_and_predict_agree_with_a_plain_computation_and_restore_the_mode():
    data, model = quadrant_data(), small_cnn()
    train.fit(model, data, epochs=1, lr=0.05, **QUIET)
    images, labels = data.test.images, data.test.labels
    model.eval()
    with torch.no_grad():
        logits = model(images)
    expected_loss = nn.functional.cross_entropy(logits, labels).item()
    expected_acc = (logits.argmax(1) == labels).float().mean().item()

    model.train()
    loss, acc = train.evaluate(model, data.test, precision="fp32")
    assert model.training
    assert loss == pytest.approx(expected_loss, rel=1e-5) and acc == pytest.approx(expected_acc)

    model.eval()
    predicted, true = train.predict(model, data.test, precision="fp32")
    assert not model.training
    assert torch.equal(true, labels) and torch.equal(predicted, logits.argmax(1))
    from_tensor, none = train.predict(model, images, precision="fp32", batch_size=50)
    assert none is None and torch.equal(from_tensor, predicted)

    with pytest.raises(ConfigError, match=r"float images.*torch.uint8"):
        train.predict(model, (images * 50).clamp(0, 255).to(torch.uint8))


def test_test_flip_averages_the_logits_of_each_image_and_its_mirror():
    data, model = quadrant_data(), small_cnn()
    train.fit(model, data, epochs=1, lr=0.05, **QUIET)
    images, labels = data.test.images, data.test.labels
    model.eval()
    with torch.no_grad():
        logits = (model(images) + model(images.flip(-1))) / 2
    loss, acc = train.evaluate(model, data.test, precision="fp32", test_flip=True)
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    assert acc == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    plain_loss, _ = train.evaluate(model, data.test, precision="fp32")
    assert plain_loss != pytest.approx(loss, rel=1e-6)  # quadrant labels change under a flip

    torch.manual_seed(0)
    flipped = train.fit(small_cnn(), data, epochs=1, lr=0.05, test_flip=True, **QUIET)
    assert flipped.config["test_flip"] is True


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("lenet", {}, False),  # 6 and 16 channels: the default layout is faster on the CPU
        ("lenet_modern", {}, False),
        ("resnet18", {"stem": "cifar", "width": 0.25}, True),
        ("nin", {"width": 0.5}, True),  # wide, though its last block has one channel per class
        ("googlenet", {"width": 0.25}, True),
    ],
)
def test_channels_last_is_chosen_by_how_wide_most_convolutions_are(name, options, expected):
    from d2lcnn.models import create

    with torch.device("meta"):
        model = create(name, **options)
    assert runtime.pick_channels_last(model, torch.device("cpu")) is expected
    assert runtime.pick_channels_last(model, torch.device("cpu"), channels_last=not expected) is not expected
    assert runtime.pick_channels_last(model, torch.device("meta")) is False


def test_pick_device_and_precision():
    assert runtime.pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            runtime.pick_device("cuda")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert runtime.pick_device() == torch.device("cpu")
    with pytest.raises(UnknownNameError, match="device 'gpu0'"):
        runtime.pick_device("gpu0")

    assert runtime.pick_precision("cpu", "fp32") == "fp32"
    assert runtime.pick_precision("cpu", "bfloat16") == "bf16"
    assert runtime.pick_precision("mps") == "fp32"
    with pytest.raises(ConfigError, match="fp16 training needs a CUDA GPU"):
        runtime.pick_precision("cpu", "fp16")
    with pytest.raises(UnknownNameError, match="Did you mean 'fp16'"):
        runtime.pick_precision("cpu", "fp61")


def test_auto_precision_on_cpu_follows_the_cpus_bf16_support():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("needs Linux's /proc/cpuinfo to know the CPU's features independently")
    flags = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags"))
    native_bf16 = bool({"amx_bf16", "avx512_bf16"} & set(flags.split()))
    assert runtime.pick_precision("cpu") == ("bf16" if native_bf16 else "fp32")


@pytest.mark.parametrize("native_bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_precision_on_cuda(monkeypatch, native_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16)
    assert runtime.pick_precision("cuda") == expected
    assert runtime.pick_precision("cuda", "fp16") == "fp16"


@pytest.mark.parametrize(
    "settings, error, message",
    [
        ({"epochs": 0}, ConfigError, "epochs must be a whole number >= 1, got 0"),
        ({"lr": -0.1}, ConfigError, r"lr must be a finite number > 0.*got -0\.1"),
        ({"lr": math.inf}, ConfigError, r"lr must be a finite number > 0.*got inf"),
        ({"lrr": 0.1}, UnknownNameError, "Did you mean 'lr'"),
        ({"optimizer": "sdg"}, UnknownNameError, "Did you mean 'sgd'"),
        ({"schedule": "one_cycle"}, UnknownNameError, "Did you mean 'onecycle'"),
        ({"warmup": 1.5}, ConfigError, "warmup must be a fraction of all steps in \\[0, 1\\), got 1.5"),
        ({"resume": True}, ConfigError, "resume=True needs checkpoint"),
    ],
)
def test_bad_settings_raise_one_clear_error(settings, error, message):
    arguments = {"epochs": 1, "lr": 0.1, **QUIET, **settings}
    with pytest.raises(error, match=message):
        train.fit(small_cnn(), quadrant_data(), **arguments)


# ----------------------------------------------------------------------------- distributed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_end_with_identical_weights_and_history(tmp_path):
    port = free_port()
    processes = []
    for rank in range(2):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
            "OMP_NUM_THREADS": "1",
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, str(TESTS / "ddp_worker.py"), str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=180))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]

    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["state"].keys() == rank1["state"].keys()
    for key in rank0["state"]:
        assert torch.equal(rank0["state"][key], rank1["state"][key]), key
    assert rank0["history"] == rank1["history"]
    history = History.from_dict(rank0["history"])
    assert history.config["world_size"] == 2 and history.config["steps_per_epoch"] == 4
    assert history.final_test_acc >= 0.9
    # Only rank 0 talks and saves.
    assert len(rank0["lines"]) == 3 and rank1["lines"] == []
    assert outputs[1][0] == ""
    saved = torch.load(tmp_path / "run.pt", weights_only=True)
    for key in rank0["state"]:
        assert torch.equal(saved["model"][key], rank0["state"][key]), key


# ----------------------------------------------------------------------------- real data


@pytest.mark.slow
@pytest.mark.data
def test_lenet_like_model_reaches_98_percent_on_real_mnist():
    if not (SHARED_DATA / "mnist.npz").is_file():
        pytest.skip("real MNIST not found: no mnist.npz in ../shared/data or $D2LCNN_SHARED_DATA")
    from d2lcnn.data import load

    data = load("mnist", root=SHARED_DATA, batch_size=128, device="cpu")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )
    history = train.fit(model, data, epochs=2, lr=0.1, **QUIET)
    assert history.final_test_acc >= 0.98, history.epochs


def test_lr_scale_gives_a_module_its_own_learning_rate_and_skips_frozen_parameters():
    from d2lcnn.errors import UnknownNameError

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    model[0].weight.requires_grad_(False)
    opt = train.make_optimizer(model, Settings(lr=0.1, weight_decay=5e-4, lr_scale={"2": 10.0}))
    lrs = sorted((g["lr"], g["weight_decay"], sum(p.numel() for p in g["params"])) for g in opt.param_groups)
    # layer 0: only its bias trains (lr 0.1, no decay); layer 2: weight (decayed) and bias at lr 1.0
    assert lrs == [(0.1, 0.0, 8), (1.0, 0.0, 2), (1.0, 5e-4, 16)]
    named = nn.Sequential()
    named.add_module("body", nn.Linear(4, 8))
    named.add_module("head", nn.Linear(8, 2))
    with pytest.raises(UnknownNameError, match="Did you mean 'head'"):
        train.make_optimizer(named, Settings(lr=0.1, lr_scale={"haed": 10.0}))


@pytest.mark.parametrize("steps", [1, 2, 5, 1000])
def test_onecycle_works_for_any_number_of_steps_and_peaks_at_lr(steps):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.4)
    scheduler = train.make_schedule(opt, Settings(lr=0.4, schedule="onecycle", warmup=0.2), steps)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert max(lrs) <= 0.4 + 1e-12 and all(lr > 0 for lr in lrs)
    if steps >= 5:
        assert lrs[0] == pytest.approx(0.4 / 25) and max(lrs) == pytest.approx(0.4, rel=1e-3)
    if steps == 1000:
        assert lrs.index(max(lrs)) == pytest.approx(200, abs=1) and lrs[-1] < 1e-5


def test_progress_env_switch_drops_the_bar_but_keeps_epoch_lines(monkeypatch, capsys):
    import d2lcnn.events

    made = []
    monkeypatch.setattr(d2lcnn.events, "tqdm", lambda *a, **k: made.append(1) or SimpleNamespace(
        update=lambda n: None, set_postfix=lambda **k: None, close=lambda: None))  # fmt: skip
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x = torch.randn(32, 1, 2, 2)
    y = (x.flatten(1).sum(1) > 0).long()
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    data = SimpleNamespace(train=batches, test=batches, name="toy")
    for switch, bars in (("0", 0), ("1", 2)):
        monkeypatch.setenv("D2LCNN_PROGRESS", switch)
        lines, made[:] = [], []
        train.fit(model, data, epochs=2, lr=0.1, log=lines.append, precision="fp32")
        assert len(made) == bars  # one bar per epoch, none when switched off
        assert len([line for line in lines if line.startswith("epoch ")]) == 2


@pytest.mark.parametrize("norm", ["torch", "scratch"])
def test_a_frozen_backbone_keeps_its_batch_norm_statistics(norm):
    from d2lcnn.models.batchnorm import BatchNorm

    torch.manual_seed(0)
    layer = nn.BatchNorm2d(4) if norm == "torch" else BatchNorm(4, num_dims=4)
    backbone = nn.Sequential(nn.Conv2d(1, 4, 3), layer, nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    model = nn.Sequential(backbone, nn.Flatten(), nn.Linear(4, 2))
    backbone.requires_grad_(False)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    head_before = model[2].weight.detach().clone()
    x = torch.randn(32, 1, 6, 6) * 3 + 1
    y = (x.mean((1, 2, 3)) > 1).long()
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    data = SimpleNamespace(train=batches, test=batches, name="toy")
    train.fit(model, data, epochs=2, lr=0.1, log=None, precision="fp32")
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "running stats must not move"
    assert not torch.equal(model[2].weight, head_before), "the head still trains"


def test_divergence_is_checked_every_few_steps_within_an_epoch():
    """On a GPU the loss is read every `check_every` steps: counted in steps, not in epochs (the
    run's global_step moves only between epochs)."""
    from d2lcnn.events import Run, StopOnDivergence

    run = Run(small_cnn(), None, None, None, config={"lr": 0.1}, epochs=1, steps_per_epoch=10,
              num_classes=4, total_steps=10)  # fmt: skip
    event = StopOnDivergence(check_every=3)
    event.on_start(run)
    nan = torch.tensor([float("nan"), 0.0, 1.0], dtype=torch.float64)
    event.on_step(run, nan)
    event.on_step(run, nan)  # not read yet: no wait for the GPU
    with pytest.raises(TrainingDivergedError, match="the loss became nan during epoch 1"):
        event.on_step(run, nan)
