"""Parse ``.pir`` text into a :class:`~pcc.ir.Module`.

The grammar is ``pcc/ir.lark`` (Lark LALR).  The module is built *during* parsing by an inline transformer,
so no parse tree is materialised.  Every error is a :class:`~pcc.diagnostics.PccError` at ``file:line:col``.
Structural checks that need the whole module (types, attributes, dominance, weights) are the verifier's.
"""

from __future__ import annotations

import difflib
import gc
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

import pcc.dialects  # noqa: F401  (registers the ops)
from pcc.arrays import Npz
from pcc.diagnostics import Location, PccError, error_at, read_input_text
from pcc.ir import OP_REGISTRY, Graph, Module, Return, TensorType, Value, parse_type
from pcc.pentary import parse_literal

_GRAMMAR = Path(__file__).with_name("ir.lark")
_NAME_RE = r'(?:"(?:\\.|[^"\\\n])*"|[A-Za-z0-9_.$\-]+)'
_REF = re.compile(r"[%@]" + _NAME_RE)
_TYPE = re.compile(r"tensor<[^>\n]*>")
_RESULTS = re.compile(r"%" + _NAME_RE + r"([ \t]*,[ \t]*%" + _NAME_RE + r")*[ \t]*=")
_STRING = re.compile(r'"(?:\\.|[^"\\\n])*"')
_ATTR_TOKEN = re.compile(
    r"\s*(?:(?P<name>[a-z_][a-z0-9_]*)\s*=(?!=)"
    r"|(?P<plit>0p[^\s,\]\}]*)"
    r"|(?P<float>[-+]?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|inf|nan))(?![\w.])"
    r"|(?P<int>[-+]?\d+)(?![\w.])"
    r'|(?P<str>"(?:\\.|[^"\\\n])*")'
    r"|(?P<bool>true|false)\b"
    r"|(?P<punct>[\[\],]))\s*"
)


