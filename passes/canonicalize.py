"""``canonicalize``: put a float ``nn`` graph into the few shapes the later passes expect.

Rewrites (patterns of the one rewrite driver, :func:`pcc.passes.rewrite.apply_patterns`), repeated until none
applies:

- ``nn.identity`` and ``nn.dropout`` (inference) are removed, except one whose result is a model output (it carries
  the output's name, which the program's I/O declarations keep);
- constant folding: a pure op whose operands are all constants is evaluated once with the reference
  interpreter (:func:`pcc.interpreter.eval_op`) and becomes a weight.  Shape computations (``Shape`` ->
  ``Gather`` -> ``Reshape`` chains) are already folded this way by the ONNX importer; what reaches the IR as
  constant ``gather``/``reshape``/``transpose``/arithmetic on weights is folded here.  ``nn.dequantize_weight``
  is kept: the quantizer takes its pents and scales as they are;
- ``nn.matmul(a, W)`` with a constant 2-D ``W`` and a 2-D ``a`` becomes ``nn.gemm(a, W)``; an ``a`` of rank >= 3
  (``[..., K]``, a transformer's projections) becomes ``reshape`` to rows ``[R, K]``, ``gemm``, ``reshape`` back;
  a gemm's constant ``B`` is stored ``[N, K]`` with ``trans_b`` (torch's ``Linear`` layout);
- a constant added to a ``nn.gemm`` (bias ``[N]`` or ``[1, N]``; through that reshape back, any ``[1, .., N]``)
  or a ``nn.conv2d`` (``[1, O, 1, 1]``, ``[O, 1, 1]``) result used only by the add is folded into the op's bias;
- a mean over all spatial axes (``nn.reduce_mean`` of axes 2.. of an ``[N, C, ...]`` tensor, as torch's
  ``x.mean((2, 3))`` arrives from both frontends) becomes ``nn.global_avg_pool``, followed by
  ``nn.flatten {axis = 1}`` when the axes are not kept (the form of ``GlobalAveragePool`` + ``Flatten``);
- a ``nn.reshape`` of an ``[N, ...]`` tensor (rank >= 3) to ``[N, rest]`` becomes ``nn.flatten {axis = 1}``;
  a reshape of a view (reshape, flatten, squeeze, unsqueeze) reshapes the view's input; two transposes become
  one; a no-op reshape or transpose is removed;
- ``nn.split`` becomes one ``nn.slice`` per result; a ``nn.gather`` of one constant index becomes
  ``nn.slice`` + ``nn.squeeze``;
- attention in one form (torch's rule for ``scaled_dot_product_attention``): ``matmul(a·c1, b·c2)`` of
  one-element constants becomes ``matmul(a, b)·(c1 c2)``; ``x + where(m, 0, -inf)`` and ``x`` plus a constant of
  zeros and -infs become ``where(m, x, -inf)``; a NaN guard's ``[1]`` fill becomes 0-d; an ``nn.expand`` states
  its result shape; an ``nn.expand`` that only broadcasts a divisor is dropped (``nn.div`` broadcasts);
- an op equal to an earlier one (class, operands, attributes; small constants compared by value) is replaced by
  it (common subexpressions).

These give the ONNX export and the ``torch.export`` program of one model the same IR (the torch frontend keeps
the composite ATen ops it converts whole, so ``linear``/``matmul``/``hardswish`` arrive as one op each);
dead ops and unused weights are removed (the ``dce`` pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcc.dialects import nn
from pcc.ir import Graph, Module, Operation, TensorType, Value
from pcc.pass_manager import Pass, register_pass
from pcc.passes.dce import DeadCodeElimination
from pcc.passes.rewrite import Pattern, apply_patterns, replace_op, replace_pair, sole_user
from pcc.passes.tile import U2 as TILE_U2

_NO_FOLD = (nn.DequantizeWeight,)


def _is_output(g: Graph, v: Value) -> bool:
    return any(o is v for o in g.outputs)


class RemoveIdentity(Pattern):
    """``nn.identity`` / ``nn.dropout`` -> its input, unless its result names a model output."""

    roots = (nn.Identity, nn.Dropout)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        if len(op.results) != 1 or _is_output(g, op.results[0]):  # a mask output; or it names a model output
            return False
        g.replace_op(op, [op.operands[0]])
        return True


class FoldConstant(Pattern):
    """A pure op whose operands are all constants -> weights holding its results (the reference interpreter)."""

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        from pcc.interpreter import KERNELS, eval_op

        if (
            op.terminator
            or not op.pure
            or not op.operands
            or not all(v.is_weight for v in op.operands)
            or isinstance(op, _NO_FOLD)
            or type(op) not in KERNELS
            or any(_is_output(g, r) for r in op.results)  # a model output stays computed (and keeps its name)
        ):
            return False
        outs = eval_op(op, [module.weight(v) for v in op.operands])
        new = [
            module.add_weight(r.name or "c", np.asarray(a), r.type.dtype) for r, a in zip(op.results, outs, strict=True)
        ]
        g.replace_op(op, new)
        return True


class MatMulToGemm(Pattern):
    """``nn.matmul(a, W)`` with a constant 2-D ``W`` -> ``nn.gemm(a, W)`` (an ``a`` of rank >= 3: over its rows,
    between two reshapes)."""

    roots = (nn.MatMul,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        a, w = op.operands
        if not (w.is_weight and w.type.rank == 2 and a.type.rank >= 2 and not a.is_weight):
            return False
        if a.type.rank == 2:
            replace_op(g, op, nn.Gemm([a, w], [op.results[0].type], {}, op.loc))
            return True
        # [..., K] @ W: the leading axes as rows, [rows, K] -> gemm -> [..., N]
        k, n = w.type.shape
        rows = a.type.size // max(k, 1)
        base = op.results[0].name or "matmul"
        flat = TensorType((rows, k), a.type.dtype)
        hint = g.fresh_name(base + ".rows")
        rs = g.insert_before(op, nn.Reshape([a], [flat], {"shape": [rows, k]}, op.loc, result_names=[hint]))
        prod = TensorType((rows, n), op.results[0].type.dtype)
        gemm = g.insert_before(
            op, nn.Gemm([rs.results[0], w], [prod], {}, op.loc, result_names=[g.fresh_name(base + ".gemm")])
        )
        shape = list(op.results[0].type.shape)
        replace_op(g, op, nn.Reshape([gemm.results[0]], [op.results[0].type], {"shape": shape}, op.loc))
        return True


class GemmWeightRowsOut(Pattern):
    """``nn.gemm`` with a constant 2-D ``B`` stored ``[K, N]`` (``trans_b`` false) -> the transposed constant
    ``[N, K]`` with ``trans_b``: one row per output, the layout of torch's ``Linear`` and of ONNX ``Gemm`` exports
    (a ``MatMul`` on a pre-transposed weight then meets them)."""

    roots = (nn.Gemm,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        b = op.operands[1]
        if op.attr("trans_b") or not b.is_weight or b.type.rank != 2:
            return False
        data = np.ascontiguousarray(np.asarray(module.weight(b)).T)
        bt = module.add_weight((b.name or "w") + ".t", data, b.type.dtype)
        attrs = dict(op.attributes)
        attrs["trans_b"] = True
        replace_op(g, op, nn.Gemm([op.operands[0], bt, *op.operands[2:]], [op.results[0].type], attrs, op.loc))
        return True


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


class FoldBiasAdd(Pattern):
    """A constant added to a ``nn.gemm`` / ``nn.conv2d`` result used only by the add -> the op's bias."""

    roots = (nn.Gemm, nn.Conv2d)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        r = op.results[0]
        add = sole_user(r)
        through = None  # a gemm over the rows of an [..., K] tensor: the reshape back to [..., N] between
        if (
            isinstance(op, nn.Gemm)
            and isinstance(add, nn.Reshape)
            and add.results[0].type.shape[-1:] == r.type.shape[1:]
        ):
            through, add = add, sole_user(add.results[0])
        if not isinstance(add, nn.Add):
            return False
        seen = r if through is None else through.results[0]
        c = _other(add, seen)
        if c is None or add.results[0].type != seen.type:
            return False
        if isinstance(op, nn.Gemm):
            n = r.type.shape[1]
            shapes: tuple = ((n,), (1, n))
            if through is not None:
                shapes = tuple((1,) * i + (n,) for i in range(through.results[0].type.rank + 1))
            bias = _const_vector(module, c, n, shapes)
            if bias is None:
                return False
            if len(op.operands) > 2:
                old = op.operands[2]
                if not old.is_weight or old.type.size not in (1, n):
                    return False
                base = np.broadcast_to(np.asarray(module.weight(old)).reshape(-1), (n,)) * op.attr("beta")
            else:
                base = np.zeros(n)
            attrs = dict(op.attributes)
            attrs["beta"] = 1.0
        else:
            o = r.type.shape[1]
            bias = _const_vector(module, c, o, ((1, o, 1, 1), (o, 1, 1)))
            if bias is None:
                return False
            base = np.asarray(module.weight(op.operands[2])).reshape(-1) if len(op.operands) > 2 else np.zeros(o)
            attrs = dict(op.attributes)
        dtype = r.type.np_dtype
        bv = module.add_weight((c.name or "b") + ".bias", (base + bias).astype(dtype))
        new = type(op)([op.operands[0], op.operands[1], bv], [r.type], attrs, op.loc)
        if through is None:
            replace_pair(g, op, add, new)
            return True
        name = r.name
        replace_op(g, op, new)
        new.results[0].name = name
        shape = list(through.results[0].type.shape)
        replace_pair(g, through, add, nn.Reshape([new.results[0]], [add.results[0].type], {"shape": shape}, op.loc))
        return True


