"""The L2 norm (``nn.reduce_l2``: the mean of the squares by POOL, its reciprocal square root by ``pent.rsqrt``,
the root as their product) and the division by a run-time tensor (``a * sign(b) * rsqrt(b**2)``; a divisor that
cannot be negative skips the sign): the simulator equals the pent reference bit for bit, the error against the
float op is within the bounds of docs/compiler.md at 4, 6 and 8 pents, and ``F.normalize`` / ``x / y`` exported
from torch match onnxruntime."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from compile_helpers import Builder, compile_sim, sim_matches_reference

from pcc import interpreter, pent_reference
from pcc.dialects import nn, pent, pent_norm
from pcc.ir import Module
from pcc.passes.canonicalize import Canonicalize
from pcc.passes.lower_divide import non_negative
from pcc.passes.quantize import quantize_module
from pcc.passes.quantize_lower import sim_bias

SHAPE = (2, 3, 5, 16)


def div_model(kind: str, shape: tuple[int, ...] = SHAPE, axes: tuple[int, ...] = (3,), keep: bool = True) -> Module:
    """``l2``: the norm over ``axes``; ``normalize``: ``x / expand(clip(||x||, 1e-12))`` (F.normalize's export);
    ``signed``: ``x / z`` of two inputs; ``broadcast``: ``x / z`` with ``z [.., 1]``; ``numerator``: ``3 / z``."""
    b = Builder("div", 0)
    x = b.arg("x", shape)
    if kind == "l2":
        return b.done(b.op(nn.ReduceL2, [x], "n", axes=list(axes), keepdims=keep))
    if kind == "normalize":
        n = b.op(nn.ReduceL2, [x], "n", axes=[len(shape) - 1], keepdims=True)
        c = b.op(nn.Clip, [n], "c", min=1e-12)
        return b.done(b.op(nn.Div, [x, b.op(nn.Expand, [c], "e", shape=list(shape))], "d"))
    z = b.arg("z", shape if kind == "signed" else (*shape[:-1], 1))
    if kind == "numerator":
        return b.done(b.op(nn.Div, [b.const("three", np.array([3.0], np.float32)), z], "d"))
    return b.done(b.op(nn.Div, [x, z], "d"))


def _divisor(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Signed divisors away from zero (|z| in [0.5, 2]): the quotient's range stays what calibration sees."""
    return (rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)).astype(np.float32)


