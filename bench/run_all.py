"""Run every benchmark and write docs/benchmarks.md: machine header, ONE table, then docs/benchmarks_notes.md.

The rows() contract (how a bench/bench_NAME.py gets into the table):
  1. define ``rows(quick: bool = False) -> list[Row]`` at top level (found by parsing the file, not importing it);
  2. return ``Row(what, pcc, peer="-", ratio=None, target="", command="")`` from ``from common import PY, Row``;
  3. pcc and peer are text with number and unit ("20,079 ops/s", "onnxruntime: 0.160 s"), medians of repeats;
  4. ratio compares with the peer measured in the same run, > 1 when pcc is better (t_peer / t_pcc), else None;
  5. command is the exact CLI reproducing the row (with the sizes ``quick`` used); quick=True: small, about 1 min;
  6. optionally ``table`` and ``cells`` (column -> text): the row is also a line of that table, after the main one.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--output docs/benchmarks.md] [--timeout S]

Each benchmark runs in its own subprocess (this file with ``--child``) with a timeout, one after another, so a
failing or hanging benchmark is reported and the others still make the table.  The output is written atomically
(temporary file + os.replace); benchmarks without rows() and failed ones are listed under the table.

Every full-size run also records each benchmark's rows with the run that produced them (date, commit, load,
command) in ``bench/results.json``.  ``--only NAME ...`` re-runs just those benchmarks and keeps the stored rows of
the others, so the table stays whole and its header names the run behind each group of rows; ``--fresh``
forgets the stored rows.  ``--quick`` runs neither read nor write the store.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from common import PY, Row  # noqa: E402

NOTES = ROOT / "docs" / "benchmarks_notes.md"
STORE = BENCH / "results.json"  # each benchmark's last full-size rows and the run that produced them
# table order: the categories first, anything else after them in name order
ORDER = ["ir", "import", "compile", "asm", "sim", "trainer", "ptq"]


# ---- discovery ------------------------------------------------------------------------------------------------


def discover() -> list[tuple[str, Path, str | None]]:
    """(short name, path, why it is not included or None) for every bench/bench_*.py, in table order."""
    found = []
    for path in sorted(BENCH.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        except (SyntaxError, UnicodeDecodeError) as exc:
            found.append((name, path, f"does not parse ({exc.__class__.__name__}: {exc})"))
            continue
        has_rows = any(isinstance(n, ast.FunctionDef) and n.name == "rows" for n in tree.body)
        found.append((name, path, None if has_rows else "defines no rows() yet"))
    rank = {n: i for i, n in enumerate(ORDER)}
    return sorted(found, key=lambda f: (rank.get(f[0], len(ORDER)), f[0]))


def matches(name: str, wanted: list[str]) -> bool:
    return any(w.removesuffix(".py").removeprefix("bench/").removeprefix("bench_") == name for w in wanted)


# ---- one benchmark, in a child process ------------------------------------------------------------------------


def child(path: Path, quick: bool, result: Path) -> int:
    """Import ``path``, call its rows(quick) and write the rows as JSON to ``result``."""
    sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    out = [Row.from_obj(r).to_dict() for r in module.rows(quick=quick)]
    result.write_text(json.dumps(out), encoding="utf-8")
    return 0


def run_one(path: Path, quick: bool, timeout: float, log: Path) -> tuple[list[Row], str | None, float]:
    """Run one benchmark in a subprocess: (rows, error or None, seconds).  Its output goes to ``log``."""
    fd, tmp = tempfile.mkstemp(prefix=f"{path.stem}.", suffix=".json")
    os.close(fd)
    result = Path(tmp)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(path), "--result", str(result)]
    if quick:
        cmd.append("--quick")
    t0 = time.perf_counter()
    error = None
    try:
        with log.open("w", encoding="utf-8") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the child and anything it started
                proc.wait()
                rc = None
                error = f"timed out after {timeout:.0f} s"
        if error is None and rc != 0:
            error = f"exit status {rc}: {last_line(log)}"
        rows: list[Row] = []
        if error is None:
            try:
                rows = [Row.from_obj(r) for r in json.loads(result.read_text(encoding="utf-8"))]
            except (OSError, ValueError, TypeError) as exc:
                error = f"unreadable result ({exc})"
    finally:
        result.unlink(missing_ok=True)
    return rows, error, time.perf_counter() - t0


def last_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


# ---- the document ---------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the header says about the machine and the software, read at the start."""
    info: dict[str, str] = {}
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["cores"] = f"{nproc} (nproc)" + (f", {os.cpu_count()} online" if os.cpu_count() != nproc else "")
    info["memory"] = meminfo()
    info["cpu"] = cpu_model()
    versions = [f"Python {platform.python_version()}"]
    for pkg in ("numpy", "onnxruntime", "torch", "onnx", "lark"):
        try:
            versions.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{pkg} (not installed)")
    info["software"] = ", ".join(versions)
    info["commit"] = git_commit()
    info["date"] = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    info["load"] = load_average()
    return info


