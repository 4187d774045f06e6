"""Malformed IR: each mistake gives one diagnostic at the right line:col (marked § in the text), no traceback.

Each case is data: a module text with a § where the caret must point, and a fragment of the expected message.
"""

from __future__ import annotations

import numpy as np
import pytest

from pcc.cli import main
from pcc.diagnostics import PccError
from pcc.parser import parse_module
from pcc.verifier import verify_module

HEAD = "module @m {\n  func @main(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {\n"
TAIL = "    return %y\n  }\n}\n"


def body(*lines: str) -> str:
    return HEAD + "".join(f"    {ln}\n" for ln in lines) + TAIL


def with_weight(decl: str, clause: str = "") -> str:
    """A valid module but for one weight declaration."""
    return f"module @m{clause} {{\n  {decl}\n" + body("%y = nn.relu(%x) : tensor<1x4xf32>")[len("module @m {\n") :]


CASES: dict[str, tuple[str, str]] = {
    "unknown op": (body("%y = §nn.relux(%x) : tensor<1x4xf32>"), "unknown op 'nn.relux'; did you mean nn.relu?"),
    "undefined value": (body("%y = nn.relu(§%z) : tensor<1x4xf32>"), "use of undefined value %z"),
    "redefined value": (
        body("%y = nn.relu(%x) : tensor<1x4xf32>", "§%y = nn.relu(%x) : tensor<1x4xf32>"),
        "value %y is defined twice",
    ),
    "operand type mismatch": (
        "module @m {\n  func @main(%x: tensor<1x4xf32>, %i: tensor<1x4xi32>) -> tensor<1x4xf32> {\n"
        "    §%y = nn.add(%x, %i) : tensor<1x4xf32>\n" + TAIL,
        "operand types differ",
    ),
    "missing attribute": (body("§%y = nn.reshape(%x) : tensor<1x4xf32>"), "missing required attribute 'shape'"),
    "mistyped attribute": (
        body("§%y = nn.reshape(%x) {shape = 4} : tensor<1x4xf32>"),
        "attribute 'shape' must be a list of ints",
    ),
    "unknown attribute": (body("§%y = nn.relu(%x) {alpha = 1.0} : tensor<1x4xf32>"), "unknown attribute 'alpha'"),
    "bad result shape": (
        "module @m {\n  func @main(%x: tensor<1x4xf32>) -> tensor<1x5xf32> {\n"
        "    §%y = nn.relu(%x) : tensor<1x5xf32>\n" + TAIL,
        "does not match the inferred type tensor<1x4xf32>",
    ),
    "bad dimension": (body("%y = nn.relu(%x) : §tensor<1xQxf32>"), "bad dimension 'Q'"),
    "unknown element type": (body("%y = nn.relu(%x) : §tensor<1x4xf33>"), "unknown element type 'f33'"),
    "wrong operand count": (body("§%y = nn.relu(%x, %x) : tensor<1x4xf32>"), "expected 1 operand(s) (x), got 2"),
    "result count mismatch": (
        body("%y, %z = §nn.relu(%x) : tensor<1x4xf32>"),
        "defines 2 result(s) but 1 result type(s)",
    ),
    "unterminated region": (
        HEAD + "    %y = nn.relu(%x) : tensor<1x4xf32>\n    return %y\n§",
        "unterminated region: expected '}'",
    ),
    "unterminated function": (
        HEAD + "    %y = nn.relu(%x) : tensor<1x4xf32>\n§",
        "function @main is not terminated",
    ),
    "bad pentary literal": (
        with_weight("weight @w : tensor<2xp5> = dense<[0p+, §0p+3]>"),
        "bad pentary literal '0p+3'",
    ),
    "pent out of range": (
        with_weight("weight @w : tensor<2xp5> = dense<[0p+, §3]>"),
        "value 3 out of range [-2, 2] of p5",
    ),
    "dense size mismatch": (
        with_weight("weight §@w : tensor<3xf32> = dense<[1.0, 2.0]>"),
        "dense literal has 2 values but tensor<3xf32> holds 3",
    ),
    "missing weight": (
        with_weight("weight §@w : tensor<4x4xf32>"),
        "weight @w: no data for it",
    ),
    "undeclared weight": (
        body("%y = nn.matmul(%x, §@w) : tensor<1x4xf32>"),
        "use of undeclared weight @w",
    ),
    "return type mismatch": (
        "module @m {\n  func @main(%x: tensor<1x4xf32>) -> tensor<1x8xf32> {\n"
        "    %y = nn.relu(%x) : tensor<1x4xf32>\n    return §%y\n  }\n}\n",
        "returned value %y has type tensor<1x4xf32> but @main declares tensor<1x8xf32>",
    ),
    "missing result types": (body("%y = nn.relu(%x) §return"), "unexpected"),
    "stray character": (body("%y = nn.relu(%x) : tensor<1x4xf32> §?"), "unexpected character '?'"),
    "malformed attribute": (
        body("%y = nn.leaky_relu(%x) {alpha = §} : tensor<1x4xf32>"),
        "expected an attribute value",
    ),
}


