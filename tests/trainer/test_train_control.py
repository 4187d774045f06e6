"""Training control (best epoch, early stopping, divergence), flags that are honoured or refused, file names,
file modes and progress bars."""

from __future__ import annotations

import io
import json
import os
import stat
import time

import numpy as np
import pytest

from pcc.cli import main
from pcc.diagnostics import PccError
from pcc.trainer.data import make_dummy_dataset, make_multimodal_dataset, split
from pcc.trainer.model import PentaryModel
from pcc.trainer.progress import Progress, progress_wanted
from pcc.trainer.trainer import PentaryTrainer


def _run(capsys, args):
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _noisy_run(keep_best=False, patience=None, epochs=12):
    """A small noisy problem whose validation result peaks at epoch 2 (accuracy 0.92, then lower or equal
    accuracy with a higher loss)."""
    ds = make_dummy_dataset(100, 30, 3, seed=1)
    tr, va = split(ds, 0.5, 1)
    t = PentaryTrainer(PentaryModel(30, 3, [32], seed=0), "cross_entropy", 0.05, schedule="constant", log=None)
    t.train((tr.x, tr.y), (va.x, va.y), epochs=epochs, batch_size=8, keep_best=keep_best, patience=patience)
    return t, (va.x, va.y)


def test_keep_best_restores_the_best_validation_epoch():
    last, val = _noisy_run()
    h = last.history
    scores = [(r["val_acc"], -r["val_loss"]) for r in h]
    best = int(np.argmax([s[0] * 1e6 + s[1] for s in scores]))
    assert best + 1 < len(h)  # the problem is one where the last epoch is not the best
    assert last.metrics["val_loss_pentary"] == pytest.approx(h[-1]["val_loss"])

    kept, _ = _noisy_run(keep_best=True)
    assert [r["val_loss"] for r in kept.history] == [r["val_loss"] for r in h]  # same run
    assert kept.metrics["best_epoch"] == best + 1 and kept.metrics["kept_best"]
    # the model now is the one that produced epoch `best`'s validation numbers
    loss, acc = kept.evaluate(val)
    assert loss == pytest.approx(h[best]["val_loss"], rel=1e-6) and acc == h[best]["val_acc"]
    assert loss < h[-1]["val_loss"]


def test_patience_stops_early():
    t, _ = _noisy_run(patience=3)
    best = t.metrics["best_epoch"]
    assert t.metrics["stopped_early"] and len(t.history) == best + 3 < 12
    with pytest.raises(PccError, match="need validation data"):
        PentaryTrainer(PentaryModel(4, 2, [3]), log=None).train((np.ones((4, 4)), np.array([0, 1, 0, 1])), patience=2)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_diverging_or_nan_loss_stops_with_a_message(capsys, tmp_path, optimizer):
    args = ["train", "--learning-rate", "1e6", "--epochs", "5", "--n-samples", "200", "--optimizer", optimizer,
            "--save-model", "--model-name", "div"]  # fmt: skip
    rc, out, err = _run(capsys, args)
    assert rc == 1 and "training diverged in epoch 1" in err and "--learning-rate 100000" in err
    assert "epoch   2/5" not in out and not (tmp_path / "trained_models" / "div.json").exists()


def test_cli_val_split_save_best_and_patience(capsys, tmp_path):
    base = ["train", "--n-samples", "100", "--input-dim", "8", "--epochs", "3", "--output-dim", "3"]
    rc, out, err = _run(capsys, [*base, "--val-split", "0.5", "--save-model", "--model-name", "a"])
    assert rc == 0, err
    assert "50 training / 50 validation samples" in out
    cfg = json.loads((tmp_path / "trained_models" / "a.metrics.json").read_text())
    assert cfg["config"]["save_best"] is True and cfg["config"]["val_split"] == 0.5
    assert cfg["metrics"]["best_epoch"] in (1, 2, 3)
    rc, out, err = _run(capsys, [*base, "--val-split", "0"])
    assert rc == 0, err
    assert "100 training / 0 validation samples" in out and "val pentary" not in out
    for extra, match in (
        (["--val-split", "0", "--save-best"], "--save-best needs a validation set"),
        (["--val-split", "0", "--patience", "2"], "--patience needs a validation set"),
        (["--val-split", "1.5"], "--val-split must be in [0, 1)"),
        (["--patience", "-1"], "--patience must be 0"),
    ):
        rc, out, err = _run(capsys, [*base, *extra])
        assert rc == 1 and match in err, (extra, err)
    rc, out, err = _run(capsys, ["train", "--dataset", "digits", "--input-dim", "64", "--val-split", "0.3"])
    assert rc == 1 and "fixed 80/20 split" in err


def _data_dir(path, modalities=("text", "image", "audio"), n=40):
    ds = make_multimodal_dataset(n, list(modalities), 8, seed=3)
    path.mkdir()
    np.save(path / "labels.npy", ds.y)
    if "text" in modalities:
        (path / "text.json").write_text(json.dumps(ds.x["text"]))
    if "image" in modalities:
        np.save(path / "images.npy", ds.x["image"])
    if "audio" in modalities:
        np.save(path / "audio.npy", ds.x["audio"])
    return path


