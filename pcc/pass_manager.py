"""Passes and the pass manager.

A pass is a frozen dataclass registered under a kebab-case ``name``; its fields are its options, so the
pipeline string ``canonicalize,quantize{per-tensor=true act-pents=8}`` maps one-to-one onto Python objects
(option names are the field names with ``_`` written ``-``).  ``run(module)`` rewrites the module in place and
returns whether it changed anything.

The manager runs a pipeline, verifying the module at the end (and after every pass with ``verify_each``),
printing or dumping the IR after passes, and timing them.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TextIO

from pcc.diagnostics import PccError, atomic_write
from pcc.ir import Module
from pcc.printer import is_inline, print_module, weights_npz_bytes
from pcc.verifier import verify_module


class Pass:
    """Base class: subclass as ``@register_pass @dataclass(frozen=True) class P(Pass): name = "p"``."""

    name: ClassVar[str] = ""

    def run(self, module: Module) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        """The pass as it is written in a pipeline string."""
        opts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if v != f.default:
                opts.append(f"{f.name.replace('_', '-')}={_format_option(v)}")
        return self.name + ("{" + " ".join(opts) + "}" if opts else "")


PASS_REGISTRY: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a pass available to pipelines by its name."""
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"pass {cls.__name__} must be a frozen dataclass")
    if not cls.name or cls.name != cls.name.lower() or " " in cls.name:
        raise ValueError(f"pass {cls.__name__} needs a kebab-case name")
    if cls.name in PASS_REGISTRY and PASS_REGISTRY[cls.name] is not cls:
        raise ValueError(f"pass {cls.name} registered twice")
    PASS_REGISTRY[cls.name] = cls
    return cls


def _format_option(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _convert(text: str, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text in ("none", "None", ""):
            return None
        typ = args[0]
    if typ is bool:
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise PccError(f"{where}: expected true or false, got {text!r}")
    if typ is int:
        try:
            return int(text)
        except ValueError:
            raise PccError(f"{where}: expected an integer, got {text!r}") from None
    if typ is float:
        try:
            return float(text)
        except ValueError:
            raise PccError(f"{where}: expected a number, got {text!r}") from None
    return text


def make_pass(name: str, options: dict[str, str] | None = None) -> Pass:
    """Instantiate a registered pass from string options (kebab- or snake-case keys)."""
    cls = PASS_REGISTRY.get(name)
    if cls is None:
        hint = difflib.get_close_matches(name, list(PASS_REGISTRY), n=1)
        known = ", ".join(sorted(PASS_REGISTRY)) or "none registered; importing pcc.passes registers the built-in ones"
        more = f"; did you mean '{hint[0]}'?" if hint else f" (known passes: {known})"
        raise PccError(f"unknown pass '{name}'{more}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, raw in (options or {}).items():
        fname = key.replace("-", "_")
        if fname not in fields:
            known = ", ".join(f.replace("_", "-") for f in fields) or "none"
            raise PccError(f"pass '{name}' has no option '{key}' (options: {known})")
        kwargs[fname] = _convert(raw, hints.get(fname, str), f"option '{key}' of pass '{name}'")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise PccError(f"pass '{name}': {exc}") from None


def _split_top(text: str, seps: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise PccError(f"pipeline {text!r}: unbalanced '}}'")
        if ch in seps and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise PccError(f"pipeline {text!r}: unbalanced '{{'")
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_pipeline(text: str) -> list[Pass]:
    """``"a,b{opt=1 other=x},c"`` -> pass objects.  Options inside braces are separated by spaces or commas."""
    passes = []
    for item in _split_top(text, ","):
        if "{" in item:
            if not item.endswith("}"):
                raise PccError(f"pipeline element {item!r}: text after '}}'")
            name, body = item[: item.index("{")].strip(), item[item.index("{") + 1 : -1]
            opts = {}
            for kv in body.replace(",", " ").split():
                if "=" not in kv:
                    raise PccError(f"pass '{name}': option {kv!r} must be written name=value")
                k, v = kv.split("=", 1)
                opts[k.strip()] = v.strip()
        else:
            name, opts = item, {}
        passes.append(make_pass(name, opts))
    return passes


@dataclasses.dataclass
class PassManager:
    """Runs passes over a module with verification, IR printing/dumping and timing."""

    passes: Sequence[Pass]
    verify_each: bool = False
    print_ir_after_all: bool = False
    print_ir_after: Sequence[str] = ()
    dump_dir: str | Path | None = None
    timing: bool = False
    out: TextIO = dataclasses.field(default_factory=lambda: sys.stderr)
    on_pass: Callable[[int, Pass], None] | None = None  # progress callback (index, pass)
    times: list[tuple[str, float, bool]] = dataclasses.field(default_factory=list)

    def run(self, module: Module) -> Module:
        unknown = [n for n in self.print_ir_after if n not in PASS_REGISTRY]
        if unknown:
            raise PccError(f"--print-ir-after: unknown pass '{unknown[0]}'")
        self._dump_sig: tuple | None = None
        self._dump_npz: str | None = None
        if self.dump_dir is not None:
            Path(self.dump_dir).mkdir(parents=True, exist_ok=True)
            self._dump(module, 0, "input")
        for i, p in enumerate(self.passes, 1):
            if self.on_pass is not None:
                self.on_pass(i - 1, p)
            t0 = time.perf_counter()
            changed = bool(p.run(module))
            dt = time.perf_counter() - t0
            self.times.append((p.describe(), dt, changed))
            if self.verify_each:
                try:
                    verify_module(module, text=None)
                except PccError as exc:
                    exc.notes.append(f"the IR became invalid after pass '{p.describe()}' (pass #{i})")
                    raise
            if self.print_ir_after_all or p.name in self.print_ir_after:
                print(f"// ----- IR after {p.describe()} -----", file=self.out)
                print(print_module(module), file=self.out)
            if self.dump_dir is not None:
                self._dump(module, i, p.name)
        verify_module(module, text=None)
        if self.timing:
            self.print_timing()
        return module

    def print_timing(self) -> None:
        total = sum(t for _, t, _ in self.times) or 1e-12
        width = max([len(n) for n, _, _ in self.times] + [4])
        print(f"{'pass':<{width}}  {'time (ms)':>10}  {'share':>6}  changed", file=self.out)
        for n, t, c in self.times:
            print(f"{n:<{width}}  {t * 1e3:>10.2f}  {t / total:>6.1%}  {'yes' if c else 'no'}", file=self.out)
        print(f"{'total':<{width}}  {total * 1e3:>10.2f}", file=self.out)

    def _dump(self, module: Module, index: int, name: str) -> None:
        """Write ``NNN-<pass>.pir``; a sidecar is written only when the weights changed since the last dump."""
        d = Path(self.dump_dir or ".")
        stem = f"{index:03d}-{name}"
        large = [n for n in module.weights if not is_inline(module, n)]
        sig = tuple((n, id(module.weight_data.get(n))) for n in large)
        saved = module.weights_file
        if large and sig != self._dump_sig:
            self._dump_npz = stem + ".npz"
            atomic_write(d / self._dump_npz, weights_npz_bytes(module))
            self._dump_sig = sig
        module.weights_file = self._dump_npz if large else None
        try:
            atomic_write(d / (stem + ".pir"), print_module(module))
        finally:
            module.weights_file = saved
