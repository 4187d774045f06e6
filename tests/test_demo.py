"""``pcc demo``: the whole toolchain on digits, through ``pcc.cli.main`` as a user runs it.

One quick run (``--quick``: 4 epochs, 256 calibration images; about 5-10 s) is shared by the tests that read its
output and artefacts.  The simulator's predictions are compared with the trainer's pentary forward here too,
independently of the demo's own check, from the files it wrote.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from pcc.cli import main

ARTEFACTS = [
    "model.json",
    "model.metrics.json",
    "model.pasm",
    "model.weights.bin",
    "model.pbin",
    "calibration.npz",
    "outputs.npz",
    "profile.json",
    "trace.json",
    "test_x.npy",
    "test_y.npy",
    "ir/000-input.pir",
    "ir/003-quantize.pir",
    "ir/009-tile.pir",
]


def _main(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out_dir = tmp_path_factory.mktemp("demo") / "tmp"
    rc, out, err = _main(["demo", "--quick", "--out", str(out_dir)])
    assert rc == 0, f"pcc demo failed (exit {rc}):\n{out}\n{err}"
    return out_dir, out


def _accuracy(text: str, label: str) -> float:
    m = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+) %", text, flags=re.M)
    assert m, f"no accuracy line {label!r} in:\n{text}"
    return float(m.group(1)) / 100


def test_artefacts_written(quick):
    out_dir, out = quick
    for name in ARTEFACTS:
        p = out_dir / name
        assert p.is_file() and p.stat().st_size > 0, f"{name} missing or empty"
        assert name in out, f"{name} not in the final listing"
    assert f"wrote {out_dir}/:" in out


def test_progress_lines_per_stage(quick):
    _, out = quick
    for k, stage in enumerate(["data", "train", "compile", "assemble", "simulate", "profile"], 1):
        assert re.search(rf"^\[{k}/6\] {stage}\b", out, flags=re.M), f"no progress line for {stage}"
    assert len(re.findall(r"\(\d+\.\d\d s\)$", out, flags=re.M)) >= 6  # each stage reports its time
    assert "epoch   4/4" in out  # quick: 4 epochs


def test_three_accuracies_printed_and_sane(quick):
    out_dir, out = quick
    accs = {
        "float": _accuracy(out, "float shadow weights"),
        "pentary": _accuracy(out, "trainer, pentary forward"),
        "simulator": _accuracy(out, "simulator, model.pbin"),
    }
    assert all(a > 0.80 for a in accs.values()), accs
    assert accs["simulator"] == accs["pentary"]  # the same predictions, so the same accuracy
    demo = json.loads((out_dir / "model.metrics.json").read_text())["demo"]
    assert demo["test_accuracy"]["simulator"] == pytest.approx(accs["simulator"], abs=5e-5)
    assert demo["n_test"] == 360 and demo["epochs"] == 4


def test_simulator_equals_trainer_pentary_forward(quick):
    """Recomputed from the artefacts: the model JSON through the trainer, the simulator's saved outputs."""
    from pcc.trainer.model import PentaryModel

    out_dir, out = quick
    assert "360/360 predictions identical" in out
    model = PentaryModel.load(out_dir / "model.json")
    x, y = np.load(out_dir / "test_x.npy"), np.load(out_dir / "test_y.npy")
    assert x.shape == (360, 1, 8, 8) and y.shape == (360,)
    with np.load(out_dir / "outputs.npz") as z:
        assert len(z.files) == 1
        sim_logits = z[z.files[0]]
    trainer_logits = model.predict(x, quantized=True)
    np.testing.assert_array_equal(np.argmax(sim_logits, axis=1), np.argmax(trainer_logits, axis=1))
    # the logits themselves agree to the rounding of 8-pent activations (far below the margins)
    assert np.max(np.abs(sim_logits - trainer_logits)) < 0.05 * np.ptp(trainer_logits)


def test_binary_reruns_to_the_same_outputs(quick, capsys):
    """``pcc run`` on the written binary and test inputs reproduces outputs.npz exactly."""
    out_dir, _ = quick
    rerun = out_dir.parent / "rerun.npz"
    rc = main(["run", str(out_dir / "model.pbin"), "-i", str(out_dir / "test_x.npy"), "-o", str(rerun)])
    assert rc == 0, capsys.readouterr().err
    with np.load(out_dir / "outputs.npz") as a, np.load(rerun) as b:
        assert a.files == b.files
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])


def test_profile_summary(quick):
    out_dir, out = quick
    assert re.search(r"^per image: [\d,]+ cycles \([\d.]+ us at [\d.]+ GHz\), [\d.]+ uJ$", out, flags=re.M)
    m = re.search(r"^zero weights: ([\d.]+) % of the model's pents are 0; they meet ([\d.]+) % of the MACs", out, re.M)
    assert m and 5 < float(m.group(1)) < 80 and 5 < float(m.group(2)) < 80
    m = re.search(
        r"^model size: 6,032 weights = ([\d.]+) KiB packed pentary \(3 pents in 7 bits\) vs ([\d.]+) KiB int8 "
        r"\(3\.4x\) vs ([\d.]+) KiB float32 \(13\.7x\)",
        out,
        flags=re.M,
    )
    assert m, out
    assert float(m.group(1)) == pytest.approx(6032 * 7 / 24 / 1024, abs=0.05)
    prof = json.loads((out_dir / "profile.json").read_text())
    assert prof["runs"] == 360 and prof["total"]["cycles"] > 0
    trace = json.loads((out_dir / "trace.json").read_text())
    assert trace["traceEvents"]


def test_mismatch_is_reported_not_hidden(tmp_path, monkeypatch):
    """If the simulator disagreed with the trainer, the demo says where and fails (exit 1)."""
    import pcc.runtime.simulator as simulator

    real = simulator.run_program

    def wrong(program, inputs, **kw):  # noqa: ANN001, ANN202
        outs = real(program, inputs, **kw)
        for k, v in outs.items():
            v = v.copy()
            v[0] = v[0][::-1]  # the first image's logits reversed: a different class
            outs[k] = v
        return outs

    monkeypatch.setattr(simulator, "run_program", wrong)
    rc, out, err = _main(["demo", "--quick", "--epochs", "1", "--out", str(tmp_path / "d")])
    assert rc == 1
    assert "MISMATCH" in out and "image 0: label" in out
    assert "disagree on" in err and "error:" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--out", "FILE"], "exists and is not a folder"),
    ],
)
def test_errors_are_diagnostics(tmp_path, args, message):
    (tmp_path / "FILE").write_text("x")
    args = [str(tmp_path / a) if a == "FILE" else a for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    rc, out, err = _main(["demo", *args])
    assert rc == 1
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err
