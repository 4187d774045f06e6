"""Reference kernels of the table-declared elementwise ops (:mod:`pcc.dialects.nn_elementwise`).

One row per op: the NumPy function that is its meaning, computed in the operands' own element type."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pcc.diagnostics import PccError
from pcc.dialects import nn
from pcc.interpreter import KERNELS, _f, _where
from pcc.ir import Operation

Fn = Callable[..., np.ndarray]


def _np(fn: Callable[..., np.ndarray]) -> Fn:
    return lambda op, *xs: fn(*xs)


def _one(x: np.ndarray) -> np.generic:
    return x.dtype.type(1)


def _elu(op: Operation, x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, x, _f(x, op.attr("alpha")) * np.expm1(x))


def _selu(op: Operation, x: np.ndarray) -> np.ndarray:
    return _f(x, op.attr("gamma")) * np.where(x > 0, x, _f(x, op.attr("alpha")) * np.expm1(x))


def _celu(op: Operation, x: np.ndarray) -> np.ndarray:
    a = _f(x, op.attr("alpha"))
    return np.maximum(x, x.dtype.type(0)) + np.minimum(x.dtype.type(0), a * np.expm1(x / a))


def _shrink(op: Operation, x: np.ndarray) -> np.ndarray:
    bias, lambd = op.attr("bias"), op.attr("lambd")
    b = x.dtype.type(bias)
    zero = x.dtype.type(0)
    return np.where(x < -lambd, x + b, np.where(x > lambd, x - b, zero)).astype(x.dtype)


def _is_inf(op: Operation, x: np.ndarray) -> np.ndarray:
    pos = np.isposinf(x) if op.attr("detect_positive") else np.zeros(x.shape, bool)
    neg = np.isneginf(x) if op.attr("detect_negative") else np.zeros(x.shape, bool)
    return pos | neg


def _softplus(op: Operation, x: np.ndarray) -> np.ndarray:
    return np.logaddexp(x.dtype.type(0), x)


UNARY: dict[type[Operation], Fn] = {
    nn.Log: _np(np.log),
    nn.Abs: _np(np.abs),
    nn.Sign: _np(np.sign),
    nn.Floor: _np(np.floor),
    nn.Ceil: _np(np.ceil),
    nn.Round: _np(np.round),  # halves to even, as ONNX
    nn.Reciprocal: lambda op, x: _one(x) / x,
    nn.Sin: _np(np.sin),
    nn.Cos: _np(np.cos),
    nn.Tan: _np(np.tan),
    nn.Asin: _np(np.arcsin),
    nn.Acos: _np(np.arccos),
    nn.Atan: _np(np.arctan),
    nn.Sinh: _np(np.sinh),
    nn.Cosh: _np(np.cosh),
    nn.Asinh: _np(np.arcsinh),
    nn.Acosh: _np(np.arccosh),
    nn.Atanh: _np(np.arctanh),
    nn.Softplus: _softplus,
    nn.Softsign: lambda op, x: x / (_one(x) + np.abs(x)),
    nn.Mish: lambda op, x: x * np.tanh(_softplus(op, x)),
    nn.Elu: _elu,
    nn.Selu: _selu,
    nn.Celu: _celu,
    nn.ThresholdedRelu: lambda op, x: np.where(x > _f(x, op.attr("alpha")), x, x.dtype.type(0)),
    nn.Shrink: _shrink,
    nn.IsNaN: _np(np.isnan),
    nn.IsInf: _is_inf,
    nn.Not: _np(np.logical_not),
    nn.BitwiseNot: _np(np.invert),
}


def _mod(op: Operation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if op.attr("fmod"):
        return np.fmod(a, b)
    if np.issubdtype(a.dtype, np.floating):
        return np.mod(a, b)
    if np.any(b == 0):
        raise PccError(f"{_where(op)}: integer modulo by zero", op.loc)
    return np.mod(a, b)


def _shift(op: Operation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.left_shift(a, b) if op.attr("direction") == "left" else np.right_shift(a, b)


BINARY: dict[type[Operation], Fn] = {
    nn.Mod: _mod,
    nn.Max: _np(np.maximum),
    nn.Min: _np(np.minimum),
    nn.PRelu: lambda op, a, b: np.where(a >= 0, a, a * b),
    nn.Equal: _np(np.equal),
    nn.Less: _np(np.less),
    nn.LessOrEqual: _np(np.less_equal),
    nn.Greater: _np(np.greater),
    nn.GreaterOrEqual: _np(np.greater_equal),
    nn.And: _np(np.logical_and),
    nn.Or: _np(np.logical_or),
    nn.Xor: _np(np.logical_xor),
    nn.BitwiseAnd: _np(np.bitwise_and),
    nn.BitwiseOr: _np(np.bitwise_or),
    nn.BitwiseXor: _np(np.bitwise_xor),
    nn.BitShift: _shift,
    nn.Where: _np(np.where),
}

KERNELS.update(UNARY)
KERNELS.update(BINARY)