def locate(marked: str) -> tuple[str, int, int]:
    idx = marked.index("§")
    text = marked.replace("§", "", 1)
    line = marked.count("\n", 0, idx) + 1
    col = idx - (marked.rfind("\n", 0, idx) + 1) + 1
    return text, line, col


@pytest.mark.parametrize("case", sorted(CASES))
def test_diagnostic(case: str) -> None:
    marked, expected = CASES[case]
    text, line, col = locate(marked)
    with pytest.raises(PccError) as info:
        verify_module(parse_module(text, "bad.pir"))
    err = info.value
    assert expected in err.message, err.format()
    assert (err.loc.file, err.loc.line, err.loc.col) == ("bad.pir", line, col), err.format()
    formatted = err.format().splitlines()
    assert formatted[0].startswith(f"bad.pir:{line}:{col}: error: ")
    assert formatted[1].strip() == text.splitlines()[line - 1].strip() if line <= len(text.splitlines()) else True
    assert formatted[2].strip() == "^"


def test_at_least_twenty_distinct_mistakes() -> None:
    assert len(CASES) >= 20
    assert len({m for _, m in CASES.values()}) == len(CASES)


def test_weight_shape_mismatch(tmp_path) -> None:
    text = with_weight("weight @w : tensor<4x4xf32>", ' weights("m.npz")')
    (tmp_path / "m.pir").write_text(text)
    np.savez(tmp_path / "m.npz", w=np.zeros((4, 5), np.float32))
    rc, err = _cli(tmp_path / "m.pir")
    assert rc == 1
    assert f"{tmp_path / 'm.pir'}:2:10: error: weight @w: declared tensor<4x4xf32> but the data has shape [4, 5]" in err


def test_invalid_npz(tmp_path) -> None:
    text = with_weight("weight @w : tensor<4x4xf32>", ' weights("m.npz")')
    (tmp_path / "m.pir").write_text(text)
    (tmp_path / "m.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    rc, err = _cli(tmp_path / "m.pir")
    assert rc == 1 and "is not a valid .npz archive" in err and ":1:19:" in err


def test_pickled_npz_is_refused(tmp_path) -> None:
    text = with_weight("weight @w : tensor<2xf32>", ' weights("m.npz")')
    (tmp_path / "m.pir").write_text(text)
    np.savez(tmp_path / "m.npz", w=np.array([{"evil": 1}, None], dtype=object))
    rc, err = _cli(tmp_path / "m.pir")
    assert rc == 1 and "Traceback" not in err and "weight @w" in err


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_prints_one_diagnostic_and_no_traceback(case: str, tmp_path) -> None:
    text, line, col = locate(CASES[case][0])
    f = tmp_path / "bad.pir"
    f.write_text(text)
    rc, err = _cli(f)
    assert rc == 1
    assert "Traceback" not in err
    assert err.startswith(f"{f}:{line}:{col}: error: ")


def _cli(path) -> tuple[int, str]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["opt", str(path)])
    return rc, buf.getvalue()