def meminfo() -> str:
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        total = int(fields["MemTotal"].split()[0]) / 2**20
        avail = int(fields["MemAvailable"].split()[0]) / 2**20
        return f"{total:.1f} GiB, {avail:.1f} GiB available at start"
    except (OSError, KeyError, ValueError):
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Model", "cpu model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "unknown"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def shown_args(argv: list[str]) -> list[str]:
    """``argv`` as the document shows it: without ``--logs DIR`` (a local folder; it changes no number)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--logs":
            skip = True
        elif not a.startswith("--logs="):
            out.append(a)
    return out


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def ratio_text(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:.3g}x" if r < 100 else f"{r:,.0f}x"


def render(
    info: dict[str, str],
    rows: list[Row],
    skipped: list[str],
    argv: list[str],
    quick: bool,
    earlier: list[tuple[dict[str, str], list[str]]] | None = None,
) -> str:
    """The document; ``earlier``: the stored runs whose rows the table also holds, each with its benchmarks."""
    out = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/run_all.py; do not edit by hand. The notes come from docs/benchmarks_notes.md. -->",
        "",
        f"Generated by `{' '.join([PY, 'bench/run_all.py', *shown_args(argv)])}`"
        + (" in **quick** mode (small sizes: not the reference numbers)." if quick else "."),
        "",
        f"- CPU: {info['cpu']}; cores: {info['cores']}",
        f"- memory: {info['memory']}",
        f"- software: {info['software']}",
        f"- date: {info['date']}, commit {info['commit']} (working tree may hold uncommitted work)",
        f"- load average at start: {info['load']}; at end: {info['load_end']}",
        "",
    ]
    if earlier:
        out += ["The rows of these benchmarks come from earlier runs (`bench/results.json`), not re-run this time:", ""]
        for run, names in earlier:
            out.append(
                f"- {', '.join(f'`{n}`' for n in names)}: `{run.get('command', '?')}` on {run.get('date', '?')}, "
                f"commit {run.get('commit', '?')}, load {run.get('load', '?')} -> {run.get('load_end', '?')}"
            )
        out.append("")
    out += [
        "The machine is shared and noisy: read the medians and the ratios (pcc and the peer are measured in the same",
        "run), not single times. Ratio > 1 means pcc is better than the peer (faster, or fewer bits).",
        "",
        "| what | pcc | peer | ratio | target | command |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        command = f"`{r.command}`" if r.command else ""
        out.append(
            f"| {cell(r.what)} | {cell(r.pcc)} | {cell(r.peer)} | {ratio_text(r.ratio)} | {cell(r.target)} | "
            f"{cell(command)} |"
        )
    if skipped:
        out += ["", "Not in the table:", ""] + [f"- {s}" for s in skipped]
    out += side_tables(rows)
    out += ["", "## Notes", ""]
    if NOTES.exists():
        notes = NOTES.read_text(encoding="utf-8").strip()
        if notes.startswith("<!--") and "-->" in notes:  # the file's own editing note; the header has one
            notes = notes.split("-->", 1)[1].strip()
        out.append(notes)
    else:
        out.append(f"({NOTES.relative_to(ROOT)} is missing.)")
    return "\n".join(out) + "\n"


def side_tables(rows: list[Row]) -> list[str]:
    """The tables that rows name (``Row.table``), in the order their first rows come, columns from ``Row.cells``."""
    titles = list(dict.fromkeys(r.table for r in rows if r.table and r.cells))
    out: list[str] = []
    for title in titles:
        members = [r for r in rows if r.table == title and r.cells]
        columns = list(members[0].cells)
        out += ["", f"### {title}", "", "| " + " | ".join(cell(c) for c in columns) + " |"]
        out.append("|" + "---|" * len(columns))
        for r in members:
            out.append("| " + " | ".join(cell(r.cells.get(c, "")) for c in columns) + " |")
        commands = list(dict.fromkeys(r.command for r in members if r.command))
        if commands:
            out += ["", "Commands: " + "; ".join(f"`{c}`" for c in commands)]
    return out


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- the store of earlier rows ---------------------------------------------------------------------------------


def load_store(path: Path) -> dict[str, dict]:
    """``{benchmark file: {"run": {...}, "rows": [...], "skipped": str | None}}`` from ``path``; {} if absent.
    A store that does not read back is an error naming the file (run with --fresh to start over)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        benches = data["benchmarks"]
        if not isinstance(benches, dict):
            raise TypeError("'benchmarks' is not an object")
        for entry in benches.values():
            [Row.from_obj(r) for r in entry["rows"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{path}: error: not a benchmark store ({exc}); run with --fresh to start a new one") from exc
    return benches


def save_store(path: Path, benches: dict[str, dict]) -> None:
    write_atomic(path, json.dumps({"benchmarks": benches}, indent=1, sort_keys=True) + "\n")


# ---- main -----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (each benchmark's rows(quick=True))")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these (ir, bench_asm, bench/bench_sim.py)")
    ap.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--timeout", type=float, help="seconds per benchmark (default 3600, --quick 900)")
    ap.add_argument("--json", type=Path, help="also write the machine info and rows as JSON")
    ap.add_argument("--logs", type=Path, help="keep each benchmark's output here (default: a temporary folder)")
    ap.add_argument(
        "--fresh", action="store_true", help="forget the rows stored in bench/results.json by earlier --only runs"
    )
    ap.add_argument("--store", type=Path, default=STORE, help=argparse.SUPPRESS)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return child(args.child, args.quick, args.result)
    timeout = args.timeout or (900.0 if args.quick else 3600.0)

    info = machine()
    found = discover()
    if args.only:
        unknown = [w for w in args.only if not any(matches(n, [w]) for n, _, _ in found)]
        if unknown:
            ap.error(f"no benchmark named {', '.join(unknown)}; have {', '.join(n for n, _, _ in found)}")
        found = [f for f in found if matches(f[0], args.only)]
    print(f"load average at start: {info['load']}", flush=True)
    store = {} if args.quick or args.fresh else load_store(args.store)
    run_info = {"command": " ".join([PY, "bench/run_all.py", *shown_args(argv)]), **info}
    fresh: dict[str, dict] = {}
    all_rows: list[Row] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="run_all.") as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        for _name, path, why in found:
            rel = path.relative_to(ROOT)
            if why is not None:
                print(f"{rel}: not included: {why}", flush=True)
                skipped.append(f"`{rel}`: not included, {why}")
                fresh[str(rel)] = {"run": run_info, "rows": [], "skipped": f"not included, {why}"}
                continue
            print(f"{rel}: running{' (quick)' if args.quick else ''} ...", flush=True)
            log = logs / f"{path.stem}.log"
            try:
                rows, error, secs = run_one(path, args.quick, timeout, log)
            except Exception:  # a broken runner for one benchmark must not stop the others
                rows, error, secs = [], traceback.format_exc(limit=1).strip().splitlines()[-1], 0.0
            if error is not None:
                print(f"{rel}: FAILED after {secs:.0f} s: {error}", flush=True)
                tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:] if log.exists() else []
                for line in tail:
                    print(f"    | {line}", flush=True)
                skipped.append(f"`{rel}`: failed after {secs:.0f} s, {error}")
                fresh[str(rel)] = {"run": run_info, "rows": [], "skipped": f"failed after {secs:.0f} s, {error}"}
                continue
            print(f"{rel}: {len(rows)} row(s) in {secs:.0f} s", flush=True)
            for r in rows:
                print(f"    {r.what}: {r.pcc}" + (f" (ratio {ratio_text(r.ratio)})" if r.ratio else ""), flush=True)
            all_rows += rows
            fresh[str(rel)] = {"run": run_info, "rows": [r.to_dict() for r in rows], "skipped": None}
    info["load_end"] = run_info["load_end"] = load_average()
    earlier: list[tuple[dict[str, str], list[str]]] = []
    if not args.quick:
        # the table in discovery order: this run's rows where it ran a benchmark, else the stored ones
        store = {**store, **fresh}
        all_rows, skipped = [], []
        for _name, path, _why in discover():
            entry = store.get(str(path.relative_to(ROOT)))
            if entry is None:
                continue
            rel = str(path.relative_to(ROOT))
            all_rows += [Row.from_obj(r) for r in entry["rows"]]
            if entry.get("skipped"):
                skipped.append(f"`{rel}`: {entry['skipped']}")
            if rel not in fresh:
                run = entry["run"]
                for known, names in earlier:
                    if known == run:
                        names.append(rel)
                        break
                else:
                    earlier.append((run, [rel]))
        save_store(args.store, store)
    text = render(info, all_rows, skipped, argv, args.quick, earlier)
    write_atomic(args.output, text)
    print(f"wrote {args.output} ({len(all_rows)} rows); load average at end: {info['load_end']}")
    if args.json is not None:
        payload = {"machine": info, "quick": args.quick, "rows": [r.to_dict() for r in all_rows], "skipped": skipped}
        write_atomic(args.json, json.dumps(payload, indent=2) + "\n")
    return 1 if any("failed after" in s for s in skipped) else 0


if __name__ == "__main__":
    sys.exit(main())
