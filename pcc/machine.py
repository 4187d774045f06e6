"""Machine targets: the memory sizes of the pentary machine a program is compiled for.

The sizes a program depends on — main memory and the three scratchpads — are fields of
:class:`pcc.isa.MachineConfig`; the defaults (``DEFAULT_CONFIG``) describe the present machine.  A *target*
changes some of them:

- ``pcc compile --machine SPEC`` with SPEC one of: ``default``; a list ``dram=32M,a=1M`` (sizes in words, or
  pents for W, with the suffixes K/M/G as powers of 1024 or ``2^N``); a named target (:data:`TARGETS`); or a
  ``.json`` file holding an object of the same keys, e.g. ``{"dram_words": 33554432}``;
- the program records every size that differs from the default — ``.machine dram_words=33554432`` in the
  assembly, a MACHINE section in the ``.pbin`` — and the simulator and ``pcc run`` build their machine from it,
  so a program always runs on the machine it was compiled for.

:func:`check_fits` is the early check: before quantizing (the slow part of a compile) it bounds from below the
main memory a float graph will need — its matrix weights at one pent each, packed 16 to a word, plus the largest
set of activations one op reads and writes at once — and stops with the sizes and the option to change them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping

from pcc.diagnostics import Location, PccError, check_input_file, read_input_json
from pcc.isa import DEFAULT_CONFIG, MachineConfig
from pcc.pentary import word_max

__all__ = [
    "SIZE_FIELDS",
    "ALIASES",
    "TARGETS",
    "parse_machine",
    "overrides",
    "from_overrides",
    "check_fits",
    "min_words",
]

#: the size parameters a target may change, with their unit
SIZE_FIELDS: dict[str, str] = {
    "dram_words": "words of main memory",
    "a_spad_words": "words of the activation scratchpad A",
    "w_spad_pents": "pents of the weight scratchpad W",
    "c_spad_words": "words of the accumulator scratchpad C",
}
#: short names accepted in ``--machine``
ALIASES: dict[str, str] = {"dram": "dram_words", "mem": "dram_words", "a": "a_spad_words", "w": "w_spad_pents",
                           "c": "c_spad_words"}  # fmt: skip
#: named targets
TARGETS: dict[str, dict[str, int]] = {
    "default": {},
    "large": {"dram_words": 1 << 27},  # 134 M words: GPT-2-small-sized models
}
#: main memory must be addressable by the architecture's address field
MAX_DRAM = word_max(DEFAULT_CONFIG.addr_pents) + 1
#: scratchpad entries are addressed by DMA and tensor-instruction fields of the same width
MAX_SPAD = 1 << 40
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_OPTION = "--machine (e.g. --machine dram=32M, or a named target: " + ", ".join(TARGETS) + ")"


def _size(text: str, key: str, where: str) -> int:
    t = text.strip()
    m = re.fullmatch(r"2\^([0-9]{1,2})", t)
    if m:
        return 1 << int(m.group(1))
    m = re.fullmatch(r"([0-9]+)([KMG]?)", t, re.IGNORECASE)
    if not m:
        raise PccError(f"{where}: {key}={text!r} is not a size (expected e.g. 8388608, 32M or 2^25)")
    return int(m.group(1)) * _SUFFIX[m.group(2).upper()]


def from_overrides(values: Mapping[str, object], where: str = "machine") -> MachineConfig:
    """The default machine with ``values`` (size fields by name or alias) replaced, each checked."""
    changes: dict[str, int] = {}
    for key, v in values.items():
        name = ALIASES.get(str(key), str(key))
        if name not in SIZE_FIELDS:
            known = ", ".join([*SIZE_FIELDS, *ALIASES])
            raise PccError(f"{where}: unknown machine size {key!r} (known: {known})")
        if name in changes:
            raise PccError(f"{where}: {name} given twice")
        if isinstance(v, str):
            v = _size(v, str(key), where)
        if isinstance(v, bool) or not isinstance(v, int):
            raise PccError(f"{where}: {key} must be a positive integer, got {v!r}")
        hi = MAX_DRAM if name == "dram_words" else MAX_SPAD
        if not 1 <= v <= hi:
            raise PccError(f"{where}: {key}={v} is out of range 1..{hi}")
        changes[name] = v
    return dataclasses.replace(DEFAULT_CONFIG, **changes) if changes else DEFAULT_CONFIG


def parse_machine(spec: str | MachineConfig | None) -> MachineConfig:
    """A machine from ``--machine``'s text (see the module docstring); None or ``default`` is the present one."""
    if spec is None or isinstance(spec, MachineConfig):
        return spec or DEFAULT_CONFIG
    s = spec.strip()
    if s in TARGETS:
        return from_overrides(TARGETS[s], f"--machine {s}")
    if s.lower().endswith(".json"):
        what = "a JSON machine description"
        p = check_input_file(s, what)  # a folder, a FIFO or a device is refused before any read
        if p.stat().st_size > 1 << 16:
            raise PccError(f"{p}: a machine description is a small JSON object; this file is too large")
        data = read_input_json(p, what)
        if not isinstance(data, dict):
            raise PccError(f'{p}: a machine description is a JSON object such as {{"dram_words": 33554432}}')
        return from_overrides(data, str(p))
    values: dict[str, str] = {}
    for part in s.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise PccError(
                f"--machine {spec!r}: expected KEY=SIZE[,KEY=SIZE...] (e.g. dram=32M,a=1M), a .json file or one "
                f"of the named targets {', '.join(TARGETS)}"
            )
        if key.strip() in values:
            raise PccError(f"--machine {spec!r}: {key.strip()} given twice")
        values[key.strip()] = value
    return from_overrides(values, f"--machine {spec!r}")


