"""The pent reference of the broadcasting binary ops (:mod:`pcc.dialects.pent_binary`) and of data movement
(:mod:`pcc.dialects.pent_move`), with the ISA's own
primitives (``isa.emul``, EADD's ``mul_shift_round``), registered in :data:`pcc.pent_reference.PENT_RULES`."""

from __future__ import annotations

import numpy as np

from pcc.diagnostics import PccError
from pcc.dialects import pent_binary, pent_move
from pcc.ir import Operation
from pcc.isa import emul
from pcc.pent_reference import eadd, rule


def _operands(op: Operation, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    shape = op.results[0].type.shape
    return np.broadcast_to(np.asarray(a, np.int64), shape), np.broadcast_to(np.asarray(b, np.int64), shape)


@rule(pent_binary.Mul)
def _mul(op: Operation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = _operands(op, a, b)
    return emul(a, b, op.attr("mult"), op.attr("shift"), op.results[0].type.pents or 1)[0]


@rule(pent_binary.Eadd)
def _eadd(op: Operation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = _operands(op, a, b)
    (ma, mb), (sa, sb) = op.attr("mult"), op.attr("shift")
    pents = op.results[0].type.pents or 1
    if not op.attr("neg"):
        return eadd(a, b, [ma, mb], [sa, sb], pents)
    nb = emul(b, np.full(b.shape, -1, np.int64), mb, sb, 16)[0]  # EMUL by -1: -sat16(msr(b, mb, sb))
    return eadd(a, nb, [ma, 1], [sa, 0], pents)


@rule(pent_move.Gather)
def _gather(op: Operation, idx: np.ndarray, *xs: np.ndarray) -> np.ndarray:
    cat = np.concatenate([np.asarray(x, np.int64).ravel() for x in xs] + [np.array([op.attr("fill")], np.int64)])
    idx = np.asarray(idx, np.int64)
    if idx.size and (idx.min() < -1 or idx.max() >= cat.size - 1):
        raise PccError(f"{op.name}: map entries must lie in -1..{cat.size - 2}", op.loc)
    return cat[np.where(idx < 0, cat.size - 1, idx)].reshape(op.attr("shape"))
