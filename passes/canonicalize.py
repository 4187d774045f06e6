"""``canonicalize``: put a float ``nn`` graph into the few shapes the later passes expect.

Rewrites, repeated until none applies:

- ``nn.identity`` and ``nn.dropout`` (inference) are removed, except one whose result is a model output (it carries
  the output's name, which the program's I/O declarations keep);
- constant folding: a pure op whose operands are all constants is evaluated once with the reference
  interpreter (:func:`pcc.interpreter.eval_op`) and becomes a weight.  Shape computations (``Shape`` ->
  ``Gather`` -> ``Reshape`` chains) are already folded this way by the ONNX importer; what reaches the IR as
  constant ``gather``/``reshape``/``transpose``/arithmetic on weights is folded here.  ``nn.dequantize_weight``
  is kept: the quantizer takes its pents and scales as they are;
- ``nn.matmul(a, W)`` with a constant 2-D ``W`` and a 2-D ``a`` becomes ``nn.gemm(a, W)``;
- a constant added to a ``nn.gemm`` (bias ``[N]`` or ``[1, N]``) or a ``nn.conv2d`` (``[1, O, 1, 1]``, ``[O, 1, 1]``)
  result used only by the add is folded into the op's bias;
- a mean over all spatial axes (``nn.reduce_mean`` of axes 2.. of an ``[N, C, ...]`` tensor, as torch's
  ``x.mean((2, 3))`` arrives from both frontends) becomes ``nn.global_avg_pool``, followed by
  ``nn.flatten {axis = 1}`` when the axes are not kept (the form of ``GlobalAveragePool`` + ``Flatten``);
- a ``nn.reshape`` of an ``[N, ...]`` tensor (rank >= 3) to ``[N, rest]`` becomes ``nn.flatten {axis = 1}``;
- dead ops and unused weights are removed (the ``dce`` pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcc.dialects import nn
from pcc.ir import Graph, Module, Operation, TensorType, Value
from pcc.pass_manager import Pass, register_pass
from pcc.passes.dce import DeadCodeElimination
from pcc.passes.rewrite import replace_op

_NO_FOLD = (nn.DequantizeWeight,)


def remove_identities(g: Graph) -> bool:
    changed = False
    outputs = {id(v) for v in g.outputs}
    for op in g.ops_of(nn.Identity, nn.Dropout):
        if len(op.results) != 1 or id(op.results[0]) in outputs:  # a mask output; or it names a model output
            continue
        g.replace_op(op, [op.operands[0]])
        changed = True
    return changed


def fold_constants(module: Module, g: Graph) -> bool:
    from pcc.interpreter import KERNELS, eval_op

    changed = False
    outputs = {id(v) for v in g.outputs}
    for op in list(g.body):
        if (
            any(id(r) in outputs for r in op.results)  # a model output stays computed (and keeps its name)
            or not op.pure
            or not op.operands
            or not all(v.is_weight for v in op.operands)
            or isinstance(op, _NO_FOLD)
            or type(op) not in KERNELS
        ):
            continue
        outs = eval_op(op, [module.weight(v) for v in op.operands])
        new = [
            module.add_weight(r.name or "c", np.asarray(a), r.type.dtype) for r, a in zip(op.results, outs, strict=True)
        ]
        g.replace_op(op, new)
        changed = True
    return changed


def _const_vector(module: Module, v: Value, n: int, shapes: tuple) -> np.ndarray | None:
    """The data of constant ``v`` as a length-``n`` bias when its shape is one of ``shapes``."""
    if not v.is_weight or not v.type.is_float or v.type.shape not in shapes:
        return None
    return np.asarray(module.weight(v)).reshape(-1)


def _other(add: Operation, v: Value) -> Value | None:
    a, b = add.operands
    if a is v and b is not v:
        return b
    if b is v and a is not v:
        return a
    return None


def matmul_to_gemm(g: Graph, module: Module) -> bool:
    changed = False
    for mm in g.ops_of(nn.MatMul):
        a, w = mm.operands
        if w.is_weight and w.type.rank == 2 and a.type.rank == 2 and not a.is_weight:
            replace_op(g, mm, nn.Gemm([a, w], [mm.results[0].type], {}, mm.loc))
            changed = True
    return changed


def fold_bias_add(g: Graph, module: Module) -> bool:
    changed = False
    for op in g.ops_of(nn.Gemm, nn.Conv2d):
        r = op.results[0]
        if op.graph is not g or len(r.uses) != 1 or r in g.outputs or not isinstance(r.uses[0], nn.Add):
            continue
        add = r.uses[0]
        c = _other(add, r)
        if c is None or add.results[0].type != r.type:
            continue
        if isinstance(op, nn.Gemm):
            n = r.type.shape[1]
            bias = _const_vector(module, c, n, ((n,), (1, n)))
            if bias is None:
                continue
            if len(op.operands) > 2:
                old = op.operands[2]
                if not old.is_weight or old.type.size not in (1, n):
                    continue
                base = np.broadcast_to(np.asarray(module.weight(old)).reshape(-1), (n,)) * op.attr("beta")
            else:
                base = np.zeros(n)
            attrs = dict(op.attributes)
            attrs["beta"] = 1.0
        else:
            o = r.type.shape[1]
            bias = _const_vector(module, c, o, ((1, o, 1, 1), (o, 1, 1)))
            if bias is None:
                continue
            base = np.asarray(module.weight(op.operands[2])).reshape(-1) if len(op.operands) > 2 else np.zeros(o)
            attrs = dict(op.attributes)
        dtype = r.type.np_dtype
        bv = module.add_weight((c.name or "b") + ".bias", (base + bias).astype(dtype))
        replace_op(g, add, type(op)([op.operands[0], op.operands[1], bv], [r.type], attrs, op.loc))
        g.erase(op)
        changed = True
    return changed


def spatial_mean_to_pool(g: Graph, module: Module) -> bool:
    changed = False
    for op in g.ops_of(nn.ReduceMean):
        x = op.operands[0]
        r = x.type.rank
        if r < 3 or not x.type.is_float or sorted(op.reduced_axes()) != list(range(2, r)):
            continue
        pooled = TensorType(x.type.shape[:2] + (1,) * (r - 2), x.type.dtype)
        if op.attr("keepdims"):
            replace_op(g, op, nn.GlobalAvgPool([x], [pooled], {}, op.loc))
        else:
            hint = g.fresh_name((op.results[0].name or "mean") + ".pool")
            pool = g.insert_before(op, nn.GlobalAvgPool([x], [pooled], {}, op.loc, result_names=[hint]))
            replace_op(g, op, nn.Flatten([pool.results[0]], [op.results[0].type], {"axis": 1}, op.loc))
        changed = True
    return changed


def reshape_to_flatten(g: Graph, module: Module) -> bool:
    changed = False
    for op in g.ops_of(nn.Reshape):
        x = op.operands[0].type
        if x.rank >= 3 and list(op.attr("shape")) == [x.shape[0], x.size // max(x.shape[0], 1)]:
            replace_op(g, op, nn.Flatten([op.operands[0]], [op.results[0].type], {"axis": 1}, op.loc))
            changed = True
    return changed


@register_pass
@dataclass(frozen=True)
class Canonicalize(Pass):
    """Constant folding, DCE, Identity/Dropout removal, MatMul->Gemm, bias-add folding, spatial mean->pool."""

    name = "canonicalize"
    fold: bool = True  # fold constant subgraphs
    max_rounds: int = 16

    def run(self, module: Module) -> bool:
        changed_any = False
        for _ in range(self.max_rounds):
            changed = False
            for g in module.functions.values():
                changed |= remove_identities(g)
                if self.fold:
                    changed |= fold_constants(module, g)
                changed |= matmul_to_gemm(g, module)
                changed |= fold_bias_add(g, module)
                changed |= spatial_mean_to_pool(g, module)
                changed |= reshape_to_flatten(g, module)
            changed |= DeadCodeElimination().run(module)
            changed_any |= changed
            if not changed:
                break
        return changed_any
