"""Op declarations: typed operands and results checked by the verifier, named accessors, declaration errors."""

from __future__ import annotations

import pytest

from pcc.ir import Operation, TensorType, Value, VerifyError
from pcc.verifier import verify_op


class Scaled(Operation):  # not registered: the registry-driven tests enumerate only the real dialects
    name = "test.scaled"
    operands_spec = ("x: pword", "w: p5", "b?: p16", "extra?")
    results_spec = ("y: pword",)


class Joined(Operation):
    name = "test.joined"
    operands_spec = ("first: float", "rest*: float")


def _v(shape: tuple[int, ...], dtype: str) -> Value:
    return Value("v", TensorType(shape, dtype), kind="arg")


def test_named_accessors() -> None:
    x, w = _v((1, 4), "p8"), _v((4, 4), "p5")
    op = Scaled([x, w], [TensorType((1, 4), "p8")])
    assert op.x is x and op.w is w and op.b is None and op.extra is None
    assert op.y is op.results[0]
    b = _v((4,), "p16")
    assert Scaled([x, w, b], [TensorType((1, 4), "p8")]).b is b
    a, c, d = (_v((2,), "f32") for _ in range(3))
    j = Joined([a, c, d], [TensorType((2,), "f32")])
    assert j.first is a and j.rest == [c, d] and j.out is j.results[0]
    assert Scaled.operands_spec == ("x", "w", "b?", "extra?")


def test_types_are_verified() -> None:
    ok = Scaled([_v((1, 4), "p8"), _v((4, 4), "p5")], [TensorType((1, 4), "p8")])
    verify_op(ok)
    bad_w = Scaled([_v((1, 4), "p8"), _v((4, 4), "f32")], [TensorType((1, 4), "p8")])
    with pytest.raises(VerifyError, match=r"operand 'w' must be a p5 tensor, got tensor<4x4xf32>"):
        verify_op(bad_w)
    bad_x = Scaled([_v((1, 4), "p5"), _v((4, 4), "p5")], [TensorType((1, 4), "p8")])
    with pytest.raises(VerifyError, match=r"operand 'x' must be an N-pent word tensor \(pN\)"):
        verify_op(bad_x)
    bad_res = Scaled([_v((1, 4), "p8"), _v((4, 4), "p5")], [TensorType((1, 4), "f32")])
    with pytest.raises(VerifyError, match=r"result 'y' must be an N-pent word tensor"):
        verify_op(bad_res)
    bad_rest = Joined([_v((2,), "f32"), _v((2,), "f32"), _v((2,), "i64")], [TensorType((2,), "f32")])
    with pytest.raises(VerifyError, match=r"operand 'rest' must be a float tensor"):
        verify_op(bad_rest)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (("a?", "b"), "only the last operands may be optional"),
        (("a*", "b"), "only the last operands may be optional or variadic"),
        (("x: q7",), "unknown element type 'q7'"),
        (("results",), "clashes with an Operation attribute"),
        (("Bad-Name",), "bad operand name"),
    ],
)
def test_bad_declarations_fail_at_class_creation(spec: tuple[str, ...], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        type("Broken", (Operation,), {"name": "test.broken", "operands_spec": spec})


def test_matmul_shape_equals_numpy_on_every_pair_of_ranks() -> None:
    """nn.matmul's type inference works from the shapes (it used to multiply boolean arrays of the operands' full
    shapes: 68 s for a GPT-2 LM head); every pair from 1-D to 4-D, broadcasting and mismatches, against numpy."""
    import itertools

    import numpy as np

    from pcc.dialects.nn_base import matmul_shape

    shapes = [(3,), (4,), (3, 4), (4, 5), (2, 3, 4), (1, 4, 5), (2, 1, 4, 3), (7, 3, 4), (5, 4), (4, 3), (2, 5, 4, 6)]
    for a, b in itertools.product(shapes, shapes):
        try:
            want = np.matmul(np.empty(a, bool), np.empty(b, bool)).shape
        except ValueError:
            want = None
        try:
            got = matmul_shape(a, b)
        except ValueError:
            got = None
        assert got == want, (a, b)
