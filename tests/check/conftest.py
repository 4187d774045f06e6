"""Shared fixtures of the ``pcc check`` / ``PentaryProcessor`` tests: a small torch CNN exported to ONNX (conv,
batch norm, ReLU, a residual add, max pool, global average pool, flatten, linear), its input and calibration
data; and a small MLP trained on scikit-learn's digits with the trainer."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def onnx_cnn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.conv2(y) + y)
            y = nn.functional.max_pool2d(y, 2)
            y = nn.functional.adaptive_avg_pool2d(y, 1)
            return self.fc(torch.flatten(y, 1))

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.2, 0.2)
        net.bn1.running_var.uniform_(0.5, 1.5)
    d = tmp_path_factory.mktemp("onnx_cnn")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.from_numpy(x),), str(d / "cnn.onnx"), dynamo=False, input_names=["x"], output_names=["logits"]
        )
    np.save(d / "x.npy", x)
    np.save(d / "batch.npy", rng.standard_normal((3, 3, 12, 12)).astype(np.float32))
    np.savez(d / "cal.npz", x=(1.5 * rng.standard_normal((16, 3, 12, 12))).astype(np.float32))  # covers x
    return {"dir": d, "model": d / "cnn.onnx", "x": d / "x.npy", "batch": d / "batch.npy", "cal": d / "cal.npz"}


@pytest.fixture(scope="session")
def digits_mlp(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 64-32-10 MLP trained for 4 epochs with quantization-aware training, saved as the trainer's JSON."""
    from sklearn.datasets import load_digits

    from pcc.trainer.pentary_trainer import PentaryModel, PentaryTrainer

    data = load_digits()
    x = (data.data / 16).astype(np.float32)
    y = data.target
    trainer = PentaryTrainer(model=PentaryModel(64, 10, hidden_dims=[32]), learning_rate=0.01, log=None)
    trainer.train(train_data=(x[:1400], y[:1400]), epochs=4, batch_size=32)
    path = tmp_path_factory.mktemp("digits") / "trained_model.json"
    trainer.save_model(path)
    return {"path": path, "x_train": x[:1400], "x_val": x[1400:], "y_val": y[1400:]}


@pytest.fixture(scope="session")
def digits_cnn(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The demo's digits CNN (conv-BN-ReLU-pool twice, linear) after 2 epochs of quantization-aware training
    (about 95 % on the 360 test digits), saved as the trainer's JSON, with 256 training images to calibrate."""
    from pcc.drivers.demo import _digits_cnn
    from pcc.trainer.data import load_digits_dataset
    from pcc.trainer.trainer import PentaryTrainer

    train, test = load_digits_dataset()
    x = np.asarray(train.x, np.float32).reshape(-1, 1, 8, 8)
    trainer = PentaryTrainer(_digits_cnn(0), "cross_entropy", 0.01, seed=0, log=None)
    trainer.train((x, np.asarray(train.y)), None, epochs=2, batch_size=32)
    d = tmp_path_factory.mktemp("digits_cnn")
    trainer.save_model(d / "model.json")
    np.savez(d / "cal.npz", input=x[:256])
    x_test = np.asarray(test.x, np.float32).reshape(-1, 1, 8, 8)
    np.save(d / "x_test.npy", x_test)
    return {"dir": d, "model": d / "model.json", "cal": d / "cal.npz", "x_test": x_test, "y_test": np.asarray(test.y)}
