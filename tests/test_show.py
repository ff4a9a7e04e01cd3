"""Tests for d2lcnn.show: the small helpers every chapter uses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from d2lcnn.errors import UnknownNameError
from d2lcnn.show import count_params, init_weights, show_source
from d2lcnn.train import train_epoch


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_count_params_counts_all_or_only_trainable_ones():
    model = net()
    assert count_params(model) == (4 * 9 + 4) + (144 * 3 + 3)
    model[0].requires_grad_(False)
    assert count_params(model, trainable=True) == 144 * 3 + 3


def test_xavier_keeps_biases_and_kaiming_zeroes_them():
    model = net()
    bias = model[0].bias.detach().clone()
    init_weights(model, "xavier")
    assert torch.equal(model[0].bias, bias)
    bound = (6 / (9 + 4 * 9)) ** 0.5  # Xavier-uniform: sqrt(6 / (fan_in + fan_out))
    assert model[0].weight.abs().max() <= bound
    init_weights(model, "kaiming")
    assert torch.count_nonzero(model[0].bias) == 0 and torch.count_nonzero(model[3].bias) == 0
    with pytest.raises(UnknownNameError, match="Did you mean 'xavier'"):
        init_weights(model, "xavir")


def test_show_source_shows_the_code_that_runs(capsys):
    show_source(train_epoch)
    shown = capsys.readouterr().out
    assert shown.startswith("def train_epoch(") and "scaler.step(optimizer)" in shown
