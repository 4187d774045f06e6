"""Tiling of the broadcasting binary ops (:mod:`pcc.dialects.pent_binary`): ``[elements]`` of the result per
tile, scratchpad A holding one tile-sized buffer per operand (a broadcast operand is gathered to the tile's
size) and per temporary of the op's sequence (``pent.eadd`` with ``neg``: the vector of -1 and the negated
term); ``pent.gather``: one buffer, the gathered tile."""

from __future__ import annotations

from pcc.dialects import pent_binary, pent_matmul, pent_move, pent_norm, pent_softmax
from pcc.ir import Operation
from pcc.passes.tile import TILE, U9, Scratch, _fail
from pcc.pentary import word_max


def buffers(op: Operation) -> int:
    """Tile-sized buffers the op's sequence uses in scratchpad A."""
    return 4 if isinstance(op, pent_binary.Eadd) and op.attr("neg") else 2


@TILE.register(pent_binary.Broadcast)
def broadcast_tile(op: Operation, sp: Scratch) -> list[int]:
    k = buffers(op)
    if sp.a < k:
        raise _fail(op, f"scratchpad A ({sp.a} words) holds fewer than its {k} buffers")
    return [max(1, min(op.results[0].type.size, sp.a // k, U9))]


@TILE.register(pent_move.Gather)
def gather_tile(op: Operation, sp: Scratch) -> list[int]:
    """``[elements]`` of the result per tile, gathered into scratchpad A and stored."""
    return [max(1, min(op.results[0].type.size, sp.a, U9))]


@TILE.register(pent_softmax.Softmax)
def softmax_tile(op: Operation, sp: Scratch) -> list[int]:
    """``[rows]`` per tile: per row two K'-word buffers (the row, its broadcast) and five words, beside the two
    tables; POOL takes at most U7 rows (its channels) and the vector instructions U9 elements."""
    x = op.operands[0].type
    k = x.shape[op.attr("axis")]
    kp = op.attr("k1") * op.attr("k2")
    rows = x.size // k
    free = sp.a - sum(v.type.size for v in op.operands[1:])
    t = min(rows, free // (2 * kp + 5), word_max(7), U9 // kp)
    if t < 1:
        raise _fail(op, f"a row of {kp} elements and the tables do not fit scratchpad A ({sp.a} words)")
    return [t]


@TILE.register(pent_softmax.Reduce)
def reduce_tile(op: Operation, sp: Scratch) -> list[int]:
    """``[rows]`` per tile: per row its K' words and its result; POOL takes at most U7 rows (its channels)."""
    x = op.operands[0].type
    kp = op.attr("k1") * op.attr("k2")
    rows = x.size // x.shape[op.attr("axis")]
    t = min(rows, sp.a // (kp + 1), word_max(7), U9 // kp)
    if t < 1:
        raise _fail(op, f"a row of {kp} elements does not fit scratchpad A ({sp.a} words)")
    return [t]


@TILE.register(pent_matmul.Matmul)
def matmul_tile(op: Operation, sp: Scratch) -> list[int]:
    """``[rows]`` of ``a`` per tile: scratchpad A holds ``b`` (K x N, once per batch), the rows of ``a`` and the
    requantized rows of the result; C the rows' accumulators."""
    bt, m, k = op.operands[0].type.shape
    n = op.results[0].type.shape[2]
    rows = m * (bt if op.operands[1].type.shape[0] == 1 else 1)  # a broadcast b: the batches are rows too
    free = sp.a - k * n
    t = min(rows, free // max(1, k + n) if free > 0 else 0, sp.c // max(1, n), U9, U9 // max(1, k), U9 // max(1, n))
    if t < 1:
        raise _fail(op, f"b ({k} x {n}) and a row of a and of the result do not fit scratchpad A ({sp.a} words)")
    return [t]


@TILE.register(pent_norm.Rsqrt)
def rsqrt_tile(op: Operation, sp: Scratch) -> list[int]:
    """``[elements]`` per tile: beside the table, eight tile-sized buffers (w, the index, n, t, u, m, q, the
    broadcast constants)."""
    free = sp.a - op.operands[1].type.size
    t = min(op.results[0].type.size, free // 8 if free > 0 else 0, U9)
    if t < 1:
        raise _fail(op, f"the table and eight words do not fit scratchpad A ({sp.a} words)")
    return [t]


@TILE.register(pent_move.Embed)
def embed_tile(op: Operation, sp: Scratch) -> list[int]:
    """``[tokens]`` per tile: their rows of D words in scratchpad A (and at most word_max(7) ids per base)."""
    d = op.operands[1].type.shape[1]
    t = min(op.operands[0].type.size, sp.a // max(d, 1), U9 // max(d, 1), word_max(7))
    if t < 1:
        raise _fail(op, f"a row of {d} words does not fit scratchpad A ({sp.a} words)")
    return [t]