def _inputs(m: Module, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for a in m.main.args:
        shape = (n * a.type.shape[0], *a.type.shape[1:])
        out[a.name or ""] = rng.standard_normal(shape).astype(np.float32) if a.name == "x" else _divisor(rng, shape)
    return out


def div_error(kind: str, act_pents: int, **shape: object) -> float:
    """Max error relative to the result's range against the float op, on a sample the calibration covers."""
    f = div_model(kind, **shape)
    cal = _inputs(f, 8, 1)
    one = {k: v[: f.main.args[0].type.shape[0]] for k, v in cal.items()}
    want = interpreter.run(f, one)[f.main.outputs[0].name or ""]
    Canonicalize().run(f)
    quantize_module(f, cal, act_pents=act_pents)
    got = pent_reference.run(f, one)[0]
    return float(np.abs(got - want).max() / np.abs(want).max())


L2_CASES = [(SHAPE, (3,), True), ((4, 24), (1,), False), ((1, 6, 3, 3), (1,), True), ((2, 3, 4), (0, 2), False)]


@pytest.mark.parametrize("shape, axes, keep", L2_CASES, ids=[f"{s}-{a}" for s, a, _ in L2_CASES])
def test_reduce_l2_bit_exact(tmp_path, shape: tuple, axes: tuple, keep: bool) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(div_model("l2", shape, axes, keep), tmp_path)
    assert len(list(m.main.ops_of(pent_norm.Rsqrt))) == 1
    sim_matches_reference(m, prog, seeds=2)


@pytest.mark.parametrize("kind", ["normalize", "signed", "broadcast", "numerator"])
def test_division_bit_exact(tmp_path, kind: str) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(div_model(kind), tmp_path)
    assert len(list(m.main.ops_of(pent_norm.Rsqrt))) == (2 if kind == "normalize" else 1)
    sim_matches_reference(m, prog, seeds=2)


def test_division_tiled(tmp_path) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(div_model("signed"), tmp_path, tile="tile{a-words=4400}")
    assert any(op.attr("tile")[0] < op.results[0].type.size for op in m.main.ops_of(pent_norm.Rsqrt))
    sim_matches_reference(m, prog, seeds=2)


# measured (docs/compiler.md): l2 2.2e-3 / 9.9e-5 / 6.6e-6, normalize 5.2e-3 / 2.3e-4 / 1.6e-5,
# signed 7.8e-3 / 2.8e-4 / 1.2e-5 at 4 / 6 / 8 pents
BOUNDS = {
    "l2": [(4, 5e-3), (6, 3e-4), (8, 2e-5)],
    "normalize": [(4, 1e-2), (6, 5e-4), (8, 4e-5)],
    "signed": [(4, 1.5e-2), (6, 6e-4), (8, 3e-5)],
}


@pytest.mark.parametrize("kind, act_pents, bound", [(k, p, b) for k, v in BOUNDS.items() for p, b in v])
def test_division_error_against_float(kind: str, act_pents: int, bound: float) -> None:
    err = div_error(kind, act_pents)
    assert err < bound, err


def test_a_divisor_that_cannot_be_negative_takes_no_sign() -> None:
    """A norm clipped at eps (F.normalize) is known non-negative: no TCLAMP for the sign; a plain input is not."""
    f = div_model("normalize")
    Canonicalize().run(f)
    assert not list(f.main.ops_of(nn.Expand))  # the divisor is broadcast by the division itself
    (d,) = f.main.ops_of(nn.Div)
    assert non_negative(d.operands[1])
    (d,) = div_model("signed").main.ops_of(nn.Div)
    assert not non_negative(d.operands[1])
    quantize_module(f, _inputs(f, 4, 0), act_pents=8)
    assert not [op for op in f.main.ops_of(pent.Clamp) if (op.results[0].name or "").endswith(".sign")]
    g = div_model("signed")
    quantize_module(g, _inputs(g, 4, 0), act_pents=8)
    assert [op for op in g.main.ops_of(pent.Clamp) if (op.results[0].name or "").endswith(".sign")]


def test_zero_rows_normalize_to_zero() -> None:
    """F.normalize keeps a zero row at zero (0 / eps); the integer division does too (0 * n)."""
    f = div_model("normalize")
    cal = _inputs(f, 8, 2)
    Canonicalize().run(f)
    quantize_module(f, cal, act_pents=8)
    x = cal["x"][:2].copy()
    x[0, 1, 2] = 0.0
    got = pent_reference.run(f, {"x": x})[0]
    assert not got[0, 1, 2].any()
    assert np.abs(np.linalg.norm(got[1], axis=-1) - 1).max() < 1e-4


def test_sixteen_pent_numerator_is_refused() -> None:
    f = div_model("broadcast")
    with pytest.raises(Exception, match="has no pentary division"):
        quantize_module(f, _inputs(f, 2, 0), act_pents=16)


def test_simulated_bias_is_the_program_bias() -> None:
    """The quantized simulation adds the bias as the program holds it (rounded to the accumulator scale): a
    correction below half a unit leaves a zero bias at zero."""
    acc = np.array([1e-3, 2e-3, 0.0])
    got = sim_bias(np.array([4e-4, 3.1e-3, 0.25]), acc)
    np.testing.assert_allclose(got, [0.0, 4e-3, 0.25], rtol=1e-6)


torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))


class _Normalize(torch.nn.Module):
    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        q = torch.nn.functional.normalize(x, dim=-1)
        return q @ q.transpose(-2, -1) + x / z


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_normalize_and_division_match_onnxruntime(tmp_path, fmt: str) -> None:  # noqa: ANN001
    """Cosine similarities of F.normalize'd rows plus ``x / z`` (a signed run-time divisor), exported from torch,
    compiled and simulated at 8 pents, against onnxruntime (measured 1.5e-5 of the range, both formats)."""
    from onnx_util import ort_run

    from pcc.backend.assembler import assemble_file
    from pcc.drivers.compile import compile_model
    from pcc.runtime.simulator import run_program

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    z = _divisor(rng, (1, 2, 6, 6))
    ref = tmp_path / "m.onnx"
    m = _Normalize().eval()
    args = (torch.from_numpy(x), torch.from_numpy(z))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, args, str(ref), dynamo=False, input_names=["x", "z"], output_names=["y"])
        path = ref
        if fmt == "pt2":
            path = tmp_path / "m.pt2"
            torch.export.save(torch.export.export(m, args), str(path))
    cal = {"x": np.concatenate([x, rng.standard_normal((7, 2, 6, 6)).astype(np.float32)]),
           "z": np.concatenate([z, _divisor(rng, (7, 2, 6, 6))])}  # fmt: skip
    np.savez(tmp_path / "cal.npz", **cal)
    compile_model(path, output=tmp_path / "m.pasm", calibration=tmp_path / "cal.npz")
    (want,) = ort_run(onnx.load(str(ref)), {"x": x, "z": z})
    (got,) = run_program(assemble_file(tmp_path / "m.pasm"), {"x": x, "z": z}).values()
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < 1e-3, err
