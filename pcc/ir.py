"""The graph IR: types, values, operations, graphs (functions) and modules.

A :class:`Module` holds named :class:`Graph` functions and a weight store.  A graph is one block of
:class:`Operation` objects in program order, ending with a ``return``.  Every operand is a :class:`Value`:
a graph argument, an op result, or a module weight (``@name``).  Ops are declared once as small classes
(see :mod:`pcc.dialects`) with operand/result/attribute specs and a ``verify_``; the printer, parser and
verifier are generic over those declarations.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pcc.diagnostics import Location, PccError
from pcc.pentary import MAX_WORD_PENTS, word_max

# ----------------------------------------------------------------------------------------------- types

FLOAT_DTYPES = {"f16": np.float16, "f32": np.float32, "f64": np.float64}
INT_DTYPES = {
    "i1": np.bool_,
    "i8": np.int8,
    "i16": np.int16,
    "i32": np.int32,
    "i64": np.int64,
    "u8": np.uint8,
}
_PENT_RE = re.compile(r"p([0-9]+)\Z")


def pent_storage(pents: int) -> type[np.integer]:
    """The narrowest numpy integer type that holds an N-pent word."""
    m = word_max(pents)
    for t in (np.int8, np.int16, np.int32, np.int64):
        if m <= np.iinfo(t).max:
            return t
    raise ValueError(f"a {pents}-pent word does not fit int64")


def check_dtype(dtype: str) -> None:
    """Raise ValueError unless ``dtype`` names an IR element type."""
    if dtype in FLOAT_DTYPES or dtype in INT_DTYPES:
        return
    m = _PENT_RE.match(dtype)
    if m:
        n = int(m.group(1))
        if 1 <= n <= MAX_WORD_PENTS:
            return
        raise ValueError(f"pentary word width must be 1..{MAX_WORD_PENTS} pents, got {dtype!r}")
    raise ValueError(
        f"unknown element type {dtype!r}: expected f16/f32/f64, i1/i8/i16/i32/i64/u8, "
        "p5 (one pent, a weight) or pN (an N-pent word)"
    )


class TensorType:
    """``tensor<d0 x d1 x ... x dtype>``: a static shape and an element type.

    Element types: ``f16 f32 f64``, ``i1 i8 i16 i32 i64 u8``, ``p5`` (one pent: a value in -2..2, the weight
    type) and ``pN`` for an N-pent balanced-pentary integer word (activations, accumulators), 1 <= N <= 27.
    ``p5`` always means the five-level pent, so a five-pent word is not offered (use p4 or p6).
    """

    __slots__ = ("shape", "dtype", "_hash")

    def __init__(self, shape: Iterable[int], dtype: str) -> None:
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"negative dimension in shape {shape}")
        check_dtype(dtype)
        self.shape: tuple[int, ...] = shape
        self.dtype: str = dtype
        self._hash = hash((shape, dtype))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorType) and self.shape == other.shape and self.dtype == other.dtype

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        if not self.shape:
            return f"tensor<{self.dtype}>"
        return "tensor<" + "x".join(map(str, self.shape)) + "x" + self.dtype + ">"

    __repr__ = __str__

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def is_pent(self) -> bool:
        """True for the pentary types (p5 weights and pN words)."""
        return self.dtype.startswith("p")

    @property
    def pents(self) -> int | None:
        """Digits per element for pentary types: 1 for ``p5`` (one pent), N for ``pN``; else None."""
        if not self.is_pent:
            return None
        return 1 if self.dtype == "p5" else int(self.dtype[1:])

    @property
    def value_range(self) -> tuple[int, int] | None:
        """Inclusive integer range of a pentary type."""
        n = self.pents
        if n is None:
            return None
        m = word_max(n)
        return -m, m

    @property
    def np_dtype(self) -> np.dtype:
        if self.dtype in FLOAT_DTYPES:
            return np.dtype(FLOAT_DTYPES[self.dtype])
        if self.dtype in INT_DTYPES:
            return np.dtype(INT_DTYPES[self.dtype])
        return np.dtype(pent_storage(self.pents or 1))

    def with_shape(self, shape: Iterable[int]) -> TensorType:
        return TensorType(shape, self.dtype)

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(self.shape, dtype)


_TYPE_CACHE: dict[str, TensorType] = {}


def parse_type(text: str) -> TensorType:
    """Parse ``tensor<1x3x8x8xf32>``.  Raises ValueError with the reason."""
    t = _TYPE_CACHE.get(text)
    if t is not None:
        return t
    if not (text.startswith("tensor<") and text.endswith(">")):
        raise ValueError(f"expected a type 'tensor<...>', got {text!r}")
    parts = text[7:-1].split("x")
    dtype = parts[-1].strip()
    dims = []
    for p in parts[:-1]:
        p = p.strip()
        if not p.isdigit():
            raise ValueError(f"bad dimension {p!r} in {text}: dimensions are non-negative integers")
        dims.append(int(p))
    t = TensorType(dims, dtype)
    _TYPE_CACHE[text] = t
    return t


def dtype_of_array(a: np.ndarray) -> str:
    """The IR element type of a numpy array (pentary types cannot be guessed and must be given)."""
    for name, t in (*FLOAT_DTYPES.items(), *INT_DTYPES.items()):
        if a.dtype == np.dtype(t):
            return name
    raise ValueError(f"no IR element type for numpy dtype {a.dtype}")


# ----------------------------------------------------------------------------------------------- values


class Value:
    """An SSA value: a graph argument, an op result or a module weight."""

    __slots__ = ("name", "type", "owner", "index", "kind", "uses")

    def __init__(
        self,
        name: str | None,
        type: TensorType,
        owner: Operation | None = None,
        index: int = 0,
        kind: str = "result",
    ) -> None:
        self.name = name
        self.type = type
        self.owner = owner
        self.index = index
        self.kind = kind  # "arg", "result" or "weight"
        self.uses: list[Operation] = []

    @property
    def is_weight(self) -> bool:
        return self.kind == "weight"

    def has_one_use(self) -> bool:
        return len(self.uses) == 1

    @property
    def users(self) -> list[Operation]:
        """Distinct ops that use this value, in first-use order."""
        seen: dict[int, Operation] = {}
        for u in self.uses:
            seen.setdefault(id(u), u)
        return list(seen.values())

    def replace_all_uses_with(self, new: Value) -> None:
        for op in self.users:
            op.operands = [new if o is self else o for o in op.operands]

    def ref(self) -> str:
        """How the value is written in IR text (``%name`` or ``@name``)."""
        sigil = "@" if self.kind == "weight" else "%"
        return sigil + quote_name(self.name or "?")

    def __repr__(self) -> str:
        return f"{self.ref()}: {self.type}"


_BARE_NAME = re.compile(r"[A-Za-z0-9_.$\-]+\Z")


def quote_name(name: str) -> str:
    if _BARE_NAME.match(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ----------------------------------------------------------------------------------------------- attributes


@dataclass(frozen=True, slots=True)
class Attr:
    """An attribute declaration: its kind, whether it must be present, and its default.

    Kinds: ``int``, ``nat`` (an int >= 0), ``size`` (an int >= 1), ``float``, ``bool``, ``str``, ``ints`` (list
    of int), ``sizes`` (list of size), ``floats`` (list of float), ``strs`` (list of str).
    """

    kind: str
    required: bool = False
    default: Any = None
    doc: str = ""

    def check(self, value: Any) -> Any:
        """Return ``value`` normalised to this kind, or raise TypeError naming the expected kind."""
        k = self.kind
        if k in ("int", "nat", "size"):
            what = {"int": "an integer", "nat": "an integer >= 0", "size": "an integer >= 1"}[k]
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise TypeError(what)
            if value < {"int": value, "nat": 0, "size": 1}[k]:
                raise TypeError(what)
            return int(value)
        if k == "float":
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                raise TypeError("a number")
            return float(value)
        if k == "bool":
            if not isinstance(value, bool | np.bool_):
                raise TypeError("true or false")
            return bool(value)
        if k == "str":
            if not isinstance(value, str):
                raise TypeError("a string")
            return value
        if k in ("ints", "sizes", "floats", "strs"):
            if not isinstance(value, list | tuple):
                raise TypeError(f"a list of {k[:-1]}s")
            inner = Attr(k[:-1])
            try:
                return [inner.check(v) for v in value]
            except TypeError:
                raise TypeError("a list of integers >= 1" if k == "sizes" else f"a list of {k[:-1]}s") from None
        raise AssertionError(k)


def attr(kind: str, default: Any = None, doc: str = "") -> Attr:
    """An optional attribute with a default."""
    return Attr(kind, False, default, doc)


def required(kind: str, doc: str = "") -> Attr:
    """A required attribute."""
    return Attr(kind, True, None, doc)


# ----------------------------------------------------------------------------------------------- operations


# ----------------------------------------------------------------------------------------------- operand types


@dataclass(frozen=True, slots=True)
class TypeConstraint:
    """What an operand or result must be: a name used in op declarations, a predicate and its words for errors."""

    name: str
    accepts: Any  # Callable[[TensorType], bool]
    doc: str

    def check(self, t: TensorType) -> bool:
        return bool(self.accepts(t))


TYPE_CONSTRAINTS: dict[str, TypeConstraint] = {
    c.name: c
    for c in (
        TypeConstraint("any", lambda t: True, "any tensor"),
        TypeConstraint("float", lambda t: t.is_float, "a float tensor (f16/f32/f64)"),
        TypeConstraint("int", lambda t: t.dtype in INT_DTYPES, "an integer tensor (i1/i8/i16/i32/i64/u8)"),
        TypeConstraint("pent", lambda t: t.is_pent, "a pentary tensor (p5 or pN)"),
        TypeConstraint("pword", lambda t: t.is_pent and t.dtype != "p5", "an N-pent word tensor (pN)"),
    )
}


def type_constraint(name: str) -> TypeConstraint:
    """A constraint by name: one of :data:`TYPE_CONSTRAINTS`, or an element type (``f32``, ``p5``, ``p16``...)
    that the tensor must have exactly."""
    c = TYPE_CONSTRAINTS.get(name)
    if c is not None:
        return c
    check_dtype(name)
    return TypeConstraint(name, lambda t, d=name: t.dtype == d, f"a {name} tensor")


@dataclass(frozen=True, slots=True)
class OperandDef:
    """One declared operand or result: ``"name"``, ``"name?"`` (optional, only at the end), ``"name*"``
    (variadic, only at the end), each optionally typed: ``"w: p5"``, ``"res?: pword"``."""

    name: str
    optional: bool = False
    variadic: bool = False
    type: TypeConstraint | None = None

    @staticmethod
    def parse(spec: str) -> OperandDef:
        name, _, ty = spec.partition(":")
        name, ty = name.strip(), ty.strip()
        optional, variadic = name.endswith("?"), name.endswith("*")
        base = name.rstrip("?*")
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", base):
            raise ValueError(f"bad operand name {spec!r}")
        return OperandDef(base, optional, variadic, type_constraint(ty) if ty else None)

    @property
    def spec(self) -> str:
        return self.name + ("?" if self.optional else "*" if self.variadic else "")


def _accessor(index: int, d: OperandDef, results: bool) -> property:
    def get(op: Operation) -> Any:
        values = op.results if results else op._operands
        if d.variadic:
            return list(values[index:])
        if d.optional:
            return values[index] if index < len(values) else None
        return values[index]

    get.accessor = True  # type: ignore[attr-defined]
    return property(get, doc=f"the {'result' if results else 'operand'} {d.name!r}")


class VerifyError(Exception):
    """Raised by an op's ``verify_``; the verifier turns it into a located PccError."""


