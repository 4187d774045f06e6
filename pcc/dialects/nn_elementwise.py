"""The elementwise ops of the ``nn`` dialect, declared from two tables (unary and binary).

Each row is ``(class name, op name, meaning, operand kinds, result kind, attributes)``.  Operand kinds:
``float`` (f16/f32/f64), ``num`` (float or integer), ``int`` (integer, not i1), ``bool`` (i1), ``any``
(every non-pentary type).  The result is the operand type (``same``) or a boolean (``i1``).  Binary ops
broadcast both ways (numpy / ONNX multidirectional broadcasting) and take two operands of one element type.
The executable meaning of each op is its kernel in the float reference interpreter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pcc.dialects.nn_base import Binary, Unary, broadcast_shapes, check_choice
from pcc.ir import Attr, Operation, TensorType, VerifyError, attr, register_op

KINDS = ("float", "num", "int", "bool", "any")


def _check_kind(op: Operation, kind: str) -> None:
    for i, v in enumerate(op.operands):
        t = v.type
        ok = {
            "float": t.is_float,
            "num": not t.is_pent and t.dtype != "i1",
            "int": not t.is_pent and not t.is_float and t.dtype != "i1",
            "bool": t.dtype == "i1",
            "any": not t.is_pent,
        }[kind]
        if not ok:
            raise VerifyError(f"operand #{i} ({v.ref()}) must be a {kind} tensor, got {t}")


class Elementwise(Operation):
    """Base of the table-declared ops: operand kinds, result kind and attribute choices checked here."""

    kind: str = "float"
    result_kind: str = "same"
    choices: Mapping[str, tuple[str, ...]] = {}

    def verify_(self) -> None:
        _check_kind(self, self.kind)
        if len({v.type.dtype for v in self.operands}) > 1:
            raise VerifyError(f"operand types differ: {', '.join(str(v.type) for v in self.operands)}")
        for k, allowed in self.choices.items():
            check_choice(self, k, allowed)

    def infer_types(self) -> list[TensorType]:
        shape = broadcast_shapes(*(v.type.shape for v in self.operands))
        t = self.operands[0].type.with_shape(shape)
        return [t.with_dtype("i1") if self.result_kind == "i1" else t]


class ElementwiseUnary(Elementwise, Unary):
    """The base of the unary ops declared by the table: one operand, the kind checks of :class:`Elementwise`."""


class ElementwiseBinary(Elementwise, Binary):
    """The base of the binary ops declared by the table: two broadcasting operands, checked by kind."""


_EXAMPLE_TYPE = {"float": "f32", "num": "f32", "int": "i32", "bool": "i1", "any": "f32"}

Row = tuple[str, str, str, str, str, Mapping[str, Attr]]

UNARY: tuple[Row, ...] = (
    ("Relu", "relu", "max(x, 0)", "num", "same", {}),
    ("Sigmoid", "sigmoid", "1 / (1 + exp(-x))", "float", "same", {}),
    ("Tanh", "tanh", "tanh(x)", "float", "same", {}),
    ("Erf", "erf", "erf(x)", "float", "same", {}),
    ("Sqrt", "sqrt", "sqrt(x)", "float", "same", {}),
    ("Exp", "exp", "exp(x)", "float", "same", {}),
    ("Log", "log", "ln(x)", "float", "same", {}),
    ("Neg", "neg", "-x", "num", "same", {}),
    ("Abs", "abs", "|x|", "num", "same", {}),
    ("Sign", "sign", "-1, 0 or 1 by the sign of x", "num", "same", {}),
    ("Floor", "floor", "floor(x)", "float", "same", {}),
    ("Ceil", "ceil", "ceil(x)", "float", "same", {}),
    ("Round", "round", "x rounded to the nearest integer, halves to even", "float", "same", {}),
    ("Reciprocal", "reciprocal", "1 / x", "float", "same", {}),
    ("Sin", "sin", "sin(x)", "float", "same", {}),
    ("Cos", "cos", "cos(x)", "float", "same", {}),
    ("Tan", "tan", "tan(x)", "float", "same", {}),
    ("Asin", "asin", "asin(x)", "float", "same", {}),
    ("Acos", "acos", "acos(x)", "float", "same", {}),
    ("Atan", "atan", "atan(x)", "float", "same", {}),
    ("Sinh", "sinh", "sinh(x)", "float", "same", {}),
    ("Cosh", "cosh", "cosh(x)", "float", "same", {}),
    ("Asinh", "asinh", "asinh(x)", "float", "same", {}),
    ("Acosh", "acosh", "acosh(x)", "float", "same", {}),
    ("Atanh", "atanh", "atanh(x)", "float", "same", {}),
    ("Softplus", "softplus", "ln(1 + exp(x))", "float", "same", {}),
    ("Softsign", "softsign", "x / (1 + |x|)", "float", "same", {}),
    ("Mish", "mish", "x * tanh(softplus(x))", "float", "same", {}),
    ("HardSwish", "hard_swish", "x * max(0, min(1, x / 6 + 1 / 2))", "float", "same", {}),
    ("LeakyRelu", "leaky_relu", "x if x >= 0 else alpha * x", "float", "same", {"alpha": attr("float", 0.01)}),
    (
        "HardSigmoid",
        "hard_sigmoid",
        "max(0, min(1, alpha * x + beta))",
        "float",
        "same",
        {"alpha": attr("float", 0.2), "beta": attr("float", 0.5)},
    ),
    ("Elu", "elu", "x if x >= 0 else alpha * (exp(x) - 1)", "float", "same", {"alpha": attr("float", 1.0)}),
    (
        "Selu",
        "selu",
        "gamma * (x if x > 0 else alpha * (exp(x) - 1))",
        "float",
        "same",
        {"alpha": attr("float", 1.6732632423543772), "gamma": attr("float", 1.0507009873554805)},
    ),
    (
        "Celu",
        "celu",
        "max(0, x) + min(0, alpha * (exp(x / alpha) - 1))",
        "float",
        "same",
        {"alpha": attr("float", 1.0)},
    ),
    ("ThresholdedRelu", "thresholded_relu", "x if x > alpha else 0", "float", "same", {"alpha": attr("float", 1.0)}),
    (
        "Shrink",
        "shrink",
        "x - bias if x > lambd, x + bias if x < -lambd, else 0",
        "num",
        "same",
        {"bias": attr("float", 0.0), "lambd": attr("float", 0.5)},
    ),
    ("IsNaN", "is_nan", "x is NaN", "float", "i1", {}),
    (
        "IsInf",
        "is_inf",
        "x is +inf (when detect_positive) or -inf (when detect_negative)",
        "float",
        "i1",
        {"detect_negative": attr("bool", True), "detect_positive": attr("bool", True)},
    ),
    ("Not", "not", "logical not", "bool", "same", {}),
    ("BitwiseNot", "bitwise_not", "bitwise complement", "int", "same", {}),
)

BINARY: tuple[Row, ...] = (
    ("Add", "add", "a + b", "any", "same", {}),
    ("Sub", "sub", "a - b", "num", "same", {}),
    ("Mul", "mul", "a * b", "num", "same", {}),
    ("Div", "div", "a / b (integers: truncated toward zero)", "num", "same", {}),
    ("Pow", "pow", "a ** b", "num", "same", {}),
    (
        "Mod",
        "mod",
        "remainder with the sign of b (fmod = false) or of a (fmod = true, C fmod)",
        "num",
        "same",
        {"fmod": attr("bool", False)},
    ),
    ("Max", "max", "max(a, b) (NaN propagates)", "num", "same", {}),
    ("Min", "min", "min(a, b) (NaN propagates)", "num", "same", {}),
    ("PRelu", "prelu", "a if a >= 0 else b * a (b, the slope, broadcasts to a)", "float", "same", {}),
    ("Equal", "equal", "a == b", "any", "i1", {}),
    ("Less", "less", "a < b", "num", "i1", {}),
    ("LessOrEqual", "less_equal", "a <= b", "num", "i1", {}),
    ("Greater", "greater", "a > b", "num", "i1", {}),
    ("GreaterOrEqual", "greater_equal", "a >= b", "num", "i1", {}),
    ("And", "and", "logical and", "bool", "same", {}),
    ("Or", "or", "logical or", "bool", "same", {}),
    ("Xor", "xor", "logical exclusive or", "bool", "same", {}),
    ("BitwiseAnd", "bitwise_and", "bitwise and", "int", "same", {}),
    ("BitwiseOr", "bitwise_or", "bitwise or", "int", "same", {}),
    ("BitwiseXor", "bitwise_xor", "bitwise exclusive or", "int", "same", {}),
    (
        "BitShift",
        "bit_shift",
        'a << b (direction = "left") or a >> b ("right")',
        "int",
        "same",
        {"direction": attr("str", "left")},
    ),
)

CHOICES: dict[str, dict[str, tuple[str, ...]]] = {"BitShift": {"direction": ("left", "right")}}


def _example(op_name: str, arity: int, kind: str, rkind: str, attrs: Mapping[str, Attr]) -> tuple[str, dict]:
    t = f"tensor<1x4x{_EXAMPLE_TYPE[kind]}>"
    rt = "tensor<1x4xi1>" if rkind == "i1" else t
    args = ", ".join(["%x", "%z"][:arity])
    shown = {k: a.default for k, a in attrs.items() if a.default is not None}
    text = ""
    if shown:
        from pcc.printer import format_attr

        text = " {" + ", ".join(f"{k} = {format_attr(v)}" for k, v in shown.items()) + "}"
    return f"%y = nn.{op_name}({args}){text} : {rt}", {"%x": t, "%z": t}


def _declare(rows: tuple[Row, ...], base: type[Elementwise], arity: int) -> dict[str, type[Operation]]:
    out: dict[str, type[Operation]] = {}
    for cls_name, op_name, doc, kind, rkind, attrs in rows:
        assert kind in KINDS and rkind in ("same", "i1"), cls_name
        example, example_types = _example(op_name, arity, kind, rkind, attrs)
        ns: dict[str, Any] = {
            "__doc__": doc,
            "__module__": "pcc.dialects.nn",
            "__qualname__": cls_name,
            "name": f"nn.{op_name}",
            "kind": kind,
            "result_kind": rkind,
            "attrs": dict(attrs),
            "choices": CHOICES.get(cls_name, {}),
            "example": example,
            "example_types": example_types,
        }
        out[cls_name] = register_op(type(cls_name, (base,), ns))
    return out


UNARY_OPS = _declare(UNARY, ElementwiseUnary, 1)
BINARY_OPS = _declare(BINARY, ElementwiseBinary, 2)
globals().update(UNARY_OPS)
globals().update(BINARY_OPS)


@register_op
class Where(Elementwise):
    """``a`` where ``cond`` else ``b`` (all three broadcast together)."""

    name = "nn.where"
    operands_spec = ("cond", "a", "b")
    kind = "any"
    example = "%y = nn.where(%c, %x, %z) : tensor<1x4xf32>"
    example_types = {"%c": "tensor<1x4xi1>", "%x": "tensor<1x4xf32>", "%z": "tensor<1x4xf32>"}

    def verify_(self) -> None:
        c, a, b = self.operands
        if c.type.dtype != "i1":
            raise VerifyError(f"cond must be an i1 tensor, got {c.type}")
        if a.type.dtype != b.type.dtype or a.type.is_pent:
            raise VerifyError(f"a and b must have one non-pentary element type, got {a.type} and {b.type}")

    def infer_types(self) -> list[TensorType]:
        shape = broadcast_shapes(*(v.type.shape for v in self.operands))
        return [self.a.type.with_shape(shape)]


__all__ = ["Elementwise", "UNARY", "BINARY", "UNARY_OPS", "BINARY_OPS", "Where", *UNARY_OPS, *BINARY_OPS]
