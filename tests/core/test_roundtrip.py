"""print -> parse -> print is the identity for every registered op (driven by the op registry)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import pcc.dialects  # noqa: F401
from pcc.ir import OP_REGISTRY, Module, TensorType, parse_type
from pcc.parser import parse_module
from pcc.printer import INLINE_LIMIT, print_module
from pcc.verifier import verify_module

DEFAULT_TYPE = "tensor<1x4xf32>"
OPS = sorted(n for n in OP_REGISTRY if n != "func.return")


def example_module(name: str) -> tuple[str, dict[str, np.ndarray]]:
    """A whole module around the op's one-line example: its operands become arguments or weights."""
    cls = OP_REGISTRY[name]
    line = cls.example
    assert line, f"{name} has no example"
    head, _, types = line.partition(" : ")
    paren = head.index("(")
    lhs, _, _ = head[:paren].rpartition(" = ")
    call = head[paren : head.index(")") + 1]
    operands = re.findall(r"[%@][A-Za-z0-9_.]+", call)
    results = re.findall(r"%[A-Za-z0-9_.]+", lhs)
    result_types = re.findall(r"tensor<[^>]*>", types)
    rng = np.random.default_rng(0)
    args, decls, weights = [], [], {}
    for ref in dict.fromkeys(operands):
        t = parse_type(cls.example_types.get(ref, DEFAULT_TYPE))
        if ref.startswith("@"):
            data = _random(t, rng)
            if t.size <= INLINE_LIMIT:
                m = Module()
                m.add_weight(ref[1:], data, t.dtype)
                decls.append(print_module(m).splitlines()[1])
            else:
                weights[ref[1:]] = data
                decls.append(f"  weight {ref} : {t}")
        else:
            args.append(f"{ref}: {t}")
    ret_t = result_types[0] if len(result_types) == 1 else "(" + ", ".join(result_types) + ")"
    lines = [f"module @{name.replace('.', '_')} {{", *decls, f"  func @main({', '.join(args)}) -> {ret_t} {{"]
    lines += [f"    {line}", f"    return {', '.join(results)}", "  }", "}"]
    return "\n".join(lines) + "\n", weights


def _random(t: TensorType, rng: np.random.Generator) -> np.ndarray:
    if t.is_pent:
        lo, hi = t.value_range
        return rng.integers(lo, hi + 1, size=t.shape).astype(t.np_dtype)
    if t.dtype == "i1":
        return rng.integers(0, 2, size=t.shape).astype(bool)
    if t.is_float:
        return rng.standard_normal(t.shape).astype(t.np_dtype)
    return rng.integers(-5, 6, size=t.shape).astype(t.np_dtype)


def test_every_op_has_an_example() -> None:
    missing = [n for n in OPS if not OP_REGISTRY[n].example]
    assert not missing, f"ops without an example: {missing}"
    assert len(OPS) >= 30  # the registry is really populated


@pytest.mark.parametrize("name", OPS)
def test_roundtrip(name: str) -> None:
    text, weights = example_module(name)
    m = parse_module(text, f"<{name}>", weights=weights)
    verify_module(m)
    printed = print_module(m)
    assert printed == text, "the op's example is not in canonical printed form"
    m2 = parse_module(printed, weights=weights)
    verify_module(m2)
    assert print_module(m2) == printed


def test_quoted_names_and_locations_roundtrip() -> None:
    text = (
        "module @m {\n"
        '  func @main(%"in put": tensor<1x4xf32>) -> tensor<1x4xf32> {\n'
        '    %"/layer1/Relu_output_0" = nn.relu(%"in put") : tensor<1x4xf32> loc("model.onnx" : "/layer1/Relu")\n'
        '    %"a,b" = nn.add(%"/layer1/Relu_output_0", %"in put") : tensor<1x4xf32> loc("add_1")\n'
        '    return %"a,b"\n'
        "  }\n"
        "}\n"
    )
    m = parse_module(text)
    verify_module(m)
    assert print_module(m) == text
    op = m.main.ops[0]
    assert op.loc.node == "/layer1/Relu" and op.loc.file == "model.onnx"
    assert (op.pos.line, op.pos.col) == (3, 5)


def test_pentary_and_float_literals_roundtrip_exactly() -> None:
    m = Module("lits")
    w = np.array([[-2, -1, 0, 1, 2, 2]], np.int8)
    m.add_weight("w", w, "p5")
    words = np.array([-31, 0, 31, 12], np.int64)
    m.add_weight("a", words, "p3")
    f = np.array([0.1, -1e-30, 3.4e38, np.float32(1) / 3], np.float32)
    m.add_weight("f", f)
    text = print_module(m)
    assert "0p=" in text and "0p#" in text  # pents print as balanced-pentary literals
    m2 = parse_module(text)
    verify_module(m2)
    np.testing.assert_array_equal(m2.weight_data["w"], w)
    np.testing.assert_array_equal(m2.weight_data["a"], words)
    assert m2.weight_data["f"].tobytes() == f.tobytes()  # bit-exact floats
    assert print_module(m2) == text