class Operation:
    """Base class of every op.  Subclasses declare, as class attributes:

    - ``name``: ``"dialect.op"``;
    - ``operands_spec``: operand names; ``"b?"`` is optional (only at the end), ``"inputs*"`` variadic; each may
      carry a type constraint, ``"w: p5"`` (see :func:`type_constraint`), which the verifier checks;
    - ``results_spec``: result names (``"outs*"`` for a variadic number), typed the same way;
    - ``attrs``: ``{name: Attr}``;
    - ``example``: one line of IR text using the op (used by the docs and the registry-driven round-trip test);
    - optionally ``verify_(self)`` raising :class:`VerifyError`, and ``infer_types(self)`` returning the
      expected result types (the verifier compares them with the declared ones).

    Every declared operand and result gets a named accessor (``op.w``, ``op.res`` is None when the optional
    operand is absent, a variadic one is a list); :attr:`operand_defs` / :attr:`result_defs` hold the parsed
    declarations and ``operands_spec`` / ``results_spec`` keep the bare names.
    """

    name: ClassVar[str] = ""
    operands_spec: ClassVar[tuple[str, ...]] = ()
    results_spec: ClassVar[tuple[str, ...]] = ("out",)
    attrs: ClassVar[dict[str, Attr]] = {}
    example: ClassVar[str] = ""
    example_types: ClassVar[dict[str, str]] = {}  # types of the example's operands (default %x: tensor<1x4xf32>)
    pure: ClassVar[bool] = True  # no side effects: removable when unused
    terminator: ClassVar[bool] = False
    operand_defs: ClassVar[tuple[OperandDef, ...]] = ()
    result_defs: ClassVar[tuple[OperandDef, ...]] = (OperandDef("out"),)
    typed: ClassVar[bool] = False  # some operand or result declares a type constraint

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for kind in ("operands", "results"):
            specs = cls.__dict__.get(f"{kind}_spec")
            if specs is None:
                continue
            defs = tuple(OperandDef.parse(s) for s in specs)
            for j, d in enumerate(defs):
                rest = defs[j + 1 :]
                if (d.variadic and rest) or (d.optional and not all(e.optional for e in rest)):
                    raise TypeError(f"{cls.__name__}: only the last {kind[:-1]}s may be optional or variadic")
            setattr(cls, f"{kind[:-1]}_defs", defs)
            cls.typed = any(d.type is not None for d in (*cls.operand_defs, *cls.result_defs))
            setattr(cls, f"{kind}_spec", tuple(d.spec for d in defs))
            for i, d in enumerate(defs):
                taken = vars(Operation).get(d.name, vars(object).get(d.name))
                if taken is not None and not getattr(getattr(taken, "fget", None), "accessor", False):
                    raise TypeError(f"{cls.__name__}: {kind[:-1]} name {d.name!r} clashes with an Operation attribute")
                setattr(cls, d.name, _accessor(i, d, kind == "results"))

    __slots__ = ("_operands", "results", "attributes", "loc", "pos", "graph")

    def __init__(
        self,
        operands: Sequence[Value],
        result_types: Sequence[TensorType],
        attributes: dict[str, Any] | None = None,
        loc: Location | None = None,
        result_names: Sequence[str | None] | None = None,
    ) -> None:
        self._operands = ops = list(operands)
        for v in ops:
            v.uses.append(self)
        if result_names is None:
            result_names = [None] * len(result_types)
        elif len(result_names) != len(result_types):
            raise ValueError(f"{len(result_names)} result names for {len(result_types)} result types")
        self.results = [
            Value(n, t, self, i, "result") for i, (n, t) in enumerate(zip(result_names, result_types, strict=True))
        ]
        self.attributes: dict[str, Any] = dict(attributes or {})
        self.loc = loc  # the model node this op came from (file + node name)
        self.pos: Location | None = None  # where the op was written in IR text (file + line:col), if parsed
        self.graph: Graph | None = None

    # operands keep their values' use lists up to date
    @property
    def operands(self) -> list[Value]:
        return self._operands

    @operands.setter
    def operands(self, values: list[Value]) -> None:
        for v in self._operands:
            v.uses.remove(self)
        self._operands = list(values)
        for v in self._operands:
            v.uses.append(self)

    def drop_operands(self) -> None:
        self.operands = []

    @property
    def result(self) -> Value:
        """The single result (error if the op has several)."""
        if len(self.results) != 1:
            raise ValueError(f"{self.name} has {len(self.results)} results")
        return self.results[0]

    def attr(self, key: str) -> Any:
        """An attribute's value, or its declared default."""
        if key in self.attributes:
            return self.attributes[key]
        spec = self.attrs.get(key)
        if spec is None:
            raise KeyError(f"{self.name} has no attribute {key!r}")
        d = spec.default
        return list(d) if isinstance(d, tuple) else d

    def operand(self, name: str) -> Value | None:
        """An operand by its declared name (None for an absent optional operand)."""
        for i, spec in enumerate(self.operands_spec):
            base = spec.rstrip("?*")
            if base == name:
                if spec.endswith("*"):
                    raise ValueError(f"{name} is variadic; use .operands")
                return self._operands[i] if i < len(self._operands) else None
        raise KeyError(f"{self.name} has no operand {name!r}")

    def verify_(self) -> None:
        """Op-specific checks; raise VerifyError."""

    def infer_types(self) -> list[TensorType] | None:
        """Expected result types, or None when the op does not infer them."""
        return None

    def __repr__(self) -> str:
        outs = ", ".join(r.ref() for r in self.results)
        ins = ", ".join(o.ref() for o in self._operands)
        return f"<{outs} = {self.name}({ins})>"


