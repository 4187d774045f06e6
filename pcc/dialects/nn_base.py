"""Shared pieces of the ``nn`` dialect's op families: broadcasting, operand checks, the unary/binary bases."""

from __future__ import annotations

import numpy as np

from pcc.ir import Operation, TensorType, VerifyError, attr

__all__ = ["broadcast_shapes", "float_operands", "norm_axis", "Unary", "Binary", "Reduce", "check_choice"]


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise VerifyError(f"shapes {' and '.join(map(str, shapes))} do not broadcast") from None


def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of numpy's ``matmul(a, b)`` (ValueError when they do not match), from the shapes alone: a 1-D
    operand is a row (a) or a column (b) whose axis is dropped again, the batch axes broadcast."""
    if not a or not b:
        raise ValueError("matmul of a scalar")
    ra = (1, *a) if len(a) == 1 else tuple(a)
    rb = (*b, 1) if len(b) == 1 else tuple(b)
    if ra[-1] != rb[-2]:
        raise ValueError(f"inner dimensions {ra[-1]} and {rb[-2]} differ")
    shape = (*np.broadcast_shapes(ra[:-2], rb[:-2]), ra[-2], rb[-1])
    if len(b) == 1:
        shape = shape[:-1]
    if len(a) == 1:
        shape = shape[:-2] + shape[-1:] if len(b) != 1 else shape[:-1]
    return tuple(int(d) for d in shape)


def float_operands(op: Operation) -> None:
    for i, v in enumerate(op.operands):
        if not v.type.is_float:
            raise VerifyError(f"operand #{i} ({v.ref()}) must be a float tensor, got {v.type}")


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise VerifyError(f"axis {axis} out of range for rank {rank}")
    return axis % max(rank, 1)


def check_choice(op: Operation, key: str, choices: tuple[str, ...]) -> None:
    if op.attr(key) not in choices:
        raise VerifyError(f"{key} must be one of {', '.join(map(repr, choices))}, got {op.attr(key)!r}")


class Unary(Operation):
    operands_spec = ("x",)

    def verify_(self) -> None:
        float_operands(self)

    def infer_types(self) -> list[TensorType]:
        return [self.x.type]


class Binary(Operation):
    """Elementwise with numpy/ONNX multidirectional broadcasting."""

    operands_spec = ("a", "b")

    def verify_(self) -> None:
        a, b = self.operands
        if a.type.dtype != b.type.dtype:
            raise VerifyError(f"operand types differ: {a.type} and {b.type}")

    def infer_types(self) -> list[TensorType]:
        a, b = self.operands
        return [a.type.with_shape(broadcast_shapes(a.type.shape, b.type.shape))]


class Reduce(Operation):
    """A reduction over ``axes`` (all axes if absent), keeping them as size 1 when ``keepdims``."""

    operands_spec = ("x",)
    attrs = {"axes": attr("ints"), "keepdims": attr("bool", True)}

    def verify_(self) -> None:
        if self.x.type.is_pent:
            raise VerifyError(f"operand must be a float or integer tensor, got {self.x.type}")

    def reduced_axes(self) -> set[int]:
        x = self.x.type
        axes = self.attr("axes")
        return set(range(x.rank)) if axes is None else {norm_axis(a, x.rank) for a in axes}

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        axes = self.reduced_axes()
        if self.attr("keepdims"):
            return [x.with_shape([1 if i in axes else d for i, d in enumerate(x.shape)])]
        return [x.with_shape([d for i, d in enumerate(x.shape) if i not in axes])]
