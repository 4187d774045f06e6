"""The README walk-through and the tour (docs/tour.md), run as a reader runs them.

The commands are read from the documents at test time, never copied here:

- README.md's first two fenced shell blocks are the set-up commands (``.ci/readme_commands.py`` extracts them).
  The first (a fresh venv, ``pip install -e .``, a first command) runs for real only with ``PCC_SLOW_TESTS=1``
  (minutes), in a copy of the repository; the second is the test command and is never run from here (it would
  run this file again).
- Every later ``bash``/``sh`` block of README.md, then every ``bash`` and ``python`` block of docs/tour.md, runs
  in order, one test each, in a temporary copy of the repository (so "from the repository root" is what is
  tested, without writing into the checkout), with this interpreter's environment first on PATH (``pcc`` and
  ``python`` are the venv's).  A bash block runs with ``bash -e -o pipefail``, so every command's exit status
  counts; a python block runs as a script.  Blocks fenced ``text`` (output) are not run.

When something the documents need is missing (the ``pcc`` script, a module they import, a ``pcc`` subcommand
they call, a shell tool), the whole file is skipped at once, and the reason is given both as the skip reason and
as a warning in pytest's summary, so the skip is never silent.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TOUR = REPO / "docs" / "tour.md"
VENV_BIN = Path(sys.executable).parent
BLOCK_TIMEOUT_S = 600
INSTALL_TIMEOUT_S = 1800
SHELL_LANGS = ("bash", "sh", "shell")
RUN_LANGS = (*SHELL_LANGS, "python")

# Top-level entries of the checkout not copied into the working copy (environments, caches, build output).
_TOP_LEVEL_SKIP = {
    ".git", ".venv", "venv", "build", "dist", "out", "pcc-demo",
    ".pytest_cache", ".ruff_cache", ".hypothesis", ".mypy_cache",
}  # fmt: skip

_FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    """A fenced code block: where it is, its language and its text."""

    source: str  # path relative to the repository
    line: int  # line of the opening fence
    lang: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}"


def fenced_blocks(path: Path, langs: tuple[str, ...] = RUN_LANGS) -> list[Block]:
    """The fenced blocks of ``path`` in the given languages, in document order."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    rel = path.relative_to(REPO).as_posix()
    return [
        Block(rel, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
        for m in _FENCE.finditer(text)
        if m.group(1) in langs
    ]


def _readme_commands_module():  # noqa: ANN202 - the .ci script, imported by path
    spec = importlib.util.spec_from_file_location("readme_commands", REPO / ".ci" / "readme_commands.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def setup_commands() -> list[str]:
    """README.md's two set-up commands, as CI reads them."""
    return _readme_commands_module().commands(README.read_text(encoding="utf-8"))


def walkthrough_blocks() -> list[Block]:
    """What this file runs in order: README blocks after the two set-up commands, then the tour's blocks."""
    readme = fenced_blocks(README)
    shell = [b for b in readme if b.lang in SHELL_LANGS]
    later = [b for b in readme if b not in shell[:2]]
    return later + fenced_blocks(TOUR)


# ---- what the documents need ------------------------------------------------------------------------------

_IMPORT = re.compile(r"^\s*(?:from\s+([A-Za-z_][\w.]*)\s+import\b|import\s+([A-Za-z_][\w.]*(?:\s*,\s*[\w.]+)*))", re.M)
_PCC_COMMAND = re.compile(r"(?:^|[\s;&|(])pcc\s+([a-z][\w-]*)")


def _modules(code: str) -> set[str]:
    found: set[str] = set()
    for m in _IMPORT.finditer(code):
        if m.group(1):
            found.add(m.group(1))
        else:
            found.update(n.strip().split(" ")[0] for n in m.group(2).split(","))
    return {n for n in found if n and not n.startswith(".")}


def _shell_commands(code: str) -> set[str]:
    """The programs a shell block runs: the first word of each command (here-document bodies skipped)."""
    words: set[str] = set()
    heredoc: str | None = None
    for line in code.replace("\\\n", " ").splitlines():
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            toks = list(lexer)
        except ValueError:
            continue
        expect = True
        for i, tok in enumerate(toks):
            if tok in ("|", "||", "&&", ";", "&", "(", ")"):
                expect = True
            elif tok.startswith("<<"):
                heredoc = toks[i + 1] if i + 1 < len(toks) else None
                expect = False
            elif expect:
                if "=" not in tok:  # skip VAR=value prefixes
                    words.add(tok)
                    expect = False
            elif tok in ("<", ">", ">>"):
                pass
    return words


def missing_requirements() -> list[str]:
    """Why the walk-through cannot run here (empty: it can)."""
    why: list[str] = []
    if not README.is_file():
        why.append("README.md is missing")
    if not TOUR.is_file():
        why.append("docs/tour.md is missing")
    if not (VENV_BIN / "pcc").exists():
        why.append(f"no 'pcc' script next to {sys.executable} (pip install -e . in this environment)")
    blocks = walkthrough_blocks()
    code = "\n".join(b.code for b in blocks)
    for name in sorted(_modules(code)):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            why.append(f"the documents import {name}, which is not installed")
    tools = set().union(*(_shell_commands(b.code) for b in blocks if b.lang in SHELL_LANGS)) if blocks else set()
    for tool in sorted(tools - {"pcc", "python", "python3", "cd", "source", "export", "echo", "set"}):
        if shutil.which(tool) is None:
            why.append(f"the documents run '{tool}', which is not on PATH")
    if shutil.which("bash") is None:
        why.append("bash is not on PATH")
    wanted = set(_PCC_COMMAND.findall("\n".join(b.code for b in blocks if b.lang in SHELL_LANGS)))
    if wanted and (VENV_BIN / "pcc").exists():
        try:
            from pcc.cli import app

            known = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
        except Exception as exc:  # noqa: BLE001 - any failure to build the CLI is a reason to skip, shown
            why.append(f"pcc.cli does not import: {type(exc).__name__}: {exc}")
        else:
            why += [f"the documents run 'pcc {c}', which this pcc does not have" for c in sorted(wanted - known)]
    return why


MISSING = missing_requirements()
if MISSING:
    _reason = "README/tour walk-through skipped: " + "; ".join(MISSING)
    warnings.warn(_reason, UserWarning, stacklevel=1)  # shown in pytest's warnings summary, even with -q
    print(_reason, file=sys.stderr)
pytestmark = pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING) or "-")


