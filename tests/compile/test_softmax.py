"""nn.softmax and nn.log_softmax lowered to pent.softmax (POOL max, EADD, exp by TLUT, POOL sum, a reciprocal by
TLUT and Newton steps in EMUL/EADD, or the log tables, EMUL/EADD): the simulator equals the pent reference bit
for bit over any axis (tiled and not, rows longer than POOL's window), and the error against float is small at
4, 6 and 8 pents."""

from __future__ import annotations

import numpy as np
import pytest
from compile_helpers import Builder, compile_sim, sim_matches_reference

from pcc import interpreter, pent_reference
from pcc.dialects import nn, pent_softmax
from pcc.ir import Module
from pcc.passes.lower_softmax import window


def test_window_covers_the_row() -> None:
    assert window(10) == (1, 10)
    assert window(1000) == (4, 250)  # exactly: no pads
    k1, k2 = window(1009)  # a prime beyond the window: padded
    assert k1 * k2 >= 1009 and max(k1, k2) <= 312


def softmax_model(shape: tuple[int, ...], axis: int, cls: type = nn.Softmax) -> Module:
    b = Builder("sm", 0)
    x = b.arg("x", shape)
    return b.done(b.op(cls, [x], "sm", axis=axis))


CASES = [((2, 10), 1), ((1, 5, 3, 3), 1), ((1, 4, 3, 5), 3), ((2, 3, 4), 0), ((2, 1009), 1), ((1, 1000), -1)]


@pytest.mark.parametrize("shape, axis", CASES, ids=[f"{s}-{a}" for s, a in CASES])
def test_softmax_bit_exact(tmp_path, shape: tuple[int, ...], axis: int) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(softmax_model(shape, axis), tmp_path, calib_scale=3.0)
    assert len(list(m.main.ops_of(pent_softmax.Softmax))) == 1
    sim_matches_reference(m, prog, seeds=2, scale=3.0)


@pytest.mark.parametrize("shape, axis", CASES[:3] + CASES[5:], ids=[f"{s}-{a}" for s, a in CASES[:3] + CASES[5:]])
def test_log_softmax_bit_exact(tmp_path, shape: tuple[int, ...], axis: int) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(softmax_model(shape, axis, nn.LogSoftmax), tmp_path, calib_scale=3.0)
    (op,) = m.main.ops_of(pent_softmax.Softmax)
    assert op.attr("log")
    sim_matches_reference(m, prog, seeds=2, scale=3.0)


def test_softmax_tiled_bit_exact(tmp_path) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(softmax_model((1, 6, 4, 4), 1), tmp_path, calib_scale=3.0, tile="tile{a-words=8400}")
    (op,) = m.main.ops_of(pent_softmax.Softmax)
    assert op.attr("tile")[0] < 16  # several tiles of rows
    sim_matches_reference(m, prog, seeds=2, scale=3.0)


@pytest.mark.parametrize("pents, bound", [(4, 0.01), (6, 1e-3), (8, 1e-3)])
def test_softmax_error_against_float(pents: int, bound: float) -> None:
    """Largest error of the probabilities (logits of spread 3, 100 classes): measured 3.4e-3, 3.5e-4, 3.5e-4
    at 4, 6 and 8 pents (docs/compiler.md; from 6 pents on the exp table's 4096 entries bound it)."""
    from pcc.passes.quantize import quantize_module

    x = {"x": (np.random.default_rng(3).standard_normal((8, 100)) * 3).astype(np.float32)}
    m, mq = softmax_model((8, 100), 1), softmax_model((8, 100), 1)
    quantize_module(mq, x, act_pents=pents)
    want = interpreter.run(m, x)[m.main.outputs[0].name]
    err = np.abs(pent_reference.run(mq, x)[0] - want).max()
    assert err < bound, err


@pytest.mark.parametrize("pents, bound", [(4, 0.01), (6, 5e-4), (8, 1e-4)])
def test_log_softmax_error_against_float(pents: int, bound: float) -> None:
    """Largest error of the log-probabilities relative to their range (logits of spread 3, 100 classes):
    measured 4.0e-3, 1.6e-4, 3.9e-5 at 4, 6 and 8 pents (docs/compiler.md)."""
    from pcc.passes.quantize import quantize_module

    x = {"x": (np.random.default_rng(3).standard_normal((8, 100)) * 3).astype(np.float32)}
    m, mq = softmax_model((8, 100), 1, nn.LogSoftmax), softmax_model((8, 100), 1, nn.LogSoftmax)
    quantize_module(mq, x, act_pents=pents)
    want = interpreter.run(m, x)[m.main.outputs[0].name]
    err = np.abs(pent_reference.run(mq, x)[0] - want).max() / np.abs(want).max()
    assert err < bound, err
