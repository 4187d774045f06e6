"""The ``.pbin`` binary format: a versioned container of packed-pent code and data, symbols and I/O declarations.

Layout (all integers little-endian; docs/ISA.md has the byte-by-byte table):

* header, 16 bytes: magic ``PBIN``, version u16 (= 1), reserved u16 (= 0), section count u32, file size u32;
* section table, 24 bytes per section: type u16, reserved u16 (= 0), count u32, address u64, offset u32,
  length u32;
* the section payloads, back to back in table order: one TEXT (type 1), the DATA segments (type 2) by
  increasing address, one SYMBOLS (type 3), one IO (type 4) and, for a program compiled for another machine
  than the default one, one MACHINE (type 5): per size that differs, its index in ``pcc.machine.SIZE_FIELDS``
  (u8) and its value (u64).

TEXT and DATA payloads are their 16-pent words' pents (16 per word, least significant first) packed three to
7 bits by :func:`pcc.pentary.pack_pents`, so ``length == packed_size(16 * count)``. The reader checks every
length against the file size before allocating anything and turns every inconsistency into a PccError.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np

from pcc import isa, isa_encoding, limits
from pcc.backend.program import DataSegment, Instruction, IODecl, Program, Symbol, io_name_ok, plain_name_ok
from pcc.diagnostics import PccError, atomic_write, read_input
from pcc.machine import SIZE_FIELDS, from_overrides
from pcc.pentary import from_digits, pack_pents, packed_size, to_digits, unpack_pents, word_max

MAGIC = b"PBIN"
VERSION = 1
HEADER = struct.Struct("<4sHHII")  # magic, version, reserved, section count, file size
ENTRY = struct.Struct("<HHIQII")  # type, reserved, count, address, offset, length
TEXT, DATA, SYMBOLS, IO, MACHINE = 1, 2, 3, 4, 5
SECTION_NAMES = {TEXT: "TEXT", DATA: "DATA", SYMBOLS: "SYMBOLS", IO: "IO", MACHINE: "MACHINE"}
MACHINE_RECORD = struct.Struct("<BQ")  # size index, value
SYM_SECTIONS = ("text", "data")
ADDR_MAX = word_max(isa.DEFAULT_CONFIG.addr_pents)


# ---------------------------------------------------------------------------------------------------------
# words <-> packed pents
# ---------------------------------------------------------------------------------------------------------


def pack_words(words: np.ndarray) -> bytes:
    """Pack 16-pent words: their pents, 16 per word, least significant first, three pents to 7 bits."""
    w = np.asarray(words, dtype=np.int64).reshape(-1)
    return pack_pents(to_digits(w, isa.WORD_PENTS).reshape(-1))


def unpack_words(blob: bytes | memoryview, count: int) -> np.ndarray:
    """Inverse of :func:`pack_words`; ValueError if a code is invalid or the padding is not canonical."""
    n = count * isa.WORD_PENTS
    ncodes = -(-n // 3)
    digits = unpack_pents(bytes(blob), ncodes * 3)
    if np.any(digits[n:]):
        raise ValueError("nonzero padding pents")
    nbits = ncodes * 7
    if nbits % 8 and len(blob) and blob[-1] & ((1 << (8 - nbits % 8)) - 1):
        raise ValueError("nonzero padding bits")
    return from_digits(digits[:n].reshape(count, isa.WORD_PENTS))


# ---------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------


def _name_bytes(name: str) -> bytes:
    b = name.encode("utf-8")
    if not 1 <= len(b) <= 255:
        raise PccError(f"name {name!r} must be 1..255 bytes long to be stored in a .pbin")
    return bytes([len(b)]) + b


def _symbols_payload(symbols: list[Symbol]) -> bytes:
    out = bytearray()
    for s in symbols:
        out += struct.pack("<BQ", SYM_SECTIONS.index(s.section), s.addr) + _name_bytes(s.name)
    return bytes(out)


def _io_payload(program: Program) -> bytes:
    out = bytearray()
    for kind, decls in ((0, program.inputs), (1, program.outputs)):
        for d in decls:
            out += bytes([kind]) + _name_bytes(d.name)
            out += struct.pack("<BdQB", d.pents, d.scale, d.addr, len(d.shape))
            out += struct.pack(f"<{len(d.shape)}I", *d.shape)
            if d.order is None:
                out += b"\x00"
            else:
                out += b"\x01" + bytes(d.order)
    return bytes(out)


def to_bytes(program: Program) -> bytes:
    """The ``.pbin`` image of ``program``."""
    code = program.code_words()
    sections: list[tuple[int, int, int, bytes]] = [(TEXT, int(code.size), 0, pack_words(code))]
    for seg in sorted(program.data, key=lambda s: s.addr):
        sections.append((DATA, int(seg.words.size), seg.addr, pack_words(seg.words)))
    sections.append((SYMBOLS, len(program.symbols), 0, _symbols_payload(program.symbols)))
    sections.append((IO, len(program.inputs) + len(program.outputs), 0, _io_payload(program)))
    if program.machine:
        keys = list(SIZE_FIELDS)
        payload = b"".join(MACHINE_RECORD.pack(keys.index(k), v) for k, v in program.machine.items())
        sections.append((MACHINE, len(program.machine), 0, payload))
    offset = HEADER.size + ENTRY.size * len(sections)
    table = bytearray()
    for kind, count, addr, payload in sections:
        table += ENTRY.pack(kind, 0, count, addr, offset, len(payload))
        offset += len(payload)
    if offset >= 1 << 32:
        raise PccError(f"program too large for a .pbin ({offset} bytes; the format holds < 4 GiB)")
    header = HEADER.pack(MAGIC, VERSION, 0, len(sections), offset)
    return b"".join([header, bytes(table), *(p for *_, p in sections)])


def write(program: Program, path: str | os.PathLike[str]) -> None:
    """Write ``program`` to a ``.pbin`` file (atomically)."""
    atomic_write(path, to_bytes(program))


# ---------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, file: str | None) -> None:
        self.data = data
        self.file = file

    def fail(self, message: str) -> PccError:
        where = f"{self.file}: " if self.file else ""
        return PccError(f"{where}corrupt .pbin: {message}")

    def read(self) -> Program:
        data = self.data
        if len(data) < HEADER.size:
            if not MAGIC.startswith(data[:4]):
                raise self.fail("bad magic (not a pentary binary)")
            raise self.fail(f"truncated header ({len(data)} of {HEADER.size} bytes)")
        magic, version, reserved, nsec, size = HEADER.unpack_from(data, 0)
        if magic != MAGIC:
            raise self.fail(f"bad magic {magic!r} (expected {MAGIC!r}; not a pentary binary)")
        if version != VERSION:
            raise self.fail(f"unknown version {version} (this pcc reads version {VERSION})")
        if reserved:
            raise self.fail("nonzero reserved header field")
        if size != len(data):
            what = "truncated" if size > len(data) else "trailing bytes"
            raise self.fail(f"{what}: the header says {size} bytes, the file has {len(data)}")
        if nsec < 3 or HEADER.size + ENTRY.size * nsec > len(data):
            raise self.fail(f"section table of {nsec} entries does not fit the file")
        entries = [ENTRY.unpack_from(data, HEADER.size + ENTRY.size * i) for i in range(nsec)]
        expected_offset = HEADER.size + ENTRY.size * nsec
        kinds = [e[0] for e in entries]
        machine_entry = entries[-1] if kinds[-1] == MACHINE and nsec > 3 else None
        core = entries[:-1] if machine_entry is not None else entries  # TEXT, DATA..., SYMBOLS, IO
        kinds = [e[0] for e in core]
        if kinds[0] != TEXT or kinds[-2:] != [SYMBOLS, IO] or any(k != DATA for k in kinds[1:-2]):
            names = ", ".join(SECTION_NAMES.get(e[0], f"unknown type {e[0]}") for e in entries)
            raise self.fail(f"sections must be TEXT, DATA..., SYMBOLS, IO[, MACHINE]; found {names}")
        for i, (kind, res, count, addr, offset, length) in enumerate(entries):
            name = SECTION_NAMES[kind]
            if res:
                raise self.fail(f"section {i} ({name}): nonzero reserved field")
            if offset != expected_offset or offset + length > len(data):
                raise self.fail(f"section {i} ({name}): offset {offset} / length {length} do not fit the file")
            expected_offset += length
            if kind in (TEXT, DATA) and length != packed_size(isa.WORD_PENTS * count):
                raise self.fail(
                    f"section {i} ({name}): {count} words need {packed_size(16 * count)} bytes, not {length}"
                )
            if kind != DATA and addr:
                raise self.fail(f"section {i} ({name}): nonzero address field")
        if expected_offset != len(data):
            raise self.fail("the sections do not end at the end of the file")
        program = Program(file=self.file)
        program.instructions = self.text(entries[0])
        prev_end = -1
        for i, (_, _, count, addr, offset, length) in enumerate(core[1:-2], start=1):
            if count == 0:
                raise self.fail(f"section {i} (DATA): empty data segment")
            if addr <= prev_end or addr + count - 1 > ADDR_MAX:
                raise self.fail(f"section {i} (DATA): segment at {addr} overlaps, is out of order or out of range")
            prev_end = addr + count - 1
            program.data.append(DataSegment(addr, self.words(offset, length, count, f"section {i} (DATA)")))
        entries = core
        if machine_entry is not None:
            program.machine = self.machine(machine_entry)
        program.symbols = self.symbols(entries[-2], program)
        program.inputs, program.outputs = self.io(entries[-1])
        return program

    def machine(self, entry: tuple[int, ...]) -> dict[str, int]:
        _, _, count, _, offset, length = entry
        if count < 1 or length != count * MACHINE_RECORD.size:
            raise self.fail(f"MACHINE: {count} records need {count * MACHINE_RECORD.size} bytes, not {length}")
        keys = list(SIZE_FIELDS)
        out: dict[str, int] = {}
        for i in range(count):
            k, v = MACHINE_RECORD.unpack_from(self.data, offset + i * MACHINE_RECORD.size)
            if k >= len(keys) or keys[k] in out:
                raise self.fail(f"MACHINE: record {i} names an unknown or repeated size ({k})")
            out[keys[k]] = v
        try:
            from_overrides(out, "MACHINE")
        except PccError as exc:
            raise self.fail(exc.message) from None
        return out

    def words(self, offset: int, length: int, count: int, what: str) -> np.ndarray:
        try:
            return unpack_words(memoryview(self.data)[offset : offset + length], count)
        except ValueError as exc:
            raise self.fail(f"{what}: {exc}") from None

    def text(self, entry: tuple[int, ...]) -> list[Instruction]:
        _, _, count, _, offset, length = entry
        words = self.words(offset, length, count, "TEXT").tolist()
        out = []
        at = 0
        while at < count:
            try:
                op, args, n = isa_encoding.decode(words, at)
            except isa_encoding.DecodeError as exc:
                raise self.fail(f"text word {at}: {exc}") from None
            out.append(Instruction(op, args, at, None))
            at += n
        return out

    # ---- records -----------------------------------------------------------------------------------
    def _records(self, entry: tuple[int, ...], what: str):  # noqa: ANN202 - a small generator helper
        _, _, count, _, offset, length = entry
        return _Cursor(self, offset, offset + length, what), count

    def symbols(self, entry: tuple[int, ...], program: Program) -> list[Symbol]:
        cur, count = self._records(entry, "SYMBOLS")
        starts = {ins.addr for ins in program.instructions} | {program.text_words}
        out, seen = [], set()
        for _ in range(count):
            sec, addr = cur.unpack("<BQ")
            name = cur.name()
            if sec >= len(SYM_SECTIONS):
                raise cur.bad(f"symbol {name!r} has unknown section {sec}")
            if name in seen:
                raise cur.bad(f"duplicate symbol {name!r}")
            seen.add(name)
            section = SYM_SECTIONS[sec]
            if section == "text" and addr not in starts:
                raise cur.bad(f"text symbol {name!r} at {addr} is not at an instruction")
            if section == "data" and addr > ADDR_MAX:
                raise cur.bad(f"data symbol {name!r} at {addr} is out of range")
            out.append(Symbol(name, section, addr))
        cur.done()
        key = [(s.section != "text", s.addr) for s in out]
        if key != sorted(key):
            raise cur.bad("symbols are not in address order")
        return out

    def io(self, entry: tuple[int, ...]) -> tuple[list[IODecl], list[IODecl]]:
        cur, count = self._records(entry, "IO")
        lists: tuple[list[IODecl], list[IODecl]] = ([], [])
        seen: set[str] = set()
        last_kind = 0
        for _ in range(count):
            (kind,) = cur.unpack("<B")
            name = cur.name(io=True)
            if kind >= 2 or kind < last_kind:
                raise cur.bad(f"I/O record {name!r}: bad kind {kind}")
            last_kind = kind
            if name in seen:
                raise cur.bad(f"duplicate I/O name {name!r}")
            seen.add(name)
            pents, scale, addr, rank = cur.unpack("<BdQB")
            shape = cur.unpack(f"<{rank}I")
            (has_order,) = cur.unpack("<B")
            order = tuple(cur.take(rank)) if has_order == 1 else None
            if has_order > 1 or (order is not None and sorted(order) != list(range(rank))):
                raise cur.bad(f"I/O record {name!r}: bad axis order")
            if not 1 <= pents <= isa.WORD_PENTS or not (math.isfinite(scale) and scale > 0):
                raise cur.bad(f"I/O record {name!r}: bad pents {pents} or scale {scale}")
            if rank > (max_rank := limits.current().max_rank):
                what = f"I/O record {name!r}: rank {rank}"
                raise cur.bad(f"{what}, more than the {max_rank} allowed (PCC_LIMIT_MAX_RANK)")
            if any(d < 1 for d in shape) or addr + math.prod(shape) - 1 > ADDR_MAX:
                raise cur.bad(f"I/O record {name!r}: bad shape {shape} or address {addr}")
            lists[kind].append(IODecl(name, tuple(shape), pents, scale, addr, order))
        cur.done()
        return lists


class _Cursor:
    """Bounds-checked reading of variable-length records inside one section."""

    def __init__(self, reader: _Reader, pos: int, end: int, what: str) -> None:
        self.r, self.pos, self.end, self.what = reader, pos, end, what

    def bad(self, message: str) -> PccError:
        return self.r.fail(f"{self.what}: {message}")

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise self.bad("record runs past the end of the section")
        b = self.r.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt: str) -> tuple:
        s = struct.Struct(fmt)
        return s.unpack(self.take(s.size))

    def name(self, io: bool = False) -> str:
        (n,) = self.unpack("<B")
        raw = self.take(n)
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.bad(f"name {raw!r} is not UTF-8") from None
        if (not io_name_ok(name)) if io else not plain_name_ok(name):
            raise self.bad(f"bad name {name!r}")
        return name

    def done(self) -> None:
        if self.pos != self.end:
            raise self.bad(f"{self.end - self.pos} bytes left after the last record")


def from_bytes(data: bytes, file: str | None = None) -> Program:
    """Decode a ``.pbin`` image; every inconsistency is a PccError naming ``file``."""
    return _Reader(bytes(data), file).read()


def read(path: str | os.PathLike[str]) -> Program:
    """Read a ``.pbin`` file."""
    p = Path(path)
    return from_bytes(read_input(p, "a .pbin binary"), str(p))


__all__ = ["MAGIC", "VERSION", "from_bytes", "pack_words", "read", "to_bytes", "unpack_words", "write"]
