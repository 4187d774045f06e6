"""Lowering of the token-id side of a transformer (registered in :data:`pcc.passes.quantize_lower.LOWERING`):

- ``nn.gather`` of a constant table ``[V, D]`` (axis 0; a plain constant or the trainer's pentary table) by run-time
  integer ids: ``pent.embed``, the table
  quantized at the result's calibrated scale (every other ``nn.gather``: a rearrangement, ``pent.gather``);
- ``nn.cast`` to a float type of an integer value (token ids, attention masks: at scale 1) or between float
  types: the same pent value (integers are exact at scale 1).
"""

from __future__ import annotations

import numpy as np

from pcc.dialects import nn, pent_move
from pcc.ir import Operation
from pcc.passes import lower_move  # noqa: F401  (the rearranging gather's rule, kept for constant indices)
from pcc.passes.fold_batchnorm import pentary_weight
from pcc.passes.quantize_lower import LOWERING, Lowering, round_away
from pcc.pentary import word_max

_move_gather = LOWERING.get(nn.Gather)


def lower_gather(lw: Lowering, op: Operation) -> None:
    """pent.embed for a constant table indexed by activations, else the rearrangement."""
    x, idx = op.operands
    if id(idx) not in lw.map or id(x) in lw.map or (not x.is_weight and pentary_weight(lw.m, x) is None):
        assert _move_gather is not None
        return _move_gather(lw, op)
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


del LOWERING.rules[nn.Gather]
LOWERING.register(nn.Gather)(lower_gather)


def lower_cast(lw: Lowering, op: Operation) -> None:
    """To a float type: the operand's pent value (integers at scale 1 stay exact); to an integer type, only from
    a value that is integer already (scale 1)."""
    x, s = lw.q(op.operands[0], op)
    if not op.results[0].type.is_float and s != 1.0:
        raise lw.error(op, "a cast of a real value to integers (rounding) has no pentary lowering")
    lw.map[id(op.results[0])] = (x, s)


if nn.Cast in LOWERING.rules and LOWERING.get(nn.Cast) is None:
    del LOWERING.rules[nn.Cast]
LOWERING.register(nn.Cast)(lower_cast)
