"""``pcc run`` end to end through ``pcc.cli.main``: inputs, outputs, batches, .pbin, profile, trace, plot, errors.

The program is one quantised fully connected layer worked by hand:
x (scale 0.5) = [[0.5, 1, -1.5, 2], [5, -5, 2.5, 0]] -> q = [[1, 2, -3, 4], [10, -10, 5, 0]];
W rows [1,0,0,0], [0,1,0,0], [1,1,1,1], [-2,0,0,2]; bias [0, 1, -1, 0];
acc = [[1, 3, 3, 6], [10, -9, 4, -20]]; REQUANT by 1/2 (ties away) -> [[1, 2, 2, 3], [5, -5, 2, -10]];
TRELU -> [[1, 2, 2, 3], [5, 0, 2, 0]]; output scale 0.25.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcc.cli import main

DIGITS = [1, 0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1, -2, 0, 0, 2]
WORD = sum(d * 5**i for i, d in enumerate(DIGITS))

PROGRAM = f"""; one fully connected layer
.data
x:    .zero 8
w:    .word {WORD}
bias: .word 0, 1, -1, 0
y:    .zero 8
.input x, shape=[1, 2, 4], pents=4, scale=0.5, addr=x
.output y, shape=[1, 2, 4], pents=6, scale=0.25, addr=y
.text
; @layer fc1
    TLOADC 0, [P0 + bias], 2, 4, 0
    TLOAD  0, [P0 + x], 2, 4, 4
    TLOADW 0, [P0 + w], 16
    MATMUL 0, 0, 0, 2, 4, 4, 1
; @layer fc1.requant
    REQUANT 100, 0, 8, 1, 1, 6
    TRELU 100, 100, 8
    TSTORE [P0 + y], 100, 2, 4, 4
    HALT
