"""Print a :class:`~pcc.ir.Module` as ``.pir`` text, and write it with its sidecar weights.

The printer is generic over op declarations.  Weights of at most ``INLINE_LIMIT`` elements are printed inline
(``dense<[...]>``); larger ones are referenced by name into the sidecar ``.npz``.  print -> parse -> print is the
identity.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from pcc.diagnostics import atomic_write
from pcc.ir import Graph, Module, Operation, quote_name
from pcc.pentary import format_literal

INLINE_LIMIT = 16


def format_attr(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return repr(float(value))
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    raise TypeError(f"cannot print attribute value {value!r}")


def _quote_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_op(op: Operation) -> str:
    if op.terminator:
        return "return" + ("" if not op.operands else " " + ", ".join(v.ref() for v in op.operands))
    head = ", ".join(r.ref() for r in op.results) + " = " if op.results else ""
    text = head + op.name + "(" + ", ".join(v.ref() for v in op.operands) + ")"
    if op.attributes:
        order = list(op.attrs)
        keys = sorted(op.attributes, key=lambda k: (order.index(k) if k in order else len(order), k))
        text += " {" + ", ".join(f"{k} = {format_attr(op.attributes[k])}" for k in keys) + "}"
    text += " : " + (", ".join(str(r.type) for r in op.results) if op.results else "()")
    loc = op.loc
    if loc is not None and loc.node is not None:
        text += (
            f" loc({_quote_str(loc.file)} : {_quote_str(loc.node)})" if loc.file else f" loc({_quote_str(loc.node)})"
        )
    return text


def _format_dense(data: np.ndarray, dtype: str) -> str:
    flat = np.asarray(data).reshape(-1)
    if dtype.startswith("p"):
        items = [format_literal(int(v)) for v in flat]
    elif dtype == "i1":
        items = ["true" if v else "false" for v in flat]
    elif dtype.startswith("f"):
        items = [repr(float(v)) for v in flat]
    else:
        items = [str(int(v)) for v in flat]
    return "dense<[" + ", ".join(items) + "]>"


def is_inline(m: Module, name: str) -> bool:
    return m.weights[name].type.size <= INLINE_LIMIT and name in m.weight_data


def format_graph(g: Graph, indent: str = "  ") -> list[str]:
    args = ", ".join(f"{a.ref()}: {a.type}" for a in g.args)
    outs = [str(v.type) for v in g.outputs]
    ret = outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ")"
    lines = [f"{indent}func @{quote_name(g.name)}({args}) -> {ret} {{"]
    lines.extend(indent * 2 + format_op(op) for op in g.ops)
    lines.append(indent + "}")
    return lines


def print_module(m: Module) -> str:
    """The module as ``.pir`` text."""
    large = [n for n in m.weights if not is_inline(m, n)]
    clause = f" weights({_quote_str(m.weights_file)})" if m.weights_file and large else ""
    lines = [f"module @{quote_name(m.name)}{clause} {{"]
    for name, v in m.weights.items():
        decl = f"  weight {v.ref()} : {v.type}"
        if is_inline(m, name):
            decl += " = " + _format_dense(m.weight_data[name], v.type.dtype)
        lines.append(decl)
    for g in m.functions.values():
        lines.extend(format_graph(g))
    lines.append("}")
    return "\n".join(lines) + "\n"


def weights_npz_bytes(m: Module) -> bytes:
    """The sidecar archive of the module's large weights."""
    buf = io.BytesIO()
    np.savez(buf, **{n: m.weight_data[n] for n in m.weights if not is_inline(m, n) and n in m.weight_data})
    return buf.getvalue()


def write_module(m: Module, path: str | os.PathLike[str]) -> list[Path]:
    """Write ``m`` to ``path`` (``.pir``) and, when it has large weights, ``<stem>.npz`` beside it.

    Both files are written atomically; returns the paths written.
    """
    p = Path(path)
    written = []
    large = [n for n in m.weights if not is_inline(m, n)]
    if large:
        npz = p.with_suffix(".npz")
        m.weights_file = npz.name
        atomic_write(npz, weights_npz_bytes(m))
        written.append(npz)
    atomic_write(p, print_module(m))
    written.insert(0, p)
    return written
