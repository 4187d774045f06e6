"""Shared helpers of the benchmark scripts: the :class:`Row` that ``rows()`` returns, timing and formatting.

A benchmark script imports this as ``from common import Row, median_time`` (``bench/`` is the script's folder,
so it is on ``sys.path`` when the script runs and when ``bench/run_all.py`` imports it).  See run_all.py for the
``rows()`` contract.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

PY = ".venv/bin/python"  # how the commands in the table start (run from the repository root)


@dataclass
class Row:
    """One line of docs/benchmarks.md.

    what: what is measured, with its size, e.g. "IR parse rate (50,000 ops)".
    pcc: pcc's number and unit as text, e.g. "20,079 ops/s" (a median of repeats).
    peer: what the peer is and its number, e.g. "Lark parse tree only: 33,528 ops/s", or "-".
    ratio: pcc / peer oriented so that > 1 means pcc is better (t_peer / t_pcc, or rate / peer rate), or None.
    target: the issue's target text, e.g. ">= 20,000 ops/s", or "".
    command: the exact command that reproduces the row, run from the repository root.
    table, cells: optionally, the row is also one line of a table of its own under the main one, titled ``table``,
        whose columns are the keys of ``cells`` (column -> text, in order; every row of a table has the same keys).
    """

    what: str
    pcc: str
    peer: str = "-"
    ratio: float | None = None
    target: str = ""
    command: str = ""
    table: str = ""
    cells: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cells"] = [[k, v] for k, v in self.cells.items()]  # pairs: a stored JSON object may come back sorted
        return d

    @classmethod
    def from_obj(cls, obj: Any) -> Row:
        """A Row from a Row (of any copy of this module), a dataclass or a mapping with the same fields."""
        if isinstance(obj, Row):
            return obj
        if hasattr(obj, "__dataclass_fields__"):
            obj = asdict(obj)
        if not isinstance(obj, dict):
            raise TypeError(f"a row must be a Row or a dict, not {type(obj).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(obj) - names
        if unknown:
            raise TypeError(f"unknown row fields: {', '.join(sorted(unknown))}")
        if "what" not in obj or "pcc" not in obj:
            raise TypeError("a row needs at least 'what' and 'pcc'")
        row = cls(**obj)
        row.what, row.pcc, row.peer = str(row.what), str(row.pcc), str(row.peer)
        row.target, row.command, row.table = str(row.target), str(row.command), str(row.table)
        pairs = row.cells.items() if isinstance(row.cells, dict) else row.cells
        try:
            row.cells = {str(k): str(v) for k, v in pairs}
        except (TypeError, ValueError):
            raise TypeError("a row's cells must be a mapping (or [column, text] pairs) of column to text") from None
        if row.ratio is not None:
            row.ratio = float(row.ratio)
        return row


def times(fn: Callable[[], object], repeat: int, warmup: int = 0) -> list[float]:
    """Wall times of ``repeat`` calls of ``fn`` (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median_time(fn: Callable[[], object], repeat: int, warmup: int = 0) -> float:
    """Median wall time of ``repeat`` calls of ``fn`` (after ``warmup`` untimed calls)."""
    return statistics.median(times(fn, repeat, warmup))


def rate(value: float, unit: str, digits: int = 3) -> str:
    """A rate or size as text with an SI prefix for large values: 20079 -> "20,079 ops/s", 1.18e8 -> "118 M ..."."""
    for scale, prefix in ((1e9, "G"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{_sig(value / scale, digits)} {prefix} {unit}"
    if abs(value) >= 1000:
        return f"{value:,.0f} {unit}"
    return f"{_sig(value, digits)} {unit}"


def seconds(t: float) -> str:
    """A duration as text with 3 significant digits: 0.1712 -> "0.171 s", 0.0042 -> "4.20 ms", 83.4 -> "83.4 s"."""
    if t < 0.1:
        return f"{_sig(t * 1e3, 3)} ms"
    return f"{_sig(t, 3)} s"


def _sig(x: float, digits: int) -> str:
    """``x`` to ``digits`` significant digits, no exponent, with thousands separators (0.1712 -> "0.171")."""
    if x == 0 or not math.isfinite(x):
        return str(x)
    decimals = max(digits - 1 - math.floor(math.log10(abs(x))), 0)
    return f"{x:,.{decimals}f}"


def model_names(ap: Any, text: str, known: Sequence[str]) -> list[str]:
    """The comma-separated ``--models`` list, each one of ``known`` (else the parser's usage error)."""
    names = [n for n in text.split(",") if n]
    bad = [n for n in names if n not in known]
    if bad:
        ap.error(f"unknown model {bad[0]!r}; known: {', '.join(known)}")
    return names
