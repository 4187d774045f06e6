"""plan-memory's placement: the segment-tree search gives exactly the plan of the quadratic first fit."""

from __future__ import annotations

import numpy as np
import pytest

from pcc.passes.plan_memory import ALIGN, Buffer, place_first_fit


def _reference(bufs: list[Buffer]) -> None:
    """The direct first fit: for each buffer, scan every placed one for a time overlap (O(n^2))."""
    placed: list[Buffer] = []
    for b in sorted(bufs, key=lambda b: (-b.size, b.start)):
        busy = sorted((p.offset, p.offset + p.size) for p in placed if not (p.end < b.start or b.end < p.start))
        off = 0
        for lo, hi in busy:
            if off + b.size <= lo:
                break
            off = max(off, -(-hi // ALIGN) * ALIGN)
        b.offset = off
        placed.append(b)


def _random_buffers(rng: np.random.Generator, n: int, long_lived: float) -> list[Buffer]:
    out = []
    for _ in range(n):
        start = int(rng.integers(0, n))
        span = int(rng.integers(0, n)) if rng.random() < long_lived else int(rng.integers(0, 4))
        out.append(Buffer(None, int(rng.integers(1, 50)), start, min(start + span, n)))  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("long_lived", [0.0, 0.1, 0.5])
def test_same_plan_as_direct_first_fit(seed: int, long_lived: float) -> None:
    rng = np.random.default_rng(seed)
    ours = _random_buffers(rng, 300, long_lived)
    ref = [Buffer(b.op, b.size, b.start, b.end) for b in ours]
    place_first_fit(ours)
    _reference(ref)
    assert [b.offset for b in ours] == [b.offset for b in ref]


def test_long_chain_plans() -> None:
    """A 30,000-op chain (each result used by the next op) plans into two alternating buffers."""
    n = 30_000
    bufs = [Buffer(None, 64, i, i + 1) for i in range(n)]  # type: ignore[arg-type]
    place_first_fit(bufs)
    assert {b.offset for b in bufs} == {0, 64}
