"""A compiled .pasm names its weights by content: a pair from two different compiles is refused, not run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from security_helpers import assert_one_diagnostic, run_cli
from test_corpus import MODEL

from pcc.backend.assembler import assemble
from pcc.diagnostics import PccError


@pytest.fixture()
def two_compiles(tmp_path: Path) -> Path:
    other = json.loads(json.dumps(MODEL))
    other["layers"][0]["weight_pentary"][0] = [1, 1, 1, 1]
    for name, model in (("a", MODEL), ("b", other)):
        (tmp_path / f"{name}.json").write_text(json.dumps(model))
        rc, _, err = run_cli(["compile", tmp_path / f"{name}.json", "-o", tmp_path / f"{name}.pasm"])
        assert rc == 0, err
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    return tmp_path


def test_matching_pair_runs(two_compiles: Path) -> None:
    d = two_compiles
    text = (d / "a.pasm").read_text()
    assert re.search(r'\.incbin "a\.weights\.bin", sha256="[0-9a-f]{64}"', text)
    rc, out, err = run_cli(["run", d / "a.pasm", "-i", f"input={d / 'x.npy'}"])
    assert rc == 0, err


@pytest.mark.parametrize("command", ["run", "asm"])
def test_swapped_weights_refused(two_compiles: Path, command: str) -> None:
    d = two_compiles
    shutil.copy(d / "b.weights.bin", d / "a.weights.bin")  # new weights beside old assembly
    argv = (
        ["run", d / "a.pasm", "-i", f"input={d / 'x.npy'}"]
        if command == "run"
        else ["asm", d / "a.pasm", "-o", d / "a.pbin"]
    )
    rc, _, err = run_cli(argv)
    assert_one_diagnostic(rc, err, r"a\.pasm:\d+:\d+: error: include file 'a\.weights\.bin' is not the one")
    assert not (d / "a.pbin").exists()


@pytest.mark.parametrize("fast_path", [True, False])
def test_both_assembler_paths_check_the_digest(two_compiles: Path, fast_path: bool) -> None:
    d = two_compiles
    text = (d / "a.pasm").read_text()
    assemble(text, str(d / "a.pasm"), d, fast_path=fast_path)  # the right blob
    bad = re.sub(r'sha256="[0-9a-f]{64}"', 'sha256="' + "0" * 64 + '"', text)
    with pytest.raises(PccError, match="sha256 differs"):
        assemble(bad, str(d / "a.pasm"), d, fast_path=fast_path)
    with pytest.raises(PccError, match="sha256 takes the hex digest"):
        assemble(re.sub(r'sha256="[0-9a-f]{64}"', "sha256=5", text), str(d / "a.pasm"), d, fast_path=fast_path)


def test_output_naming_a_folder_is_refused(two_compiles: Path) -> None:
    d = two_compiles
    (d / "out.pasm").mkdir()
    rc, _, err = run_cli(["compile", d / "a.json", "-o", d / "out.pasm"])
    assert_one_diagnostic(rc, err, r"out\.pasm: error: is a directory")
    assert not (d / "out.weights.bin").exists()


def test_train_metrics_name_their_model(tmp_path: Path) -> None:
    import hashlib

    rc, _, err = run_cli(
        ["train", "--epochs", "1", "--n-samples", "60", "--input-dim", "8", "--hidden-dims", "8", "--output-dim", "3",
         "--save-model", "--model-name", "m", "--output-dir", tmp_path]
    )  # fmt: skip
    assert rc == 0, err
    metrics = json.loads((tmp_path / "m.metrics.json").read_text())
    assert metrics["model_sha256"] == hashlib.sha256((tmp_path / "m.json").read_bytes()).hexdigest()
