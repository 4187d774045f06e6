"""The hostile-input corpus (tests/security/corpus.py): every case exits 1 with one located diagnostic.

Each case runs the CLI in this process (``pcc.cli.main``) on files written into its own folder beside copies
of valid fixtures, and asserts: exit status 1, exactly one ``error:`` line, the case's message regex, no
traceback, no "internal error", and that no output file was left behind.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from corpus import CASES
from security_helpers import assert_one_diagnostic, run_cli

BACKEND_DATA = Path(__file__).resolve().parents[1] / "backend" / "data"

MODEL = {
    "format": "pcc.pentary-model",
    "version": 1,
    "input_dim": 4,
    "output_dim": 2,
    "hidden_dims": [3],
    "input_shape": [4],
    "layers": [
        {"type": "linear", "in_features": 4, "out_features": 3, "use_bias": True,
         "weight_pentary": [[2, 0, 0, -2], [0, 2, -1, 0], [1, -2, 2, 1]], "weight_scale": [0.15, 0.2, 0.21],
         "bias": [-0.13, -0.15, 0.44]},
        {"type": "relu"},
        {"type": "linear", "in_features": 3, "out_features": 2, "use_bias": True,
         "weight_pentary": [[-1, 0, 2], [0, -1, 2]], "weight_scale": [0.27, 0.28], "bias": [0.13, -0.04]},
    ],
}  # fmt: skip


def build_fixtures(d: Path) -> Path:
    """The valid files every case starts from, written into ``d``."""
    (d / "model.json").write_text(json.dumps(MODEL))
    rng = np.random.default_rng(0)
    np.savez(d / "cal.npz", input=rng.standard_normal((8, 4)).astype(np.float32))
    rc, _, err = run_cli(["compile", d / "model.json", "--calibration", d / "cal.npz", "-o", d / "prog.pasm"])
    assert rc == 0, err
    rc, _, err = run_cli(
        ["compile", d / "model.json", "--calibration", d / "cal.npz", "--emit", "pent", "-o", d / "p.pir"]
    )
    assert rc == 0, err
    rc, _, err = run_cli(["opt", d / "p.pir", "--passes", "plan-memory,tile", "-o", d / "pent.pir"])
    assert rc == 0, err
    for name in ("prog", "sum"):
        src = d / "prog.pasm" if name == "prog" else BACKEND_DATA / "sum.pasm"
        rc, _, err = run_cli(["asm", src, "-o", d / f"{name}.pbin"])
        assert rc == 0, err
    shutil.copy(BACKEND_DATA / "sum.pasm", d / "sum.pasm")
    np.save(d / "x.npy", rng.standard_normal((1, 4)).astype(np.float32))
    (d / "relu.pir").write_text(
        "module @m {\n  func @main(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {\n"
        "    %y = nn.relu(%x) : tensor<1x4xf32>\n    return %y\n  }\n}\n"
    )
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [w, b],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), d / "gemm.onnx")
    data = d / "data"
    data.mkdir()
    np.save(data / "features.npy", rng.standard_normal((12, 5)).astype(np.float32))
    np.save(data / "labels.npy", rng.integers(0, 3, 12))
    try:
        import torch

        net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
        torch.export.save(torch.export.export(net, (torch.randn(1, 4),)), d / "net.pt2")
    except ImportError:
        pass
    return d


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixtures(tmp_path_factory.mktemp("fixtures"))


def run_case(case_id: str, fixtures: Path, d: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Write the case's files into ``d`` (beside copies of the fixtures) and run it; (exit status, stderr)."""
    case = CASES[case_id]
    for f in fixtures.iterdir():
        (shutil.copytree if f.is_dir() else shutil.copy)(f, d / f.name)
    for name, content in case.files.items():
        data = content(fixtures) if callable(content) else content
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data.encode() if isinstance(data, str) else data)
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    rc, _, err = run_cli([a.format(d=d) for a in case.argv])
    return rc, err


def test_corpus_is_large_and_covers_every_entry_point() -> None:
    assert len(CASES) >= 300
    commands = {c.argv[0] for c in CASES.values()}
    assert {"compile", "opt", "asm", "disasm", "run", "check", "train", "convert", "quantize"} <= commands


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_hostile_input(case_id: str, fixtures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[case_id]
    if any("pt2" in str(v) for v in case.argv) and not (fixtures / "net.pt2").exists():
        pytest.skip("needs torch")
    d = tmp_path
    before = {p.name for p in fixtures.rglob("*")} | set(case.files)
    rc, err = run_case(case_id, fixtures, d, monkeypatch)
    if case.code == 2:  # a usage error: the parser's message box, exit status 2, no traceback
        assert rc == 2 and "Usage:" in err and "Traceback" not in err, err
        assert re.search(case.pattern, err), err
    else:
        assert_one_diagnostic(rc, err, case.pattern)
    left = {p.name for p in d.rglob("*")} - before - {Path(n).name for n in case.files}
    assert not left, f"files left behind: {left}"
    for name in case.unchanged:
        assert (d / name).read_bytes() == (fixtures / name).read_bytes(), f"{name} was changed"
