"""The fast CIFAR-10 recipe's features, each general: whitening from data, weight averaging
(Lookahead), the triangle schedule, batch norm learning rates, shifted test-time views, the data's
pad option, and the recipes of fast_vgg and fast_resnet (run end to end on a tiny subset)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_train import QUIET, quadrant_data, small_cnn
from torch import nn

from d2lcnn import train
from d2lcnn.errors import ConfigError
from d2lcnn.events import Lookahead, Run
from d2lcnn.settings import RECIPES, Settings
from d2lcnn.whitening import patches, whiten_, whiten_first_conv

# ----------------------------------------------------------------------------- whitening


def correlated_images(n: int = 200, seed: int = 0) -> torch.Tensor:
    """3x8x8 images whose neighbouring pixels and channels are strongly correlated, like photos."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, 4, 4, generator=generator)
    smooth = nn.functional.interpolate(base, size=8, mode="bilinear", align_corners=False)
    return smooth.repeat(1, 3, 1, 1) + 0.1 * torch.randn(n, 3, 8, 8, generator=generator)


def test_whitened_conv_outputs_are_uncorrelated_with_unit_variance():
    images = correlated_images()
    conv = whiten_(nn.Conv2d(3, 24, 2), images, eps=1e-6)

    rows = patches(images.double(), (2, 2))
    before = torch.corrcoef(rows.T)
    assert before[0, 1] > 0.7, "the test images must start correlated"
    with torch.no_grad():
        out = conv(images).double()  # bias zeroed: the outputs are the projections
    first_half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    second_moment = first_half.T @ first_half / len(first_half)
    assert torch.allclose(second_moment, torch.eye(12, dtype=torch.float64), atol=1e-2)
    assert torch.equal(out[:, 12:], -out[:, :12]), "the second half are the negatives"
    assert not conv.weight.requires_grad and conv.bias.requires_grad
    assert torch.count_nonzero(conv.bias) == 0


def test_whitening_refuses_a_conv_of_the_wrong_size_and_images_it_cannot_use():
    with pytest.raises(ConfigError, match=r"2 x 3 x 2 x 2 = 24 outputs, got 16"):
        whiten_(nn.Conv2d(3, 16, 2), correlated_images(4))
    with pytest.raises(ConfigError, match=r"float images shaped \(N, 3, H, W\); got torch.uint8"):
        whiten_(nn.Conv2d(3, 24, 2), torch.zeros(4, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="has none"):
        whiten_first_conv(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)), [(correlated_images(4), None)])


def test_whiten_first_conv_takes_count_images_from_the_batches():
    images = correlated_images(100)
    batches = [(images[i : i + 30], torch.zeros(30)) for i in range(0, 100, 30)]
    model = nn.Sequential(nn.Conv2d(3, 24, 2), nn.GELU(), nn.Conv2d(24, 5, 3))
    whiten_first_conv(model, iter(batches), count=50)
    expected = whiten_(nn.Conv2d(3, 24, 2), images[:50])
    assert torch.allclose(model[0].weight, expected.weight)


def test_fit_with_whiten_trains_everything_but_the_whitened_weights():
    data = quadrant_data(n_train=128)
    for loader in (data.train, data.test):  # three channels that differ
        loader.images = loader.images.repeat(1, 3, 1, 1) + 0.3 * torch.randn(len(loader.images), 3, 8, 8)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 24, 2), nn.GELU(), nn.Conv2d(24, 8, 3), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(8, 4),
    )  # fmt: skip
    history = train.fit(model, data, epochs=2, lr=0.05, whiten=True, **QUIET)

    def gram(conv: nn.Conv2d) -> torch.Tensor:  # sum of f f^T over the filters: the same for any signs
        filters = conv.weight.detach().double().reshape(24, -1)
        return filters.T @ filters

    expected = whiten_(nn.Conv2d(3, 24, 2), data.train.images)  # the loader's 128 images, any order
    assert not model[0].weight.requires_grad and model[2].weight.requires_grad
    assert torch.allclose(gram(model[0]), gram(expected), rtol=1e-3)
    assert history.config["whiten"] is True


# ----------------------------------------------------------------------------- Lookahead


def lookahead_run(model: nn.Module, total_steps: int) -> Run:
    return Run(model, None, None, None, config={}, epochs=1, steps_per_epoch=total_steps,
               num_classes=None, total_steps=total_steps)  # fmt: skip


def test_lookahead_moves_an_average_every_few_steps_and_ends_on_it():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    event, run = Lookahead(every=2, base=0.5, power=1.0), lookahead_run(model, total_steps=4)
    event.on_start(run)  # average = 0
    weights = []
    for _ in range(4):
        with torch.no_grad():
            model.weight += 1.0  # what a training step would do
        event.on_step(run, None)
        weights.append(model.weight.item())
    # step 2: decay 0.5**2 * (2/4) = 0.125, average = 0 + 0.875 * (2 - 0) = 1.75, model set to it
    # step 3: the model moves on to 2.75 (no update); step 4 is the last: the model becomes the
    # average, which keeps its value (decay 1), and the last steps' moves are dropped
    assert weights[0] == 1.0
    assert weights[1] == pytest.approx(1.75)
    assert weights[2] == pytest.approx(2.75)
    assert weights[3] == pytest.approx(1.75), "the run ends on the average"


