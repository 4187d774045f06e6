"""bench/run_all.py keeps a whole table when only some benchmarks are re-run: each benchmark's rows are stored
with the run that produced them, ``--only`` replaces just the re-run ones, ``--fresh`` forgets the rest."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture()
def run_all(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("run_all_under_test", BENCH / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["run_all_under_test"] = mod
    spec.loader.exec_module(mod)
    files = {name: tmp_path / f"bench_{name}.py" for name in ("ir", "sim", "zoo")}
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    monkeypatch.setattr(mod, "discover", lambda: [(n, p, None) for n, p in files.items()])
    calls: list[str] = []
    value = {"n": 1}

    def fake_run_one(path, quick, timeout, log):
        calls.append(path.stem)
        if path.stem == "bench_sim" and value.get("fail"):
            return [], "timed out after 5 s", 5.0
        return [mod.Row(f"{path.stem} speed", f"{value['n']} ops/s")], None, 0.1

    monkeypatch.setattr(mod, "run_one", fake_run_one)
    return mod, tmp_path, calls, value


def test_only_keeps_the_other_rows_and_names_their_run(run_all):
    mod, tmp, calls, value = run_all
    out, store = tmp / "b.md", tmp / "results.json"
    assert mod.main(["--output", str(out), "--store", str(store)]) == 0
    assert calls == ["bench_ir", "bench_sim", "bench_zoo"]
    first = out.read_text()
    assert "come from earlier runs" not in first and first.count(" 1 ops/s |") == 3

    value["n"] = 2
    calls.clear()
    assert mod.main(["--only", "sim", "--output", str(out), "--store", str(store)]) == 0
    assert calls == ["bench_sim"]
    text = out.read_text()
    table = [line for line in text.splitlines() if line.startswith("| bench_")]
    assert [line.split(" | ")[1] for line in table] == ["1 ops/s", "2 ops/s", "1 ops/s"]  # discovery order kept
    assert "`bench_ir.py`, `bench_zoo.py`: `" in text and "come from earlier runs" in text
    stored = json.loads(store.read_text())["benchmarks"]
    assert (
        stored["bench_sim.py"]["rows"][0]["pcc"] == "2 ops/s" and stored["bench_ir.py"]["rows"][0]["pcc"] == "1 ops/s"
    )


def test_a_failed_rerun_replaces_the_rows_with_the_failure(run_all):
    mod, tmp, calls, value = run_all
    out, store = tmp / "b.md", tmp / "results.json"
    mod.main(["--output", str(out), "--store", str(store)])
    value["fail"] = True
    assert mod.main(["--only", "sim", "--output", str(out), "--store", str(store)]) == 1
    text = out.read_text()
    assert "bench_sim speed" not in text and "`bench_sim.py`: failed after 5 s, timed out after 5 s" in text


def test_fresh_and_quick_ignore_the_store(run_all):
    mod, tmp, calls, value = run_all
    out, store = tmp / "b.md", tmp / "results.json"
    mod.main(["--output", str(out), "--store", str(store)])
    mod.main(["--only", "zoo", "--fresh", "--output", str(out), "--store", str(store)])
    assert [ln for ln in out.read_text().splitlines() if ln.startswith("| bench_")] == [
        ln for ln in out.read_text().splitlines() if "bench_zoo speed" in ln
    ]
    before = store.read_text()
    mod.main(["--only", "ir", "--quick", "--output", str(out), "--store", str(store)])
    assert store.read_text() == before and "quick" in out.read_text()


def test_a_broken_store_is_one_clear_error(run_all):
    mod, tmp, calls, value = run_all
    store = tmp / "results.json"
    store.write_text("{not json")
    with pytest.raises(SystemExit, match=r"results.json: error: not a benchmark store .*--fresh"):
        mod.main(["--only", "ir", "--output", str(tmp / "b.md"), "--store", str(store)])


def test_the_shown_command_leaves_out_the_log_folder(run_all) -> None:
    mod = run_all[0]
    assert mod.shown_args(["--timeout", "600", "--logs", "/tmp/x", "--only", "zoo"]) == [
        "--timeout",
        "600",
        "--only",
        "zoo",
    ]
    assert mod.shown_args(["--logs=/tmp/x", "--quick"]) == ["--quick"]


def test_rows_that_name_a_table_are_also_its_lines(run_all) -> None:
    mod = run_all[0]
    zoo = [
        mod.Row("a", "1 ms", table="Zoo", cells={"model": "A", "ms": "1.0"}, command="bench zoo --models a"),
        mod.Row("plain", "3 ops/s"),
        mod.Row("b", "2 ms", table="Zoo", cells={"model": "B|x", "ms": "2.0"}, command="bench zoo --models b"),
    ]
    text = mod.render(
        {k: "-" for k in ("cpu", "cores", "memory", "software", "date", "commit", "load", "load_end")},
        zoo,
        [],
        [],
        False,
    )
    lines = text.splitlines()
    at = lines.index("### Zoo")
    assert lines[at + 2 : at + 6] == ["| model | ms |", "|---|---|", "| A | 1.0 |", "| B\\|x | 2.0 |"]
    assert "`bench zoo --models a`; `bench zoo --models b`" in lines[at + 7]
    assert at > lines.index("| plain | 3 ops/s | - | - |  |  |") and at < lines.index("## Notes")
    wide = mod.Row("c", "1", table="T", cells={"z": "1", "a": "2", "m": "3"})
    back = mod.Row.from_obj(json.loads(json.dumps(wide.to_dict(), sort_keys=True)))  # as the store keeps it
    assert back == wide and list(back.cells) == ["z", "a", "m"]
    with pytest.raises(TypeError, match="cells"):
        mod.Row.from_obj({"what": "w", "pcc": "p", "cells": ["x"]})
