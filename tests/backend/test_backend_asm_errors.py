"""Malformed assembly: each mistake gives its own message at the right line:col, with the line and a caret."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcc.backend.assembler import assemble
from pcc.diagnostics import PccError

# (name, source, expected message fragment, line, column)
CASES = [
    ("syntax-double-comma", "ADD P1,, P2\n", "syntax error: unexpected ','", 1, 8),
    ("bad-character", "ADD P1, P2, P3 @\n", "unexpected character '@'", 1, 16),
    ("hash-glued", "ADD P1, P2, P3#c\n", "'#' starts a comment only", 1, 15),
    ("unknown-mnemonic", "NOP\n  ADDD P1, P2, P3\n", "unknown mnemonic 'ADDD'; did you mean 'ADD'?", 2, 3),
    ("unknown-mnemonic-far", "FROB P1\n", "unknown mnemonic 'FROB'", 1, 1),
    ("directive-without-dot", "word 5\n", "directives start with '.'", 1, 1),
    ("unknown-directive", ".dta\n", "unknown directive '.dta'; did you mean '.data'?", 1, 1),
    ("too-few-operands", "ADD P1, P2\n", "ADD takes 3 operands", 1, 1),
    ("too-many-operands", "NEG P1, P2, P3\n", "NEG takes 2 operands", 1, 13),
    ("register-expected", "ADD P1, 5, P3\n", "expected a register (P0..P31) for rs1, got '5'", 1, 9),
    ("register-out-of-range", "ADD P1, P32, P3\n", "got 'P32'", 1, 9),
    ("immediate-expected", "ADDI P1, P2, P3\n", "expected an immediate for imm, got register P3", 1, 14),
    ("memory-expected", "LOAD P1, P2\n", "expected a memory operand [Pb + offset], got 'P2'", 1, 10),
    ("memory-not-allowed", "ADD P1, [P2], P3\n", "got a memory operand", 1, 10),
    ("memory-base-not-register", "LOAD P1, [foo + 1]\n", "base of a memory operand must be a register", 1, 11),
    ("immediate-too-big", "ADDI P1, P1, 39063\n", "imm 39063 out of range [-39062, 39062] (s7 field)", 1, 14),
    ("offset-too-big", "LOAD P1, [P2 - 39063]\n", "off -39063 out of range", 1, 16),
    ("movi-too-big", "MOVI P1, 0p#0000000000\n", "imm 19531250 out of range", 1, 10),
    ("bad-pent-literal", "MOVI P1, 0p+2-\n", "bad pentary literal '0p+2-'", 1, 13),
    ("empty-pent-literal", "MOVI P1, 0p\n", "needs at least one digit", 1, 10),
    ("not-an-integer", "MOVI P1, 1.5\n", "expected an integer, got '1.5'", 1, 10),
    ("undefined-label", "loop: NOP\nBNE P1, lop\n", "undefined label 'lop'; did you mean 'loop'?", 2, 9),
    ("undefined-symbol", "MOVI P1, cnt\n", "undefined symbol 'cnt'", 1, 10),
    ("duplicate-label", "a: NOP\nb: NOP\n  a: HALT\n", "duplicate label 'a' (first defined at line 1)", 3, 3),
    ("label-is-register", "SP: NOP\n", "'SP' is a register name", 1, 1),
    ("data-label-as-target", "JUMP x\n.data\nx: .word 1\n", "'x' is a .data label", 1, 6),
    ("branch-too-far", "BEQ P1, 4882813\n", "branch offset 4882813 out of range", 1, 9),
    ("instruction-in-data", ".data\nADD P1, P2, P3\n", "instruction ADD in the .data section", 2, 1),
    ("word-in-text", ".word 1\n", ".word is only allowed in the .data section", 1, 1),
    ("word-too-big", ".data\n.word 76293945313\n", "does not fit a 16-pent word", 2, 7),
    ("org-negative", ".data\n.org -1\n", "address -1 out of range", 2, 6),
    ("overlapping-data", ".data\n.word 1, 2\n.org 1\n.word 3\n", "overlaps the data at 0..1", 4, 1),
    ("missing-incbin", '.data\n.incbin "nope.bin"\n', "cannot read include file 'nope.bin'", 2, 9),
    ("incbin-not-string", ".data\n.incbin nope\n", "file name in double quotes", 2, 9),
    ("loadv-past-p31", "LOADV P30, [P0 + 0], 3\n", "constraint 'rd + n <= 32'", 1, 1),
    (
        "conv-groups",
        "CONV 0, 0, 0, 4, 4, 3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 2, 0\n",
        "constraint 'ic % groups == 0'",
        1,
        1,
    ),
    ("stride-zero", "POOL 0, 0, 4, 4, 1, 2, 2, 0, 1, 0, 0, 0, 0, 0\n", "sh 0 out of range [1, 12]", 1, 27),
    ("io-missing-key", ".input x, shape=[1], pents=4, addr=0\n", "'x' is missing scale", 1, 1),
    (
        "io-unknown-key",
        ".output y, shape=[1], pents=4, scal=1.0, addr=0\n",
        "unknown key 'scal'; did you mean 'scale'?",
        1,
        32,
    ),
    ("io-bad-scale", ".input x, shape=[1], pents=4, scale=-1, addr=0\n", "scale must be a positive number", 1, 37),
    (
        "io-bad-order",
        ".input x, shape=[1, 2], pents=4, scale=1, addr=0, order=[0, 0]\n",
        "order must be a permutation",
        1,
        51,
    ),
    ("io-bad-pents", ".input x, shape=[1], pents=17, scale=1, addr=0\n", "pents must be in 1..16", 1, 28),
    (
        "io-duplicate",
        ".input x, shape=[1], pents=4, scale=1, addr=0\n.output x, shape=[1], pents=4, scale=1, addr=0\n",
        "duplicate I/O name 'x'",
        2,
        9,
    ),
    ("equ-forward", ".data\n.zero N\n.equ N, 3\n", "'N' is not a constant defined earlier", 2, 7),
    ("unexpected-eof-in-mem", "LOAD P1, [P2 +\n", "syntax error: unexpected end of line", 1, 15),
    ("label-missing-colon", "loop\n  NOP\nBNE P1, loop\n", "unknown mnemonic 'loop' (a label needs a ':')", 1, 1),
]


@pytest.mark.parametrize("name, source, message, line, col", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "lark"])
def test_malformed(name: str, source: str, message: str, line: int, col: int, fast_path: bool, tmp_path: Path) -> None:
    with pytest.raises(PccError) as info:
        assemble(source, "bad.pasm", tmp_path, fast_path=fast_path)
    err = info.value
    assert message in err.message
    assert (err.loc.file, err.loc.line, err.loc.col) == ("bad.pasm", line, col), err.format()
    text = err.format()
    assert text.startswith(f"bad.pasm:{line}:{col}: error: ")
    src_line = source.splitlines()[line - 1]
    assert text.splitlines()[1] == "  " + src_line
    assert text.splitlines()[2] == "  " + " " * (col - 1) + "^"


def test_at_least_twenty_distinct_mistakes() -> None:
    assert len({c[2] for c in CASES}) >= 20


def test_bad_incbin_size(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"\x00" * 3)
    with pytest.raises(PccError, match="not a whole number of packed 16-pent words"):
        assemble('.data\n.incbin "w.bin"\n', "bad.pasm", tmp_path)


ALPHABET = st.sampled_from(
    ["ADD", "ADDI", "LOAD", "MOVI", "BNE", "CONV", "HALT", ".data", ".text", ".word", ".org", ".equ", ".input",
     "P1", "SP", "x", "lbl", "0p+#", "0p2", "12", "-3", "1.5", "39063", ",", ":", "[", "]", "+", "-", " ", " ",
     "\n", "\n", ";c", " #c", "#", "=", '"f"', "shape=[1]", "@"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(ALPHABET, max_size=40).map("".join))
def test_fuzz_only_pcc_errors_and_both_paths_agree(text: str) -> None:
    """Any text either assembles or raises PccError, and the fast path and the Lark path agree exactly."""
    outcomes = []
    for fast in (True, False):
        try:
            prog = assemble(text, "fuzz.pasm", fast_path=fast)
            outcomes.append([(i.op, i.args, i.addr, i.line) for i in prog.instructions])
        except PccError as exc:
            outcomes.append(exc.format())
    assert outcomes[0] == outcomes[1]