def test_lookahead_averages_batch_norm_statistics_too_and_fit_turns_it_on():
    model = nn.BatchNorm1d(2)
    event, run = Lookahead(every=1, base=1.0, power=0.0), lookahead_run(model, total_steps=10)
    event.on_start(run)
    model.running_mean += 4.0
    event.on_step(run, None)  # decay 1: the average (and so the model) keeps the old values
    assert torch.equal(model.running_mean, torch.zeros(2))
    with pytest.raises(ConfigError, match="every >= 1"):
        Lookahead(every=0)

    history = train.fit(small_cnn(), quadrant_data(), epochs=2, lr=0.1, lookahead=True, **QUIET)
    assert history.config["lookahead"] is True and history.final_test_acc >= 0.9


# ----------------------------------------------------------------------------- schedule, optimizer


def test_triangle_schedule_rises_from_a_fifth_to_the_peak_then_falls_to_seven_percent():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = train.make_schedule(optimizer, Settings(schedule="triangle", warmup=0.25), total_steps=100)
    factors = [schedule.lr_lambdas[0](step) for step in range(100)]
    assert factors[0] == pytest.approx(0.2)
    assert factors[25] == pytest.approx(1.0) and max(factors) == pytest.approx(1.0)
    assert factors[99] == pytest.approx(0.07)
    assert all(a < b for a, b in zip(factors[:25], factors[1:26]))
    assert all(a > b for a, b in zip(factors[25:99], factors[26:]))


def test_norm_lr_scale_multiplies_the_learning_rate_of_batch_norm_parameters_only():
    model = small_cnn()
    settings = Settings(lr=0.1, norm_lr_scale=64.0, lr_scale={"6": 2.0})
    optimizer = train.make_optimizer(model, settings)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert lr_of[id(model[1].weight)] == lr_of[id(model[1].bias)] == pytest.approx(6.4)
    assert lr_of[id(model[0].weight)] == pytest.approx(0.1)
    assert lr_of[id(model[6].weight)] == pytest.approx(0.2), "lr_scale still applies elsewhere"
    with pytest.raises(ConfigError, match="norm_lr_scale must be a finite number > 0"):
        Settings(norm_lr_scale=0)


# ----------------------------------------------------------------------------- test-time views


class Probe(nn.Module):
    """Logits that tell which view an image is: its top-left pixel and its mean."""

    def forward(self, x):
        return torch.stack([x[:, 0, 0, 0], x.mean((1, 2, 3))], 1)


def test_tta_logits_weight_the_plain_and_the_shifted_views_as_airbench():
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    model = Probe()
    plain = model(x)
    assert torch.equal(train.tta_logits(model, x), plain)
    flipped = (plain + model(x.flip(-1))) / 2
    assert torch.allclose(train.tta_logits(model, x, flip=True), flipped)
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., :4, :4], padded[..., 2:, 2:]
    expected = model(x) / 2 + model(up_left) / 4 + model(down_right) / 4
    assert torch.allclose(train.tta_logits(model, x, shift=1), expected)
    with pytest.raises(ConfigError, match="test_shift=4 does not fit 4x4 images"):
        train.tta_logits(model, x, shift=4)


def test_evaluate_and_fit_use_the_shifted_views():
    data = quadrant_data()
    model = small_cnn()
    train.fit(model, data, epochs=2, lr=0.1, **QUIET)
    plain = train.evaluate(model, data.test, precision="fp32")
    shifted = train.evaluate(model, data.test, precision="fp32", test_shift=1)
    assert plain[0] != pytest.approx(shifted[0]), "the shifted views change the loss"
    history = train.fit(small_cnn(), data, epochs=1, lr=0.1, test_shift=1, **QUIET)
    assert history.config["test_shift"] == 1
    with pytest.raises(ConfigError, match="test_shift must be a whole number of pixels"):
        Settings(test_shift=-1)


# ----------------------------------------------------------------------------- data, recipes


def test_load_pads_by_the_amount_asked(tmp_path):
    from fake_data import make_cifar_like

    from d2lcnn.data import load

    make_cifar_like(tmp_path)
    assert load("cifar10", root=tmp_path, augment=True, device="cpu").train.pad == 4
    assert load("cifar10", root=tmp_path, augment=True, pad=2, device="cpu").train.pad == 2


@pytest.mark.parametrize("name", ["fast_vgg", "fast_resnet"])
def test_fast_recipes_train_end_to_end_with_every_feature(name, tmp_path, monkeypatch, capsys):
    from fake_data import make_cifar_like

    from d2lcnn.cli import main

    recipe = RECIPES[name]
    settings = recipe.settings
    assert (recipe.dataset, recipe.batch_size, recipe.pad) == ("cifar10", 512, 2)
    assert settings.whiten and settings.lookahead and settings.test_flip and settings.test_shift == 1
    assert (settings.schedule, settings.norm_lr_scale) == ("triangle", 64.0)
    assert settings.lr * settings.weight_decay == pytest.approx(1e-3, rel=0.01)

    make_cifar_like(tmp_path / "data")
    monkeypatch.setenv("D2LCNN_DATA", str(tmp_path / "data"))
    out = tmp_path / "run"
    code = main(["train", "--model", name, "--dataset", "cifar10", "--epochs", "1", "--batch-size", "16",
                 "--out", str(out), "--quiet", "--no-plots", "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "history.json").read_text())["config"]
    assert config["whiten"] and config["lookahead"] and config["test_shift"] == 1
    assert math.isfinite(json.loads((out / "history.json").read_text())["epochs"][0]["test_loss"])
