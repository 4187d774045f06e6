"""Lowering of the token-id side of a transformer (registered in :data:`pcc.passes.quantize_lower.LOWERING`):

- ``nn.gather`` of a constant table ``[V, D]`` (axis 0; a plain constant or the trainer's pentary table) by run-time
  integer ids: ``pent.embed``, the table
  quantized at the result's calibrated scale (every other ``nn.gather``: a rearrangement, ``pent.gather``);
- ``nn.cast`` to a float type of an integer value (token ids, attention masks: at scale 1) or between float
  types: the same pent value (integers are exact at scale 1); to bool of any other type: ``x != 0``, 0/1 at
  scale 1 (``clamp(x, -1, 1)`` squared).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pcc.dialects import nn, pent, pent_binary, pent_move
from pcc.ir import Operation, Value
from pcc.passes import lower_move  # noqa: F401  (the rearranging gather's rule, kept for constant indices)
from pcc.passes.fold_batchnorm import pentary_weight
from pcc.passes.quantize_lower import LOWERING, Lowering, requant_params, round_away
from pcc.pentary import word_max


@LOWERING.refine(nn.Gather)
def lower_gather(move: Callable[[Lowering, Operation], None], lw: Lowering, op: Operation) -> None:
    """pent.embed for a constant table indexed by activations, else the rearrangement (``move``)."""
    x, idx = op.operands
    if id(idx) not in lw.map or id(x) in lw.map or (not x.is_weight and pentary_weight(lw.m, x) is None):
        return move(lw, op)
    if x.type.rank != 2 or op.attr("axis") % 2 != 0:
        raise lw.error(op, "a gather by run-time indices needs a 2-D constant table and axis 0 (an embedding)")
    ids, s_i = lw.q(idx, op)
    if s_i != 1.0:
        raise lw.error(op, f"the indices must be integers (scale 1), got scale {s_i:g}")
    table = np.asarray(lw.const(op, x), np.float64)
    pents, s_y = lw.out_scale(op)
    m = word_max(pents)
    q = np.clip(round_away(table / s_y), -m, m).astype(np.int64)
    r = op.results[0]
    base = (op.loc.node if op.loc and op.loc.node else r.name) or "embed"
    tv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".table"), q, f"p{pents}")
    y = lw.emit(pent_move.Embed, [ids, tv], r.type.with_dtype(f"p{pents}"), {}, op.loc, r.name, s_y)
    lw.map[id(r)] = (y, s_y)


@LOWERING.claim(nn.Cast)
def lower_cast(lw: Lowering, op: Operation) -> None:
    """To a float type: the operand's pent value (integers at scale 1 stay exact); to bool: ``x != 0`` (below);
    to another integer type, only from a value that is integer already (scale 1)."""
    x, s = lw.q(op.operands[0], op)
    r = op.results[0]
    if r.type.dtype == "i1" and op.operands[0].type.dtype != "i1":
        return _nonzero(lw, op, x)
    if not r.type.is_float and s != 1.0:
        raise lw.error(op, "a cast of a real value to integers (rounding) has no pentary lowering")
    lw.map[id(r)] = (x, s)


def _nonzero(lw: Lowering, op: Operation, x: Value) -> None:
    """``x != 0`` as 0/1 at scale 1: ``c = clamp(q, -1, 1)`` (TCLAMP), then ``c * c`` (EMUL), exact for every
    word ``q`` (an integer mask holding 2 or -1 is 1 there, as a float one is where it rounds to a nonzero
    word)."""
    r = op.results[0]
    base = (op.loc.node if op.loc and op.loc.node else r.name) or "cast"
    c = lw.emit(pent.Clamp, [x], x.type, {"lo": -1, "hi": 1}, op.loc, f"{base}.sign", 1.0)
    (m,), (sh,) = requant_params(1.0)
    t = r.type.with_dtype("p2")
    y = lw.emit(pent_binary.Mul, [c, c], t, {"mult": int(m), "shift": int(sh)}, op.loc, r.name, 1.0)
    lw.map[id(r)] = (y, 1.0)