def test_flags_are_honoured_or_refused(capsys, tmp_path):
    d = _data_dir(tmp_path / "d")
    rc, out, err = _run(capsys, ["train", "--data-dir", str(d), "--modalities", "text", "--epochs", "1"])
    assert rc == 0, err
    assert "multimodal: text fused by concat into 64 features" in out and "images.npy" not in out
    rc, out, err = _run(capsys, ["train", "--data-dir", str(d), "--modalities", "image", "audio", "--fusion-method",
                                 "add", "--epochs", "1"])  # fmt: skip
    assert rc == 0, err
    assert "multimodal: image, audio fused by add into 128 features" in out
    refused = [
        (["--modalities", "text"], "--modalities has no effect without --multimodal or --data-dir"),
        (["--fusion-method", "add"], "--fusion-method has no effect without --multimodal or --data-dir"),
        (["--output-dir", "out"], "--output-dir is given but nothing is written: add --save-model"),
        (["--model-name", "m"], "--model-name is given but nothing is written"),
        (["--image-size", "8"], "--image-size sets up text/image/audio preprocessing"),
        (["--dataset", "digits", "--modalities", "text"], "has no effect without --multimodal"),
        (["--multimodal", "--sample-rate", "8000"], "--sample-rate describes the files of a --data-dir"),
    ]
    for extra, match in refused:
        rc, out, err = _run(capsys, ["train", "--epochs", "1", *extra])
        assert rc == 1 and match in err, (extra, err)
        assert "epoch" not in out
    np.save(d / "features.npy", np.ones((40, 5), np.float32))
    rc, out, err = _run(capsys, ["train", "--data-dir", str(d), "--fusion-method", "add", "--epochs", "1"])
    assert rc == 1 and "--fusion-method applies to text, image and audio data" in err
    rc, out, err = _run(capsys, ["train", "--n-samples", "40", "--epochs", "1", "--plot", "--model-name", "p",
                                 "--output-dir", "plots"])  # fmt: skip
    assert rc == 0 and (tmp_path / "plots" / "p.png").is_file()


def test_automatic_names_are_unique_within_a_second(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101_120000")
    for _ in range(3):
        assert _run(capsys, ["train", "--n-samples", "40", "--epochs", "1", "--save-model"])[0] == 0
    names = sorted(p.name for p in (tmp_path / "trained_models").iterdir())
    assert _run(capsys, ["train", "--n-samples", "40", "--epochs", "1"])[0] == 0  # writes nothing
    assert sorted(p.name for p in (tmp_path / "trained_models").iterdir()) == names
    assert names == [
        "pentary_mlp_20260101_120000.json", "pentary_mlp_20260101_120000.metrics.json",
        "pentary_mlp_20260101_120000_2.json", "pentary_mlp_20260101_120000_2.metrics.json",
        "pentary_mlp_20260101_120000_3.json", "pentary_mlp_20260101_120000_3.metrics.json",
    ]  # fmt: skip
    for p in (tmp_path / "trained_models").glob("*.json"):
        json.loads(p.read_text())  # every file is complete


def test_written_files_keep_the_umask(capsys, tmp_path):
    old = os.umask(0o022)
    try:
        rc, out, err = _run(capsys, ["train", "--n-samples", "40", "--epochs", "1", "--save-model", "--plot",
                                     "--model-name", "u"])  # fmt: skip
    finally:
        os.umask(old)
    assert rc == 0, err
    for name in ("u.json", "u.metrics.json", "u.png"):
        assert stat.S_IMODE((tmp_path / "trained_models" / name).stat().st_mode) == 0o644, name


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal(capsys, tmp_path, monkeypatch):
    assert not progress_wanted(False, io.StringIO()) and progress_wanted(False, _Tty())
    assert not progress_wanted(True, _Tty())
    s = _Tty()
    with Progress(4, "features", True, s) as bar:
        for _ in range(4):
            bar.update()
    assert "features [" in s.getvalue() and "4/4" in s.getvalue() and s.getvalue().endswith("\r\x1b[2K")
    silent = io.StringIO()
    with Progress(4, "x", False, silent) as bar:
        bar.update(4)
    assert silent.getvalue() == ""

    d = _data_dir(tmp_path / "d", ("text", "audio"))
    args = ["train", "--data-dir", str(d), "--epochs", "2"]
    rc, out, err = _run(capsys, args)  # stderr is not a terminal here
    assert rc == 0 and err == ""
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    assert main(args) == 0
    drawn = tty.getvalue()
    assert "features [" in drawn and "epoch 1/2 [" in drawn and "epoch 2/2 [" in drawn
    tty.seek(0)
    tty.truncate()
    assert main([*args, "--quiet"]) == 0
    assert tty.getvalue() == ""
