"""Rule tables: each stage's behaviour for an op is one registered function, keyed by the op's class.

A stage (the float reference, the pent reference, lowering nn -> pent, tiling, code emission, the profiler's
accounting) owns one :class:`RuleTable` and registers a rule per op class with ``@TABLE.register(OpClass)``::

    TILE = RuleTable("tiling")

    @TILE.register(pent.Relu, pent.Clamp)
    def elementwise_tile(op, sp): ...

    TILE.lookup(op)(op, sp)   # the rule, or a PccError at the op: "tiling: no rule for pent.foo (node 'x')"

A later module that handles more cases of an op than the rule registered first (the lowering of a gather by
run-time ids, of a masking term) refines it: ``@TABLE.refine(OpClass)`` on ``fn(prior, *args)``, which returns
``prior(*args)`` for the cases it leaves alone; ``TABLE.chain(OpClass)`` lists the rules from the newest.  A
module that gives an op declared unsupported its first rule claims it (``@TABLE.claim(OpClass)``).

An op that a stage deliberately does not handle is declared with :meth:`RuleTable.unsupported` and a reason
(``nn.batch_norm``: "run fold-batchnorm first"), so that a lookup fails with that reason and the coverage test
(tests/core/test_rules.py) can tell a declared gap from a forgotten rule.  Which stages an op must pass
through follows from its dialect (:data:`DIALECT_STAGES`); every table registers itself in :data:`TABLES` by
stage name, and ``pcc opt --list-ops`` prints the op x stage matrix from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from pcc.diagnostics import PccError
from pcc.ir import Operation

__all__ = [
    "DIALECT_STAGES",
    "STAGE_MODULES",
    "TABLES",
    "Refined",
    "RuleTable",
    "Unsupported",
    "coverage",
    "required_stages",
]

F = TypeVar("F", bound=Callable[..., Any])

# The stages an op of each dialect passes through on its way from a model to the machine.
DIALECT_STAGES: dict[str, tuple[str, ...]] = {
    "nn": ("float-reference", "lowering"),
    "pent": ("pent-reference", "tiling", "emission", "profiling"),
}

TABLES: dict[str, RuleTable[Any]] = {}

# The module that holds each stage's table (imported by the tools that list or test all of them; the core
# itself imports no stage).
STAGE_MODULES: dict[str, str] = {
    "float-reference": "pcc.interpreter",
    "lowering": "pcc.passes.quantize_lower",
    "pent-reference": "pcc.pent_reference",
    "tiling": "pcc.passes.tile",
    "emission": "pcc.backend.codegen",
    "profiling": "pcc.runtime.profile",
}


class Unsupported:
    """The entry of an op that a stage declares it does not handle, with the reason given to the user."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unsupported({self.reason!r})"


class Refined:
    """A rule that refines an earlier one (:meth:`RuleTable.refine`): calling it calls ``fn(prior, *args)``."""

    def __init__(self, fn: Callable[..., Any], prior: Callable[..., Any]) -> None:
        self.fn, self.prior = fn, prior
        self.__name__ = getattr(fn, "__name__", "refined")
        self.__doc__ = fn.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(self.prior, *args, **kwargs)

    def __repr__(self) -> str:
        return f"Refined({self.__name__} over {getattr(self.prior, '__name__', self.prior)!r})"


def _where(op: Operation) -> str:
    return op.name + (f" (node {op.loc.node!r})" if op.loc is not None and op.loc.node else "")


