"""Binary encoding of instructions, derived from the ISA table (:mod:`pcc.isa`).

An instruction is one balanced integer over its 16-pent words (word ``j`` holds pents ``16j .. 16j+15``,
little-endian): the opcode in pents 0..2, then each operand field in table order, each a balanced integer of its
width; unused pents are zero.  :func:`encode` and :func:`decode` are exact inverses on valid fields.
"""

from __future__ import annotations

import numpy as np

from pcc.isa import BY_OPCODE, DEFAULT_CONFIG, INSTRUCTIONS, WORD_MAX, WORD_PENTS, Instr
from pcc.pentary import word_max

_WORD_MOD = 5**WORD_PENTS


def _layout(ins: Instr) -> tuple[tuple[int, int, int], ...]:
    """(position, 5**width, word_max(width)) of each field; the opcode sits at position 0."""
    out, pos = [], DEFAULT_CONFIG.opcode_pents
    for f in ins.fields:
        out.append((pos, 5**f.pents, word_max(f.pents)))
        pos += f.pents
    return tuple(out)


_LAYOUT: dict[int, tuple[tuple[int, int, int], ...]] = {i.opcode: _layout(i) for i in INSTRUCTIONS}
_SCALE: dict[int, tuple[int, ...]] = {op: tuple(5**p for p, _, _ in lay) for op, lay in _LAYOUT.items()}


def encode(opcode: int, args: tuple[int, ...] | list[int]) -> list[int]:
    """The instruction words (balanced 16-pent integers) of an instruction; fields must already be in range."""
    ins = BY_OPCODE[opcode]
    v = opcode
    for a, s in zip(args, _SCALE[opcode], strict=True):
        v += a * s
    words = []
    for _ in range(ins.words):
        w = (v + WORD_MAX) % _WORD_MOD - WORD_MAX
        words.append(w)
        v = (v - w) // _WORD_MOD
    return words


class DecodeError(ValueError):
    """An instruction word sequence that no instruction encodes."""


def decode(words: list[int] | np.ndarray, at: int) -> tuple[int, tuple[int, ...], int]:
    """Decode the instruction starting at ``words[at]``: (opcode, field values, word count).

    Raises DecodeError for an unknown opcode, a truncated instruction, a field out of range or a nonzero
    unused pent.
    """
    w0 = int(words[at])
    opcode = (w0 + 62) % 125 - 62
    ins = BY_OPCODE.get(opcode)
    if ins is None:
        raise DecodeError(f"invalid opcode {opcode}")
    if at + ins.words > len(words):
        raise DecodeError(f"{ins.mnemonic} needs {ins.words} words, the code ends after {len(words) - at}")
    v = 0
    for j in range(ins.words - 1, -1, -1):
        v = v * _WORD_MOD + int(words[at + j])
    v = (v - opcode) // 125
    args = []
    for f, (_, mod, mx) in zip(ins.fields, _LAYOUT[opcode], strict=True):
        x = (v + mx) % mod - mx
        v = (v - x) // mod
        if not f.lo <= x <= f.hi:
            raise DecodeError(f"{ins.mnemonic}: {f.check(x)}")
        args.append(x)
    if v != 0:
        raise DecodeError(f"{ins.mnemonic}: nonzero unused pents in the instruction")
    return opcode, tuple(args), ins.words
