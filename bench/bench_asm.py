"""Assembler and pent-packing throughput.

    .venv/bin/python bench/bench_asm.py [--lines 100000] [--pents 25000000] [--runs 5]

Measures, as medians over ``--runs`` runs: the assembler on a generated program of ``--lines`` lines (text to
Program, and text to .pbin bytes including encoding and packing), the disassembler, and packing/unpacking of
``--pents`` random pents with pcc.pentary. Targets: >= 20,000 lines/s and >= 50 M pents/s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import numpy as np

from pcc.backend import binary
from pcc.backend.assembler import assemble
from pcc.backend.disasm import disassemble
from pcc.pentary import pack_pents, unpack_pents


def generate(lines: int, seed: int = 0) -> str:
    """A program in the style of compiled networks: tensor tiles, scalar bookkeeping, loops and comments."""
    r = random.Random(seed)
    out = ["; generated benchmark program", ".text"]
    n = 0
    while n < lines - 4:
        block = r.randrange(3)
        out.append(f"blk{n}:")
        if block == 0:  # one conv tile
            out += [
                f"    TLOADC 0, [P0 + {r.randrange(10**6)}], 256, 64, 0      ; bias",
                f"    TLOAD 0, [P1 + {r.randrange(10**5)}], 1, 18432, 18432",
                f"    TLOADW 0, [P2 + {r.randrange(10**5)}], 36864",
                "    CONV 0, 0, 0, 18, 16, 64, 64, 3, 3, 1, 1, 0, 1, 0, 1, 1, 1",
                f"    REQUANT 18432, 0, 16384, {r.randrange(1, 10**6)}, {r.randrange(8, 40)}, 4",
                "    TRELU 18432, 18432, 16384",
                f"    TSTORE [P3 + {r.randrange(10**6)}], 18432, 1, 16384, 16384",
            ]
        elif block == 1:  # a matmul tile
            out += [
                f"    TLOAD 0, [P1 + {r.randrange(10**5)}], 64, 576, 576",
                f"    TLOADW 0, [P2 + {r.randrange(10**5)}], 36864",
                "    MATMUL 0, 0, 0, 64, 64, 576, 0",
                f"    EADD 40000, 0, 4096, 4096, {r.randrange(10**5)}, 12, {r.randrange(10**5)}, 12, 4",
            ]
        else:  # scalar loop
            out += [
                f"    MOVI P{r.randrange(1, 29)}, {r.randrange(-(10**6), 10**6)}",
                f"    ADDI P1, P1, {r.randrange(-999, 999)}",
                f"    LOAD P4, [P1 + {r.randrange(100)}]",
                "    ADD P5, P5, P4        # running sum",
                f"    STORE P5, [SP - {r.randrange(1, 50)}]",
                f"    BNE P1, blk{n}",
            ]
        n = len(out)
    out += ["    HALT"]
    return "\n".join(out[: lines - 1] + ["    HALT"]) + "\n"


def median_time(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--pents", type=int, default=25_000_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    text = generate(args.lines)
    lines = text.count("\n")
    assemble("HALT\n")  # build the Lark parser once, outside the timing
    prog = assemble(text)
    blob = binary.to_bytes(prog)
    rows = [
        ("assemble (text -> Program)", lines / median_time(lambda: assemble(text), args.runs), "lines/s"),
        (
            "assemble + write (text -> .pbin)",
            lines / median_time(lambda: binary.to_bytes(assemble(text)), args.runs),
            "lines/s",
        ),
        ("read .pbin (decode)", lines / median_time(lambda: binary.from_bytes(blob), args.runs), "lines/s"),
        ("disassemble (Program -> text)", lines / median_time(lambda: disassemble(prog), args.runs), "lines/s"),
    ]
    pents = np.random.default_rng(0).integers(-2, 3, size=args.pents, dtype=np.int8)
    packed = pack_pents(pents)
    rows.append(("pack_pents", args.pents / median_time(lambda: pack_pents(pents), args.runs), "pents/s"))
    rows.append(
        ("unpack_pents", args.pents / median_time(lambda: unpack_pents(packed, args.pents), args.runs), "pents/s")
    )
    print(f"{lines} lines, {len(prog.instructions)} instructions, {len(blob)} bytes; {args.pents} pents")
    print(f"median of {args.runs} runs")
    print(f"{'benchmark':<36} {'rate':>16}")
    for name, rate, unit in rows:
        print(f"{name:<36} {rate:>12,.0f} {unit}")


if __name__ == "__main__":
    main()