"""
X = np.array([[[0.5, 1, -1.5, 2], [5, -5, 2.5, 0]]], dtype=np.float32)
Y = np.array([[[1, 2, 2, 3], [5, 0, 2, 0]]], dtype=np.float32) * 0.25


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "fc.pasm").write_text(PROGRAM)
    np.save(tmp_path / "x.npy", X)
    return tmp_path


def test_run_pasm_named_input(files: Path) -> None:
    out = files / "out.npz"
    assert main(["run", str(files / "fc.pasm"), "--input", f"x={files / 'x.npy'}", "-o", str(out)]) == 0
    got = np.load(out)
    assert list(got) == ["y"] and got["y"].dtype == np.float32
    np.testing.assert_array_equal(got["y"], Y)


def test_run_bare_input_prints_outputs(files: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", str(files / "fc.pasm"), "--input", str(files / "x.npy")]) == 0
    assert "y: shape (1, 2, 4) float32 [0.25, 0.5" in capsys.readouterr().out


def test_run_pbin(files: Path) -> None:
    assert main(["asm", str(files / "fc.pasm"), "-o", str(files / "fc.pbin")]) == 0
    out = files / "out.npz"
    assert main(["run", str(files / "fc.pbin"), "-i", str(files / "x.npy"), "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out)["y"], Y)


def test_batch_runs_sample_after_sample(files: Path) -> None:
    batch = np.concatenate([X, -X, 2 * X]).astype(np.float64)
    np.save(files / "xb.npy", batch)
    out = files / "out.npz"
    assert main(["run", str(files / "fc.pasm"), "-i", str(files / "xb.npy"), "-o", str(out)]) == 0
    y = np.load(out)["y"]
    assert y.shape == (3, 2, 4)
    np.testing.assert_array_equal(y[0:1], Y)
    from pcc.backend.assembler import assemble
    from pcc.runtime.simulator import run_program

    program = assemble(PROGRAM)
    for i in range(3):
        np.testing.assert_array_equal(y[i : i + 1], run_program(program, {"x": batch[i : i + 1]})["y"])


def test_quantized_io(files: Path) -> None:
    np.save(files / "q.npy", np.array([[[1, 2, -3, 4], [10, -10, 5, 0]]], dtype=np.int32))
    out = files / "out.npz"
    assert main(["run", str(files / "fc.pasm"), "-i", str(files / "q.npy"), "--quantized", "-o", str(out)]) == 0
    y = np.load(out)["y"]
    assert y.dtype == np.int64 and y.tolist() == [[[1, 2, 2, 3], [5, 0, 2, 0]]]


def test_profile_trace_plot(files: Path, capsys: pytest.CaptureFixture) -> None:
    pj, tr, png = files / "p.json", files / "t.json", files / "p.png"
    args = ["run", str(files / "fc.pasm"), "-i", str(files / "x.npy"), "--profile"]
    args += ["--profile-json", str(pj), "--trace", str(tr), "--plot", str(png)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "fc1 " in table and "fc1.requant" in table and "total" in table
    prof = json.loads(pj.read_text())
    assert [r["name"] for r in prof["layers"]] == ["fc1", "fc1.requant"]
    assert prof["total"]["macs"] == 2 * 4 * 4
    assert prof["total"]["zero_weights"] == DIGITS.count(0)
    assert prof["total"]["zero_macs"] == 2 * DIGITS.count(0)
    assert prof["layers"][0]["words_moved"]["dram->A"] == 8
    assert prof["layers"][0]["words_moved"]["dram->W"] == 1
    assert prof["layers"][1]["words_moved"]["A->dram"] == 8
    assert prof["total"]["cycles"] == sum(prof["total"]["cycles_by_unit"].values())
    assert "Horowitz" in json.dumps(prof["energy_table_pj"])
    doc = json.loads(tr.read_text())
    names = {e["args"]["name"] for e in doc["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {"alu", "mem", "dma", "mac", "xbar", "vec"}
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert [e["name"] for e in xs if e["cat"] == "mac"] == ["MATMUL"]
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in xs)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "missing input 'x'"),
        (["-i", "y=IN"], "no input named 'y'"),
        (["-i", "x=nope.npy"], "no such file"),
        (["-i", "x=BAD_SHAPE"], "has shape (2, 4); the program declares (1, 2, 4) or (B, 2, 4) for a batch"),
        (["-i", "x=NAN"], "NaN or Inf"),
        (["-i", "x=STR"], "expected a real number array"),
        (["-i", "x=OBJ"], "holds Python objects (a pickle)"),
        (["-i", "x=IN", "-i", "x=IN"], "given twice"),
    ],
)
def test_input_errors(files: Path, capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    np.save(files / "bad_shape.npy", X[0])
    np.save(files / "nan.npy", np.full((1, 2, 4), np.nan))
    np.save(files / "str.npy", np.array([["a"] * 4] * 2)[None])
    np.save(files / "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    repl = {"IN": "x.npy", "BAD_SHAPE": "bad_shape.npy", "NAN": "nan.npy", "STR": "str.npy", "OBJ": "obj.npy"}
    fixed = []
    for a in args:
        for k, v in repl.items():
            a = a.replace(f"={k}", f"={files / v}")
        fixed.append(a)
    fixed = [a.replace("x=nope.npy", f"x={files / 'nope.npy'}") for a in fixed]
    assert main(["run", str(files / "fc.pasm"), *fixed]) == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err


def test_fault_is_a_diagnostic(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "loop.pasm"
    src.write_text("    MOVI P1, 1\nloop:\n    BNE P1, loop\n    HALT\n")
    assert main(["run", str(src), "--max-steps", "50"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{src}:3:1: error: step limit reached: 50 instructions")
    assert "BNE P1, loop" in err and "Traceback" not in err


def test_no_outputs_and_no_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "h.pasm"
    src.write_text("NOP\nHALT\n")
    assert main(["run", str(src)]) == 0
    assert "halted after 2 instructions" in capsys.readouterr().out


def test_missing_program(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", str(tmp_path / "none.pasm")]) == 1
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("gemm", ["auto", "float", "int8"])
def test_gemm_engines_give_the_hand_worked_result(files: Path, gemm: str) -> None:
    from pcc.runtime import intgemm

    if gemm == "int8" and not intgemm.available():
        pytest.skip(intgemm.unavailable_reason())
    out = files / "out.npz"
    assert main(["run", str(files / "fc.pasm"), "-i", str(files / "x.npy"), "--gemm", gemm, "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out)["y"], Y)


def test_unknown_gemm(files: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", str(files / "fc.pasm"), "-i", str(files / "x.npy"), "--gemm", "fast"]) == 1
    err = capsys.readouterr().err
    assert "gemm must be one of auto, int8, float, got 'fast'" in err and "Traceback" not in err
