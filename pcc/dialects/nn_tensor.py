"""Indexing, reduction and tensor-building ops of the ``nn`` dialect (ONNX semantics, static shapes)."""

from __future__ import annotations

import re

from pcc.dialects.nn_base import Reduce, Unary, broadcast_shapes, check_choice, norm_axis
from pcc.ir import Operation, TensorType, VerifyError, attr, register_op, required

_INDEX = ("i32", "i64")


def _index_operand(op: Operation, i: int) -> TensorType:
    t = op.operands[i].type
    if t.dtype not in _INDEX:
        raise VerifyError(f"indices must be i32 or i64, got {t}")
    return t


_REDUCE = (
    ("ReduceMax", "reduce_max", "Maximum"),
    ("ReduceMin", "reduce_min", "Minimum"),
    ("ReduceProd", "reduce_prod", "Product"),
    ("ReduceL1", "reduce_l1", "Sum of |x|"),
    ("ReduceL2", "reduce_l2", "sqrt of the sum of x^2"),
    ("ReduceLogSum", "reduce_log_sum", "ln of the sum"),
    ("ReduceLogSumExp", "reduce_log_sum_exp", "ln of the sum of exp(x)"),
    ("ReduceSumSquare", "reduce_sum_square", "Sum of x^2"),
)
REDUCE_OPS: dict[str, type[Operation]] = {}
for _cls, _op, _doc in _REDUCE:
    REDUCE_OPS[_cls] = register_op(
        type(
            _cls,
            (Reduce,),
            {
                "__doc__": f"{_doc} over ``axes`` (all if absent); an empty reduction gives the identity.",
                "__module__": "pcc.dialects.nn",
                "__qualname__": _cls,
                "name": f"nn.{_op}",
                "example": f"%y = nn.{_op}(%x) {{axes = [1], keepdims = true}} : tensor<1x1xf32>",
            },
        )
    )
globals().update(REDUCE_OPS)


class _ArgReduce(Operation):
    operands_spec = ("x",)
    attrs = {"axis": attr("int", 0), "keepdims": attr("bool", True), "select_last_index": attr("bool", False)}

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        ax = norm_axis(self.attr("axis"), x.rank)
        shape = [1 if i == ax else d for i, d in enumerate(x.shape)]
        if not self.attr("keepdims"):
            del shape[ax]
        return [TensorType(shape, "i64")]


@register_op
class ArgMax(_ArgReduce):
    """Index of the largest element along ``axis`` (the first, or the last with ``select_last_index``)."""

    name = "nn.arg_max"
    example = "%y = nn.arg_max(%x) {axis = 1, keepdims = true} : tensor<1x1xi64>"


@register_op
class ArgMin(_ArgReduce):
    """Index of the smallest element along ``axis`` (the first, or the last with ``select_last_index``)."""

    name = "nn.arg_min"
    example = "%y = nn.arg_min(%x) {axis = 1, keepdims = true} : tensor<1x1xi64>"


@register_op
class TopK(Operation):
    """The ``k`` largest (or smallest) values along ``axis`` and their indices; ties keep the lower index."""

    name = "nn.top_k"
    operands_spec = ("x",)
    results_spec = ("values", "indices")
    attrs = {"k": required("int"), "axis": attr("int", -1), "largest": attr("bool", True), "sorted": attr("bool", True)}
    example = "%v, %i = nn.top_k(%x) {k = 2, axis = 1} : tensor<1x2xf32>, tensor<1x2xi64>"

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        ax = norm_axis(self.attr("axis"), x.rank)
        k = self.attr("k")
        if not 0 <= k <= x.shape[ax]:
            raise VerifyError(f"k = {k} is out of range for axis {ax} of {x}")
        shape = list(x.shape)
        shape[ax] = k
        return [x.with_shape(shape), TensorType(shape, "i64")]


@register_op
class Hardmax(Unary):
    """1 at the first maximum along ``axis``, 0 elsewhere."""

    name = "nn.hardmax"
    attrs = {"axis": attr("int", -1)}
    example = "%y = nn.hardmax(%x) {axis = 1} : tensor<1x4xf32>"

    def verify_(self) -> None:
        super().verify_()
        norm_axis(self.attr("axis"), self.x.type.rank)


@register_op
class CumSum(Operation):
    """Cumulative sum along ``axis`` (``exclusive``: the element itself left out; ``reverse``: from the end)."""

    name = "nn.cum_sum"
    operands_spec = ("x",)
    attrs = {"axis": required("int"), "exclusive": attr("bool", False), "reverse": attr("bool", False)}
    example = "%y = nn.cum_sum(%x) {axis = 1} : tensor<1x4xf32>"

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        norm_axis(self.attr("axis"), x.rank)
        return [x]


