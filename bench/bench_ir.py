"""IR text rates: parse, verify and print a generated 50,000-op module (ops/s, median of several runs).

Peer, measured in the same run: Lark building a plain parse tree for the same text with the same grammar
(no IR objects), which is what a parse-then-transform design would pay before any IR is built.

    python bench/bench_ir.py [--ops 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_ir import make_module  # noqa: E402
from lark import Lark  # noqa: E402

from pcc.parser import _GRAMMAR, parse_module  # noqa: E402
from pcc.printer import print_module  # noqa: E402
from pcc.verifier import verify_module  # noqa: E402


def median_time(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    module = make_module(args.ops)
    n = module.op_count()
    text = print_module(module)
    weights = module.weight_data
    parsed = parse_module(text, weights=weights)
    t_print = median_time(lambda: print_module(parsed), args.repeat)
    t_parse = median_time(lambda: parse_module(text, weights=weights), args.repeat)
    t_verify = median_time(lambda: verify_module(parsed), args.repeat)
    tree_parser = Lark(_GRAMMAR.read_text(), parser="lalr", lexer="basic")
    t_tree = median_time(lambda: tree_parser.parse(text), args.repeat)
    print(f"IR benchmark: {n} ops, {len(text) / 1e6:.1f} MB of text, median of {args.repeat}")
    print(f"{'what':<34}{'ops/s':>12}")
    print(f"{'pcc parse (text -> IR objects)':<34}{n / t_parse:>12,.0f}")
    print(f"{'pcc verify':<34}{n / t_verify:>12,.0f}")
    print(f"{'pcc print':<34}{n / t_print:>12,.0f}")
    print(f"{'peer: Lark parse tree only':<34}{n / t_tree:>12,.0f}")
    print(f"ratio pcc parse / Lark tree-only: {t_tree / t_parse:.2f}x")


if __name__ == "__main__":
    main()