Operation.out = _accessor(0, OperandDef("out"), True)  # type: ignore[attr-defined]  (the default result)

OP_REGISTRY: dict[str, type[Operation]] = {}


def register_op(cls: type[Operation]) -> type[Operation]:
    """Class decorator: make an op known to the parser, verifier and tests."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*", cls.name):
        raise ValueError(f"bad op name {cls.name!r}: expected 'dialect.op' in lower case")
    if cls.name in OP_REGISTRY and OP_REGISTRY[cls.name] is not cls:
        raise ValueError(f"op {cls.name} registered twice")
    OP_REGISTRY[cls.name] = cls
    return cls


@register_op
class Return(Operation):
    """Ends a graph; its operands are the graph's outputs.  Written ``return %a, %b``."""

    name = "func.return"
    operands_spec = ("values*",)
    results_spec = ()
    pure = False
    terminator = True
    example = "return %x"


# ----------------------------------------------------------------------------------------------- graphs


class Graph:
    """A function: arguments, ops in program order, and a terminating ``return``."""

    def __init__(self, name: str, module: Module | None = None) -> None:
        self.name = name
        self.module = module
        self.args: list[Value] = []
        self.ops: list[Operation] = []
        self.loc: Location | None = None
        self._names: set[str] = set()
        self._counter = 0

    # -- names
    def fresh_name(self, hint: str | None = None) -> str:
        if hint and hint not in self._names:
            return hint
        while True:
            base = f"{hint}.{self._counter}" if hint else str(self._counter)
            self._counter += 1
            if base not in self._names:
                return base

    def _claim(self, v: Value) -> None:
        if v.name is None or v.name in self._names:
            v.name = self.fresh_name(v.name)
        self._names.add(v.name)

    # -- building
    def add_arg(self, name: str, type: TensorType) -> Value:
        v = Value(name, type, None, len(self.args), "arg")
        self._claim(v)
        self.args.append(v)
        return v

    def append(self, op: Operation) -> Operation:
        """Add ``op`` before the terminator (or at the end if there is none yet)."""
        idx = len(self.ops) - 1 if self.ops and self.ops[-1].terminator and not op.terminator else len(self.ops)
        return self.insert(idx, op)

    def insert(self, index: int, op: Operation) -> Operation:
        op.graph = self
        for r in op.results:
            self._claim(r)
        self.ops.insert(index, op)
        return op

    def insert_before(self, anchor: Operation, op: Operation) -> Operation:
        return self.insert(self.ops.index(anchor), op)

    def insert_after(self, anchor: Operation, op: Operation) -> Operation:
        return self.insert(self.ops.index(anchor) + 1, op)

    def set_outputs(self, values: Sequence[Value]) -> None:
        if self.ops and self.ops[-1].terminator:
            self.ops[-1].operands = list(values)
        else:
            self.insert(len(self.ops), Return(list(values), []))

    def erase(self, op: Operation) -> None:
        """Remove ``op``; its results must be unused."""
        for r in op.results:
            if r.uses:
                raise ValueError(f"cannot erase {op.name}: result {r.ref()} still has uses")
            self._names.discard(r.name or "")
        op.drop_operands()
        self.ops.remove(op)
        op.graph = None

    def replace_op(self, op: Operation, new_values: Sequence[Value]) -> None:
        """Redirect the uses of ``op``'s results to ``new_values`` and erase ``op``."""
        for r, v in zip(op.results, new_values, strict=True):
            r.replace_all_uses_with(v)
        self.erase(op)

    # -- queries
    @property
    def outputs(self) -> list[Value]:
        if self.ops and self.ops[-1].terminator:
            return list(self.ops[-1].operands)
        return []

    @property
    def body(self) -> list[Operation]:
        """The ops without the terminator."""
        return self.ops[:-1] if self.ops and self.ops[-1].terminator else list(self.ops)

    def ops_of(self, *classes: type[Operation]) -> list[Operation]:
        """A snapshot of the ops of the given classes, in program order."""
        return [op for op in self.ops if isinstance(op, classes)]

    def walk(self) -> Iterator[Operation]:
        yield from list(self.ops)

    def to_networkx(self):  # noqa: ANN201  (networkx is imported lazily)
        """The dataflow DAG: nodes are ops, an edge per producer -> consumer."""
        import networkx as nx

        g = nx.DiGraph()
        for op in self.ops:
            g.add_node(op)
        for op in self.ops:
            for v in op.operands:
                if v.owner is not None and v.owner.graph is self:
                    g.add_edge(v.owner, op)
        return g


