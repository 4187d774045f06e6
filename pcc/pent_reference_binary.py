"""The pent reference of the broadcasting binary ops (:mod:`pcc.dialects.pent_binary`), of data movement
(:mod:`pcc.dialects.pent_move`) and of the product of two activations (:mod:`pcc.dialects.pent_matmul`), with the
ISA's own primitives (``isa.emul``, EADD's ``mul_shift_round``), registered in :data:`pcc.pent_reference.PENT_RULES`."""

from __future__ import annotations

import numpy as np

from pcc.diagnostics import PccError
from pcc.dialects import pent_binary, pent_matmul, pent_move, pent_norm, pent_softmax
from pcc.ir import Operation
from pcc.isa import div_round, emul
from pcc.pent_reference import eadd, lut, rule


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


def softmax_rows(op: Operation, x: np.ndarray, tables: list[np.ndarray]) -> np.ndarray:
    """``pent.softmax`` on rows ``x`` [R, K] (the steps of :mod:`pcc.dialects.pent_softmax`)."""
    x = np.asarray(x, np.int64)
    rows = x.shape[0]
    kp = op.attr("k1") * op.attr("k2")
    pents = op.results[0].type.pents
    m = x.max(axis=1, keepdims=True)  # the pads (-word_max) never win
    d = eadd(x, emul(m, np.full(m.shape, -1), 1, 0, 16)[0], [1, 1], [0, 0], 16)
    v = d if op.attr("mult") is None else eadd(d, d, [op.attr("mult"), 0], [op.attr("shift"), 0], 16)
    e = lut(v, tables[0], op.attr("lo"))
    s = div_round(e.sum(axis=1), kp)  # the pads hold 0
    idx = eadd(s, s, [op.attr("rmult"), 0], [op.attr("rshift"), 0], 16)
    n = lut(idx, tables[1], 0)
    frac, g = op.attr("frac"), pent_softmax.NEWTON_BITS
    if op.attr("log"):
        q = emul(s, n, 1, frac - g, 16)[0]
        lb = lut(eadd(q, q, [op.attr("qmult"), 0], [op.attr("qshift"), 0], 16), tables[3], op.attr("qlo"))
        nl = emul(eadd(lut(idx, tables[2], 0), lb, [1, 1], [0, 0], 16), np.full(rows, -1), 1, 0, 16)[0]
        return eadd(d, np.broadcast_to(nl[:, None], d.shape), [op.attr("omult"), 1], [op.attr("oshift"), 0], pents)
    two = np.full(rows, 2 ** (g + 1), np.int64)
    for _ in range(op.attr("iters")):
        t = emul(s, n, 1, frac - g, 16)[0]
        u = eadd(t, two, [1, 1], [0, 0], 16)
        n = emul(n, u, 1, g, 16)[0]
    r = np.broadcast_to(emul(n, np.full(rows, -1), 1, 0, 16)[0][:, None], e.shape)
    return emul(e, r, op.attr("omult"), op.attr("oshift"), pents)[0]


@rule(pent_softmax.Softmax)
def _softmax(op: Operation, x: np.ndarray, *tables: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.int64)
    ax = op.attr("axis")
    moved = np.moveaxis(x, ax, -1)
    y = softmax_rows(op, moved.reshape(-1, moved.shape[-1]), list(tables))
    return np.moveaxis(y.reshape(moved.shape), -1, ax)


@rule(pent_softmax.Reduce)
def _reduce(op: Operation, x: np.ndarray) -> np.ndarray:
    x = np.moveaxis(np.asarray(x, np.int64), op.attr("axis"), -1).reshape(-1, x.shape[op.attr("axis")])
    if op.attr("kind") == "max":
        a = x.max(axis=1)  # the pads (-word_max) never win
    else:
        a = div_round(x.sum(axis=1), op.attr("k1") * op.attr("k2"))  # the pads hold 0
    return eadd(a, a, [op.attr("mult"), 0], [op.attr("shift"), 0], op.results[0].type.pents)


def matmul_acc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sat27(a @ b)`` of int64 batches, exact: float64 where the bound proves it, int64 below 2**62, else Python
    integers."""
    from pcc.isa import ACC_MAX

    if a.size == 0 or b.size == 0:
        return np.zeros(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]), np.int64)
    bound = max(int(np.abs(a).max()), 1) * max(int(np.abs(b).max()), 1) * a.shape[-1]
    if bound < 2**53:
        acc = np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
    elif bound < 2**62:
        acc = np.matmul(a, b)
    else:
        acc = np.matmul(a.astype(object), b.astype(object))
    return np.clip(acc, -ACC_MAX, ACC_MAX).astype(np.int64)


@rule(pent_matmul.Matmul)
def _matmul(op: Operation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from pcc.isa import requantize
    from pcc.pentary import word_max

    cap = word_max(op.operands[1].type.pents or 1)  # AMATMUL reads the second operand at its pents
    b = np.clip(np.asarray(b, np.int64), -cap, cap)
    if op.attr("trans_b"):
        b = b.transpose(0, 2, 1)
    acc = matmul_acc(np.asarray(a, np.int64), b)
    return requantize(acc, op.attr("mult"), op.attr("shift"), op.results[0].type.pents or 1)[0]


def rsqrt_steps(v: np.ndarray, table: np.ndarray, bias: int, imult: int, ishift: int, iters: int) -> np.ndarray:
    """``pent.rsqrt``'s steps (:mod:`pcc.dialects.pent_norm`), with EADD's, TLUT's and EMUL's arithmetic."""
    v = np.asarray(v, np.int64)
    w = eadd(v, np.full(v.shape, bias, np.int64), [1, 1], [0, 0], 16)
    n = lut(eadd(w, w, [imult, 0], [ishift, 0], 16), table, 0)
    minus = np.full(v.shape, -1, np.int64)
    for _ in range(iters):
        u = emul(emul(n, w, 1, 12, 16)[0], n, 1, 18, 16)[0]
        q = emul(u, emul(n, minus, 1, 0, 16)[0], 1, 31, 16)[0]
        n = eadd(n, q, [3, 1], [1, 0], 16)
    return n


@rule(pent_norm.Rsqrt)
def _rsqrt(op: Operation, v: np.ndarray, table: np.ndarray) -> np.ndarray:
    a = op.attr
    return rsqrt_steps(v, table, a("bias"), a("imult"), a("ishift"), a("iters"))


@rule(pent_move.Embed)
def _embed(op: Operation, ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    t = np.asarray(table, np.int64)
    return t[np.clip(np.asarray(ids, np.int64), 0, t.shape[0] - 1)]
