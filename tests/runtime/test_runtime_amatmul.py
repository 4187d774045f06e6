"""AMATMUL, the activation-by-activation matrix multiply: the ISA's executor against a hand-worked product and a
Python-integer reference, the simulator against the executor on random operands (small, near the int64 limit and
past it, saturating), both layouts of the second operand, accumulate, the clip of the second operand to its pents,
the cycle cost and a scratchpad fault."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_helpers import assert_same_state, preset

from pcc import isa
from pcc.backend.assembler import assemble
from pcc.isa import ACC_MAX
from pcc.pentary import word_max
from pcc.runtime import isa_ref, kernels
from pcc.runtime.simulator import Simulator

ENGINES = [False, True] if kernels.available() else [False]


def _python_product(a: np.ndarray, b: np.ndarray, base: np.ndarray, kn: int, pents: int, acc: int) -> list[int]:
    m, k = a.shape
    cap = word_max(pents)
    bb = [[max(-cap, min(cap, int(v))) for v in row] for row in (b.tolist() if kn else b.T.tolist())]  # k x n
    n = len(bb[0])
    out = []
    for i in range(m):
        for j in range(n):
            s = sum(int(a[i, t]) * bb[t][j] for t in range(k)) + (int(base[i * n + j]) if acc else 0)
            out.append(max(-ACC_MAX, min(ACC_MAX, s)))
    return out


def test_hand_worked_product() -> None:
    # [[1, 2], [3, 4]] @ [[5, 6], [7, 8]] = [[19, 22], [43, 50]]; second operand k x n (kn = 1)
    setup = {"A@0": [1, 2, 3, 4], "A@10": [5, 6, 7, 8]}
    m = isa_ref.Machine(assemble("HALT\n", "x.pasm"))
    preset(m, setup)
    isa_ref.execute(m, isa.Op.AMATMUL, 0, 0, 10, 2, 2, 2, 1, 4, 0)
    assert m.C[:4].tolist() == [19, 22, 43, 50]
    # the same second operand stored n x k (its transpose), kn = 0
    preset(m, {"A@10": [5, 7, 6, 8]})
    isa_ref.execute(m, isa.Op.AMATMUL, 0, 0, 10, 2, 2, 2, 0, 4, 0)
    assert m.C[:4].tolist() == [19, 22, 43, 50]
    # pents = 1 clips the second operand to -2..2: [[1, 2], [3, 4]] @ [[2, 2], [2, 2]]
    isa_ref.execute(m, isa.Op.AMATMUL, 0, 0, 10, 2, 2, 2, 0, 1, 0)
    assert m.C[:4].tolist() == [6, 6, 14, 14]


CASES = [  # (operand bound of a, pents of b): exact in float64, in int64, past int64, saturating
    (1000, 4),
    (word_max(16), 8),
    (word_max(16), 16),
]


@pytest.mark.parametrize("amax,pents", CASES)
@pytest.mark.parametrize("kn", [0, 1])
@pytest.mark.parametrize("acc", [0, 1])
def test_simulator_matches_the_executor(amax: int, pents: int, kn: int, acc: int) -> None:
    rng = np.random.default_rng(amax % 97 + pents + 3 * kn + acc)
    m_, n, k = 3, 5, 7
    a = rng.integers(-amax, amax + 1, (m_, k))
    b = rng.integers(-word_max(16), word_max(16) + 1, (k, n) if kn else (n, k))  # some beyond pents: clipped
    base = rng.integers(-ACC_MAX, ACC_MAX + 1, m_ * n)
    text = f"    AMATMUL 4, 100, 200, {m_}, {n}, {k}, {kn}, {pents}, {acc}\n    HALT\n"
    prog = assemble(text, "amatmul.pasm")
    setup = {"A@100": a, "A@200": b, "C@4": base}
    ref = isa_ref.Machine(prog)
    preset(ref, setup)
    isa_ref.run(ref, 10)
    assert ref.C[4 : 4 + m_ * n].tolist() == _python_product(a, b, base, kn, pents, acc)
    for fused in ENGINES:
        sim = Simulator(prog, fused=fused)
        preset(sim, setup)
        sim.run(10)
        assert_same_state(sim, ref, f"fused={fused}")


def test_cost_is_digit_serial_and_a_fault_names_the_instruction() -> None:
    ins = isa.BY_MNEMONIC["AMATMUL"]
    cfg = isa.DEFAULT_CONFIG
    mm = isa.cycles(isa.BY_MNEMONIC["MATMUL"], (0, 0, 0, 64, 64, 64, 0), cfg)
    assert isa.cycles(ins, (0, 0, 0, 64, 64, 64, 1, 8, 0), cfg) == 8 * mm  # 8 pent planes: 8 MATMUL schedules
    prog = assemble(f"    AMATMUL 0, 0, {cfg.a_spad_words - 2}, 2, 2, 2, 0, 8, 0\n    HALT\n", "f.pasm")
    with pytest.raises(Exception, match="AMATMUL"):
        Simulator(prog).run(10)
