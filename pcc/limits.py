"""Resource limits for everything pcc reads from a file or the command line.

Every size that comes from outside (a tensor's shape in a model, an archive member's declared length, a
``.zero`` count in assembly, an ``.npy`` header, ``--input-shape``) is checked against these limits *before*
anything is allocated, so a small hostile file cannot make pcc use gigabytes of memory or minutes of time.

The defaults suit models that fit a pentary processor's memory with a wide margin.  Each limit can be raised
(or lowered) for one run with an environment variable named ``PCC_LIMIT_`` + the field name in upper case,
e.g. ``PCC_LIMIT_MAX_TENSOR_BYTES=8e9 pcc convert big.pth``.  Values accept ``1e9``-style numbers and the
suffixes ``K``/``M``/``G`` (powers of 1024).  docs/security.md lists them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable

from pcc.diagnostics import Location, PccError

__all__ = ["Limits", "current", "check_elements", "check_range", "check_shape", "ENV_PREFIX"]

ENV_PREFIX = "PCC_LIMIT_"

_GIB = 1 << 30
_MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Limits:
    """The limits in force; see the module docstring for how to change them."""

    #: bytes of one tensor (weights, inputs, a ``.zero`` region, an ``.npy`` array)
    max_tensor_bytes: int = 1 * _GIB
    #: bytes of one input file read whole (model JSON, IR text, assembly, a ``.pt2`` archive)
    max_file_bytes: int = 2 * _GIB
    #: members of one archive (``.pt2``, ``.npz`` sidecar)
    max_archive_members: int = 10_000
    #: bytes one archive (or one of its members) may inflate to
    max_archive_bytes: int = 2 * _GIB
    #: uncompressed / compressed size of a deflated archive member (zip-bomb guard)
    max_compression_ratio: int = 200
    #: rank (number of dimensions) of any tensor
    max_rank: int = 16
    #: nesting depth of JSON documents and IR attribute lists
    max_nesting: int = 200
    #: characters of one symbolic-shape expression in a ``.pt2``
    max_expr_chars: int = 2_000


_SUFFIX = {"": 1, "K": 1 << 10, "M": _MIB, "G": _GIB, "T": 1 << 40}


def _parse(name: str, text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise PccError(
            f"environment variable {ENV_PREFIX}{name.upper()}={text!r}: expected a size such as 4096, 1e9 or 2G"
        )
    value = float(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if not math.isfinite(value) or value < 1 or value > 2**62:
        raise PccError(f"environment variable {ENV_PREFIX}{name.upper()}={text!r}: out of range 1..2**62")
    return int(value)


def current() -> Limits:
    """The limits for this run: the defaults, overridden by ``PCC_LIMIT_*`` environment variables."""
    changes = {}
    for f in dataclasses.fields(Limits):
        text = os.environ.get(ENV_PREFIX + f.name.upper())
        if text is not None:
            changes[f.name] = _parse(f.name, text)
    return Limits(**changes)


def _hint(field: str) -> str:
    return f"the limit is {ENV_PREFIX}{field.upper()} (see docs/security.md)"


def check_elements(count: int, itemsize: int, what: str, loc: Location | None = None) -> None:
    """Refuse a tensor of ``count`` elements of ``itemsize`` bytes over ``max_tensor_bytes``."""
    lim = current().max_tensor_bytes
    if count * itemsize > lim:
        raise PccError(
            f"{what} would take {count * itemsize:,} bytes, more than the {lim:,} allowed",
            loc,
            notes=[_hint("max_tensor_bytes")],
        )


def check_shape(shape: Iterable[int], itemsize: int, what: str, loc: Location | None = None) -> tuple[int, ...]:
    """Check a shape read from outside: integer dims >= 0, rank and byte size within the limits."""
    lims = current()
    dims = tuple(shape)
    if len(dims) > lims.max_rank:
        raise PccError(
            f"{what} has rank {len(dims)}, more than the {lims.max_rank} allowed", loc, notes=[_hint("max_rank")]
        )
    count = 1
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise PccError(f"{what} has an invalid dimension {d!r} (expected an integer >= 0)", loc)
        count *= d
    check_elements(count, itemsize, what, loc)
    return dims


def check_range(start: float, stop: float, step: float, itemsize: int, what: str, loc: Location | None = None) -> int:
    """The length of ``arange(start, stop, step)``, checked (finite bounds, nonzero step, bytes within the
    limit) before anything is allocated."""
    if not all(math.isfinite(float(v)) for v in (start, stop, step)) or step == 0:
        raise PccError(f"{what}: a range needs finite bounds and a nonzero step, got {start}, {stop}, {step}", loc)
    count = max(0, math.ceil((stop - start) / step))
    check_elements(count, itemsize, what, loc)
    return count