class RuleTable(Generic[F]):
    """One stage's rules, keyed by op class (the exact class, as the IR's op registry is).  A stage whose unit
    is not an IR op keys its rules the same way by another name-carrying key (the profiler's instruction
    accounting: the ISA's opcodes)."""

    def __init__(self, stage: str, gaps: bool = False) -> None:
        if stage in TABLES:
            raise ValueError(f"a rule table for stage {stage!r} exists already")
        self.stage = stage
        self.gaps = gaps  # may ops of the stage's dialect be declared unsupported (with a reason)?
        self.rules: dict[Any, F | Unsupported] = {}
        TABLES[stage] = self

    def register(self, *classes: Any) -> Callable[[F], F]:
        """Decorator: ``fn`` is the stage's rule for each of ``classes``."""
        if not classes:
            raise ValueError("register needs at least one op class")

        def deco(fn: F) -> F:
            for cls in classes:
                if cls in self.rules:
                    raise ValueError(f"{self.stage}: a second rule for {cls.name}")
                self.rules[cls] = fn
            return fn

        return deco

    def claim(self, *classes: Any) -> Callable[[F], F]:
        """Decorator: ``fn`` is the rule for each of ``classes``, which an earlier module declared unsupported
        (a gap that a later module fills); a class that has a rule already is an error (see :meth:`refine`)."""
        for cls in classes:
            if isinstance(self.rules.get(cls), Unsupported):
                del self.rules[cls]
        return self.register(*classes)

    def refine(self, *classes: Any) -> Callable[[Callable[..., Any]], Refined]:
        """Decorator: ``fn(prior, *args)`` refines the present rule ``prior`` of each of ``classes`` (registered
        earlier, by another module, or inherited from a base class): the table's rule becomes ``fn`` with
        ``prior`` bound, which handles the cases it knows and returns ``prior(*args)`` for the others.  A
        refinement can be refined again; :meth:`chain` lists the rules from the newest to the first.  A class
        without a rule (none, or declared unsupported) is an error: register or claim one."""
        if not classes:
            raise ValueError("refine needs at least one op class")
        for cls in classes:
            if self.get(cls) is None:
                raise ValueError(f"{self.stage}: {cls.name} has no rule to refine")

        def deco(fn: Callable[..., Any]) -> Refined:
            made = None
            for cls in classes:
                made = Refined(fn, self.get(cls))
                self.rules[cls] = made  # type: ignore[assignment]
            assert made is not None
            return made

        return deco

    def chain(self, cls: Any) -> list[Callable[..., Any]]:
        """The rules that handle ``cls``, the newest refinement first and the first registered rule last (one
        entry for a rule never refined; empty without a rule)."""
        out: list[Callable[..., Any]] = []
        fn: Any = self.get(cls)
        while isinstance(fn, Refined):
            out.append(fn.fn)
            fn = fn.prior
        return out if fn is None else [*out, fn]

    def unsupported(self, reason: str, *classes: Any) -> None:
        """Declare that this stage does not handle ``classes`` (a lookup fails with ``reason``)."""
        for cls in classes:
            if cls in self.rules:
                raise ValueError(f"{self.stage}: {cls.name} has a rule already")
            self.rules[cls] = Unsupported(reason)

    def _entry(self, cls: Any) -> F | Unsupported | None:
        """The entry of ``cls`` or, for an op class, of its nearest base class that has one (a rule registered
        for a base such as ``pent.Elementwise`` serves every op declared on it)."""
        fn = self.rules.get(cls)
        if fn is None and isinstance(cls, type):
            fn = next((self.rules[b] for b in cls.__mro__[1:] if b in self.rules), None)
        return fn

    def get(self, cls: Any) -> F | None:
        """The rule for ``cls``, or None (also for a declared-unsupported op)."""
        fn = self._entry(cls)
        return None if isinstance(fn, Unsupported) else fn

    def reason(self, cls: Any) -> str | None:
        """Why ``cls`` has no rule here: the declared reason, ``"no rule"`` when nothing is registered, or None
        when there is a rule."""
        fn = self._entry(cls)
        if fn is None:
            return "no rule"
        return fn.reason if isinstance(fn, Unsupported) else None

    def lookup(self, op: Operation) -> F:
        """The rule for ``op``; a PccError at the op, naming the op and the stage, when there is none."""
        fn = self._entry(type(op))
        if fn is None or isinstance(fn, Unsupported):
            why = f": {fn.reason}" if isinstance(fn, Unsupported) else ""
            raise PccError(f"{self.stage}: no rule for {_where(op)}{why}", op.loc)
        return fn

    def __contains__(self, cls: object) -> bool:
        return self.get(cls) is not None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rules)


def required_stages(cls: type[Operation]) -> tuple[str, ...]:
    """The stages an op class must have a rule (or a declared gap) in: its dialect's, unless the class names
    its own ``stages``."""
    own = getattr(cls, "stages", None)
    if own is not None:
        return tuple(own)
    return DIALECT_STAGES.get(cls.name.partition(".")[0], ())


def coverage() -> list[tuple[type[Operation], dict[str, str]]]:
    """Per registered op class (in name order), each stage it must pass through and its status there:
    ``"rule"``, ``"unsupported: <reason>"``, or ``"MISSING"`` (no rule and no declared reason).  Only the tables
    loaded so far are seen: import the :data:`STAGE_MODULES` first (:func:`pcc.drivers.opt.load_stages` does)."""
    from pcc.ir import OP_REGISTRY

    rows = []
    for name in sorted(OP_REGISTRY):
        cls = OP_REGISTRY[name]
        status: dict[str, str] = {}
        for stage in required_stages(cls):
            table = TABLES.get(stage)
            why = "no rule" if table is None else table.reason(cls)
            status[stage] = "rule" if why is None else ("MISSING" if why == "no rule" else f"unsupported: {why}")
        if status:
            rows.append((cls, status))
    return rows