@register_op
class Trilu(Operation):
    """The upper (``upper``) or lower triangle of the last two axes, from diagonal ``k``; the rest is 0."""

    name = "nn.trilu"
    operands_spec = ("x",)
    attrs = {"upper": attr("bool", True), "k": attr("int", 0)}
    example = "%y = nn.trilu(%x) {upper = true, k = 0} : tensor<1x4xf32>"

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        if x.rank < 2:
            raise VerifyError(f"trilu needs rank >= 2, got {x}")
        return [x]


@register_op
class Tile(Operation):
    """Repeat ``x`` ``repeats[i]`` times along each axis ``i``."""

    name = "nn.tile"
    operands_spec = ("x",)
    attrs = {"repeats": required("ints")}
    example = "%y = nn.tile(%x) {repeats = [2, 1]} : tensor<2x4xf32>"

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        r = self.attr("repeats")
        if len(r) != x.rank or any(v < 0 for v in r):
            raise VerifyError(f"repeats needs {x.rank} non-negative values, got {r}")
        return [x.with_shape([d * k for d, k in zip(x.shape, r, strict=True)])]


@register_op
class GatherElements(Operation):
    """``out[i][j]... = x[..., indices[i][j]..., ...]`` with the index replacing position ``axis``
    (ONNX GatherElements; negative indices count from the end)."""

    name = "nn.gather_elements"
    operands_spec = ("x", "indices")
    attrs = {"axis": attr("int", 0)}
    example = "%y = nn.gather_elements(%x, @i) {axis = 1} : tensor<1x2xf32>"
    example_types = {"@i": "tensor<1x2xi64>"}

    def infer_types(self) -> list[TensorType]:
        x, i = self.x.type, _index_operand(self, 1)
        norm_axis(self.attr("axis"), x.rank)
        if i.rank != x.rank:
            raise VerifyError(f"indices {i} must have the rank of {x}")
        return [x.with_shape(i.shape)]


@register_op
class GatherND(Operation):
    """Slices of ``x`` addressed by the last axis of ``indices`` (ONNX GatherND, with ``batch_dims``)."""

    name = "nn.gather_nd"
    operands_spec = ("x", "indices")
    attrs = {"batch_dims": attr("int", 0)}
    example = "%y = nn.gather_nd(%x, @i) : tensor<2xf32>"
    example_types = {"@i": "tensor<2x2xi64>"}

    def infer_types(self) -> list[TensorType]:
        x, i = self.x.type, _index_operand(self, 1)
        b = self.attr("batch_dims")
        if i.rank < 1 or not 0 <= b < min(x.rank, i.rank) or x.shape[:b] != i.shape[:b]:
            raise VerifyError(f"batch_dims {b} does not fit {x} and indices {i}")
        k = i.shape[-1]
        if b + k > x.rank:
            raise VerifyError(f"indices of depth {k} address more axes than {x} has after {b} batch axes")
        return [x.with_shape(i.shape[:-1] + x.shape[b + k :])]


REDUCTIONS = ("none", "add", "mul", "max", "min")


@register_op
class ScatterElements(Operation):
    """A copy of ``x`` with ``updates`` written (or combined by ``reduction``) at ``indices`` along ``axis``."""

    name = "nn.scatter_elements"
    operands_spec = ("x", "indices", "updates")
    attrs = {"axis": attr("int", 0), "reduction": attr("str", "none")}
    example = '%y = nn.scatter_elements(%x, @i, @u) {axis = 1, reduction = "none"} : tensor<1x4xf32>'
    example_types = {"@i": "tensor<1x2xi64>", "@u": "tensor<1x2xf32>"}

    def infer_types(self) -> list[TensorType]:
        x, i, u = self.x.type, _index_operand(self, 1), self.updates.type
        norm_axis(self.attr("axis"), x.rank)
        check_choice(self, "reduction", REDUCTIONS)
        if i.shape != u.shape or i.rank != x.rank or u.dtype != x.dtype:
            raise VerifyError(f"indices {i} and updates {u} must have one shape, of the rank of {x}")
        return [x]


@register_op
class ScatterND(Operation):
    """A copy of ``x`` with slices ``updates`` written (or combined by ``reduction``) at ``indices``."""

    name = "nn.scatter_nd"
    operands_spec = ("x", "indices", "updates")
    attrs = {"reduction": attr("str", "none")}
    example = '%y = nn.scatter_nd(%x, @i, @u) {reduction = "none"} : tensor<1x4xf32>'
    example_types = {"@i": "tensor<1x1xi64>", "@u": "tensor<1x4xf32>"}

    def infer_types(self) -> list[TensorType]:
        x, i, u = self.x.type, _index_operand(self, 1), self.updates.type
        check_choice(self, "reduction", REDUCTIONS)
        k = i.shape[-1] if i.rank else 0
        if i.rank < 1 or k > x.rank or u.shape != i.shape[:-1] + x.shape[k:] or u.dtype != x.dtype:
            raise VerifyError(f"updates {u} must have shape indices[:-1] + x[{k}:] for x {x}, indices {i}")
        return [x]


