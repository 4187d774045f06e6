"""``fold-batchnorm``: fold inference batch norms into the preceding conv/gemm; a lone one becomes a scale-shift.

``bn(y) = (y - mean) * f + beta`` with ``f = gamma / sqrt(var + eps)``, per channel (axis 1).  When ``y`` is a
``nn.conv2d`` or ``nn.gemm`` result used only by the batch norm, the producer's weights are scaled by ``f`` per
output channel and its bias becomes ``(b - mean) * f + beta``; otherwise the batch norm becomes
``nn.scale_shift(x, f, beta - mean * f)``.  Folded weights are new weights (a weight shared with another op is
never changed in place); the old ones are removed when unused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcc.diagnostics import PccError
from pcc.dialects import nn
from pcc.ir import Graph, Module, Operation, Value
from pcc.pass_manager import Pass, register_pass
from pcc.passes.dce import DeadCodeElimination
from pcc.passes.rewrite import Pattern, apply_patterns, replace_op, sole_user


def _const(module: Module, v: Value, op: Operation) -> np.ndarray:
    if not v.is_weight:
        raise PccError(f"{op.name}: {v.ref()} must be a constant to fold the batch norm", op.loc)
    return np.asarray(module.weight(v), dtype=np.float64)


def bn_affine(module: Module, bn: Operation) -> tuple[np.ndarray, np.ndarray]:
    """(f, shift) of a batch norm: ``bn(y) = y * f + shift`` per channel, float64."""
    _, g, b, mean, var = bn.operands
    f = _const(module, g, bn) / np.sqrt(_const(module, var, bn) + bn.attr("epsilon"))
    return f, _const(module, b, bn) - _const(module, mean, bn) * f


def pentary_weight(module: Module, v: Value) -> tuple[Operation, np.ndarray, np.ndarray] | None:
    """``(op, pents, scale)`` when ``v`` is ``nn.dequantize_weight`` of constants, else None."""
    op = v.owner
    if isinstance(op, nn.DequantizeWeight) and all(o.is_weight for o in op.operands):
        return op, module.weight(op.operands[0]), np.asarray(module.weight(op.operands[1]), dtype=np.float64)
    return None


def _scaled_weight(module: Module, g: Graph, w_val: Value, f: np.ndarray, axis: int, before: Operation) -> Value:
    """The weight ``w_val`` scaled by ``f`` along ``axis`` (the output channels), as a new value.

    A pentary weight (``nn.dequantize_weight``) stays pentary: only its scale changes."""
    pw = pentary_weight(module, w_val)
    if pw is not None:
        dq, pents, scale = pw
        rank = w_val.type.rank
        q_axis = dq.attr("axis") % rank
        if scale.ndim == 0 or q_axis == axis:
            new_scale = np.broadcast_to(scale, f.shape) * f
            sv = module.add_weight(
                (dq.operands[1].name or "s") + ".bn", new_scale.astype(module.weight(dq.operands[1]).dtype)
            )
            new_dq = nn.DequantizeWeight([dq.operands[0], sv], [w_val.type], {"axis": axis}, dq.loc)
            g.insert_before(before, new_dq)
            return new_dq.results[0]
    if not w_val.is_weight:
        raise PccError("cannot fold a batch norm into a computed weight")
    w = module.weight(w_val)
    shape = [1] * w.ndim
    shape[axis] = -1
    return module.add_weight((w_val.name or "w") + ".bn", w * f.astype(w.dtype).reshape(shape))


def _fold_into(module: Module, g: Graph, prod: Operation, bn: Operation) -> bool:
    f, shift = bn_affine(module, bn)
    w_val = prod.operands[1]
    if not w_val.is_weight and pentary_weight(module, w_val) is None:
        return False
    if len(prod.operands) > 2 and not prod.operands[2].is_weight:
        return False
    dtype = bn.results[0].type.np_dtype
    attrs = dict(prod.attributes)
    if isinstance(prod, nn.Conv2d):
        axis = 0
        b = _const(module, prod.operands[2], prod) if len(prod.operands) > 2 else 0.0
        new_b = b * f + shift
    else:  # gemm: y = alpha * A B' + beta * C; output channel j is column j of B' (row j of B if trans_b)
        axis = 0 if prod.attr("trans_b") else 1
        n = f.shape[0]
        if len(prod.operands) > 2:
            c = _const(module, prod.operands[2], prod) * prod.attr("beta")
            if c.size not in (1, n):
                return False  # a bias that varies per row cannot be a per-channel bias
            c = np.broadcast_to(c.reshape(-1), (n,))
        else:
            c = np.zeros(n)
        new_b = c * f + shift
        attrs["beta"] = 1.0
    wv = _scaled_weight(module, g, w_val, f, axis, bn)
    bv = module.add_weight((bn.operands[2].name or "b") + ".folded", new_b.astype(dtype))
    replace_op(g, bn, type(prod)([prod.operands[0], wv, bv], [bn.results[0].type], attrs, prod.loc))
    g.erase(prod)
    return True


class FoldBatchNormPattern(Pattern):
    """A batch norm -> folded into its producing conv/gemm (the batch norm is its sole user), else a scale-shift."""

    roots = (nn.BatchNorm,)

    def apply(self, module: Module, g: Graph, bn: Operation) -> bool:
        x = bn.operands[0]
        prod = x.owner
        if isinstance(prod, nn.Conv2d | nn.Gemm) and sole_user(x) is bn and _fold_into(module, g, prod, bn):
            return True
        f, shift = bn_affine(module, bn)
        dtype = bn.results[0].type.np_dtype
        fv = module.add_weight((bn.operands[1].name or "g") + ".scale", f.astype(dtype))
        sv = module.add_weight((bn.operands[2].name or "b") + ".shift", shift.astype(dtype))
        replace_op(g, bn, nn.ScaleShift([x, fv, sv], [bn.results[0].type], {}, bn.loc))
        return True


@register_pass
@dataclass(frozen=True)
class FoldBatchNorm(Pass):
    """Fold inference BatchNorm into the preceding Conv/Gemm (single use), else turn it into nn.scale_shift."""

    name = "fold-batchnorm"

    def run(self, module: Module) -> bool:
        changed = apply_patterns(module, [FoldBatchNormPattern()])
        if changed:
            DeadCodeElimination().run(module)
        return changed
