"""Corrupted binaries: only PccError may come out, with a clear message, and nothing huge is allocated."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from pcc.backend import binary
from pcc.backend.assembler import assemble, assemble_file
from pcc.backend.disasm import disassemble
from pcc.diagnostics import PccError

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def blob() -> bytes:
    return binary.to_bytes(assemble_file(DATA / "features.pasm"))


def _read_or_error(data: bytes) -> object:
    try:
        return binary.from_bytes(data, "bad.pbin")
    except PccError as exc:
        assert exc.message.startswith("bad.pbin: corrupt .pbin: ")
        return exc


def test_truncated_at_every_offset(blob: bytes) -> None:
    for n in range(len(blob)):
        assert isinstance(_read_or_error(blob[:n]), PccError), n


def test_random_byte_flips_only_pcc_errors(blob: bytes) -> None:
    """A flip either is caught or yields a valid program that disassembles back to exactly these bytes."""
    rng = np.random.default_rng(1)
    accepted = 0
    for _ in range(1500):
        data = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(len(data)))] ^= int(rng.integers(1, 256))
        result = _read_or_error(bytes(data))
        if not isinstance(result, PccError):
            accepted += 1
            assert binary.to_bytes(assemble(disassemble(result))) == bytes(data)
    assert accepted < 1500


def _patch(blob: bytes, offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(blob)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


def _with_text(words: list[int]) -> bytes:
    payload = binary.pack_words(np.array(words, dtype=np.int64))
    n = 3
    header = binary.HEADER.pack(binary.MAGIC, binary.VERSION, 0, n, 16 + 24 * n + len(payload))
    table = binary.ENTRY.pack(binary.TEXT, 0, len(words), 0, 16 + 24 * n, len(payload))
    table += binary.ENTRY.pack(binary.SYMBOLS, 0, 0, 0, 16 + 24 * n + len(payload), 0)
    table += binary.ENTRY.pack(binary.IO, 0, 0, 0, 16 + 24 * n + len(payload), 0)
    return header + table + payload


CASES = [
    ("bad magic", lambda b: b"XBIN" + b[4:], "bad magic"),
    ("not a binary", lambda b: b"hello", "bad magic"),
    ("unknown version", lambda b: _patch(b, 4, "<H", 2), "unknown version 2"),
    ("reserved header", lambda b: _patch(b, 6, "<H", 1), "nonzero reserved header field"),
    ("file size too big", lambda b: _patch(b, 12, "<I", len(b) + 1), "truncated"),
    ("trailing bytes", lambda b: b + b"\x00", "trailing bytes"),
    ("huge section count", lambda b: _patch(b, 8, "<I", 0xFFFFFFFF), "section table of 4294967295 entries"),
    ("text length past end", lambda b: _patch(b, 16 + 20, "<I", 0xFFFFFF00), "do not fit the file"),
    ("huge word count", lambda b: _patch(b, 16 + 4, "<I", 0xFFFFFFFF), "words need"),
    ("section order", lambda b: _patch(b, 16, "<H", 3), "sections must be TEXT, DATA..., SYMBOLS, IO"),
    ("unknown section type", lambda b: _patch(b, 16, "<H", 9), "unknown type 9"),
    ("invalid opcode", lambda b: _with_text([2, 61]), "text word 1: invalid opcode 61"),
    ("zero opcode", lambda b: _with_text([0]), "text word 0: invalid opcode 0"),
    ("truncated instruction", lambda b: _with_text([41]), "MATMUL needs 4 words"),
    ("register out of range", lambda b: _with_text([5 + 125 * 40]), "register 40 out of range"),
]


@pytest.mark.parametrize("name, corrupt, message", CASES, ids=[c[0] for c in CASES])
def test_specific_corruptions(blob: bytes, name: str, corrupt: object, message: str) -> None:
    with pytest.raises(PccError) as info:
        binary.from_bytes(corrupt(blob), "bad.pbin")  # type: ignore[operator]
    assert message in info.value.message, info.value.message


def test_valid_handmade_text() -> None:
    prog = binary.from_bytes(_with_text([19 + 125 * 1 + 125 * 125 * 7, 2]))
    assert [(i.mnemonic, i.args) for i in prog.instructions] == [("MOVI", (1, 7)), ("HALT", ())]
