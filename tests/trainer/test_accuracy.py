"""Real accuracy on scikit-learn's digits (the issue's protocol); a few seconds each."""

from __future__ import annotations

import pytest

from pcc.trainer.data import load_digits_dataset
from pcc.trainer.layers import Flatten, PentaryBatchNorm, PentaryConv2D, PentaryLinear, PentaryMaxPool2D, PentaryReLU
from pcc.trainer.model import PentaryModel
from pcc.trainer.trainer import LossFunction, PentaryTrainer

pytest.importorskip("sklearn")


def test_digits_mlp_protocol():
    """PentaryModel(64, 10, [64, 32]), 20 epochs, batch 32, lr 0.01, inputs / 16, 80/20 split random_state=0."""
    train, test = load_digits_dataset()
    trainer = PentaryTrainer(PentaryModel(64, 10, [64, 32]), LossFunction.cross_entropy_loss, 0.01, log=None)
    trainer.train((train.x, train.y), (test.x, test.y), epochs=20, batch_size=32)
    m = trainer.metrics
    assert m["val_acc_pentary"] >= 0.96
    assert abs(m["val_acc_float"] - m["val_acc_pentary"]) <= 0.01
    levels = m["pent_histogram"]["total"]
    assert min(levels[0], levels[4]) > 0.05 * sum(levels)  # +-2 carry real weight


def test_digits_cnn_with_batchnorm():
    train, test = load_digits_dataset()
    layers = [
        PentaryConv2D(1, 16, 3, padding=1), PentaryBatchNorm(16), PentaryReLU(), PentaryMaxPool2D(2),
        PentaryConv2D(16, 32, 3, padding=1), PentaryBatchNorm(32), PentaryReLU(), PentaryMaxPool2D(2),
        Flatten(), PentaryLinear(32 * 2 * 2, 10),
    ]  # fmt: skip
    trainer = PentaryTrainer(PentaryModel.sequential(layers, (1, 8, 8), seed=0), log=None)
    trainer.train((train.x, train.y), (test.x, test.y), epochs=10, batch_size=32)
    assert trainer.metrics["val_acc_pentary"] >= 0.97
