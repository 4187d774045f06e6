"""The IR verifier: structural and per-op checks, reported at the op's text position or model node.

Checks: unique value names; every operand defined before its use (one block, so dominance is program order);
weights referenced exist in the module; operand and result counts and types per the op declaration; attributes present,
known and of the declared kind; the op's own ``verify_``; result types equal the op's inferred types;
a terminating ``return``; weight data present with the declared shape and, for pentary types, in range; every
type within the rank and byte limits of :mod:`pcc.limits`.
"""

from __future__ import annotations

import functools

import numpy as np

from pcc import limits
from pcc.diagnostics import Location, PccError, source_line
from pcc.ir import Graph, Module, OperandDef, Operation, TensorType, Value, VerifyError


def _op_error(op: Operation, message: str, text: str | None) -> PccError:
    notes = []
    if op.pos is not None:
        if op.loc is not None and op.loc.node:
            notes.append(f"the op comes from node {op.loc.node!r}" + (f" of {op.loc.file}" if op.loc.file else ""))
        return PccError(f"{op.name}: {message}", op.pos, source_line=source_line(text, op.pos.line), notes=notes)
    return PccError(f"{op.name}: {message}", op.loc)


@functools.lru_cache(maxsize=4096)
def _arity(specs: tuple[str, ...], n: int, what: str) -> str | None:
    required = sum(1 for s in specs if not s.endswith(("?", "*")))
    variadic = any(s.endswith("*") for s in specs)
    optional = sum(1 for s in specs if s.endswith("?"))
    if n < required or (not variadic and n > required + optional):
        names = ", ".join(specs) if specs else "none"
        if variadic:
            return f"expected at least {required} {what}s ({names}), got {n}"
        if optional:
            return f"expected {required} to {required + optional} {what}s ({names}), got {n}"
        return f"expected {required} {what}(s) ({names}), got {n}"
    return None


def _check_types(defs: tuple[OperandDef, ...], values: list[Value], what: str) -> None:
    """Each value against the type constraint of its declaration (a variadic one's for all the rest)."""
    for i, v in enumerate(values):
        d = defs[min(i, len(defs) - 1)]
        if d.type is not None and not d.type.check(v.type):
            raise VerifyError(f"{what} {d.name!r} must be {d.type.doc}, got {v.type}")


def verify_op(op: Operation) -> None:
    """Check one op against its declaration; raises VerifyError."""
    msg = _arity(op.operands_spec, len(op.operands), "operand") or _arity(op.results_spec, len(op.results), "result")
    if msg:
        raise VerifyError(msg)
    if op.typed:
        _check_types(op.operand_defs, op.operands, "operand")
        _check_types(op.result_defs, op.results, "result")
    for key, value in op.attributes.items():
        spec = op.attrs.get(key)
        if spec is None:
            known = ", ".join(op.attrs) or "none"
            raise VerifyError(f"unknown attribute {key!r} (known: {known})")
        try:
            op.attributes[key] = spec.check(value)
        except TypeError as exc:
            raise VerifyError(f"attribute {key!r} must be {exc}, got {value!r}") from None
    for key, spec in op.attrs.items():
        if spec.required and key not in op.attributes:
            raise VerifyError(f"missing required attribute {key!r} ({spec.kind})")
    op.verify_()
    inferred = op.infer_types()
    if inferred is not None:
        if len(inferred) != len(op.results):
            raise VerifyError(f"expected {len(inferred)} results, got {len(op.results)}")
        for i, (r, t) in enumerate(zip(op.results, inferred, strict=True)):
            if r.type != t:
                which = f"result #{i}" if len(op.results) > 1 else "result"
                raise VerifyError(f"{which} type {r.type} does not match the inferred type {t}")


class _LimitCheck:
    """Checks types against the limits in force, read once per verification; each distinct type once."""

    def __init__(self) -> None:
        self.limits = limits.current()
        self.ok: set[TensorType] = set()

    def __call__(self, t: object) -> str | None:
        if t in self.ok:
            return None
        why = _over_limits(t, self.limits)
        if why is None and isinstance(t, TensorType):
            self.ok.add(t)
        return why


