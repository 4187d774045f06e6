"""Exactness: an ONNX model whose weights are already pentary per output channel (s_c x {-2..2}), with batch norms
that fold-batchnorm folds in, compiles (with calibration data, 8-pent activations) to a pent graph whose
reference output matches onnxruntime's float output to 1e-3 relative; the simulator agrees bit for bit."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from compile_helpers import sim_matches_reference

from pcc import pent_reference
from pcc.drivers.compile import compile_module
from pcc.frontends.onnx import load
from pcc.passes.pipeline import default_passes
from pcc.runtime.simulator import run_program


class PentaryNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.b1 = torch.nn.BatchNorm2d(8)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.b2 = torch.nn.BatchNorm2d(8)
        self.c3 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.b3 = torch.nn.BatchNorm2d(16)
        self.fc = torch.nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.b2(self.c2(y)) + y)
        y = torch.nn.functional.relu6(self.b3(self.c3(y)))
        y = torch.nn.functional.max_pool2d(y, 2, ceil_mode=True)
        return self.fc(torch.flatten(y, 1))


def make_pentary(net: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.Conv2d | torch.nn.Linear):
                q = torch.randint(-2, 3, mod.weight.shape, generator=g).float()
                s = torch.rand(mod.weight.shape[0], generator=g) * 0.2 + 0.05
                mod.weight.copy_(q * s.reshape(-1, *([1] * (q.dim() - 1))))
                if mod.bias is not None:
                    mod.bias.uniform_(-0.2, 0.2, generator=g)
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5, generator=g)
                mod.bias.uniform_(-0.3, 0.3, generator=g)
                mod.running_mean.uniform_(-0.3, 0.3, generator=g)
                mod.running_var.uniform_(0.5, 2.0, generator=g)


def test_pentary_onnx_model_is_exact(tmp_path) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    net = PentaryNet().eval()
    make_pentary(net, 0)
    path = tmp_path / "pentary.onnx"
    torch.onnx.export(  # no constant folding: the exporter would fold the batch norms itself
        net,
        (torch.zeros(1, 1, 16, 16),),
        str(path),
        dynamo=False,
        do_constant_folding=False,
        input_names=["image"],
        output_names=["logits"],
    )
    rng = np.random.default_rng(0)
    data = rng.standard_normal((48, 1, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", image=data)
    m = load(str(path))
    assert "nn.batch_norm" in {op.name for op in m.main.body}
    result = compile_module(m, default_passes(calibration=tmp_path / "cal.npz", act_pents=8))
    sess = ort.InferenceSession(str(path))
    worst = 0.0
    for i in range(8):
        x = data[i : i + 1]
        want = sess.run(None, {"image": x})[0]
        got = pent_reference.run(m, {"image": x})[0]
        worst = max(worst, float(np.max(np.abs(got - want)) / np.max(np.abs(want))))
    print(f"\nexactness: max relative error vs onnxruntime {worst:.2e}")
    assert worst < 1e-3
    # the whole stack: assembled program on the simulator, float in and float out through the I/O declarations
    from pcc.backend.assembler import assemble_file
    from pcc.backend.codegen import write_program

    write_program(result.compiled, tmp_path / "pentary.pasm")
    prog = assemble_file(tmp_path / "pentary.pasm")
    sim_matches_reference(m, prog, seeds=2)
    out = run_program(prog, {"image": data[:4]})["logits"]
    want = np.concatenate([sess.run(None, {"image": data[i : i + 1]})[0] for i in range(4)])
    assert float(np.max(np.abs(out - want)) / np.max(np.abs(want))) < 1e-3
