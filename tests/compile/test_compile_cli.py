"""``pcc compile --emit pent|asm|bin`` with the quantizer's flags, then ``pcc run`` on the result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from compile_helpers import sim_matches_reference

from pcc import pent_reference
from pcc.cli import main
from pcc.parser import parse_file


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4 * 3 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = torch.nn.functional.max_pool2d(y, 2)
        return self.fc(torch.flatten(y, 1))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple:  # noqa: ANN001
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    net = Tiny().eval()
    path = d / "tiny.onnx"
    torch.onnx.export(net, (torch.zeros(1, 2, 6, 6),), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    x = np.random.default_rng(0).standard_normal((16, 2, 6, 6)).astype(np.float32)
    np.savez(d / "cal.npz", x=x)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    return path, d / "cal.npz", x, ref


def test_emit_asm_then_run(model, tmp_path, capsys) -> None:  # noqa: ANN001
    path, cal, x, ref = model
    out = tmp_path / "tiny.pasm"
    assert main(["compile", str(path), "--emit", "asm", "--calibration", str(cal), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    summary = next(line for line in err.splitlines() if line.startswith("compiled tiny.onnx"))
    for word in ("ops", "weights", "KiB packed", "planned activation memory", "naive", "cycles"):
        assert word in summary
    assert "warning" not in err and (tmp_path / "tiny.weights.bin").exists()
    np.save(tmp_path / "x.npy", x[:4])
    assert main(["run", str(out), "-i", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "y.npz")]) == 0
    y = np.load(tmp_path / "y.npz")["y"]
    assert y.shape == (4, 5)
    assert np.max(np.abs(y - ref[:4])) < 0.3 * np.max(np.abs(ref))  # pentary weights: a few % off the float model


def test_emit_bin_and_pent(model, tmp_path, capsys) -> None:  # noqa: ANN001
    path, cal, x, _ = model
    pbin = tmp_path / "t.pbin"
    args = ["--calibration", str(cal), "--act-pents", "6", "--per-tensor"]
    assert main(["compile", str(path), "--emit", "bin", "-o", str(pbin), *args]) == 0
    pir = tmp_path / "t.pir"
    assert main(["compile", str(path), "--emit", "pent", "-o", str(pir), *args]) == 0
    m = parse_file(pir)
    assert m.main.body[0].results[0].type.dtype == "p6"
    assert all(op.attributes.get("tile") for op in m.main.body[1:-1])
    from pcc.backend import binary

    prog = binary.read(pbin)
    assert prog.inputs[0].pents == 6 and prog.outputs[0].name == "y"
    sim_matches_reference(m, prog, seeds=2)
    q = pent_reference.quantize_input(x[:1], prog.inputs[0].scale, 6)
    np.save(tmp_path / "q.npy", q)
    assert main(["run", str(pbin), "-i", f"x={tmp_path / 'q.npy'}", "--quantized", "-o", str(tmp_path / "q.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "q.npz")["y"], pent_reference.run_int(m, {"x": q})[0])


def test_fallback_warning_dump_dir_and_errors(model, tmp_path, capsys) -> None:  # noqa: ANN001
    path, cal, _, _ = model
    dump = tmp_path / "dumps"
    assert main(["compile", str(path), "--emit", "asm", "-o", str(tmp_path / "a.pasm"), "--dump-dir", str(dump)]) == 0
    err = capsys.readouterr().err
    assert "warning: no calibration data" in err and "Traceback" not in err
    names = sorted(p.name for p in dump.glob("*.pir"))
    assert names[0] == "000-input.pir" and names[-1].endswith("-tile.pir") and any("quantize" in n for n in names)
    assert main(["compile", str(path), "--calibration", str(cal), "-o", str(tmp_path / "x.pir")]) == 1
    assert "options of the quantize pass" in capsys.readouterr().err
    assert main(["compile", str(path), "--emit", "asm", "--act-pents", "5", "-o", str(tmp_path / "b.pasm")]) == 1
    assert "use 4 or 6" in capsys.readouterr().err
    assert main(["compile", str(path), "--emit", "asm", "--calibration", str(tmp_path / "none.npz")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_weight_pents_flag_and_pass_option(model, tmp_path, capsys) -> None:  # noqa: ANN001
    """``--weight-pents 2`` and ``quantize{weight-pents=2}`` give the same program: two products per layer,
    closer to torch than one pent per weight (``--error-budget 0``: no layer raised to two pents), and the
    simulator equals the pent reference."""
    from pcc.dialects import pent

    path, cal, x, ref = model
    errs = {}
    for wp in (1, 2):
        pir = tmp_path / f"w{wp}.pir"
        assert main(["compile", str(path), "--emit", "pent", "--calibration", str(cal), "--weight-pents", str(wp),
                     "--error-budget", "0", "-o", str(pir)]) == 0  # fmt: skip
        m = parse_file(pir)
        assert len(m.main.ops_of(pent.Conv2d)) == wp and len(m.main.ops_of(pent.Gemm)) == wp
        got = np.concatenate([pent_reference.run(m, {"x": x[i : i + 1]})[0] for i in range(8)])
        errs[wp] = float(np.abs(got - ref[:8]).max())
    assert errs[2] < errs[1] / 2, errs
    passes = f"canonicalize,fold-batchnorm,quantize{{weight-pents=2 calibration={cal}}},fuse,schedule,plan-memory,tile"
    pbin = tmp_path / "w2.pbin"
    assert main(["compile", str(path), "--emit", "bin", "--passes", passes, "-o", str(pbin)]) == 0
    from pcc.backend import binary

    m = parse_file(tmp_path / "w2.pir")
    sim_matches_reference(m, binary.read(pbin), seeds=1)
    assert main(["compile", str(path), "--emit", "asm", "--weight-pents", "3", "-o", str(tmp_path / "b.pasm")]) == 1
    assert "weight-pents must be 1 or 2" in capsys.readouterr().err


@pytest.mark.parametrize("names", [("p0", "SP"), ("P31", "lr"), ("fp", "p7")])
def test_nodes_named_like_registers_become_labels_the_assembler_takes(tmp_path, names) -> None:  # noqa: ANN001
    # the code generator names each layer's label after its model node; a register's name cannot be a label
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], name=names[0], transB=1),
        helper.make_node("Relu", ["h"], ["y"], name=names[1]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w, b],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    out = tmp_path / "m.pbin"
    assert main(["compile", str(path), "--emit", "bin", "-o", str(out)]) == 0
    np.save(tmp_path / "x.npy", rng.standard_normal((1, 6)).astype(np.float32))
    assert main(["run", str(out), "-i", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "y.npz")]) == 0
    assert np.load(tmp_path / "y.npz")["y"].shape == (1, 4)
