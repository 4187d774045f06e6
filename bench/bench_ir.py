"""IR text rates: parse, verify and print a generated 50,000-op module (ops/s, median of several runs).

Peer, measured in the same run: Lark building a plain parse tree for the same text with the same grammar
(no IR objects), which is what a parse-then-transform design would pay before any IR is built.

    python bench/bench_ir.py [--ops 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PY, Row, median_time, rate  # noqa: E402
from gen_ir import make_module  # noqa: E402
from lark import Lark  # noqa: E402

from pcc.parser import _GRAMMAR, parse_module  # noqa: E402
from pcc.printer import print_module  # noqa: E402
from pcc.verifier import verify_module  # noqa: E402


def measure(ops: int, repeat: int) -> dict:
    """Rates (ops/s, medians of ``repeat``) of pcc's parse, verify and print and of the Lark tree-only peer."""
    module = make_module(ops)
    n = module.op_count()
    text = print_module(module)
    weights = module.weight_data
    parsed = parse_module(text, weights=weights)
    t_print = median_time(lambda: print_module(parsed), repeat)
    t_parse = median_time(lambda: parse_module(text, weights=weights), repeat)
    t_verify = median_time(lambda: verify_module(parsed), repeat)
    tree_parser = Lark(_GRAMMAR.read_text(), parser="lalr", lexer="basic")
    t_tree = median_time(lambda: tree_parser.parse(text), repeat)
    return {
        "ops": n,
        "mb": len(text) / 1e6,
        "parse": n / t_parse,
        "verify": n / t_verify,
        "print": n / t_print,
        "tree": n / t_tree,
        "ratio": t_tree / t_parse,
    }


def rows(quick: bool = False) -> list[Row]:
    ops, repeat = (5_000, 3) if quick else (50_000, 3)
    m = measure(ops, repeat)
    cmd = f"{PY} bench/bench_ir.py --ops {ops} --repeat {repeat}"
    size = f"{m['ops']:,} ops, median of {repeat}"
    return [
        Row(
            f"IR parse rate, text -> IR objects ({size})",
            rate(m["parse"], "ops/s"),
            f"Lark parse tree only, same grammar, no IR objects: {rate(m['tree'], 'ops/s')}",
            m["ratio"],
            ">= 20,000 ops/s",
            cmd,
        ),
        Row(f"IR verify rate ({size})", rate(m["verify"], "ops/s"), command=cmd),
        Row(f"IR print rate ({size})", rate(m["print"], "ops/s"), command=cmd),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    m = measure(args.ops, args.repeat)
    print(f"IR benchmark: {m['ops']} ops, {m['mb']:.1f} MB of text, median of {args.repeat}")
    print(f"{'what':<34}{'ops/s':>12}")
    print(f"{'pcc parse (text -> IR objects)':<34}{m['parse']:>12,.0f}")
    print(f"{'pcc verify':<34}{m['verify']:>12,.0f}")
    print(f"{'pcc print':<34}{m['print']:>12,.0f}")
    print(f"{'peer: Lark parse tree only':<34}{m['tree']:>12,.0f}")
    print(f"ratio pcc parse / Lark tree-only: {m['ratio']:.2f}x")


if __name__ == "__main__":
    main()
