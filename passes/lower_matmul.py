"""Lowering of ``nn.matmul`` of two activations (attention's ``Q K^T`` and ``P V``) to ``pent.matmul`` (registered
in :data:`pcc.passes.quantize_lower.LOWERING`).

numpy's matmul rules: ``a [..., M, K] @ b [..., K, N]`` with the leading axes broadcast to the batch ``B``.  Each
operand becomes a 3-D ``[B or 1, M, K]`` / ``[B or 1, K, N]`` tensor: unchanged when it is one already, else a
``pent.gather`` (a broadcast of some but not all batch axes is spelled out in its map; ``fold-moves`` merges it
with the gathers and reshapes that produced the operand, e.g. the heads split).  A ``b`` that is moved into place
anyway is gathered as ``[B, N, K]`` (``trans_b``: each output's K values contiguous), so ``k.transpose(-1, -2)``
costs nothing beyond the heads split.  The result is ``[B, M, N]``, gathered to the float result's
shape when that differs.  ``mult / 2**shift ~= s_a s_b / s_y``.
"""

from __future__ import annotations

import numpy as np

from pcc.dialects import nn, pent, pent_matmul, pent_move
from pcc.ir import Operation, Value
from pcc.passes.lower_elementwise import _claim
from pcc.passes.quantize_lower import Lowering, requant_params


def _single_use(lw: Lowering, v: Value) -> bool:
    return len(v.uses) == 1 and v.name not in lw.out_names


def _as_3d(
    lw: Lowering, op: Operation, fv: Value, batch: tuple[int, ...], name: str, swap: bool = False
) -> tuple[Value, float]:
    """``fv`` ([..., X, Y]) as ``[Bv, X, Y]`` (``[Bv, Y, X]`` with ``swap``): Bv = 1 when its batch axes are all
    1, else the full batch; a ``pent.gather`` unless it is that tensor already."""
    x, s = lw.q(fv, op)
    shape = tuple(fv.type.shape)
    own = (1,) * (len(batch) - len(shape) + 2) + shape[:-2]
    bv = 1 if int(np.prod(own, dtype=np.int64)) == 1 else int(np.prod(batch, dtype=np.int64))
    idx = np.arange(int(np.prod(shape, dtype=np.int64))).reshape(own + shape[-2:])
    if bv > 1:
        idx = np.broadcast_to(idx, tuple(batch) + shape[-2:])
    if swap:
        idx = np.swapaxes(idx, -1, -2)
    out = [bv, *idx.shape[-2:]]
    flat = np.ascontiguousarray(idx).reshape(-1)
    if x.type.rank == 3 and list(x.type.shape) == out and np.array_equal(flat, np.arange(flat.size)):
        return x, s
    mv = lw.m.add_weight(lw.m.fresh_weight_name(name + ".map"), flat.astype(np.int64), "p16")
    return lw.emit(pent_move.Gather, [mv, x], x.type.with_shape(out), {"shape": out, "fill": 0}, op.loc, name, s), s


@_claim(nn.MatMul)
def lower_matmul(lw: Lowering, op: Operation) -> None:
    """pent.matmul of two activations (a constant operand: canonicalize makes the product a gemm)."""
    fa, fb = op.operands
    if fa.is_weight or fb.is_weight:
        raise lw.error(op, "a constant operand must be 2-D on the right (canonicalize makes that a gemm)")
    if fa.type.rank < 2 or fb.type.rank < 2:
        raise lw.error(op, "a 1-D operand of a product of two activations has no pentary lowering yet")
    batch = tuple(np.broadcast_shapes(fa.type.shape[:-2], fb.type.shape[:-2]))
    r = op.results[0]
    base = (op.loc.node if op.loc and op.loc.node else r.name) or "matmul"
    # b moved into place by a gather anyway (heads split, K transposed): gather it as [B, N, K], fold-moves
    # merges that with its producer, so K^T costs no copy of its own
    pb = lw.q(fb, op)[0].owner
    trans_b = isinstance(pb, pent.Reshape | pent_move.Gather) and _single_use(lw, fb)
    a, s_a = _as_3d(lw, op, fa, batch, f"{base}.a")
    b, s_b = _as_3d(lw, op, fb, batch, f"{base}.b", swap=trans_b)
    pents, s_y = lw.out_scale(op)
    (mult,), (shift,) = requant_params(s_a * s_b / s_y)
    m, n = fa.type.shape[-2], r.type.shape[-1]
    bt = int(np.prod(batch, dtype=np.int64))
    three = [bt, m, n]
    name = r.name if list(r.type.shape) == three else f"{base}.bmn"
    attrs = {"mult": int(mult), "shift": int(shift), "trans_b": bool(trans_b)}
    y = lw.emit(pent_matmul.Matmul, [a, b], r.type.with_shape(three).with_dtype(f"p{pents}"), attrs, op.loc, name, s_y)
    if list(r.type.shape) != three:
        mv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".out.map"), np.arange(r.type.size, dtype=np.int64), "p16")
        shape = list(r.type.shape)
        attrs = {"shape": shape, "fill": 0}
        y = lw.emit(pent_move.Gather, [mv, y], y.type.with_shape(shape), attrs, op.loc, r.name, s_y)
    lw.map[id(r)] = (y, s_y)