def _over_limits(t: object, lims: limits.Limits) -> str | None:
    """Why a value's type is over the resource limits (pcc.limits), or None."""
    if not isinstance(t, TensorType):
        return None
    if t.rank > lims.max_rank:
        return f"type {t} has rank {t.rank}, more than the {lims.max_rank} allowed (PCC_LIMIT_MAX_RANK)"
    nbytes = t.size * t.np_dtype.itemsize
    if nbytes > lims.max_tensor_bytes:
        return (f"type {t} takes {nbytes:,} bytes, more than the {lims.max_tensor_bytes:,} allowed "
                "(PCC_LIMIT_MAX_TENSOR_BYTES)")  # fmt: skip
    return None


def verify_graph(g: Graph, module: Module | None = None, text: str | None = None) -> None:
    over_limits = _LimitCheck()
    defined: set[int] = set()
    names: dict[str, Value] = {}
    for a in g.args:
        if a.name in names:
            raise PccError(f"@{g.name}: argument %{a.name} defined twice", g.loc)
        if (why := over_limits(a.type)) is not None:
            raise PccError(f"@{g.name}: argument %{a.name}: {why}", g.loc)
        names[a.name or ""] = a
        defined.add(id(a))
    if not g.ops or not g.ops[-1].terminator:
        raise PccError(f"function @{g.name} does not end with a return", g.loc)
    for idx, op in enumerate(g.ops):
        if op.terminator and idx != len(g.ops) - 1:
            raise _op_error(op, "a return must be the last op of its function", text)
        for i, v in enumerate(op.operands):
            if v.kind == "weight":
                if module is None or module.weights.get(v.name or "") is not v:
                    raise _op_error(op, f"operand #{i} refers to weight {v.ref()}, which the module lacks", text)
            elif id(v) not in defined:
                where = "later" if v.owner is not None and v.owner.graph is g else "outside this function"
                raise _op_error(op, f"operand #{i} {v.ref()} is used before its definition (defined {where})", text)
        for r in op.results:
            if r.name in names and names[r.name] is not r:
                raise _op_error(op, f"value {r.ref()} is defined twice", text)
            if (why := over_limits(r.type)) is not None:
                raise _op_error(op, f"{r.ref()}: {why}", text)
            names[r.name or ""] = r
            defined.add(id(r))
        try:
            verify_op(op)
        except VerifyError as exc:
            raise _op_error(op, str(exc), text) from None


def verify_weights(m: Module, text: str | None = None) -> None:
    over_limits = _LimitCheck()
    for name, v in m.weights.items():
        loc = m.weight_locs.get(name, Location(m.source))
        line = source_line(text, loc.line)
        if (why := over_limits(v.type)) is not None:
            raise PccError(f"weight @{name}: {why}", loc, source_line=line)
        data = m.weight_data.get(name)
        if data is None:
            where = f"the weights file {m.weights_file!r}" if m.weights_file else "the module (no weights file)"
            raise PccError(f"weight @{name}: no data for it in {where}", loc, source_line=line)
        if tuple(data.shape) != v.type.shape:
            raise PccError(
                f"weight @{name}: declared {v.type} but the data has shape {list(data.shape)}",
                loc,
                source_line=line,
            )
        t = v.type
        if t.is_pent:
            if not np.issubdtype(data.dtype, np.integer):
                raise PccError(
                    f"weight @{name}: {t.dtype} data must be integers, got {data.dtype}",
                    loc,
                    source_line=line,
                )
            lo, hi = t.value_range or (0, 0)
            if data.size and (data.min() < lo or data.max() > hi):
                raise PccError(f"weight @{name}: values out of the {t.dtype} range [{lo}, {hi}]", loc, source_line=line)
        elif t.is_float and not np.issubdtype(data.dtype, np.floating):
            raise PccError(f"weight @{name}: declared {t.dtype} but the data is {data.dtype}", loc, source_line=line)
        if data.dtype != t.np_dtype:
            m.weight_data[name] = data.astype(t.np_dtype)


def verify_module(m: Module, text: str | None = None) -> None:
    """Verify every function and the weight store; raises a located PccError at the first problem."""
    text = text if text is not None else m.source_text
    verify_weights(m, text)
    for g in m.functions.values():
        verify_graph(g, m, text)
