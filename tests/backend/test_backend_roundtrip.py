"""asm -> pbin -> disasm -> asm -> pbin is byte-identical; the fast path and the Lark path agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from pasm_gen import program

from pcc import pentary
from pcc.backend import binary
from pcc.backend.assembler import assemble, assemble_file
from pcc.backend.disasm import disassemble, incbin_writer
from pcc.backend.program import Program
from pcc.pentary import pack_pents, to_digits

DATA = Path(__file__).parent / "data"
CORPUS = sorted(DATA.glob("*.pasm"))


def _same(a: Program, b: Program) -> None:
    assert [(i.op, i.args, i.addr) for i in a.instructions] == [(i.op, i.args, i.addr) for i in b.instructions]
    assert [(s.addr, s.words.tolist()) for s in a.data] == [(s.addr, s.words.tolist()) for s in b.data]
    assert a.symbols == b.symbols and a.inputs == b.inputs and a.outputs == b.outputs


def roundtrip(prog: Program) -> bytes:
    blob = binary.to_bytes(prog)
    back = binary.from_bytes(blob, "x.pbin")
    _same(prog, back)
    text = disassemble(back)
    again = binary.to_bytes(assemble(text, "dis.pasm"))
    assert again == blob, text
    assert binary.to_bytes(assemble(disassemble(back, comments=False))) == blob
    return blob


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_roundtrip(path: Path) -> None:
    roundtrip(assemble_file(path))


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_fast_path_matches_lark(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    _same(assemble(text, str(path)), assemble(text, str(path), fast_path=False))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(program())
def test_generated_program_every_instruction(case: tuple[str, list[tuple[int, tuple[int, ...]]]]) -> None:
    text, expected = case
    prog = assemble(text, "gen.pasm")
    assert [(i.op, i.args) for i in prog.instructions] == expected
    _same(prog, assemble(text, "gen.pasm", fast_path=False))
    roundtrip(prog)


def test_sum_example_layout() -> None:
    prog = assemble_file(DATA / "sum.pasm")
    assert [i.mnemonic for i in prog.instructions] == [
        "MOVI", "MOVI", "ADD", "ADDI", "BNE", "MOVI", "STORE", "LOAD", "HALT",
    ]  # fmt: skip
    bne = prog.instructions[4]
    assert bne.addr + bne.arg("target") == prog.symbol("loop").addr
    assert prog.outputs[0].name == "total" and prog.outputs[0].addr == prog.symbol("result").addr
    assert prog.instructions[0].line == 4


def test_literals_and_symbols() -> None:
    prog = assemble(".equ K, 0p+=\n.text\nMOVI P1, 0p#0-\nMOVI P2, K\nMOVI P3, 0p⊖⊕\nADDI P4, P4, 0p-\nHALT\n")
    assert [i.args[-1] for i in prog.instructions[:4]] == [49, 3, -8, -1]


def test_incbin_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = rng.integers(-2, 3, size=16 * 300).astype(np.int8)
    (tmp_path / "w.bin").write_bytes(pack_pents(weights))
    src = tmp_path / "net.pasm"
    src.write_text('.text\nTLOADW 0, [P0 + w], 4800\nHALT\n.data\n.org 7\nw: .incbin "w.bin"\n.word 5\n')
    prog = assemble_file(src)
    words = prog.data[0].words
    assert words.size == 301 and words[-1] == 5 and prog.data[0].addr == 7
    digits = to_digits(words[:300], 16).reshape(-1)
    assert np.array_equal(digits, weights)
    blob = roundtrip(prog)
    # disassembling to a file with side files keeps the text small and the binary identical
    out = tmp_path / "dis.pasm"
    text = disassemble(binary.from_bytes(blob), incbin=incbin_writer(out), incbin_min=100)
    out.write_text(text)
    assert ".incbin" in text and len(text) < 2000
    assert binary.to_bytes(assemble_file(out)) == blob


def test_weights_cost_seven_thirds_bits() -> None:
    words = np.arange(-5000, 5000, dtype=np.int64) * 7_000_001
    prog = Program(data=[])
    from pcc.backend.program import DataSegment

    prog.data.append(DataSegment(0, words))
    blob = binary.to_bytes(prog)
    assert len(blob) < 16 * words.size * 7 / 3 / 8 + 200  # 16 pents a word at 7/3 bits a pent


@pytest.mark.parametrize("chunk", [24, 48, pentary._PACK_CHUNK])
def test_pack_pents_is_the_documented_bit_stream(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    # codes (d0+2) + 5 (d1+2) + 25 (d2+2), 7 bits each, MSB first, zero bits after the last: also across the
    # chunks the packer works in
    monkeypatch.setattr(pentary, "_PACK_CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    for n in [0, 1, 2, 3, 4, 23, 24, 25, 47, 48, 49, 1000, 1001]:
        p = rng.integers(-2, 3, n).astype(np.int8 if n % 2 else np.int64)
        d = np.concatenate([p, np.zeros(-n % 3, np.int64)]).reshape(-1, 3) + 2
        bits = "".join(f"{c:07b}" for c in d[:, 0] + 5 * d[:, 1] + 25 * d[:, 2])
        bits += "0" * (-len(bits) % 8)
        want = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))
        assert pack_pents(p) == want
        assert np.array_equal(pentary.unpack_pents(want, n), p)
    with pytest.raises(ValueError, match="-2..2"):
        pack_pents(np.array([0] * 30 + [3]))


def test_digits_are_the_balanced_base_five_expansion() -> None:
    rng = np.random.default_rng(1)
    for pents in range(1, pentary.MAX_WORD_PENTS + 1):
        m = pentary.word_max(pents)
        v = np.concatenate([[-m, m, 0, -1, 1], rng.integers(-m, m + 1, 40)])
        want = []
        for x in v.tolist():  # digit by digit in Python integers
            row = []
            for _ in range(pents):
                d = (x + 2) % 5 - 2
                row.append(d)
                x = (x - d) // 5
            want.append(row)
        got = to_digits(v, pents)
        assert got.dtype == np.int8 and got.tolist() == want
        assert to_digits(v.reshape(5, 9), pents).shape == (5, 9, pents)
        for d in (got, got.astype(np.int64)):
            assert pentary.from_digits(d).tolist() == v.tolist()
        with pytest.raises(ValueError, match="out of range"):
            to_digits(np.array([m + 1]), pents)