@register_op
class OneHot(Operation):
    """``values[1]`` where the position on the new axis ``axis`` equals the index (negative: from ``depth``),
    ``values[0]`` elsewhere."""

    name = "nn.one_hot"
    operands_spec = ("indices", "values")
    attrs = {"depth": required("int"), "axis": attr("int", -1)}
    example = "%y = nn.one_hot(@i, @v) {depth = 4, axis = -1} : tensor<2x4xf32>"
    example_types = {"@i": "tensor<2xi64>", "@v": "tensor<2xf32>"}

    def infer_types(self) -> list[TensorType]:
        i, v = self.indices.type, self.values.type
        if v.shape != (2,) or i.is_float or i.is_pent:
            raise VerifyError(f"need integer indices and values of shape [2], got {i} and {v}")
        ax = norm_axis(self.attr("axis"), i.rank + 1)
        shape = list(i.shape)
        shape.insert(ax, self.attr("depth"))
        return [v.with_shape(shape)]


_EINSUM = re.compile(r"[A-Za-z.]*(,[A-Za-z.]*)*(->[A-Za-z.]*)?\Z")


def einsum_shape(equation: str, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The result shape of ``equation`` on operands of ``shapes`` (numpy's einsum rules, ellipsis included)."""
    eq = equation.replace(" ", "")
    if not _EINSUM.match(eq):
        raise VerifyError(f"bad einsum equation {equation!r}")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise VerifyError(f"equation {equation!r} has {len(terms)} operands, got {len(shapes)}")
    sizes: dict[str, int] = {}
    ell: list[tuple[int, ...]] = []
    for term, shape in zip(terms, shapes, strict=True):
        letters = term.replace("...", "")
        n_ell = len(shape) - len(letters)
        if ("..." in term and n_ell < 0) or ("..." not in term and n_ell != 0) or term.count(".") not in (0, 3):
            raise VerifyError(f"term {term!r} does not match operand shape {list(shape)}")
        at = term.find("...")
        dims = list(shape)
        if at >= 0:
            ell.append(tuple(dims[at : at + n_ell]))
            dims = dims[:at] + dims[at + n_ell :]
        for c, d in zip(letters, dims, strict=True):
            if sizes.get(c, d) != d and 1 not in (d, sizes[c]):
                raise VerifyError(f"label {c!r} has sizes {sizes[c]} and {d}")
            sizes[c] = max(sizes.get(c, d), d) if 1 in (d, sizes.get(c, d)) else d
    eshape = broadcast_shapes(*ell) if ell else ()
    if not arrow:
        counts = {c: lhs.count(c) for c in sizes}
        rhs = ("..." if ell else "") + "".join(sorted(c for c, k in counts.items() if k == 1))
    out: list[int] = []
    rest = rhs
    if "..." in rest:
        before, _, after = rest.partition("...")
        out = [sizes[c] for c in before] + list(eshape) + [sizes[c] for c in after]
        rest = before + after
    else:
        out = [sizes[c] for c in rest if c in sizes]
    if any(c not in sizes for c in rest) or len(set(rest)) != len(rest):
        raise VerifyError(f"the output of {equation!r} names a label twice or one no operand has")
    return tuple(out)


@register_op
class Einsum(Operation):
    """Einstein summation (numpy / ONNX Einsum) over any number of operands of one element type."""

    name = "nn.einsum"
    operands_spec = ("inputs*",)
    attrs = {"equation": required("str")}
    example = '%y = nn.einsum(%x, @w) {equation = "ij,jk->ik"} : tensor<1x8xf32>'
    example_types = {"@w": "tensor<4x8xf32>"}

    def infer_types(self) -> list[TensorType]:
        ts = [v.type for v in self.operands]
        if not ts or len({t.dtype for t in ts}) != 1 or ts[0].is_pent:
            raise VerifyError("einsum needs operands of one non-pentary element type")
        return [ts[0].with_shape(einsum_shape(self.attr("equation"), [t.shape for t in ts]))]


__all__ = [
    "REDUCE_OPS",
    "REDUCTIONS",
    "ArgMax",
    "ArgMin",
    "TopK",
    "Hardmax",
    "CumSum",
    "Trilu",
    "Tile",
    "GatherElements",
    "GatherND",
    "ScatterElements",
    "ScatterND",
    "OneHot",
    "Einsum",
    "einsum_shape",
    *REDUCE_OPS,
]
