"""Hostile inputs of the character-LM commands (``pcc train --model transformer --text``, ``pcc generate``), as
data: each case writes files beside a tiny trained LM (``lm.json``, ``lm.pasm`` + its tokenizer) and asserts exit
status 1, one located diagnostic, no traceback and no file left behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from security_helpers import assert_one_diagnostic, run_cli

TRAIN = "train --model transformer --steps 1 --dim 16 --context 8 --output-dir {d}/out --save-model --text"

# id: (command line, regex of the one error, files written first: name -> bytes, or None for a folder)
CASES: dict[str, tuple[str, str, dict[str, bytes | None]]] = {
    "text-missing": (
        f"{TRAIN} {{d}}/none.txt",
        r"(not found|no such file).*none\.txt|none\.txt.*(not found|no such file)",
        {},
    ),
    "text-dir": (f"{TRAIN} {{d}}/t.txt", r"t\.txt.*(directory|not a file)", {"t.txt": None}),
    "text-empty": (f"{TRAIN} {{d}}/t.txt", r"t\.txt: error: the text has 0 characters", {"t.txt": b""}),
    "text-not-utf8": (f"{TRAIN} {{d}}/t.txt", r"t\.txt.*UTF-8", {"t.txt": b"\xff\xfe\x80abc" * 40}),
    "tokenizer-beside-json": (
        "generate {d}/lm.json --prompt hel --tokens 1 --tokenizer {d}/tok.json",
        r"tok\.json: error: --tokenizer is for a compiled program",
        {"tok.json": b"\xff"},
    ),
    "tokenizer-not-utf8": (
        "generate {d}/lm.pasm --prompt hel --tokens 1 --tokenizer {d}/tok.json",
        r"tok\.json(:1:1)?: error: .*tokenizer JSON",
        {"tok.json": b"\xff\xfe"},
    ),
    "tokenizer-empty": (
        "generate {d}/lm.pasm --prompt hel --tokens 1 --tokenizer {d}/tok.json",
        r"tok\.json(:1:1)?: error: .*tokenizer JSON",
        {"tok.json": b""},
    ),
    "tokenizer-dir": (
        "generate {d}/lm.pasm --prompt hel --tokens 1 --tokenizer {d}/tok.json",
        r"tok\.json",
        {"tok.json": None},
    ),
    "tokenizer-missing": ("generate {d}/lm.pasm --prompt hel --tokens 1 --tokenizer {d}/no.json", r"no\.json", {}),
    "lm-empty": ("generate {d}/e.json --prompt hel --tokens 1", r"e\.json:1:1: error: invalid JSON", {"e.json": b""}),
    "lm-dir": ("generate {d}/e.pasm --prompt hel --tokens 1", r"e\.pasm", {"e.pasm": None}),
    "prompt-empty": ("generate {d}/lm.json --prompt= --tokens 1", r"error: the prompt is empty", {}),
    "prompt-outside-vocab": ("generate {d}/lm.json --prompt xyz --tokens 1", r"outside the model's vocabulary", {}),
    "tokens-negative": ("generate {d}/lm.json --prompt hel --tokens -1", r"--tokens must be 0 or more", {}),
}


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("lm")
    (d / "t.txt").write_text("hello world abc " * 50)
    rc, _, err = run_cli(TRAIN.format(d=d).split() + [str(d / "t.txt")])
    assert rc == 0, err
    (model,) = (d / "out").glob("pentary_charlm_*[0-9].json")
    shutil.move(model, d / "lm.json")
    shutil.rmtree(d / "out")
    (d / "t.txt").unlink()
    rc, _, err = run_cli(["compile", str(d / "lm.json"), "-o", str(d / "lm.pasm")])
    assert rc == 0, err
    return d


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_lm_hostile_input(case_id: str, lm: Path, tmp_path: Path) -> None:
    argv, pattern, files = CASES[case_id]
    for f in lm.iterdir():
        shutil.copy(f, tmp_path / f.name)
    for name, data in files.items():
        if data is None:
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_bytes(data)
    before = {p.name for p in tmp_path.rglob("*")}
    rc, _, err = run_cli(argv.format(d=tmp_path).split())
    assert_one_diagnostic(rc, err, pattern)
    assert {p.name for p in tmp_path.rglob("*")} == before, "files left behind"
