"""Balanced base-5 ("pentary") numbers: digits, words, literals and dense packing.

A *pent* is one balanced base-5 digit with a value in {-2, -1, 0, +1, +2}. An N-pent *word* holds integers in
``[-(5**N - 1) / 2, (5**N - 1) / 2]``. Digits are stored little-endian (digit 0 is the least significant).

Literal notation, shared by the IR text and the assembler: ``0p`` followed by digits, most significant first,
written ``=`` (-2), ``-`` (-1), ``0``, ``+`` (+1), ``#`` (+2); the published symbols ``⊖`` and ``⊕`` are accepted
for -2 and +2.  Example: ``0p+=`` is 1*5 - 2 = 3, ``0p#0-`` is 2*25 + 0*5 - 1 = 49.

Packing: three pents make one code ``(d0+2) + 5*(d1+2) + 25*(d2+2)`` in 0..124, stored in 7 bits, so a pent costs
7/3 = 2.33 bits (the information limit is log2 5 = 2.32).  Codes are concatenated MSB-first into bytes.
"""

from __future__ import annotations

import numpy as np

PENT_MIN = -2
PENT_MAX = 2
MAX_WORD_PENTS = 27  # the widest word whose range fits an int64

DIGIT_CHARS = {-2: "=", -1: "-", 0: "0", 1: "+", 2: "#"}
CHAR_DIGITS = {"=": -2, "⊖": -2, "-": -1, "0": 0, "+": 1, "#": 2, "⊕": 2}


def word_max(pents: int) -> int:
    """Largest value of an N-pent word, (5**N - 1) // 2."""
    return (5**pents - 1) // 2


def word_range(pents: int) -> tuple[int, int]:
    m = word_max(pents)
    return -m, m


def pents_needed(value: int) -> int:
    """The fewest pents whose word holds ``value`` (at least 1)."""
    n = 1
    while abs(int(value)) > word_max(n):
        n += 1
    return n


def _digit_table(pents: int) -> np.ndarray:
    """Row ``u`` (``0 <= u < 5**pents``) holds the balanced digits of ``u - word_max(pents)``: the ordinary
    base-5 digits of ``u``, less 2 each."""
    u = np.arange(5**pents, dtype=np.int64)
    t = np.empty((u.size, pents), dtype=np.int8)
    for j in range(pents):
        t[:, j] = u % 5 - 2
        u //= 5
    return t


_DIGITS4 = _digit_table(4).view(np.uint32).reshape(-1)  # the four digits of 0..624, one uint32 each


