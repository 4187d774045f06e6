"""``pcc convert`` of PyTorch files that carry no architecture (state dicts) or a user's own class."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch

from pcc.cli import main
from pcc.diagnostics import PccError
from pcc.trainer.model import PentaryModel
from pcc.trainer.quantizer import PyTorchToPentaryConverter

USER_CODE = """
import torch


class TinyNet(torch.nn.Module):
    def __init__(self, d_in=6, hidden=5, d_out=2):
        super().__init__()
        self.fc1 = torch.nn.Linear(d_in, hidden)
        self.fc2 = torch.nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class TinyCNN(torch.nn.Module):
    def __init__(self, channels=4, classes=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, channels, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(channels)
        self.fc = torch.nn.Linear(channels * 4 * 4, classes)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(torch.flatten(x, 1))


class TanhNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 3)
        self.fc2 = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's package ``usernets`` in the current folder (the tests run in ``tmp_path``)."""
    (tmp_path / "usernets.py").write_text(textwrap.dedent(USER_CODE))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("usernets", None)
    import usernets

    yield usernets
    sys.modules.pop("usernets", None)


def _run(capsys, args):
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_state_dict_activations_are_never_guessed(capsys, tmp_path, rng):
    torch.manual_seed(0)
    tanh_mlp = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    torch.save(tanh_mlp.state_dict(), "tanh.pt")
    rc, out, err = _run(capsys, ["convert", "tanh.pt", "-o", "t.json"])
    assert rc == 1 and not (tmp_path / "t.json").exists()
    assert "holds no activations" in err and "does not guess" in err
    assert "--activations relu,none" in err and "--module pkg.mod:Class" in err
    # naming the real activation gives the honest answer: tanh has no pentary layer
    rc, out, err = _run(capsys, ["convert", "tanh.pt", "--activations", "tanh,none", "-o", "t.json"])
    assert rc == 1 and "Tanh" in err and "cannot be expressed as a pentary layer" in err
    rc, out, err = _run(capsys, ["convert", "tanh.pt", "--activations", "relu", "-o", "t.json"])
    assert rc == 1 and "names 1 activation(s), but the state dict has 2 Linear layers" in err
    rc, out, err = _run(capsys, ["convert", "tanh.pt", "--activations", "swish,none", "-o", "t.json"])
    assert rc == 1 and "unknown activation 'swish'" in err

    relu_mlp = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    torch.save(relu_mlp.state_dict(), "relu.pt")
    rc, out, err = _run(capsys, ["convert", "relu.pt", "--activations", "relu,none", "-o", "r.json"])
    assert rc == 0, err
    x = rng.standard_normal((8, 6)).astype(np.float32)
    with torch.no_grad():
        ref = relu_mlp(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(PentaryModel.load("r.json").predict(x, quantized=False), ref, atol=1e-5)
    with pytest.raises(PccError, match="holds no activations"):
        PyTorchToPentaryConverter().to_model(relu_mlp.state_dict())


def test_whole_custom_module_is_refused_with_the_way_forward(capsys, tmp_path, user_module):
    torch.save(user_module.TinyNet(), "whole.pt")
    rc, out, err = _run(capsys, ["convert", "whole.pt", "-o", "w.json"])
    assert rc == 1 and not (tmp_path / "w.json").exists()
    assert "Unsupported global: GLOBAL usernets.TinyNet was not an allowed global by default" in err
    assert "--module usernets:TinyNet" in err and "torch.save(model.state_dict()" in err
    assert "torch.export.save(" in err and "model.pt2" in err and "torch.onnx.export(" in err
    assert "Traceback" not in err and "\x1b[" not in err


def test_module_flag_builds_the_users_architecture(capsys, tmp_path, rng, user_module):
    torch.manual_seed(1)
    net = user_module.TinyNet(d_in=7, hidden=9, d_out=3).eval()
    torch.save(net.state_dict(), "weights.pt")
    args = ["convert", "weights.pt", "--module", "usernets:TinyNet", "--module-args",
            json.dumps({"d_in": 7, "hidden": 9, "d_out": 3}), "--input-shape", "1,7", "-o", "n.json"]  # fmt: skip
    rc, out, err = _run(capsys, args)
    assert rc == 0, err
    model = PentaryModel.load("n.json")
    assert [layer.type for layer in model.layers] == ["linear", "relu", "linear"]
    x = rng.standard_normal((16, 7)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x, quantized=False), ref, atol=1e-5)
    # the constructor arguments must match the weights
    rc, out, err = _run(capsys, args[:5] + ["{}"] + args[6:])
    assert rc == 1 and "does not fit TinyNet()" in err and "--module-args" in err

    cnn = user_module.TinyCNN().eval()
    with torch.no_grad():
        cnn.bn.running_mean.uniform_(-0.5, 0.5)
        cnn.bn.running_var.uniform_(0.5, 2.0)
    torch.save(cnn.state_dict(), "cnn.pt")
    rc, out, err = _run(capsys, ["convert", "cnn.pt", "--module", "usernets.py:TinyCNN", "--input-shape",
                                 "1,1,8,8", "-o", "c.json"])  # fmt: skip
    assert rc == 0, err
    xc = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        refc = cnn(torch.from_numpy(xc)).numpy()
    np.testing.assert_allclose(PentaryModel.load("c.json").predict(xc, quantized=False), refc, atol=1e-4)


def test_module_flag_errors(capsys, tmp_path, user_module):
    torch.save(user_module.TanhNet().state_dict(), "tanh.pt")
    rc, out, err = _run(capsys, ["convert", "tanh.pt", "--module", "usernets:TanhNet", "--input-shape", "1,4"])
    assert rc == 1 and "op tanh.default cannot be expressed as a pentary layer" in err
    rc, out, err = _run(capsys, ["convert", "tanh.pt", "--module", "usernets:TanhNet"])
    assert rc == 1 and "needs --input-shape" in err
    rc, out, err = _run(capsys, ["convert", "tanh.pt", "--module", "usernets:Missing", "--input-shape", "1,4"])
    assert rc == 1 and "has no attribute 'Missing'" in err
    rc, out, err = _run(capsys, ["convert", "tanh.pt", "--module", "nosuchpkg.mod:Net", "--input-shape", "1,4"])
    assert rc == 1 and "cannot import nosuchpkg.mod" in err
    rc, out, err = _run(capsys, ["convert", "tanh.pt", "--module-args", "{}"])
    assert rc == 1 and "--module-args needs --module" in err
    rc, out, err = _run(capsys, ["convert", "tanh.pt", "--module", "usernets:TanhNet", "--module-args", "[1,"])
    assert rc == 1 and "not valid JSON" in err