def overrides(cfg: MachineConfig) -> dict[str, int]:
    """The size fields of ``cfg`` that differ from the default machine (what a program records)."""
    return {k: getattr(cfg, k) for k in SIZE_FIELDS if getattr(cfg, k) != getattr(DEFAULT_CONFIG, k)}


def _words(n: int) -> str:
    return f"{n:,} words ({n / 1e6:.1f} M)"


def min_words(module: object, doubled: frozenset[int] | set[int] = frozenset()) -> tuple[int, int]:
    """A lower bound of the main memory the float graph of ``module`` needs once compiled, as ``(weights,
    activations)`` in words: every constant matrix operand of a conv/gemm/matmul and every gathered table at
    one pent per element (two for the ops whose id is in ``doubled``: two-pent weights), packed 16 to a word;
    and the largest set of activations one op reads and writes at once, one word per element."""
    from pcc.ir import Module

    assert isinstance(module, Module)
    g = module.main
    weight_ops = {"nn.conv2d", "nn.conv_transpose2d", "nn.gemm", "nn.matmul", "nn.gather", "nn.embedding"}
    pents = 0
    counted: set[int] = set()
    arena = 0
    for op in g.body:
        live = 0
        seen: set[int] = set()
        for v in (*op.operands, *op.results):
            if id(v) in seen or not hasattr(v.type, "shape"):
                continue
            seen.add(id(v))
            n = math.prod(v.type.shape)
            if v.is_weight:
                if op.name in weight_ops and id(v) not in counted and n > 1:
                    counted.add(id(v))
                    pents += -(-n // 16) * 16 * (2 if id(op) in doubled else 1)
            else:
                live += n
        arena = max(arena, live)
    return pents // 16, arena


def check_fits(module: object, cfg: MachineConfig = DEFAULT_CONFIG) -> None:
    """Stop before quantizing when the float graph of ``module`` cannot fit ``cfg``'s main memory.

    The bound is a lower one (:func:`min_words`), so a model it passes may still be refused by code generation
    (which knows the exact sizes): every constant matrix operand of a conv/gemm/matmul and every gathered table
    costs at least one pent per element, packed 16 to a word; and the activations one op reads and writes must
    be in main memory together, one word per element."""
    weights, arena = min_words(module)
    need = weights + arena
    if need > cfg.dram_words:
        raise PccError(
            f"the model cannot fit the machine's main memory: it needs at least {_words(need)} (weights "
            f"{_words(weights)} at one pent each, activations {_words(arena)} for its largest layer) and the "
            f"machine has {_words(cfg.dram_words)}",
            Location(getattr(module, "source", None)),
            notes=[f"compile for a larger machine with {_OPTION}; this check runs before quantizing"],
        )


def too_small_note() -> str:
    """The hint code generation adds when the exact memory need exceeds the target's."""
    return f"compile for a larger machine with {_OPTION}"