def to_digits(values: np.ndarray | int, pents: int) -> np.ndarray:
    """Balanced base-5 digits of ``values`` (little-endian, last axis), as int8.

    ``u = v + word_max(pents)`` has the ordinary base-5 digits ``d + 2`` of ``v``'s balanced digits ``d`` (the
    offset is 2 in every digit), so ``u`` is cut into base-625 chunks whose four digits each come from a table.
    Raises ValueError if any value does not fit ``pents`` pents.
    """
    v = np.asarray(values, dtype=np.int64)
    lo, hi = word_range(pents)
    if v.size and (v.min() < lo or v.max() > hi):
        raise ValueError(f"value out of range for a {pents}-pent word [{lo}, {hi}]")
    if pents == 0:
        return np.zeros(v.shape + (0,), dtype=np.int8)
    chunks = -(-pents // 4)
    u = v.reshape(-1) + hi
    out = np.empty((u.size, chunks), dtype=np.uint32)
    for j in range(chunks - 1):
        q = u // 625
        np.take(_DIGITS4, u - q * 625, out=out[:, j])
        u = q
    np.take(_DIGITS4, u, out=out[:, -1])  # below 5**(pents - 4 (chunks - 1)): its digits past pents are cut
    digits = out.view(np.int8).reshape(u.size, 4 * chunks)
    if 4 * chunks != pents:
        digits = np.ascontiguousarray(digits[:, :pents])
    return digits.reshape(v.shape + (pents,))


def from_digits(digits: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_digits` (digits on the last axis, little-endian)."""
    d = np.asarray(digits)
    if d.dtype != np.int8 or d.ndim == 0:
        d = d.astype(np.int64)
        weights = 5 ** np.arange(d.shape[-1], dtype=np.int64)
        return (d * weights).sum(axis=-1)
    # int8 digits: four at a time in 16 bits (|sum| <= 128 * 156), then base 625 in 64 bits
    n = d.shape[-1]
    out = np.zeros(d.shape[:-1], dtype=np.int64)
    for j in range((n - 1) // 4 * 4 if n else -1, -1, -4):
        part = d[..., j].astype(np.int16)
        for i in range(1, min(4, n - j)):
            part += d[..., j + i].astype(np.int16) * np.int16(5**i)
        out *= 625
        out += part
    return out


def format_literal(value: int, pents: int | None = None) -> str:
    """``0p`` literal of ``value``; with ``pents`` it is zero-padded to that many digits."""
    value = int(value)
    n = pents if pents is not None else pents_needed(value)
    digits = to_digits(value, n)
    return "0p" + "".join(DIGIT_CHARS[int(d)] for d in digits[::-1])


def parse_literal(text: str) -> int:
    """Value of a ``0p`` literal.  Raises ValueError naming the first bad character."""
    if not text.startswith("0p"):
        raise ValueError("a pentary literal starts with '0p'")
    body = text[2:]
    if not body:
        raise ValueError("a pentary literal needs at least one digit after '0p'")
    value = 0
    for i, ch in enumerate(body):
        if ch not in CHAR_DIGITS:
            raise ValueError(f"bad pentary digit {ch!r} at offset {i + 2}: expected one of = - 0 + # (or ⊖ ⊕)")
        value = value * 5 + CHAR_DIGITS[ch]
    return value


def packed_size(count: int) -> int:
    """Bytes taken by ``count`` packed pents."""
    codes = -(-count // 3)
    return -(-codes * 7 // 8)


_PACK_CHUNK = 24 * 65536  # pents packed per step: a multiple of 24 pents (8 codes, 7 bytes), cache-sized


def pack_pents(pents: np.ndarray) -> bytes:
    """Pack a flat array of pents (-2..2) three to 7 bits.  Vectorised; raises ValueError on a bad digit.

    Eight codes (56 bits) fill seven bytes exactly: pairs of codes are joined into 14 bits, pairs of those into
    28, pairs of those into the top 56 bits of a 64-bit integer, whose top seven bytes are the packed bytes.  A
    code is ``d0 + 5 d1 + 25 d2 + 62``, computed on the digits' bytes modulo 256 (it lies in 0..124).  The array
    is packed in chunks of whole 24-pent groups so that the intermediate arrays stay in cache."""
    p = np.asarray(pents).reshape(-1)
    n = p.size
    out = np.empty(-(-n // _PACK_CHUNK) * _PACK_CHUNK // 24 * 7, np.uint8)
    for s in range(0, n, _PACK_CHUNK):
        part = p[s : s + _PACK_CHUNK]
        if part.min() < PENT_MIN or part.max() > PENT_MAX:
            raise ValueError("a pent must lie in -2..2")
        m = part.size
        if part.dtype != np.int8 or m % 24:
            part = np.concatenate([part.astype(np.int8), np.zeros(-m % 24, np.int8)])
        u = part.view(np.uint8).reshape(-1, 3)
        codes = u[:, 0] + 5 * u[:, 1] + 25 * u[:, 2] + 62
        codes[-(-m // 3) :] = 0  # zero bits after the last code
        c = codes.reshape(-1, 2)
        pairs = ((c[:, 0].astype(np.uint16) << 7) | c[:, 1]).reshape(-1, 2)
        quads = ((pairs[:, 0].astype(np.uint32) << 14) | pairs[:, 1]).reshape(-1, 2)
        v = (quads[:, 0].astype(np.uint64) << np.uint64(36)) | (quads[:, 1].astype(np.uint64) << np.uint64(8))
        at = s // 24 * 7
        out[at : at + v.size * 7] = v.astype(">u8").view(np.uint8).reshape(-1, 8)[:, :7].reshape(-1)
    return out[: packed_size(n)].tobytes()


def unpack_pents(data: bytes | np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`pack_pents`: ``count`` pents as int8.  Raises ValueError on short data or a bad code.

    Seven bytes hold eight codes: each group is read as the top seven bytes of a 64-bit integer, its codes cut
    out by shifts and split into their three pents, in chunks that stay in cache."""
    need = packed_size(count)
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray | memoryview) else data
    if buf.size < need:
        raise ValueError(f"packed pents truncated: need {need} bytes for {count} pents, have {buf.size}")
    ncodes = -(-count // 3)
    out = np.empty(-(-ncodes // 8) * 24, dtype=np.int8)
    step = _PACK_CHUNK // 24 * 7  # bytes per chunk: whole 7-byte groups
    for at in range(0, need, step):
        part = buf[at : min(need, at + step)]
        groups = np.zeros((-(-part.size // 7), 8), dtype=np.uint8)
        if part.size % 7:
            part = np.concatenate([part, np.zeros(-part.size % 7, np.uint8)])
        groups[:, :7] = part.reshape(-1, 7)
        v = groups.view(">u8").reshape(-1).astype(np.uint64)
        codes = np.empty((v.size, 8), dtype=np.uint8)
        for k in range(8):
            codes[:, k] = (v >> np.uint64(57 - 7 * k)) & np.uint64(127)
        first = at // 7 * 8
        codes = codes.reshape(-1)[: ncodes - first]
        if codes.size and codes.max() > 124:
            raise ValueError("corrupt packed pents: a 7-bit code above 124")
        digits = out[first * 3 : (first + codes.size) * 3].reshape(-1, 3)
        q = codes // 5
        digits[:, 0] = codes - 5 * q
        digits[:, 2] = q // 5
        digits[:, 1] = q - 5 * digits[:, 2]
        digits -= 2
    return out[:count].copy()
