"""Time-boxed fuzzing of the three text/binary readers: whatever the input, only a PccError comes out.

Inputs are built from each format's own tokens (so they get past the lexer and reach the parser, the
verifier and the assembler's checks) and from mutations of valid files.  Each test stops after a few
seconds of examples (``max_examples`` bounds the count, the ``deadline`` of the profile is off).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcc.backend import binary
from pcc.backend.assembler import assemble, assemble_file
from pcc.diagnostics import PccError
from pcc.parser import parse_module
from pcc.verifier import verify_module

DATA = Path(__file__).resolve().parents[1] / "backend" / "data"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

VALID_IR = (
    "module @m {\n  weight @w : tensor<2x2xf32> = dense<[1.0, 2.0, 3.0, 4.0]>\n"
    "  func @main(%x: tensor<1x2xf32>) -> tensor<1x2xf32> {\n"
    "    %y = nn.gemm(%x, @w) {trans_b = true} : tensor<1x2xf32>\n"
    "    %z = nn.relu(%y) : tensor<1x2xf32>\n    return %z\n  }\n}\n"
)
IR_TOKENS = [
    "module", "@m", "func", "@main", "weight", "@w", "%x", "%y", "%z", "(", ")", "{", "}", "[", "]", "<", ">",
    ":", ",", "=", "->", "tensor<1x2xf32>", "tensor<2x2xp5>", "tensor<99999999999xf32>", "nn.relu", "nn.gemm",
    "nn.add", "pent.matmul", "return", "dense<[1, 2]>", "true", "1", "-5", "1e300", "nan", '"s"', "\n", " ",
    "0p12", "x" * 50,
]  # fmt: skip


def _only_pcc_errors(fn, *args) -> None:  # noqa: ANN001
    try:
        fn(*args)
    except PccError as exc:
        assert exc.format()  # formats without raising


def _parse_and_verify(text: str) -> None:
    verify_module(parse_module(text, "fuzz.pir"))


@FUZZ
@given(st.lists(st.sampled_from(IR_TOKENS), max_size=60).map(" ".join))
def test_ir_token_soup(text: str) -> None:
    _only_pcc_errors(_parse_and_verify, text)


@FUZZ
@given(st.integers(0, len(VALID_IR)), st.integers(0, 40), st.text(max_size=12))
def test_ir_mutations(at: int, cut: int, insert: str) -> None:
    _only_pcc_errors(_parse_and_verify, VALID_IR[:at] + insert + VALID_IR[at + cut :])


ASM_TOKENS = [
    ".text", ".data", ".word", ".zero", ".org", ".equ", ".input", ".output", ".incbin", "MOVI", "ADD", "ADDI",
    "LOAD", "STORE", "BNE", "JMP", "HALT", "MATMUL", "P1", "P2", "P15", "P99", "[", "]", "+", ",", "=", "label:",
    "label", "0", "1", "-5", "99999999999", "0p12", "shape=[4]", "pents=8", "scale=1.0", "addr=0", "x", '"w.bin"',
    "\n", " ", ";c",
]  # fmt: skip


@FUZZ
@given(st.lists(st.sampled_from(ASM_TOKENS), max_size=60).map(" ".join))
def test_asm_token_soup(text: str) -> None:
    _only_pcc_errors(assemble, text)


@pytest.fixture(scope="module")
def pbin() -> bytes:
    return binary.to_bytes(assemble_file(DATA / "every.pasm"))


@FUZZ
@given(data=st.data())
def test_pbin_mutations(pbin: bytes, data: st.DataObject) -> None:
    blob = bytearray(pbin)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    _only_pcc_errors(binary.from_bytes, bytes(blob[:cut]), "fuzz.pbin")


@FUZZ
@given(st.binary(max_size=300))
def test_pbin_random_bytes(blob: bytes) -> None:
    _only_pcc_errors(binary.from_bytes, b"PBIN" + blob, "fuzz.pbin")
