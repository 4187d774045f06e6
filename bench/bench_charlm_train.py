"""Character-LM training benchmark: the pentary QAT model against its float twin, within a wall-clock budget.

Run from the repository root::

    .venv/bin/python bench/bench_charlm_train.py                      # the issue's 10 minutes (about 20 in all)
    .venv/bin/python bench/bench_charlm_train.py --time-budget 60     # a shorter budget
    .venv/bin/python bench/bench_charlm_train.py --json lm.json --keep DIR
    .venv/bin/python bench/bench_charlm_train.py --record                  # a quiet run, for bench/run_all.py

It runs ``pcc train --model transformer --time-budget S --float-twin --save-model`` (in this process, the exact
command printed first): the trainer's defaults, seed 0, the built-in corpus (CPython's ``pydoc_data/topics.py``
text, the last 10 % held out).  The pentary QAT model trains for the budget; its float twin (the same
architecture, initial weights, batches and per-step learning rates, no quantization) then trains the same
number of steps, outside the budget.  Both validation losses are over every held-out character, in nats per
character.  The load average before and after is reported beside the numbers: on a shared machine a budget
buys fewer steps, so read the step count and the steps per second with it.

The target is a wall-clock one on a quiet machine, which a full ``bench/run_all.py`` (other benchmarks before and
after, often other jobs) is not.  ``--record`` writes the summary of a run to ``bench/charlm_train.json``;
``rows()`` then reports that recorded run, labelled with its date, commit and load, instead of training again
(``--quick`` always trains, for 60 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_LOSS = 1.80  # nats/char, pentary, 10 minutes on 2 cores (the target)
TARGET_GAP = 0.05  # nats/char, pentary - float twin
RECORDED = ROOT / "bench" / "charlm_train.json"  # the summary of a run made with --record


def command(budget: float, output_dir: Path, extra: list[str] | None = None) -> list[str]:
    """The ``pcc train`` arguments of one measurement."""
    args = ["train", "--model", "transformer", "--time-budget", f"{budget:g}", "--float-twin", "--seed", "0"]
    args += ["--save-model", "--output-dir", str(output_dir), "--model-name", "lm", *(extra or [])]
    return args


def measure(budget: float, extra: list[str] | None = None, keep: Path | None = None) -> dict[str, Any]:
    """Train (``pcc train`` in this process) and return the metrics file's content plus the command."""
    from pcc.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = keep or Path(tmp)
        args = command(budget, out, extra)
        print("pcc " + shlex.join(args), flush=True)
        code = main(args)
        if code != 0:
            raise RuntimeError(f"pcc train failed with exit code {code}")
        doc = json.loads((out / "lm.metrics.json").read_text(encoding="utf-8"))
    doc["command"] = "pcc " + shlex.join(command(budget, Path("trained_models"), extra))
    doc["cpu_count"] = os.cpu_count()
    return doc


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    m, cfg = doc["metrics"], doc["config"]
    steps = m["steps"]
    return {
        "budget_s": cfg["time_budget"],
        "steps": steps,
        "steps_per_s": steps / max(m["train_seconds"], 1e-9),
        "cpu_s_per_step": m["train_cpu_seconds"] / max(steps, 1),
        "pentary": m["val_loss_pentary"],
        "float_shadow": m["val_loss_float"],
        "float_twin": m["val_loss_float_twin"],
        "gap": m["twin_gap"],
        "val_characters": cfg["val_characters"],
        "data": doc["data"],
        "load": (m["load_average_before"], m["load_average_after"]),
    }


def report(s: dict[str, Any]) -> str:
    return (
        f"{s['budget_s']:g} s budget: {s['steps']} steps ({s['steps_per_s']:.2f} steps/s, "
        f"{s['cpu_s_per_step']:.3f} s of CPU per step; load average {s['load'][0]} before, {s['load'][1]} after)\n"
        f"held out: the last {s['val_characters']:,} characters of {s['data']}\n"
        f"pentary {s['pentary']:.4f}  float shadow {s['float_shadow']:.4f}  float twin {s['float_twin']:.4f} "
        f"nats/char;  pentary - float twin {s['gap']:+.4f} (targets: <= {TARGET_LOSS}, gap <= {TARGET_GAP})"
    )


def rows(quick: bool = False) -> list[Any]:
    from common import PY, Row

    budget = 60.0 if quick else 600.0
    recorded = None
    if not quick and RECORDED.exists():
        recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
        s = recorded["summary"]
        budget = s["budget_s"]
    else:
        s = summary(measure(budget))
    print(report(s))
    cmd = f"{PY} bench/bench_charlm_train.py --time-budget {budget:g}" + (" --record" if recorded else "")
    when = f"recorded {recorded['date']}, commit {recorded['commit']}, " if recorded else ""
    what = (
        f"char-LM validation loss after {budget:g} s of training ({s['steps']} steps, {when}load "
        f"{s['load'][0][0]}; last {s['val_characters']:,} chars of CPython's pydoc topics held out)"
    )
    return [
        Row(
            what=what,
            pcc=f"pentary {s['pentary']:.3f} nats/char",
            peer=f"float twin (same steps and batches): {s['float_twin']:.3f} nats/char",
            ratio=s["float_twin"] / s["pentary"],
            target=f"pentary <= {TARGET_LOSS} in 600 s on 2 cores, within {TARGET_GAP} of the twin",
            command=cmd,
        ),
        Row(
            what=f"char-LM pentary - float twin ({budget:g} s budget)",
            pcc=f"{s['gap']:+.3f} nats/char",
            target=f"<= {TARGET_GAP}",
            command=cmd,
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--time-budget", type=float, default=600.0, help="seconds of training of the pentary model")
    ap.add_argument("--json", type=Path, help="also write the metrics and the summary here")
    ap.add_argument("--keep", type=Path, help="write the model and metrics into this folder (else a temporary one)")
    ap.add_argument(
        "--record", action="store_true", help=f"write the summary to {RECORDED.relative_to(ROOT)} for bench/run_all.py"
    )
    ap.add_argument("extra", nargs="*", help="more pcc train flags, after --, e.g. -- --threads 2")
    args = ap.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    doc = measure(args.time_budget, args.extra, args.keep)
    s = summary(doc)
    print(report(s))
    if args.json:
        args.json.write_text(json.dumps({"summary": s, **doc}, indent=1) + "\n", encoding="utf-8")
    if args.record:
        record(s, doc["command"])


def record(s: dict[str, Any], command: str) -> None:
    """Write ``s`` (a summary) with the date, commit and command to :data:`RECORDED`."""
    import datetime as dt
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    doc = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit.stdout.strip() or "unknown",
        "command": command,
        "summary": s,
    }
    RECORDED.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
