"""Assembler and pent-packing throughput.

    .venv/bin/python bench/bench_asm.py [--lines 100000] [--pents 25000000] [--runs 5] [--peer]

Measures, as medians over ``--runs`` runs: the assembler on a generated program of ``--lines`` lines (text to
Program, and text to .pbin bytes including encoding and packing), the disassembler, and packing/unpacking of
``--pents`` random pents with pcc.pentary, and the packing density (bits per pent of the packed blob, against
int8's 8 and the log2 5 = 2.32 limit).  ``--peer`` also times Lark building a plain parse tree of the same text
with the assembler's grammar.  Targets: >= 20,000 lines/s and >= 50 M pents/s.
"""

from __future__ import annotations

import argparse
import math
import random

import numpy as np
from common import PY, Row, median_time, rate
from lark import Lark

from pcc.backend import binary
from pcc.backend.assembler import GRAMMAR_PATH, assemble
from pcc.backend.disasm import disassemble
from pcc.pentary import pack_pents, unpack_pents

LOG2_5 = math.log2(5)


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


def lark_tree_parser() -> Lark:
    """The peer: Lark LALR with the assembler's own grammar and lexer, building a plain tree (no transformer)."""
    return Lark(GRAMMAR_PATH.read_text(encoding="utf-8"), parser="lalr", lexer="contextual")


def measure(lines: int, pents: int, runs: int, peer: bool = False) -> dict:
    """Rates as medians of ``runs`` runs; ``peer`` also times the Lark tree-only parse of the same text."""
    text = generate(lines)
    lines = text.count("\n")
    assemble("HALT\n")  # build the Lark parser once, outside the timing
    prog = assemble(text)
    blob = binary.to_bytes(prog)
    results = [
        ("assemble (text -> Program)", lines / median_time(lambda: assemble(text), runs), "lines/s"),
        (
            "assemble + write (text -> .pbin)",
            lines / median_time(lambda: binary.to_bytes(assemble(text)), runs),
            "lines/s",
        ),
        ("read .pbin (decode)", lines / median_time(lambda: binary.from_bytes(blob), runs), "lines/s"),
        ("disassemble (Program -> text)", lines / median_time(lambda: disassemble(prog), runs), "lines/s"),
    ]
    digits = np.random.default_rng(0).integers(-2, 3, size=pents, dtype=np.int8)
    packed = pack_pents(digits)
    results.append(("pack_pents", pents / median_time(lambda: pack_pents(digits), runs), "pents/s"))
    results.append(("unpack_pents", pents / median_time(lambda: unpack_pents(packed, pents), runs), "pents/s"))
    out = {
        "lines": lines,
        "instructions": len(prog.instructions),
        "bytes": len(blob),
        "pents": pents,
        "rows": results,
        "bits_per_pent": 8 * len(packed) / pents,  # from the real packed blob
        "peer": None,
    }
    if peer:
        tree = lark_tree_parser()
        out["peer"] = lines / median_time(lambda: tree.parse(text), runs)
    return out


def rows(quick: bool = False) -> list[Row]:
    lines, pents, runs = (10_000, 1_000_000, 3) if quick else (100_000, 25_000_000, 5)
    m = measure(lines, pents, runs, peer=True)
    cmd = f"{PY} bench/bench_asm.py --lines {lines} --pents {pents} --runs {runs} --peer"
    rates = {name: r for name, r, _ in m["rows"]}
    prog = f"{m['lines']:,}-line program, median of {runs}"
    pent_size = f"{pents / 1e6:g} M random pents, median of {runs}"
    bits = m["bits_per_pent"]
    return [
        Row(
            f"assembler rate, text -> Program ({prog})",
            rate(rates["assemble (text -> Program)"], "lines/s"),
            f"Lark LALR parse tree only, assembler grammar: {rate(m['peer'], 'lines/s')}",
            rates["assemble (text -> Program)"] / m["peer"],
            ">= 20,000 lines/s",
            cmd,
        ),
        Row(
            f"assemble + write .pbin ({prog})", rate(rates["assemble + write (text -> .pbin)"], "lines/s"), command=cmd
        ),
        Row(f"read .pbin ({prog})", rate(rates["read .pbin (decode)"], "lines/s"), command=cmd),
        Row(f"disassemble ({prog})", rate(rates["disassemble (Program -> text)"], "lines/s"), command=cmd),
        Row(
            f"pack pents, 3 per 7 bits ({pent_size})",
            rate(rates["pack_pents"], "pents/s"),
            target=">= 50 M pents/s",
            command=cmd,
        ),
        Row(f"unpack pents ({pent_size})", rate(rates["unpack_pents"], "pents/s"), command=cmd),
        Row(
            f"packing density, bits per weight (pack_pents blob of {pents / 1e6:g} M pents)",
            f"{bits:.3f} bits/weight ({LOG2_5 / bits:.1%} of the log2 5 limit)",
            "int8: 8 bits/weight",
            8 / bits,
            f"against int8 (8) and the log2 5 limit ({LOG2_5:.2f})",
            cmd,
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--pents", type=int, default=25_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--peer", action="store_true", help="also time Lark building a parse tree of the same text")
    args = ap.parse_args()

    m = measure(args.lines, args.pents, args.runs, args.peer)
    print(f"{m['lines']} lines, {m['instructions']} instructions, {m['bytes']} bytes; {args.pents} pents")
    print(f"median of {args.runs} runs")
    print(f"{'benchmark':<36} {'rate':>16}")
    for name, r, unit in m["rows"]:
        print(f"{name:<36} {r:>12,.0f} {unit}")
    print(f"packing density: {m['bits_per_pent']:.4f} bits/pent (int8: 8, log2 5 = {LOG2_5:.4f})")
    if m["peer"] is not None:
        print(f"{'peer: Lark parse tree only':<36} {m['peer']:>12,.0f} lines/s")


if __name__ == "__main__":
    main()
