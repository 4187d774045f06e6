"""The instruction table, the encoding and the integer primitives."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pasm_gen import instruction

from pcc import isa, isa_encoding
from pcc.pentary import word_max

PUBLISHED = (
    "ADD SUB ADDI NEG ABS MUL2 DIV2 MAC MIN MAX CLAMP SIGN MOVI LOAD STORE LOADV STOREV PUSH POP "
    "BEQ BNE BLT BGT JUMP CALL RET NOP HALT SYNC FENCE MATVEC RELU QUANT POOL CONV"
).split()
TENSOR = "TLOAD TSTORE TLOADW TLOADC TSTOREC MATMUL CONV REQUANT REQUANTC EADD POOL TRELU TCLAMP TLUT".split()


def test_every_published_and_tensor_instruction_exists() -> None:
    missing = [m for m in PUBLISHED + TENSOR if m not in isa.BY_MNEMONIC]
    assert missing == []


def test_opcodes_unique_and_fit_the_field() -> None:
    codes = [i.opcode for i in isa.INSTRUCTIONS]
    assert len(set(codes)) == len(codes)
    assert all(1 <= c <= word_max(isa.DEFAULT_CONFIG.opcode_pents) for c in codes)
    assert isa.Op.ADD == isa.BY_MNEMONIC["ADD"].opcode and isa.Op(1).name == "NOP"


@pytest.mark.parametrize("ins", isa.INSTRUCTIONS, ids=lambda i: i.mnemonic)
def test_fields_fit_the_encoding(ins: isa.Instr) -> None:
    used = isa.DEFAULT_CONFIG.opcode_pents + sum(f.pents for f in ins.fields)
    assert used <= ins.words * isa.DEFAULT_CONFIG.instr_word_pents
    assert (ins.words == 1) == (not ins.is_tensor)
    for f in ins.fields:
        if f.kind is isa.Kind.REG:
            assert (f.pents, f.lo, f.hi) == (3, 0, 31)
    assert ins.semantics and ins.cycles


@pytest.mark.parametrize("ins", isa.INSTRUCTIONS, ids=lambda i: i.mnemonic)
def test_cost_is_positive_integer_on_edge_operands(ins: isa.Instr) -> None:
    for pick in (lambda f: f.lo, lambda f: f.hi, lambda f: max(f.lo, min(f.hi, 1))):
        args = tuple(pick(f) for f in ins.fields)
        if ins.check(*args):
            c = isa.cycles(ins, args)
            assert isinstance(c, int) and c >= 1


def test_matmul_cost_charges_array_passes() -> None:
    mm = isa.BY_MNEMONIC["MATMUL"]
    cfg = isa.MachineConfig(mac_rows=32, mac_cols=32)
    # 64x64x576: 18 K-tiles x 2 N-tiles, each loaded (32) and streamed (64 rows)
    assert isa.cycles(mm, (0, 0, 0, 64, 64, 576, 0), cfg) == 18 * 2 * (64 + 32)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(isa.INSTRUCTIONS).flatmap(instruction))
def test_encode_decode_roundtrip(item: tuple[isa.Instr, tuple[int, ...]]) -> None:
    ins, args = item
    words = isa_encoding.encode(ins.opcode, args)
    assert len(words) == ins.words
    assert all(abs(w) <= isa.WORD_MAX for w in words)
    assert isa_encoding.decode(words, 0) == (ins.opcode, args, ins.words)


@pytest.mark.parametrize(
    "words, message",
    [
        ([0], "invalid opcode 0"),
        ([61], "invalid opcode 61"),
        ([isa.Op.MATMUL], "needs 4 words"),
        ([isa.Op.ADD + 125 * 40], "register 40 out of range"),
        ([isa.Op.HALT + 125 * 7], "nonzero unused pents"),
    ],
)
def test_decode_rejects(words: list[int], message: str) -> None:
    with pytest.raises(isa_encoding.DecodeError, match=message):
        isa_encoding.decode(words, 0)


def _ref_round(x: int, m: int, s: int, cap: int) -> int:
    q = (abs(x) * m + ((1 << (s - 1)) if s else 0)) >> s
    q = min(q, cap)
    return -q if x < 0 else q


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.integers(-isa.ACC_MAX, isa.ACC_MAX), st.integers(-(2**40), 2**40), st.integers(-9, 9)),
            st.one_of(st.integers(0, isa.MULT_MAX), st.sampled_from([0, 1, isa.MULT_MAX])),
            st.integers(0, isa.SHIFT_MAX),
        ),
        min_size=1,
        max_size=50,
    ),
    st.sampled_from([isa.ACC_MAX, isa.WORD_MAX, word_max(4), 2]),
)
def test_mul_shift_round_is_exact(rows: list[tuple[int, int, int]], cap: int) -> None:
    x, m, s = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    got = isa.mul_shift_round(x, m, s, cap).tolist()
    assert got == [_ref_round(a, b, c, cap) for a, b, c in rows]


@pytest.mark.parametrize(
    "x, m, s, pents, out, clipped",
    [
        ([5, -5, 6, -6, 7], 1, 1, 4, [3, -3, 3, -3, 4], False),  # 2.5 -> 3, -2.5 -> -3: ties away from zero
        ([1000, -1000], 3, 2, 4, [312, -312], True),  # 750 saturates to the 4-pent range
        ([isa.ACC_MAX, -isa.ACC_MAX], isa.MULT_MAX, 62, 16, [493038065, -493038065], False),  # exact beyond 64 bits
    ],
)
def test_requantize(x: list[int], m: int, s: int, pents: int, out: list[int], clipped: bool) -> None:
    got, did_clip = isa.requantize(np.array(x), m, s, pents)
    assert got.tolist() == out and did_clip == clipped


def test_div_round_and_wrap() -> None:
    assert isa.div_round(np.array([5, -5, 4, -4, 7]), 2).tolist() == [3, -3, 2, -2, 4]
    assert isa.div_round(np.array([10, 11, -11]), 4).tolist() == [3, 3, -3]
    assert isa.wrap(isa.WORD_MAX + 1) == -isa.WORD_MAX
    assert isa.wrap(-isa.WORD_MAX - 1) == isa.WORD_MAX
    assert isa.saturate(10**20, 27) == isa.ACC_MAX


def test_static_constraints() -> None:
    conv = isa.BY_MNEMONIC["CONV"]
    ok = (0, 0, 0, 4, 4, 2, 4, 3, 3, 1, 1, 1, 1, 1, 1, 2, 0)
    assert conv.violated(ok) is None
    bad_groups = ok[:15] + (3,) + ok[16:]
    assert conv.violated(bad_groups) == "ic % groups == 0"
    assert isa.BY_MNEMONIC["LOADV"].violated((30, 0, 0, 3)) == "rd + n <= 32"