class SpatialMeanToPool(Pattern):
    """``nn.reduce_mean`` over axes 2.. of an ``[N, C, ...]`` float tensor -> ``nn.global_avg_pool`` (followed by
    ``nn.flatten {axis = 1}`` when the axes are not kept)."""

    roots = (nn.ReduceMean,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        x = op.operands[0]
        r = x.type.rank
        if r < 3 or not x.type.is_float or sorted(op.reduced_axes()) != list(range(2, r)):
            return False
        pooled = TensorType(x.type.shape[:2] + (1,) * (r - 2), x.type.dtype)
        if op.attr("keepdims"):
            replace_op(g, op, nn.GlobalAvgPool([x], [pooled], {}, op.loc))
            return True
        hint = g.fresh_name((op.results[0].name or "mean") + ".pool")
        pool = g.insert_before(op, nn.GlobalAvgPool([x], [pooled], {}, op.loc, result_names=[hint]))
        replace_op(g, op, nn.Flatten([pool.results[0]], [op.results[0].type], {"axis": 1}, op.loc))
        return True


class ReshapeToFlatten(Pattern):
    """``nn.reshape`` of an ``[N, ...]`` tensor (rank >= 3) to ``[N, rest]`` -> ``nn.flatten {axis = 1}``."""

    roots = (nn.Reshape,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        x = op.operands[0].type
        if x.rank < 3 or list(op.attr("shape")) != [x.shape[0], x.size // max(x.shape[0], 1)]:
            return False
        replace_op(g, op, nn.Flatten([op.operands[0]], [op.results[0].type], {"axis": 1}, op.loc))
        return True


_VIEWS = (nn.Reshape, nn.Flatten, nn.Squeeze, nn.Unsqueeze)


def _drop_if_noop(g: Graph, op: Operation) -> bool:
    """Remove ``op`` when its result has its operand's type (a no-op view), unless it names a model output."""
    x, r = op.operands[0], op.results[0]
    if r.type != x.type or _is_output(g, r):
        return False
    g.replace_op(op, [x])
    return True


class FoldReshapeChain(Pattern):
    """``reshape(view(x))`` (a reshape, flatten, squeeze or unsqueeze) -> ``reshape(x)``; a reshape to its own
    operand's shape is removed.  Both keep the element order, so only the last shape matters."""

    roots = (nn.Reshape,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        if _drop_if_noop(g, op):
            return True
        src = op.operands[0].owner
        if not isinstance(src, _VIEWS) or src.graph is not g:
            return False
        replace_op(g, op, nn.Reshape([src.operands[0]], [op.results[0].type], dict(op.attributes), op.loc))
        return True


class FoldTransposeChain(Pattern):
    """``transpose(transpose(x, p), q)`` -> ``transpose(x, [p[i] for i in q])``; an identity permutation is
    removed (torch's ``k.transpose(1, 2).transpose(-1, -2)`` meets ONNX's one ``Transpose``)."""

    roots = (nn.Transpose,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        perm = list(op.attr("perm"))
        if perm == list(range(len(perm))) and _drop_if_noop(g, op):
            return True
        src = op.operands[0].owner
        if not isinstance(src, nn.Transpose) or src.graph is not g:
            return False
        inner = list(src.attr("perm"))
        attrs = {"perm": [inner[i] for i in perm]}
        replace_op(g, op, nn.Transpose([src.operands[0]], [op.results[0].type], attrs, op.loc))
        return True


class SplitToSlices(Pattern):
    """``nn.split`` -> one ``nn.slice {starts, ends, axes, steps = [1]}`` per result (torch's ``chunk`` is a
    ``split`` from ``torch.export`` and two ``Slice`` nodes from some ONNX exports)."""

    roots = (nn.Split,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        x = op.operands[0]
        axis = op.attr("axis") % x.type.rank
        index = g.ops.index(op)
        start, slices = 0, []
        for r, size in zip(op.results, op.attr("split"), strict=True):
            attrs = {"starts": [start], "ends": [start + size], "axes": [axis], "steps": [1]}
            slices.append((nn.Slice([x], [r.type], attrs, op.loc), r.name))
            r.replace_all_uses_with(slices[-1][0].results[0])
            start += size
        g.erase(op)
        for i, (sl, name) in enumerate(slices):  # inserted after the erase, so they keep the results' names
            sl.results[0].name = name
            g.insert(index + i, sl)
        return True


class GatherScalarToSlice(Pattern):
    """``nn.gather(x, i)`` with a constant 0-d index -> ``nn.squeeze(nn.slice(x))`` of that one position (torch's
    ``x[:, 0]`` is a ``select``, which arrives as ``slice`` + ``squeeze``; ONNX writes a ``Gather``)."""

    roots = (nn.Gather,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        x, idx = op.operands
        if not idx.is_weight or idx.type.rank != 0 or x.is_weight:
            return False
        axis = op.attr("axis") % x.type.rank
        size = x.type.shape[axis]
        i = int(np.asarray(module.weight(idx)))
        if not -size <= i < size:
            return False
        i %= size
        shape = list(x.type.shape)
        shape[axis] = 1
        attrs = {"starts": [i], "ends": [i + 1], "axes": [axis], "steps": [1]}
        hint = g.fresh_name((op.results[0].name or "gather") + ".slice")
        sl = g.insert_before(op, nn.Slice([x], [x.type.with_shape(shape)], attrs, op.loc, result_names=[hint]))
        replace_op(g, op, nn.Squeeze([sl.results[0]], [op.results[0].type], {"axes": [axis]}, op.loc))
        return True


def _scalar_const(module: Module, v: Value) -> float | None:
    """The value of a one-element float constant ``v`` (any rank), else None."""
    if not v.is_weight or not v.type.is_float or v.type.size != 1:
        return None
    return float(np.asarray(module.weight(v)).reshape(-1)[0])


def _scalar_weight(module: Module, like: Value, value: float, hint: str) -> Value:
    """A 0-d constant ``value`` of ``like``'s element type (the form the torch frontend gives a Python number)."""
    return module.add_weight(hint, np.array(value, dtype=like.type.np_dtype), like.type.dtype)


def _scaled(module: Module, v: Value) -> tuple[Value, float] | None:
    """``v = x * c`` (a one-element constant ``c``, either side), ``v`` used only once: ``(x, c)``."""
    op = v.owner
    if not isinstance(op, nn.Mul) or sole_user(v) is None:
        return None
    a, b = op.operands
    for x, c in ((a, b), (b, a)):
        k = _scalar_const(module, c)
        if k is not None and not x.is_weight and x.type == v.type:
            return x, k
    return None


class ScaledMatMulOperands(Pattern):
    """``matmul(a * c1, b * c2)`` (one-element constants, either operand or both) -> ``matmul(a, b) * (c1 c2)``:
    the ONNX export of scaled_dot_product_attention scales q and kᵀ by ``sqrt(scale)`` each, torch's rule (and
    the eager attention of HF models) the scores once.  ``c1 c2`` is rounded once from the float64 product;
    the results differ from the scaled operands' only in float rounding (relative 1e-7 on attention scores)."""

    roots = (nn.MatMul,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        a, b = op.operands
        sa, sb = _scaled(module, a), _scaled(module, b)
        if (sa is None and sb is None) or a is b:
            return False
        k = 1.0
        if sa is not None:
            a, k = sa[0], k * sa[1]
        if sb is not None:
            b, k = sb[0], k * sb[1]
        r = op.results[0]
        base = r.name or "matmul"
        mm = g.insert_before(op, nn.MatMul([a, b], [r.type], {}, op.loc, result_names=[g.fresh_name(base + ".mm")]))
        c = _scalar_weight(module, r, k, base + ".scale")
        replace_op(g, op, nn.Mul([mm.results[0], c], [r.type], {}, op.loc))
        return True


def _is_fill(module: Module, v: Value, value: float) -> bool:
    if not v.is_weight or not v.type.is_float or v.type.size > CSE_CONST_ELEMENTS:
        return False
    data = np.asarray(module.weight(v))
    return data.size > 0 and bool(np.all(data == value))


class AdditiveMaskToWhere(Pattern):
    """``x + where(m, 0, -inf)`` -> ``where(m, x, -inf)`` when the mask does not broadcast ``x`` (the boolean
    attention mask of an ONNX export, made additive; torch's rule masks the scores with one where); a constant
    of zeros and -infs added (the exporter's causal mask of ``is_causal``) -> ``where(c == 0, x, -inf)``.  Equal for
    every ``x`` but ``+inf`` and NaN: ``x + 0 = x`` and ``x + -inf = -inf``."""

    roots = (nn.Add,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        r = op.results[0]
        for x, w in (op.operands, op.operands[::-1]):
            if w.is_weight and not x.is_weight and x.type == r.type and w.type.is_float:
                data = np.asarray(module.weight(w))
                if data.size and np.all((data == 0) | (data == -np.inf)) and np.any(data == -np.inf):
                    keep = module.add_weight((w.name or "mask") + ".keep", data == 0, "i1")
                    c = _scalar_weight(module, r, -np.inf, (r.name or "mask") + ".fill")
                    replace_op(g, op, nn.Where([keep, x, c], [r.type], {}, op.loc))
                    return True
            mask = w.owner
            if not isinstance(mask, nn.Where) or x.is_weight or x.type != r.type:
                continue
            cond, zero, ninf = mask.operands
            if cond.is_weight or not (_is_fill(module, zero, 0.0) and _is_fill(module, ninf, -np.inf)):
                continue
            c = _scalar_weight(module, r, -np.inf, (r.name or "mask") + ".fill")
            replace_op(g, op, nn.Where([cond, x, c], [r.type], {}, op.loc))
            return True
        return False


class NanGuardScalar(Pattern):
    """``where(is_nan(x), c, x)`` with a one-element constant ``c`` of rank >= 1 -> the same with a 0-d ``c``
    (the ``[1]`` constant of an ONNX export, the 0-d number of the torch frontend: one value, one form)."""

    roots = (nn.Where,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        cond, c, x = op.operands
        k = _scalar_const(module, c)
        if k is None or c.type.rank == 0 or not isinstance(cond.owner, nn.IsNaN) or cond.owner.operands[0] is not x:
            return False
        r = op.results[0]
        if x.type != r.type:
            return False
        c0 = _scalar_weight(module, r, k, (r.name or "guard") + ".fill")
        replace_op(g, op, nn.Where([cond, c0, x], [r.type], {}, op.loc))
        return True


class ExpandToResultShape(Pattern):
    """``nn.expand`` whose ``shape`` is not its result's (ONNX ``Expand`` broadcasts both ways: ``[1, 1, 16, 1]``
    of a ``[2, 1, 1, 16]`` tensor) -> ``shape`` = the result shape, the form of torch's ``expand``."""

    roots = (nn.Expand,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        shape = list(op.results[0].type.shape)
        if list(op.attr("shape")) == shape:
            return False
        replace_op(g, op, nn.Expand(list(op.operands), [op.results[0].type], {"shape": shape}, op.loc))
        return True


class DivisorExpand(Pattern):
    """``nn.div(a, nn.expand(b))`` whose operands broadcast to the same result without the expand -> ``nn.div(a,
    b)`` (``F.normalize``'s ``x / expand(clip(||x||))``): the quantizer's division then takes one reciprocal per
    element of ``b`` (per row), not per element of the expanded copy."""

    roots = (nn.Div,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        a, b = op.operands
        if not isinstance(b.owner, nn.Expand) or b.is_weight:
            return False
        src = b.owner.operands[0]
        try:
            shape = np.broadcast_shapes(a.type.shape, src.type.shape)
        except ValueError:
            return False
        if tuple(shape) != tuple(op.results[0].type.shape):
            return False
        op.operands = [a, src]
        return True


class CommonSubexpression(Pattern):
    """A pure op equal to an earlier one (same class, operands, attributes and result types) -> the earlier one's
    results.  ONNX exporters share a value that a model computes twice (a mask built in every layer), torch.export
    keeps each copy."""

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        if op.terminator or not op.pure or any(_is_output(g, r) for r in op.results):
            return False
        anchor = next((v for v in op.operands if not v.is_weight), None)
        if anchor is None:  # all constants: FoldConstant's case
            return False
        key = _cse_key(module, op)
        for other in anchor.uses:
            if other is op or type(other) is not type(op) or other.graph is not g:
                continue
            if _cse_key(module, other) == key and g.ops.index(other) < g.ops.index(op):
                g.replace_op(op, list(other.results))
                return True
        return False


#: constants up to this many elements compare by value (a ``1.0`` written once per layer); larger ones by identity
CSE_CONST_ELEMENTS = 64


def _cse_key(module: Module, op: Operation) -> tuple:
    operands = []
    for v in op.operands:
        if v.is_weight and v.type.size <= CSE_CONST_ELEMENTS:
            operands.append((str(v.type), np.asarray(module.weight(v)).tobytes()))
        else:
            operands.append(id(v))
    return (tuple(operands), repr(sorted(op.attributes.items())), tuple(str(r.type) for r in op.results))


# CONV's stride field, as tile checks it: a larger stride needs the patchify rewrite below
_MAX_CONV_STRIDE = TILE_U2


class PatchifyConv(Pattern):
    """A "patchify" ``nn.conv2d`` (stride equal to its kernel, no padding or dilation: ViT's 16x16 patch
    embedding) whose stride exceeds CONV's -> space-to-depth (``reshape`` ``[N, C, OH, kh, OW, kw]``,
    ``transpose`` to ``[N, C, kh, kw, OH, OW]``, ``reshape`` ``[N, C kh kw, OH, OW]``) and a 1x1 conv with the
    weight ``[O, C/g kh kw, 1, 1]``.  Exact: each output is the same sum of the same products, and each output
    channel keeps its weights, so the quantizer gives them the same pents and scale."""

    roots = (nn.Conv2d,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        x, w = op.operands[0], op.operands[1]
        kh, kw = w.type.shape[2:]
        if (
            list(op.attr("strides")) != [kh, kw]
            or any(op.attr("pads"))
            or list(op.attr("dilations")) != [1, 1]
            or max(kh, kw) <= _MAX_CONV_STRIDE
            or not w.is_weight
        ):
            return False
        n, c, h, wd = x.type.shape
        oh, ow = h // kh, wd // kw
        if (oh * kh, ow * kw) != (h, wd):  # the rows / columns a patch does not cover: cropped first
            x = g.insert_before(
                op, nn.Slice([x], [x.type.with_shape((n, c, oh * kh, ow * kw))],
                             {"starts": [0, 0], "ends": [oh * kh, ow * kw], "axes": [2, 3], "steps": [1, 1]}, op.loc,
                             result_names=[g.fresh_name((x.name or "x") + ".crop")]),
            ).results[0]  # fmt: skip
        base = op.results[0].name or "conv"
        steps = (
            ((n, c, oh, kh, ow, kw), nn.Reshape, {"shape": [n, c, oh, kh, ow, kw]}),
            ((n, c, kh, kw, oh, ow), nn.Transpose, {"perm": [0, 1, 3, 5, 2, 4]}),
            ((n, c * kh * kw, oh, ow), nn.Reshape, {"shape": [n, c * kh * kw, oh, ow]}),
        )
        for shape, cls, attrs in steps:
            new = cls([x], [x.type.with_shape(shape)], attrs, op.loc, result_names=[g.fresh_name(base + ".patches")])
            x = g.insert_before(op, new).results[0]
        o, icg = w.type.shape[:2]
        w1 = module.add_weight((w.name or "w") + ".1x1", np.asarray(module.weight(w)).reshape(o, icg * kh * kw, 1, 1),
                               w.type.dtype)  # fmt: skip
        attrs = {**op.attributes, "strides": [1, 1]}
        replace_op(g, op, nn.Conv2d([x, w1, *op.operands[2:]], [op.results[0].type], attrs, op.loc))
        return True


PATTERNS: tuple[Pattern, ...] = (
    RemoveIdentity(),
    FoldConstant(),
    MatMulToGemm(),
    GemmWeightRowsOut(),
    FoldBiasAdd(),
    PatchifyConv(),
    SpatialMeanToPool(),
    FoldReshapeChain(),
    ReshapeToFlatten(),
    FoldTransposeChain(),
    SplitToSlices(),
    GatherScalarToSlice(),
    ScaledMatMulOperands(),
    AdditiveMaskToWhere(),
    NanGuardScalar(),
    ExpandToResultShape(),
    DivisorExpand(),
    CommonSubexpression(),
)


@register_pass
@dataclass(frozen=True)
class Canonicalize(Pass):
    """Constant folding, DCE, Identity/Dropout removal, MatMul->Gemm, bias-add folding, spatial mean->pool,
    view and transpose chains, split->slices."""

    name = "canonicalize"

    def run(self, module: Module) -> bool:
        changed = DeadCodeElimination().run(module)  # dead users would hide a sole user from the patterns
        changed |= apply_patterns(module, PATTERNS)
        return DeadCodeElimination().run(module) or changed
