"""The pcc CLI shell (version, help, exit codes, no tracebacks) and the package layout."""

from __future__ import annotations

import contextlib
import importlib
import io
import subprocess
import sys
import tomllib
from pathlib import Path

import pcc
from pcc.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


def test_version_and_help() -> None:
    rc, out, _ = run("--version")
    assert rc == 0 and out.strip() == f"pcc {pcc.__version__}"
    rc, out, _ = run("--help")
    assert rc == 0 and "opt" in out and "pentary" in out


def test_usage_errors_exit_2() -> None:
    rc, _, err = run("no-such-command")
    assert rc == 2 and "No such command" in err
    rc, _, err = run("opt", "--no-such-flag")
    assert rc == 2


def test_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    rc, _, err = run("opt", str(tmp_path / "nope.pir"))
    assert rc == 1 and "no such file" in err and "Traceback" not in err


def test_opt_roundtrip_through_files(tmp_path: Path) -> None:
    src = tmp_path / "in.pir"
    src.write_text(
        "module @m {\n  func @main(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {\n"
        "    %y = nn.relu(%x) : tensor<1x4xf32>\n    %z = nn.tanh(%y) : tensor<1x4xf32>\n    return %y\n  }\n}\n"
    )
    rc, out, _ = run("opt", str(src), "-p", "dce")
    assert rc == 0 and "nn.tanh" not in out and "nn.relu" in out
    rc, _, err = run("opt", str(src), "-p", "dce", "-o", str(tmp_path / "out.pir"), "--timing")
    assert rc == 0 and "dce" in err
    assert "nn.tanh" not in (tmp_path / "out.pir").read_text()


def test_debug_shows_traceback_and_default_does_not(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pir"
    bad.write_text("module @m {\n  func @main() -> () {\n    %y = nn.nope() : tensor<1xf32>\n    return\n  }\n}\n")
    env_run = [sys.executable, "-m", "pcc.cli"]
    plain = subprocess.run([*env_run, "opt", str(bad)], capture_output=True, text=True, cwd=tmp_path)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr and "unknown op 'nn.nope'" in plain.stderr
    debug = subprocess.run([*env_run, "--debug", "opt", str(bad)], capture_output=True, text=True, cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_stages_import_as_pcc_subpackages() -> None:
    for stage in ("frontends", "passes", "backend", "runtime", "trainer"):
        mod = importlib.import_module(f"pcc.{stage}")
        assert Path(mod.__file__).resolve().parent == ROOT / stage


def test_no_generic_top_level_package_is_installed() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(p == "pcc" or p.startswith("pcc.") for p in cfg["packages"])
    assert all(k == "pcc" or k.startswith("pcc.") for k in cfg["package-dir"])
    # every stage folder that is a package is listed, so nothing is left out of a wheel
    for folder in ROOT.iterdir():
        if (folder / "__init__.py").exists() and folder.name not in ("tests", "bench"):
            assert folder.name == "pcc" or f"pcc.{folder.name}" in cfg["packages"], folder.name