def _unquote(text: str) -> str:
    """Strip the sigil and, for a quoted name, the quotes and escapes."""
    body = text[1:]
    if body.startswith('"'):
        return body[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return body


def _unstring(text: str) -> str:
    return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")


class _Builder(Transformer):
    """Callbacks run at each LALR reduction, in text order."""

    def __init__(self, text: str, file: str, weights: dict[str, np.ndarray] | None) -> None:
        super().__init__(visit_tokens=False)
        self.text = text
        self.file = file
        self.mod: Module | None = None
        self.graph: Graph | None = None
        self.values: dict[str, Value] = {}
        self.npz: Any = None
        self.extra_weights = weights
        self._attr_cache: dict[str, dict[str, Any]] = {}
        self._types_cache: dict[str, list[TensorType]] = {}

    # -- helpers
    def err(self, tok: Token | None, message: str) -> PccError:
        line = getattr(tok, "line", None)
        col = getattr(tok, "column", None)
        return error_at(message, self.text, self.file, line, col)

    def pos(self, tok: Token) -> Location:
        return Location(self.file, tok.line, tok.column)

    def type_of(self, tok: Token) -> TensorType:
        """The single type of a TYPE token or of a ``: tensor<...>`` TYPES token."""
        text = str(tok)
        off = 0
        if text.startswith(":"):
            found = list(_TYPE.finditer(text))
            if len(found) != 1:
                raise self.err(tok, f"expected one type, got {len(found)}")
            off, text = found[0].start(), found[0].group(0)
        try:
            return parse_type(text)
        except ValueError as exc:
            raise self._err_in(tok, off, str(exc)) from None

    # -- module
    def module_head(self, c: list) -> Module:
        name_tok, wclause = c[0], c[1] if len(c) > 1 else None
        m = Module(_unquote(name_tok))
        m.source = self.file
        m.source_text = self.text
        if wclause is not None:
            m.weights_file = _unstring(wclause)
            if self.extra_weights is None:
                self.npz = self._open_npz(wclause, m.weights_file)
        self.mod = m
        return m

    def _open_npz(self, tok: Token, rel: str) -> Any:
        base = os.path.dirname(self.file) if self.file and not self.file.startswith("<") else "."
        path = os.path.join(base, rel)
        if not os.path.exists(path):
            raise self.err(tok, f"weights file {path!r} not found")
        try:
            return Npz(path)
        except PccError as exc:
            raise self.err(tok, f"weights file {path!r}: {exc.message}") from None

    def weights_clause(self, c: list) -> Token:
        return c[0]

    def weight_decl(self, c: list) -> None:
        name_tok, type_tok = c[0], c[1]
        dense = c[2] if len(c) > 2 else None
        m = self.mod
        assert m is not None
        name = _unquote(name_tok)
        t = self.type_of(type_tok)
        if name in m.weights:
            raise self.err(name_tok, f"weight @{name} is declared twice")
        m.declare_weight(name, t, self.pos(name_tok))
        if dense is not None:
            m.weight_data[name] = self._dense_array(dense, t, name_tok)
        elif self.extra_weights is not None:
            if name in self.extra_weights:
                m.weight_data[name] = np.asarray(self.extra_weights[name])
        elif self.npz is not None and name in self.npz.files:

            def same_shape(shape: tuple[int, ...], dtype: np.dtype) -> None:
                if tuple(shape) != tuple(t.shape):
                    raise self.err(name_tok, f"weight @{name}: declared {t} but the data has shape {list(shape)}")

            try:
                m.weight_data[name] = self.npz.read(name, check=same_shape)
            except PccError as exc:
                if exc.loc is not None and exc.loc.line is not None:
                    raise
                raise self.err(name_tok, f"cannot read weight @{name} from the weights file: {exc.message}") from None

    def _dense_array(self, toks: list[Token], t: TensorType, where: Token) -> np.ndarray:
        vals: list[Any] = []
        for tok in toks:
            kind = tok.type
            s = str(tok)
            if kind == "PLIT":
                try:
                    vals.append(parse_literal(s))
                except ValueError as exc:
                    raise self.err(tok, f"bad pentary literal {s!r}: {exc}") from None
            elif kind in ("TRUE", "FALSE"):
                vals.append(kind == "TRUE")
            elif kind == "FLOAT":
                if not t.is_float:
                    raise self.err(tok, f"float literal {s} in a {t.dtype} tensor: expected an integer")
                vals.append(float(s))
            else:
                vals.append(int(s))
        if len(vals) != t.size:
            raise self.err(where, f"dense literal has {len(vals)} values but {t} holds {t.size}")
        if t.is_pent:
            lo, hi = t.value_range or (0, 0)
            for tok, v in zip(toks, vals, strict=True):
                if not lo <= v <= hi:
                    raise self.err(tok, f"value {v} out of range [{lo}, {hi}] of {t.dtype}")
        try:
            return np.array(vals, dtype=t.np_dtype).reshape(t.shape)
        except (OverflowError, ValueError) as exc:
            raise self.err(where, f"dense literal does not fit {t}: {exc}") from None

    def dense(self, c: list) -> list[Token]:
        return [x for x in c if x is not None]

    # -- functions
    def arg(self, c: list) -> tuple[Token, Token]:
        return c[0], c[1]

    def ret_types(self, c: list) -> list[Token]:
        return [x for x in c if x is not None]

    def func_head(self, c: list) -> Graph:
        m = self.mod
        assert m is not None
        name_tok = c[0]
        name = _unquote(name_tok)
        if name in m.functions:
            raise self.err(name_tok, f"function @{name} is defined twice")
        g = m.add_function(name)
        g.loc = self.pos(name_tok)
        self.graph = g
        self.values = {}
        for a in c[1:-1]:
            if a is None:
                continue
            vtok, ttok = a
            vname = _unquote(vtok)
            if vname in self.values:
                raise self.err(vtok, f"value %{vname} is defined twice")
            self.values[vname] = g.add_arg(vname, self.type_of(ttok))
        g._declared_outputs = [(t, self.type_of(t)) for t in c[-1]]  # type: ignore[attr-defined]
        return g

    def _use(self, tok: Token) -> Value:
        if tok.type == "SYMBOL":
            name = _unquote(tok)
            v = self.mod.weights.get(name) if self.mod else None
            if v is None:
                known = list(self.mod.weights) if self.mod else []
                hint = difflib.get_close_matches(name, known, n=1)
                more = f"; did you mean @{hint[0]}?" if hint else ""
                raise self.err(tok, f"use of undeclared weight @{name}{more}")
            return v
        name = _unquote(tok)
        v = self.values.get(name)
        if v is None:
            raise self.err(tok, f"use of undefined value %{name}")
        return v

    def _attrs(self, tok: Token) -> dict[str, Any]:
        """Parse an attribute dict token ``{k = v, ...}`` (values: int, float, string, bool, 0p literal, list).

        Models repeat the same attribute text many times, so parses are cached by text (and copied)."""
        cached = self._attr_cache.get(tok)
        if cached is not None:
            return {k: (list(v) if isinstance(v, list) else v) for k, v in cached.items()}
        out = self._parse_attrs(tok)
        self._attr_cache[str(tok)] = out
        return {k: (list(v) if isinstance(v, list) else v) for k, v in out.items()}

    def _parse_attrs(self, tok: Token) -> dict[str, Any]:
        body = str(tok)
        toks: list[tuple[str, str, int]] = []
        pos = 1
        end = len(body) - 1
        while pos < end:
            mt = _ATTR_TOKEN.match(body, pos, end)
            if mt is None or mt.end() == pos:
                if body[pos:end].strip() == "":
                    break
                raise self._err_in(
                    tok,
                    pos + len(body[pos:end]) - len(body[pos:end].lstrip()),
                    f"malformed attribute near {body[pos:end].strip()[:20]!r}",
                )
            kind = mt.lastgroup or ""
            toks.append((kind, mt.group(kind), mt.start(kind)))
            pos = mt.end()
        out: dict[str, Any] = {}
        i = 0

        def value(i: int) -> tuple[Any, int]:
            if i >= len(toks):
                raise self._err_in(tok, end, "expected an attribute value")
            kind, text, off = toks[i]
            if kind == "int":
                return int(text), i + 1
            if kind == "float":
                return float(text), i + 1
            if kind == "str":
                return _unstring(text), i + 1
            if kind == "bool":
                return text == "true", i + 1
            if kind == "plit":
                try:
                    return parse_literal(text), i + 1
                except ValueError as exc:
                    raise self._err_in(tok, off, f"bad pentary literal {text!r}: {exc}") from None
            if text == "[":
                items: list[Any] = []
                i += 1
                if i < len(toks) and toks[i][1] == "]":
                    return items, i + 1
                while True:
                    v, i = value(i)
                    items.append(v)
                    if i < len(toks) and toks[i][1] == ",":
                        i += 1
                        continue
                    if i < len(toks) and toks[i][1] == "]":
                        return items, i + 1
                    raise self._err_in(tok, toks[i][2] if i < len(toks) else end, "expected ',' or ']' in a list")
            raise self._err_in(tok, off, f"expected an attribute value, got {text!r}")

        while i < len(toks):
            kind, text, off = toks[i]
            if kind != "name":
                raise self._err_in(tok, off, f"expected an attribute name, got {text!r}")
            key = text
            if key in out:
                raise self._err_in(tok, off, f"attribute {key!r} given twice")
            out[key], i = value(i + 1)
            if i < len(toks):
                if toks[i][1] != ",":
                    raise self._err_in(tok, toks[i][2], f"expected ',' or '}}' after attribute {key!r}")
                i += 1
        return out

    def _err_in(self, tok: Token, offset: int, message: str) -> PccError:
        return error_at(message, self.text, self.file, tok.line, (tok.column or 1) + offset)

    def op(self, c: list) -> None:
        g = self.graph
        assert g is not None
        call_tok, attrs_tok, types_tok, loc_tok = c
        eq = call_tok.find("=") if call_tok[0] == "%" else -1
        if eq >= 0 and '"' in call_tok:  # a quoted result name may contain '='
            eq = _RESULTS.match(call_tok).end() - 1
        res_text = call_tok[: eq + 1] if eq >= 0 else None
        start = eq + 1
        while call_tok[start] in " \t":
            start += 1
        paren = call_tok.index("(", start)
        opname = call_tok[start:paren].rstrip()
        cls = OP_REGISTRY.get(opname)
        if cls is None or cls is Return:
            hint = difflib.get_close_matches(opname, list(OP_REGISTRY), n=1)
            more = f"; did you mean {hint[0]}?" if hint else ""
            raise self._err_in(call_tok, start, f"unknown op '{opname}'{more}")
        if '"' in call_tok:  # quoted names: the general path
            operands = [self._use_ref(mt.group(0), call_tok, mt.start()) for mt in _REF.finditer(call_tok, paren)]
        else:
            operands = []
            values = self.values
            off = paren + 1
            for part in call_tok[paren + 1 : -1].split(","):
                ref = part.strip()
                if ref:
                    v = values.get(ref[1:]) if ref[0] == "%" else None
                    operands.append(v if v is not None else self._use_ref(ref, call_tok, off + part.index(ref)))
                off += len(part) + 1
        rtypes = self._types_cache.get(types_tok)
        if rtypes is None:
            rtypes = []
            for mt in _TYPE.finditer(types_tok):
                try:
                    rtypes.append(parse_type(mt.group(0)))
                except ValueError as exc:
                    raise self._err_in(types_tok, mt.start(), str(exc)) from None
            self._types_cache[str(types_tok)] = rtypes
        names: list[str] = []
        if res_text is not None and "," not in res_text and '"' not in res_text:
            n = res_text[1:-1].rstrip()
            if n in self.values:
                raise self._err_in(call_tok, 0, f"value %{n} is defined twice")
            names.append(n)
        elif res_text is not None:
            for mt in _REF.finditer(res_text):
                n = _unquote(mt.group(0))
                if n in self.values or n in names:
                    raise self._err_in(call_tok, mt.start(), f"value %{n} is defined twice")
                names.append(n)
        if len(names) != len(rtypes):
            raise self._err_in(
                call_tok,
                start,
                f"{opname} defines {len(names)} result(s) but {len(rtypes)} result type(s) are given",
            )
        attrs = self._attrs(attrs_tok) if attrs_tok is not None else {}
        loc = None
        if loc_tok is not None:
            strs = [_unstring(m.group(0)) for m in _STRING.finditer(loc_tok)]
            loc = Location(file=strs[0], node=strs[1]) if len(strs) == 2 else Location(node=strs[0])
        op = cls(operands, rtypes, attrs, loc, names)
        op.pos = self.pos(call_tok)
        g.insert(len(g.ops), op)
        for r in op.results:
            self.values[r.name or ""] = r

    def _use_ref(self, ref: str, tok: Token, offset: int) -> Value:
        name = _unquote(ref)
        if ref[0] == "@":
            v = self.mod.weights.get(name) if self.mod else None
            if v is None:
                known = list(self.mod.weights) if self.mod else []
                hint = difflib.get_close_matches(name, known, n=1)
                more = f"; did you mean @{hint[0]}?" if hint else ""
                raise self._err_in(tok, offset, f"use of undeclared weight @{name}{more}")
            return v
        v = self.values.get(name)
        if v is None:
            raise self._err_in(tok, offset, f"use of undefined value %{name}")
        return v

    def ret(self, c: list) -> None:
        g = self.graph
        assert g is not None
        ret_tok = c[0]
        toks = [t for t in c[1:] if t is not None]
        vals = [self._use(t) for t in toks]
        declared = g._declared_outputs  # type: ignore[attr-defined]
        if len(declared) != len(vals):
            raise self.err(ret_tok, f"@{g.name} declares {len(declared)} result(s) but returns {len(vals)}")
        for (_, dt), tok, v in zip(declared, toks, vals, strict=True):
            if dt != v.type:
                raise self.err(tok, f"returned value {v.ref()} has type {v.type} but @{g.name} declares {dt}")
        op = Return(vals, [])
        op.pos = self.pos(ret_tok)
        g.insert(len(g.ops), op)
        del g._declared_outputs  # type: ignore[attr-defined]

    def func(self, c: list) -> Graph:
        return c[0]

    def module(self, c: list) -> Module:
        return c[0]

    def start(self, c: list) -> Module:
        return c[0]


_PRETTY = {
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "LESSTHAN": "'<'",
    "MORETHAN": "'>'",
    "$END": "end of input",
    "VALUE": "a value (%name)",
    "SYMBOL": "a symbol (@name)",
    "TYPE": "a type (tensor<...>)",
    "OPCALL": "an op (%results = dialect.op(operands))",
    "ATTRS": "an attribute dict {...}",
    "TYPES": "result types (: tensor<...>)",
    "LOC": "loc(...)",
    "NAME": "an attribute name",
    "INT": "an integer",
    "FLOAT": "a float",
    "STRING": "a string",
    "PLIT": "a pentary literal",
    "RETURN": "'return'",
    "TRUE": "true",
    "FALSE": "false",
}


def _pretty_terminal(name: str) -> str:
    if name in _PRETTY:
        return _PRETTY[name]
    for t in _builder_parser().terminals:
        if t.name == name and t.pattern.type == "str":
            return repr(t.pattern.value)
    return name


def _syntax_error(exc: UnexpectedInput, text: str, file: str, builder: _Builder) -> PccError:
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else "?"
        return error_at(f"unexpected character {ch!r}", text, file, exc.line, exc.column)
    expected = sorted({_pretty_terminal(t) for t in getattr(exc, "expected", set()) or set()})
    exp = ", ".join(expected[:8]) + (", ..." if len(expected) > 8 else "")
    tok = getattr(exc, "token", None)
    if isinstance(exc, UnexpectedEOF) or (tok is not None and tok.type == "$END"):
        line, col = text.count("\n") + 1, len(text) - text.rfind("\n")
        names = set(getattr(exc, "expected", set()) or set())
        if "RBRACE" in names:
            what = "unterminated region: expected '}' before the end of the file"
        elif "RETURN" in names and builder.graph is not None:
            what = (
                f"function @{builder.graph.name} is not terminated: "
                "expected 'return' and '}' before the end of the file"
            )
        else:
            what = f"unexpected end of input (expected {exp})"
        return error_at(what, text, file, line, col)
    assert isinstance(exc, UnexpectedToken)
    return error_at(f"unexpected {tok!s:.40}: expected {exp}", text, file, exc.line, exc.column)


def parse_module(text: str, file: str = "<input>", weights: dict[str, np.ndarray] | None = None) -> Module:
    """Parse IR text.  ``file`` names it in diagnostics and locates the sidecar weights file; ``weights``
    (name -> array) replaces the sidecar when given."""
    builder = _Builder(text, file, weights)
    # Building a large object graph triggers many useless cyclic-GC passes; pause the collector meanwhile.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _builder_parser()(text, builder)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, file, builder) from None
    except RecursionError:
        raise PccError("the text is nested too deeply to parse", Location(file)) from None
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
        raise PccError("an integer literal has more than 4300 digits", Location(file)) from None
    finally:
        if gc_was_enabled:
            gc.enable()
        if builder.npz is not None:
            builder.npz.close()


_RULES = (
    "start",
    "module",
    "module_head",
    "weights_clause",
    "weight_decl",
    "dense",
    "func",
    "func_head",
    "arg",
    "ret_types",
    "ret",
    "op",
)


@lru_cache(maxsize=1)
def _builder_parser():  # noqa: ANN202
    """A LALR parser whose reductions call the current parse's builder (Lark binds callbacks once)."""
    holder: list[_Builder] = []

    def forward(rule: str):  # noqa: ANN202
        def cb(self, children):  # noqa: ANN001, ANN202
            return getattr(holder[0], rule)(children)

        return cb

    dispatch_cls = type("_Dispatch", (Transformer,), {r: forward(r) for r in _RULES})
    lark = Lark(
        _GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="basic",
        maybe_placeholders=True,
        transformer=dispatch_cls(),
    )

    def run(text: str, builder: _Builder) -> Module:
        holder[:] = [builder]
        try:
            return lark.parse(text)
        finally:
            holder.clear()

    run.terminals = lark.terminals  # type: ignore[attr-defined]  (names for syntax-error messages)
    return run


def parse_file(path: str | os.PathLike[str]) -> Module:
    """Read and parse a ``.pir`` file (and its sidecar weights)."""
    p = Path(path)
    return parse_module(read_input_text(p, "a pcc IR text file"), str(p))