class Module:
    """Named graphs plus a weight store (declarations with types, data as numpy arrays)."""

    def __init__(self, name: str = "module") -> None:
        self.name = name
        self.functions: dict[str, Graph] = {}
        self.weights: dict[str, Value] = {}
        self.weight_data: dict[str, np.ndarray] = {}
        self.weight_locs: dict[str, Location] = {}
        self.weights_file: str | None = None  # the sidecar .npz, relative to the .pir file
        self.source: str | None = None  # file the module was read from
        self.source_text: str | None = None  # its text, for diagnostics with the source line

    def add_function(self, name: str = "main") -> Graph:
        if name in self.functions:
            raise ValueError(f"function @{name} already exists")
        g = Graph(name, self)
        self.functions[name] = g
        return g

    @property
    def main(self) -> Graph:
        if "main" in self.functions:
            return self.functions["main"]
        if len(self.functions) == 1:
            return next(iter(self.functions.values()))
        raise PccError(f"module @{self.name} has no function @main")

    def fresh_weight_name(self, hint: str) -> str:
        if hint not in self.weights:
            return hint
        i = 1
        while f"{hint}.{i}" in self.weights:
            i += 1
        return f"{hint}.{i}"

    def add_weight(self, name: str, data: np.ndarray, dtype: str | None = None, unique: bool = True) -> Value:
        """Store ``data`` as weight ``@name`` (renamed if taken and ``unique``) and return its value."""
        if unique:
            name = self.fresh_weight_name(name)
        elif name in self.weights:
            raise ValueError(f"weight @{name} already exists")
        data = np.asarray(data)
        t = TensorType(data.shape, dtype or dtype_of_array(data))
        data = np.asarray(data, dtype=t.np_dtype, order="C")  # keeps 0-d arrays 0-d
        v = Value(name, t, None, 0, "weight")
        self.weights[name] = v
        self.weight_data[name] = data
        return v

    def declare_weight(self, name: str, type: TensorType, loc: Location | None = None) -> Value:
        if name in self.weights:
            raise ValueError(f"weight @{name} already exists")
        v = Value(name, type, None, 0, "weight")
        self.weights[name] = v
        if loc is not None:
            self.weight_locs[name] = loc
        return v

    def remove_unused_weights(self) -> int:
        dead = [n for n, v in self.weights.items() if not v.uses]
        for n in dead:
            del self.weights[n]
            self.weight_data.pop(n, None)
            self.weight_locs.pop(n, None)
        return len(dead)

    def weight(self, value: Value) -> np.ndarray:
        """The data of a weight value."""
        return self.weight_data[value.name or ""]

    def op_count(self) -> int:
        return sum(len(g.body) for g in self.functions.values())