# ---- running ----------------------------------------------------------------------------------------------


def _ignore(dirpath: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if Path(dirpath).resolve() == REPO:
        skip |= _TOP_LEVEL_SKIP & set(names)
    return skip


def copy_repo(dest: Path) -> Path:
    """A copy of the checkout (sources, docs, tests; no environments or caches) at ``dest``."""
    shutil.copytree(REPO, dest, ignore=_ignore, symlinks=True)
    return dest


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV_BIN.parent)
    env["MPLBACKEND"] = "Agg"
    return env


def _tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "...\n" + text[-n:]


@dataclass
class Walk:
    """The working copy and how far the walk-through has got; blocks run once, in order."""

    cwd: Path
    scripts: Path
    blocks: list[Block]
    before: dict[str, tuple[int, int]]
    done: int = 0
    failed: str | None = None
    results: list[subprocess.CompletedProcess[str]] = field(default_factory=list)

    def run_through(self, index: int) -> subprocess.CompletedProcess[str]:
        while self.done <= index:
            if self.failed is not None:
                pytest.skip(f"an earlier block failed: {self.failed}")
            block = self.blocks[self.done]
            self.results.append(self._run(block))
            if self.results[-1].returncode != 0:
                self.failed = block.id
            self.done += 1
        if self.failed is not None and self.failed != self.blocks[index].id:
            pytest.skip(f"an earlier block failed: {self.failed}")
        return self.results[index]

    def _run(self, block: Block) -> subprocess.CompletedProcess[str]:
        if block.lang in SHELL_LANGS:
            argv = ["bash", "-e", "-o", "pipefail", "-c", block.code]
        else:
            script = self.scripts / f"block_{block.line}.py"
            script.write_text(block.code, encoding="utf-8")
            argv = [sys.executable, str(script)]
        try:
            return subprocess.run(
                argv, cwd=self.cwd, env=_env(), capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            return subprocess.CompletedProcess(argv, 124, out, f"timed out after {BLOCK_TIMEOUT_S} s")


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


BLOCKS = walkthrough_blocks() if not MISSING else []


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Walk:
    base = tmp_path_factory.mktemp("walkthrough")
    cwd = copy_repo(base / "repo")
    scripts = base / "scripts"
    scripts.mkdir()
    return Walk(cwd, scripts, BLOCKS, _snapshot(cwd))


# ---- tests ------------------------------------------------------------------------------------------------


def test_readme_setup_commands():
    """The README starts with the two set-up commands CI runs; the second is the test command."""
    cmds = setup_commands()
    assert len(cmds) == 2, f"README.md must start with two fenced shell blocks, found {len(cmds)}"
    shell = [b.code.strip() for b in fenced_blocks(README) if b.lang in SHELL_LANGS]
    assert shell[:2] == cmds
    install, test = cmds
    assert "venv" in install and "pip install" in install and "pytest" not in install
    assert "pytest" in test  # never run from here: it would run this file again


@pytest.mark.skipif(
    os.environ.get("PCC_SLOW_TESTS") != "1",
    reason="set PCC_SLOW_TESTS=1 to run README's install command for real (a fresh venv and pip install: minutes)",
)
def test_readme_install_command(tmp_path):
    """README's first command, verbatim, in a fresh copy of the repository."""
    install = setup_commands()[0]
    repo = copy_repo(tmp_path / "repo")
    env = _env()
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", install],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert r.returncode == 0, f"{install}\nexit {r.returncode}\n{_tail(r.stdout)}\n{_tail(r.stderr)}"
    pcc = repo / ".venv" / "bin" / "pcc"
    assert pcc.exists()
    v = subprocess.run([str(pcc), "--version"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert v.returncode == 0 and v.stdout.startswith("pcc "), v.stdout + v.stderr


def test_walkthrough_has_blocks():
    assert any(b.source == "docs/tour.md" for b in BLOCKS), "docs/tour.md has no bash/python blocks"
    for b in BLOCKS:  # the test command must never be run from inside the tests
        assert not re.search(r"\bpytest\b", b.code), f"{b.id}: a documented command runs pytest"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"{b.id}-{b.lang}" for b in BLOCKS])
def test_walkthrough_block(walk: Walk, index: int):
    block = walk.blocks[index]
    r = walk.run_through(index)
    assert r.returncode == 0, (
        f"{block.id} ({block.lang} block) exited with {r.returncode} in {walk.cwd}\n"
        f"--- block\n{block.code}--- stdout\n{_tail(r.stdout)}\n--- stderr\n{_tail(r.stderr)}"
    )


def test_walkthrough_leaves_repository_files_alone(walk: Walk):
    """Run from the repository root, the documented commands only add files: none of the checkout's changes."""
    if not walk.blocks:
        pytest.skip("no blocks")
    walk.run_through(len(walk.blocks) - 1)
    after = _snapshot(walk.cwd)
    changed = sorted(k for k, v in walk.before.items() if after.get(k) != v)
    assert not changed, f"the documented commands changed or removed files of the checkout: {changed}"
