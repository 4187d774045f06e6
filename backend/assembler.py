"""The assembler: pentary assembly text (``.pasm``) to a :class:`~pcc.backend.program.Program`.

The language is defined by the Lark LALR grammar ``asm.lark``. Two front ends feed one first pass, in source
order: lines of the common shapes (an instruction, a label, a ``.word`` list, a comment) are recognised by
one regular expression each, whose language is a subset of the grammar's; every other line (directives,
anything unusual, every syntax error) is parsed by Lark, whose transformer runs the same first pass while
parsing, so no parse tree is built. The first pass looks up mnemonics, assigns addresses and collects labels,
data and declarations; the second resolves operands against the instruction table (``isa.py``), checks each
field's range and the table's static constraints, and produces the pre-decoded instructions.

Every mistake is a :class:`~pcc.diagnostics.PccError` at ``file:line:col`` with the source line and a caret.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from pcc import isa, limits
from pcc.backend.program import DataSegment, Instruction, IODecl, Program, Symbol, io_name_ok
from pcc.diagnostics import PccError, error_at, read_input, read_input_text, source_line
from pcc.pentary import from_digits, packed_size, parse_literal, unpack_pents, word_max

GRAMMAR_PATH = Path(__file__).with_name("asm.lark")

# Register names: P0..P31 in either case, plus the aliases FP, SP, LR.
REGISTERS: dict[str, int] = {}
for _i in range(isa.DEFAULT_CONFIG.num_regs):
    REGISTERS[f"P{_i}"] = REGISTERS[f"p{_i}"] = _i
for _name, _i in isa.REG_ALIASES.items():
    REGISTERS[_name] = REGISTERS[_name.lower()] = _i

MNEMONICS: dict[str, isa.Instr] = {}
for _ins in isa.INSTRUCTIONS:
    MNEMONICS[_ins.mnemonic] = MNEMONICS[_ins.mnemonic.lower()] = _ins

ADDR_MAX = word_max(isa.DEFAULT_CONFIG.addr_pents)  # largest main-memory address
DRAM_WORDS = isa.DEFAULT_CONFIG.dram_words  # populated main memory: data must lie below this
WORD_MAX = isa.WORD_MAX
IO_KEYS = ("shape", "pents", "scale", "addr", "order")
IO_REQUIRED = ("shape", "pents", "scale", "addr")
DIRECTIVES = (".text", ".data", ".word", ".zero", ".org", ".incbin", ".equ", ".input", ".output", ".machine")

# ---- the fast path: regular expressions for the common line shapes (a subset of asm.lark's language) -----
_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"
_PENT = r"0p[^\s,;\]]*"
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_ATOM = rf"(?:{_PENT}|{_NAME}|{_NUMBER})"
_WS = r"[ \t\f]*"
_MEM = rf"\[{_WS}{_NAME}{_WS}(?:[+-]{_WS}{_ATOM}{_WS})?\]"
_OPND = rf"(?:{_MEM}|{_ATOM})"
_TAIL = rf"{_WS}(?:;.*|(?<=[ \t\f])#.*)?\r?$"
_LABEL = rf"{_WS}(?:({_NAME}){_WS}:{_WS})?"
_INSTR_LINE = re.compile(rf"{_LABEL}({_NAME})(?:[ \t\f]+({_OPND}(?:{_WS},{_WS}{_OPND})*))?{_TAIL}")
_WORD_LINE = re.compile(rf"{_LABEL}\.word[ \t\f]+({_ATOM}(?:{_WS},{_WS}{_ATOM})*){_TAIL}")
_LABEL_LINE = re.compile(rf"{_WS}({_NAME}){_WS}:{_TAIL}")
_BLANK_LINE = re.compile(rf"{_WS}(?:[;#].*)?\r?$")
# One operand at a time: (mem base, sign, offset atom) or (plain atom); group spans give columns.
_OPERAND = re.compile(rf"{_WS},?{_WS}(?:\[{_WS}({_NAME}){_WS}(?:([+-]){_WS}({_ATOM}){_WS})?\]|({_ATOM}))")
_FAST_INT = re.compile(r"[+-]?\d+$")


@dataclass(slots=True)
class _Mem:
    """A memory operand ``[base sign atom]`` (strings; sign and atom None for ``[base]``)."""

    base: str
    sign: str | None
    atom: str | None


@dataclass(slots=True)
class _List:
    items: list[Token]
    anchor: Token | None


@dataclass(slots=True)
class _KV:
    key: Token
    value: Token | _List


@dataclass(slots=True)
class _Seg:
    addr: int
    chunks: list  # python lists of ints and numpy arrays, in order
    size: int
    line: int


class _Pass1(Transformer):
    """The Lark transformer: runs the first pass as the parser reduces each statement (slow path)."""

    @property
    def a(self) -> _Assembler:
        return _STATE[-1]

    def start(self, _children: list) -> None:
        return None

    def label(self, children: list) -> None:
        tok = children[0]
        self.a.define_label(str(tok), tok.line + self.a.line_base, tok.column)

    def instr(self, children: list) -> None:
        tok = children[0]
        ops = [c if isinstance(c, _Mem) else str(c) for c in children[1:]]
        self.a.add_instr(str(tok), ops, tok.line + self.a.line_base, tok.column)

    def mem(self, children: list) -> _Mem:
        if len(children) == 1:
            return _Mem(str(children[0]), None, None)
        return _Mem(str(children[0]), str(children[1]), str(children[2]))

    def directive(self, children: list) -> None:
        base = self.a.line_base
        for c in children:
            _rebase(c, base)
        self.a.directive(children[0], children[1:])

    def kv(self, children: list) -> _KV:
        key, value = children
        if isinstance(value, _List):
            value.anchor = key
        return _KV(key, value)

    def list(self, children: list) -> _List:
        return _List(children, None)


def _rebase(obj: object, base: int) -> None:
    if isinstance(obj, Token):
        obj.line += base
    elif isinstance(obj, _KV):
        _rebase(obj.key, base)
        _rebase(obj.value, base)
    elif isinstance(obj, _List):
        for t in obj.items:
            _rebase(t, base)


class _Assembler:
    def __init__(self, text: str, file: str | None, base_dir: Path) -> None:
        self.text = text
        self.file = file
        self.base_dir = base_dir
        self.lines = text.split("\n")
        self.line_base = 0  # added to Lark's line numbers while it parses a chunk of lines
        self.section = "text"
        self.pc = 0
        self.dpc = 0
        self.items: list[tuple[isa.Instr, list, int, int, int]] = []  # (instr, operands, line, col, pc)
        self.labels: dict[str, tuple[str, int, int]] = {}  # name -> (section, address, line)
        self.equs: dict[str, tuple[int, int]] = {}  # name -> (value, line)
        self.segments: list[_Seg] = []
        self.seg: _Seg | None = None
        self.patches: list[tuple[_Seg, int, Token]] = []  # data words naming a symbol
        self.io: list[tuple[str, Token, dict]] = []
        self.machine: dict[str, int] = {}  # .machine: the sizes that differ from the default machine
        self.dram_words = DRAM_WORDS

    # ---- driving -------------------------------------------------------------------------------------
    def run(self, fast_path: bool = True) -> None:
        if not fast_path:
            self.slow(0, len(self.lines))
            return
        lines = self.lines
        slow_start = -1
        instr_line, label_line, word_line, blank_line = (
            _INSTR_LINE.match,
            _LABEL_LINE.match,
            _WORD_LINE.match,
            _BLANK_LINE.match,
        )
        add_instr = self.add_instr
        for i, line in enumerate(lines):
            m = instr_line(line)
            if m is not None:
                if slow_start >= 0:
                    self.slow(slow_start, i)
                    slow_start = -1
                label, mnem, ops = m.groups()
                if label is not None:
                    self.define_label(label, i + 1, m.start(1) + 1)
                add_instr(mnem, _split_operands(ops) if ops else [], i + 1, m.start(2) + 1)
                continue
            if blank_line(line):
                continue
            m = label_line(line) or word_line(line)
            if m is not None:
                if slow_start >= 0:
                    self.slow(slow_start, i)
                    slow_start = -1
                if m.re is _LABEL_LINE:
                    self.define_label(m.group(1), i + 1, m.start(1) + 1)
                    continue
                if self.fast_words(m, i + 1):
                    continue
            if slow_start < 0:
                slow_start = i
        if slow_start >= 0:
            self.slow(slow_start, len(lines))

    def slow(self, start: int, end: int) -> None:
        """Parse lines ``start .. end-1`` (0-based) with Lark."""
        chunk = "\n".join(self.lines[start:end]) + "\n"
        self.line_base = start
        _STATE.append(self)
        try:
            _parser().parse(chunk)
        except UnexpectedInput as exc:
            raise self.syntax_error(exc, start) from None
        finally:
            _STATE.pop()
            self.line_base = 0

    def fast_words(self, m: re.Match[str], line: int) -> bool:
        """A ``.word`` line of plain decimal values in range; False sends the line to the slow path."""
        if self.section != "data":
            return False
        values = []
        for v in m.group(2).replace(" ", "").replace("\t", "").split(","):
            if not _FAST_INT.match(v):
                return False
            x = int(v)
            if not -WORD_MAX <= x <= WORD_MAX:
                return False
            values.append(x)
        if m.group(1) is not None:
            self.define_label(m.group(1), line, m.start(1) + 1)
        self._append(values, line, m.start() + 1)
        return True

    # ---- errors --------------------------------------------------------------------------------------
    def err(self, message: str, line: int | None, col: int | None) -> PccError:
        return error_at(message, self.text, self.file, line, col)

    def err_tok(self, message: str, tok: Token, col_offset: int = 0) -> PccError:
        return self.err(message, tok.line, (tok.column or 1) + col_offset)

    def op_col(self, line: int, mcol: int, index: int, part: str = "atom") -> int:
        """Column of operand ``index`` of the instruction whose mnemonic is at ``line:mcol``.

        ``part`` picks the ``base`` or the offset ``atom`` of a memory operand ("atom" of a plain operand).
        """
        text = source_line(self.text, line) or ""
        m0 = re.compile(_NAME).match(text, mcol - 1)
        pos = m0.end() if m0 else mcol
        for k, m in enumerate(_OPERAND.finditer(text, pos)):
            if m.start() != pos:
                break
            pos = m.end()
            if k == index:
                if m.group(4) is not None:
                    return m.start(4) + 1
                if part == "atom" and m.group(3) is not None:
                    return m.start(3) + 1
                return m.start(1) + 1
        return mcol

    def syntax_error(self, exc: UnexpectedInput, base: int) -> PccError:
        text, n_lines = self.text, len(self.lines)
        if isinstance(exc, UnexpectedCharacters):
            line, col = exc.line + base, exc.column
            src = source_line(text, line) or ""
            ch = src[col - 1] if 0 < col <= len(src) else ""
            msg = f"unexpected character {ch!r}"
            if ch == "#":
                msg += " ('#' starts a comment only at the start of a line or after a blank)"
            return self.err(msg, line, col)
        if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
            last = self.lines[-1] if self.lines else ""
            return self.err("unexpected end of input", n_lines, len(last) + 1)
        assert isinstance(exc, UnexpectedToken)
        tok = exc.token
        expected = sorted({_TOKEN_WORDS.get(t, t) for t in exc.expected if not t.startswith("__")})
        what = "end of line" if tok.type == "_NL" else f"'{tok}'"
        msg = f"syntax error: unexpected {what}"
        if expected:
            msg += f"; expected {', '.join(expected)}"
        return self.err(msg, tok.line + base, tok.column)

    # ---- pass 1 --------------------------------------------------------------------------------------
    def define_label(self, name: str, line: int, col: int) -> None:
        if name in REGISTERS:
            raise self.err(f"'{name}' is a register name and cannot be a label", line, col)
        if name in self.labels or name in self.equs:
            first = self.labels[name][2] if name in self.labels else self.equs[name][1]
            raise self.err(f"duplicate label '{name}' (first defined at line {first})", line, col)
        self.labels[name] = (self.section, self.pc if self.section == "text" else self.dpc, line)

    def add_instr(self, mnemonic: str, ops: list, line: int, col: int) -> None:
        ins = MNEMONICS.get(mnemonic) or MNEMONICS.get(mnemonic.upper())
        if ins is None:
            hint = _did_you_mean(mnemonic.upper(), isa.BY_MNEMONIC)
            if mnemonic.lower() in DIRECTIVES or "." + mnemonic.lower() in DIRECTIVES:
                hint = f"; directives start with '.', e.g. .{mnemonic.lower().lstrip('.')}"
            elif not hint and not ops:
                hint = " (a label needs a ':')"
            raise self.err(f"unknown mnemonic '{mnemonic}'{hint}", line, col)
        if self.section != "text":
            raise self.err(f"instruction {ins.mnemonic} in the .data section (put code after .text)", line, col)
        self.items.append((ins, ops, line, col, self.pc))
        self.pc += ins.words

    def directive(self, tok: Token, args: list) -> None:
        name = tok.lower()
        if name not in DIRECTIVES:
            raise self.err_tok(f"unknown directive '{tok}'{_did_you_mean(name, DIRECTIVES)}", tok)
        getattr(self, "d_" + name[1:])(tok, args)

    def _nargs(self, tok: Token, args: list, n: int) -> None:
        if len(args) != n:
            raise self.err_tok(f"{tok} takes {n} argument{'s' if n != 1 else ''}, got {len(args)}", tok)

    def _data_only(self, tok: Token) -> None:
        if self.section != "data":
            raise self.err_tok(f"{tok} is only allowed in the .data section", tok)

    def _segment(self, line: int) -> _Seg:
        if self.seg is None:
            self.seg = _Seg(self.dpc, [], 0, line)
            self.segments.append(self.seg)
        return self.seg

    def _append(self, values: list[int] | np.ndarray, line: int, col: int) -> None:
        seg = self._segment(line)
        seg.chunks.append(values)
        n = len(values)
        seg.size += n
        self.dpc += n
        if self.dpc - 1 > ADDR_MAX:
            raise self.err(f"data runs past the end of the address space ({ADDR_MAX})", line, col)

    def d_text(self, tok: Token, args: list) -> None:
        self._nargs(tok, args, 0)
        self.section = "text"

    def d_data(self, tok: Token, args: list) -> None:
        self._nargs(tok, args, 0)
        self.section = "data"

    def d_word(self, tok: Token, args: list) -> None:
        self._data_only(tok)
        if not args:
            raise self.err_tok(".word needs at least one value", tok)
        seg = self._segment(tok.line)
        start = seg.size
        values = []
        for i, a in enumerate(args):
            if not isinstance(a, Token) or a.type == "STRING":
                raise self.err_tok(".word values are integers or symbols", _anchor(a, tok))
            if a.type == "NAME":
                self.patches.append((seg, start + i, a))
                values.append(0)
            else:
                values.append(self.word_value(a))
        self._append(values, tok.line, tok.column)

    def d_zero(self, tok: Token, args: list) -> None:
        self._data_only(tok)
        self._nargs(tok, args, 1)
        n = self.const_int(args[0], tok)
        if not 0 <= n <= ADDR_MAX:
            raise self.err_tok(f".zero count {n} out of range [0, {ADDR_MAX}]", args[0])
        if self.dpc + n > self.dram_words:  # checked before allocating: data past main memory could never load
            raise self.err_tok(
                f".zero {n} at address {self.dpc} runs past the end of main memory ({self.dram_words} words)", args[0]
            )
        self._append(np.zeros(n, dtype=np.int64), tok.line, tok.column)

    def d_org(self, tok: Token, args: list) -> None:
        self._data_only(tok)
        self._nargs(tok, args, 1)
        addr = self.const_int(args[0], tok)
        if not 0 <= addr <= ADDR_MAX:
            raise self.err_tok(f"address {addr} out of range [0, {ADDR_MAX}]", args[0])
        self.dpc = addr
        self.seg = None

    def d_incbin(self, tok: Token, args: list) -> None:
        self._data_only(tok)
        digest = None
        if len(args) == 2 and isinstance(args[1], _KV) and str(args[1].key) == "sha256":
            kv = args.pop()
            if isinstance(kv.value, _List) or kv.value.type != "STRING":
                raise self.err_tok('sha256 takes the hex digest in double quotes, e.g. sha256="3f2a..."', kv.key)
            digest = (kv.value[1:-1].lower(), kv.value)
        self._nargs(tok, args, 1)
        a = args[0]
        if not isinstance(a, Token) or a.type != "STRING":
            raise self.err_tok(
                '.incbin takes a file name in double quotes, e.g. .incbin "weights.bin"', _anchor(a, tok)
            )
        name = a[1:-1]
        try:
            blob = read_input(self.base_dir / name, "a binary include file")
        except PccError as exc:
            raise self.err_tok(f"cannot read include file '{name}': {exc.message}", a) from None
        if digest is not None and hashlib.sha256(blob).hexdigest() != digest[0]:
            raise self.err_tok(
                f"include file '{name}' is not the one this assembly was compiled with (its sha256 differs): "
                "the .pasm and its weights come from different compiles; compile again",
                digest[1],
            )
        words = words_from_packed(blob)
        if isinstance(words, str):
            raise self.err_tok(f"include file '{name}': {words}", a)
        self._append(words, tok.line, tok.column)

    def d_equ(self, tok: Token, args: list) -> None:
        self._nargs(tok, args, 2)
        name, value = args
        if not isinstance(name, Token) or name.type != "NAME":
            raise self.err_tok(".equ takes a name and a value, e.g. .equ N, 64", _anchor(name, tok))
        if name in REGISTERS:
            raise self.err_tok(f"'{name}' is a register name and cannot be a symbol", name)
        if name in self.labels or name in self.equs:
            first = self.labels[name][2] if name in self.labels else self.equs[name][1]
            raise self.err_tok(f"duplicate symbol '{name}' (first defined at line {first})", name)
        self.equs[str(name)] = (self.const_int(value, tok), name.line)

    def d_machine(self, tok: Token, args: list) -> None:
        """``.machine dram_words=N, ...``: the machine sizes the program needs (pcc.machine.SIZE_FIELDS)."""
        from pcc.machine import SIZE_FIELDS, from_overrides

        usage = ".machine " + ", ".join(f"{k}=N" for k in SIZE_FIELDS) + " (any of them)"
        if self.machine or self.dpc or self.segments or self.items:
            raise self.err_tok(".machine comes once, before any code or data", tok)
        if not args:
            raise self.err_tok(f"expected {usage}", tok)
        values: dict[str, int] = {}
        for a in args:
            if not isinstance(a, _KV):
                raise self.err_tok(f"expected key=value: {usage}", _anchor(a, tok))
            key = str(a.key)
            if key not in SIZE_FIELDS:
                raise self.err_tok(f"unknown machine size '{key}'{_did_you_mean(key, tuple(SIZE_FIELDS))}", a.key)
            if key in values:
                raise self.err_tok(f"duplicate key '{key}'", a.key)
            values[key] = self.const_int(a.value, a.key)
        try:
            cfg = from_overrides(values, ".machine")
        except PccError as exc:
            raise self.err_tok(exc.message, tok) from None
        self.machine = values
        self.dram_words = cfg.dram_words

    def d_input(self, tok: Token, args: list) -> None:
        self._io(tok, args)

    def d_output(self, tok: Token, args: list) -> None:
        self._io(tok, args)

    def _io(self, tok: Token, args: list) -> None:
        usage = f"{tok.lower()} name, shape=[...], pents=N, scale=S, addr=A[, order=[...]]"
        if not args or not isinstance(args[0], Token) or args[0].type not in ("NAME", "STRING"):
            raise self.err_tok(f"expected {usage}", _anchor(args[0], tok) if args else tok)
        name = args[0]
        if name.type == "STRING":  # a quoted name keeps any model name ("gpu_0/data_0")
            name = Token.new_borrow_pos("STRING", name[1:-1], name)
            if not io_name_ok(str(name)):
                raise self.err_tok("an I/O name must be 1..255 bytes of printable text", name)
        for kind, other, _ in self.io:
            if other == name:
                raise self.err_tok(f"duplicate I/O name '{name}' (already an {kind} at line {other.line})", name)
        kvs: dict[str, _KV] = {}
        for a in args[1:]:
            if not isinstance(a, _KV):
                raise self.err_tok(f"expected key=value after the name: {usage}", _anchor(a, tok))
            key = str(a.key)
            if key not in IO_KEYS:
                raise self.err_tok(f"unknown key '{key}'{_did_you_mean(key, IO_KEYS)}", a.key)
            if key in kvs:
                raise self.err_tok(f"duplicate key '{key}'", a.key)
            kvs[key] = a
        missing = [k for k in IO_REQUIRED if k not in kvs]
        if missing:
            raise self.err_tok(f"{tok.lower()} '{name}' is missing {', '.join(missing)}: {usage}", tok)
        self.io.append((tok[1:].lower(), name, kvs))

    # ---- values --------------------------------------------------------------------------------------
    def number(self, s: str, line: int, col: int) -> int:
        """Value of a number or pentary literal (no symbols)."""
        if s.startswith("0p"):
            try:
                return parse_literal(s)
            except ValueError as exc:
                raise self.err(f"bad pentary literal '{s}': {exc}", line, col + _bad_digit_offset(s)) from None
        try:
            return int(s)
        except ValueError:
            raise self.err(f"expected an integer, got '{s}'", line, col) from None

    def word_value(self, tok: Token) -> int:
        v = self.number(tok, tok.line, tok.column)
        if not -WORD_MAX <= v <= WORD_MAX:
            raise self.err_tok(f"value {v} does not fit a 16-pent word [{-WORD_MAX}, {WORD_MAX}]", tok)
        return v

    def const_int(self, a: object, where: Token) -> int:
        """An integer known during pass 1: a number or an earlier .equ."""
        if not isinstance(a, Token) or a.type == "STRING":
            raise self.err_tok("expected an integer", _anchor(a, where))
        if a.type == "NAME":
            if a in self.equs:
                return self.equs[a][0]
            raise self.err_tok(f"'{a}' is not a constant defined earlier with .equ", a)
        return self.number(a, a.line, a.column)

    def symbol(self, name: str, line: int, col: int) -> int:
        """Value of a symbol (label address or .equ value)."""
        if name in self.equs:
            return self.equs[name][0]
        lab = self.labels.get(name)
        if lab is not None:
            return lab[1]
        if name in REGISTERS:
            raise self.err(f"expected an immediate, got register {name}", line, col)
        names = list(self.labels) + list(self.equs)
        raise self.err(f"undefined symbol '{name}'{_did_you_mean(name, names)}", line, col)

    # ---- pass 2 --------------------------------------------------------------------------------------
    def operand_value(self, f: isa.Field, a: str, pc: int, mnemonic: str, where: tuple, negate: bool = False) -> int:
        kind = f.kind
        if kind is isa.Kind.REG:
            r = REGISTERS.get(a)
            if r is None:
                raise self.err(f"{mnemonic}: expected a register (P0..P31) for {f.name}, got '{a}'", *self.pos(where))
            return r
        c = a[0]
        if c.isalpha() or c == "_":
            if kind is isa.Kind.TARGET:
                lab = self.labels.get(a)
                if lab is None:
                    if a in REGISTERS:
                        raise self.err(
                            f"{mnemonic}: expected a label or offset for {f.name}, got register {a}", *self.pos(where)
                        )
                    if a in self.equs:
                        raise self.err(
                            f"'{a}' is an .equ constant; a branch target is a .text label or a word offset",
                            *self.pos(where),
                        )
                    names = [n for n, v in self.labels.items() if v[0] == "text"]
                    raise self.err(f"undefined label '{a}'{_did_you_mean(a, names)}", *self.pos(where))
                if lab[0] != "text":
                    raise self.err(f"'{a}' is a .data label; a branch target must be a .text label", *self.pos(where))
                v = lab[1] - pc
            else:
                if a in REGISTERS and a not in self.equs and a not in self.labels:
                    raise self.err(
                        f"{mnemonic}: expected an immediate for {f.name}, got register {a}", *self.pos(where)
                    )
                v = self.symbol(a, *self.pos(where))
        else:
            v = int(a) if _FAST_INT.match(a) else self.number(a, *self.pos(where))
        if negate:
            v = -v
        if not f.lo <= v <= f.hi:
            raise self.err(f"{mnemonic}: {f.check(v)}", *self.pos(where))
        return v

    def pos(self, where: tuple) -> tuple[int, int]:
        """(line, col) of an operand from (line, mnemonic col, operand index, part)."""
        line, mcol, index, part = where
        return line, self.op_col(line, mcol, index, part)

    def resolve(self) -> list[Instruction]:
        out = []
        append = out.append
        operand_value = self.operand_value
        regs = REGISTERS
        for ins, ops, line, mcol, pc in self.items:
            spec = ins.operands
            if len(ops) != len(spec):
                n = len(spec)
                where = (line, self.op_col(line, mcol, n)) if len(ops) > n else (line, mcol)
                raise self.err(
                    f"{ins.mnemonic} takes {n} operand{'s' if n != 1 else ''} ({ins.syntax or 'none'}), got {len(ops)}",
                    *where,
                )
            args = []
            for k, (op_spec, a) in enumerate(zip(spec, ops, strict=True)):
                if op_spec.is_mem:
                    if not isinstance(a, _Mem):
                        raise self.err(
                            f"{ins.mnemonic}: expected a memory operand [Pb + offset], got '{a}'",
                            *self.pos((line, mcol, k, "atom")),
                        )
                    base = regs.get(a.base)
                    if base is None:
                        raise self.err(
                            f"{ins.mnemonic}: the base of a memory operand must be a register, got '{a.base}'",
                            *self.pos((line, mcol, k, "base")),
                        )
                    off = 0
                    if a.atom is not None:
                        fo = op_spec.fields[1]
                        where = (line, mcol, k, "atom")
                        off = operand_value(fo, a.atom, pc, ins.mnemonic, where, a.sign == "-")
                    args.append(base)
                    args.append(off)
                elif isinstance(a, _Mem):
                    f = op_spec.fields[0]
                    raise self.err(
                        f"{ins.mnemonic}: expected {_kind_text(f)} for {f.name}, got a memory operand",
                        *self.pos((line, mcol, k, "base")),
                    )
                else:
                    args.append(operand_value(op_spec.fields[0], a, pc, ins.mnemonic, (line, mcol, k, "atom")))
            targs = tuple(args)
            if ins.checks and not ins.check(*targs):
                raise self.err(f"{ins.mnemonic}: operands break the constraint '{ins.violated(targs)}'", line, mcol)
            append(Instruction(ins.opcode, targs, pc, line))
        return out

    def finish(self) -> Program:
        instructions = self.resolve()
        segs = [s for s in self.segments if s.size]
        for seg, index, tok in self.patches:
            v = self.symbol(tok, tok.line, tok.column)
            if not -WORD_MAX <= v <= WORD_MAX:  # pragma: no cover - symbols are addresses or checked .equ
                raise self.err_tok(f"value {v} does not fit a 16-pent word", tok)
            _set_chunk(seg, index, v)
        data = []
        for s in sorted(segs, key=lambda s: s.addr):
            arrays = [np.asarray(c, dtype=np.int64) for c in s.chunks]
            data.append((s, DataSegment(s.addr, np.concatenate(arrays) if len(arrays) != 1 else arrays[0])))
        for (s0, d0), (s1, d1) in zip(data, data[1:], strict=False):
            if d1.addr < d0.end:
                raise self.err(
                    f"data at address {d1.addr} overlaps the data at {d0.addr}..{d0.end - 1} (line {s0.line})",
                    s1.line,
                    1,
                )
        # symbols: text labels by address, then data labels by address (stable), as the binary stores them
        labels = [Symbol(n, sec, addr) for n, (sec, addr, _) in self.labels.items()]
        symbols = sorted(labels, key=lambda s: (s.section != "text", s.addr))
        inputs, outputs = [], []
        for kind, name, kvs in self.io:
            (inputs if kind == "input" else outputs).append(self.io_decl(name, kvs))
        if not instructions:  # nothing would run: the simulator refuses such a program, so refuse it here
            raise self.err("the program has no instructions (expected at least one, e.g. HALT)", 1, 1)
        return Program(
            instructions=instructions,
            data=[d for _, d in data],
            symbols=symbols,
            inputs=inputs,
            outputs=outputs,
            file=self.file,
            source=self.text,
            machine=dict(self.machine),
        )

    def io_decl(self, name: Token, kvs: dict[str, _KV]) -> IODecl:
        def ints(kv: _KV) -> list[tuple[int, Token]]:
            if not isinstance(kv.value, _List):
                raise self.err_tok(f"{kv.key} is a list, e.g. {kv.key}=[1, 3, 32, 32]", kv.value)
            return [(self.const_int(t, kv.key), t) for t in kv.value.items]

        def scalar(kv: _KV) -> Token:
            if isinstance(kv.value, _List) or kv.value.type == "STRING":
                raise self.err_tok(f"{kv.key} takes a single value", kv.key)
            return kv.value

        shape = ints(kvs["shape"])
        if len(shape) > 255:  # what a .pbin I/O record can hold
            raise self.err_tok(
                f"shape has rank {len(shape)}; a program's I/O has at most 255 dimensions", kvs["shape"].key
            )
        if len(shape) > (max_rank := limits.current().max_rank):
            raise self.err_tok(
                f"shape has rank {len(shape)}, more than the {max_rank} allowed (PCC_LIMIT_MAX_RANK)", kvs["shape"].key
            )
        for d, t in shape:
            if d < 1:
                raise self.err_tok(f"shape dimensions must be >= 1, got {d}", t)
            if d >= 1 << 32:  # what a .pbin I/O record can hold
                raise self.err_tok(f"shape dimension {d} does not fit 32 bits", t)
        pents_tok = scalar(kvs["pents"])
        pents = self.const_int(pents_tok, kvs["pents"].key)
        if not 1 <= pents <= isa.WORD_PENTS:
            raise self.err_tok(f"pents must be in 1..{isa.WORD_PENTS}, got {pents}", pents_tok)
        scale_tok = scalar(kvs["scale"])
        try:
            scale = float(scale_tok)
        except ValueError:
            raise self.err_tok(f"scale must be a number, got '{scale_tok}'", scale_tok) from None
        if not (math.isfinite(scale) and scale > 0):
            raise self.err_tok(f"scale must be a positive number, got {scale_tok}", scale_tok)
        addr_tok = scalar(kvs["addr"])
        if addr_tok.type == "NAME":
            addr = self.symbol(addr_tok, addr_tok.line, addr_tok.column)
        else:
            addr = self.number(addr_tok, addr_tok.line, addr_tok.column)
        if not 0 <= addr <= ADDR_MAX:
            raise self.err_tok(f"address {addr} out of range [0, {ADDR_MAX}]", addr_tok)
        size = math.prod(d for d, _ in shape)
        if addr + size - 1 > ADDR_MAX:
            raise self.err_tok(f"'{name}' runs past the end of the address space", addr_tok)
        order = None
        if "order" in kvs:
            order = tuple(v for v, _ in ints(kvs["order"]))
            if sorted(order) != list(range(len(shape))):
                raise self.err_tok(
                    f"order must be a permutation of 0..{len(shape) - 1}, got {list(order)}", kvs["order"].key
                )
        return IODecl(str(name), tuple(d for d, _ in shape), pents, scale, addr, order)


def _split_operands(text: str) -> list:
    """Operands of a line that matched the fast-path pattern."""
    ops: list = []
    for base, sign, atom, plain in _OPERAND.findall(text):
        if plain:
            ops.append(plain)
        else:
            ops.append(_Mem(base, sign or None, atom or None))
    return ops


def _set_chunk(seg: _Seg, index: int, value: int) -> None:
    for c in seg.chunks:
        if index < len(c):
            c[index] = value
            return
        index -= len(c)


def _anchor(a: object, default: Token) -> Token:
    if isinstance(a, Token):
        return a
    if isinstance(a, _KV):
        return a.key
    if isinstance(a, _List) and a.items:
        return a.items[0]
    if isinstance(a, _List) and a.anchor is not None:
        return a.anchor
    return default


def _kind_text(f: isa.Field) -> str:
    return {isa.Kind.REG: "a register", isa.Kind.TARGET: "a label or offset"}.get(f.kind, "an immediate")


def _bad_digit_offset(s: str) -> int:
    for i, ch in enumerate(s[2:]):
        try:
            parse_literal("0p" + ch)
        except ValueError:
            return i + 2
    return 0


def _did_you_mean(word: str, candidates: object) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)  # type: ignore[call-overload]
    return f"; did you mean '{close[0]}'?" if close else ""


def words_from_packed(blob: bytes) -> np.ndarray | str:
    """The 16-pent words of a packed pent blob (an ``.incbin`` file), or the reason it is not one.

    The file is ``pcc.pentary.pack_pents`` of the words' pents, 16 per word, least significant first.
    """
    size = len(blob)
    n = max(size * 8 // 7 * 3 // 16 - 2, 0)  # packed_size(16 n) grows by 9 or 10 bytes per word
    while packed_size(16 * n) < size:
        n += 1
    if packed_size(16 * n) != size:
        return f"{size} bytes is not a whole number of packed 16-pent words"
    try:
        digits = unpack_pents(blob, 16 * n)
    except ValueError as exc:
        return str(exc)
    return from_digits(digits.reshape(n, 16))


_TOKEN_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "PENT": "a pentary literal",
    "STRING": "a string",
    "DIRECTIVE": "a directive",
    "COMMA": "','",
    "COLON": "':'",
    "LSQB": "'['",
    "RSQB": "']'",
    "EQUAL": "'='",
    "SIGN": "'+' or '-'",
    "_NL": "end of line",
}

_PARSER: Lark | None = None
_STATE: list[_Assembler] = []


def _parser() -> Lark:
    global _PARSER
    if _PARSER is None:
        _PARSER = Lark(
            GRAMMAR_PATH.read_text(encoding="utf-8"),
            parser="lalr",
            lexer="contextual",
            transformer=_Pass1(),
            propagate_positions=False,
            maybe_placeholders=False,
        )
    return _PARSER


def assemble(
    text: str,
    file: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    *,
    fast_path: bool = True,
) -> Program:
    """Assemble ``text``; ``file`` names it in diagnostics and ``base_dir`` resolves ``.incbin`` paths.

    ``fast_path=False`` parses every line with Lark (the tests check that both routes agree).
    """
    if base_dir is None:
        base_dir = Path(file).parent if file else Path(".")
    asm = _Assembler(text, file, Path(base_dir))
    asm.run(fast_path)
    return asm.finish()


def assemble_file(path: str | os.PathLike[str]) -> Program:
    """Assemble a ``.pasm`` file (``.incbin`` paths are relative to its folder)."""
    p = Path(path)
    return assemble(read_input_text(p, "a .pasm assembly file"), str(p), p.parent)


__all__ = ["REGISTERS", "assemble", "assemble_file", "words_from_packed"]
