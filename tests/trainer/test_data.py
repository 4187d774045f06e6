"""Data directory loading: every malformed input is one clear PccError before training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pcc.diagnostics import PccError
from pcc.trainer.data import load_data_dir, make_dummy_dataset, split


def _good_dir(path, n=12, rng=None):
    rng = rng or np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "labels.npy", rng.integers(0, 3, n))
    (path / "text.json").write_text(json.dumps([f"sample {i} text" for i in range(n)]))
    np.save(path / "images.npy", rng.integers(0, 256, (n, 10, 10, 3)).astype(np.uint8))
    np.save(path / "audio.npy", rng.uniform(-1, 1, (n, 800)).astype(np.float32))
    return path


def test_good_dir_loads(tmp_path):
    d = _good_dir(tmp_path / "d")
    ds = load_data_dir(d, ["text", "image", "audio"])
    assert len(ds) == 12 and set(ds.x) == {"text", "image", "audio"}
    auto = load_data_dir(d)  # without --multimodal: every modality file present
    assert set(auto.x) == {"text", "image", "audio"}
    np.save(d / "features.npy", np.ones((12, 5), np.float32))
    assert load_data_dir(d).x.shape == (12, 5)
    tr, va = split(ds, 0.25, seed=0)
    assert len(tr) == 9 and len(va) == 3


@pytest.mark.parametrize(
    "breakage,match",
    [
        (lambda d: (d / "labels.npy").unlink(), "no labels.npy"),
        (lambda d: np.save(d / "labels.npy", np.zeros((12, 2), np.int64)), "labels.npy must be 1-d"),
        (lambda d: np.save(d / "labels.npy", np.array(["a"] * 12)), "integer class labels"),
        (lambda d: np.save(d / "labels.npy", -np.ones(12, np.int64)), "negative label"),
        (lambda d: np.save(d / "labels.npy", np.array([{"x": 1}] * 12, dtype=object), allow_pickle=True),
         "cannot load labels.npy"),
        (lambda d: (d / "text.json").write_text('["a", "b",'), "invalid JSON in text.json"),
        (lambda d: (d / "text.json").write_text('{"a": 1}'), "list of strings"),
        (lambda d: (d / "text.json").write_text(json.dumps(["x"] * 11 + [3])), "entry 11 is a int"),
        (lambda d: (d / "text.json").write_text(json.dumps(["x"] * 5)), "text.json has 5 samples but"),
        (lambda d: np.save(d / "images.npy", np.zeros((11, 8, 8, 3), np.uint8)), "images.npy has 11 samples"),
        (lambda d: np.save(d / "images.npy", np.zeros((12, 8), np.uint8)), "images.npy must be"),
        (lambda d: np.save(d / "images.npy", np.zeros((12, 8, 8, 3), np.int16)), "uint8 .* or float"),
        (lambda d: np.save(d / "images.npy", np.zeros((12, 5, 8, 7), np.float32)), "no channel axis"),
        (lambda d: np.save(d / "audio.npy", np.zeros((12, 10, 2), np.float32)), "audio.npy must be"),
        (lambda d: np.save(d / "audio.npy", np.zeros((12, 10), np.int32)), "float waveforms"),
        (lambda d: np.save(d / "audio.npy", np.full((12, 10), np.nan, np.float32)), "NaN"),
        (lambda d: (d / "audio.npy").unlink(), "no audio.npy for modality 'audio'"),
        (lambda d: (d / "images.npy").write_bytes(b"not a numpy file"), "cannot load images.npy"),
    ],
)  # fmt: skip
def test_malformed_dir_is_one_clear_error(tmp_path, breakage, match):
    d = _good_dir(tmp_path / "d")
    breakage(d)
    with pytest.raises(PccError, match=match):
        load_data_dir(d, ["text", "image", "audio"])


def test_missing_dir_and_no_inputs(tmp_path):
    with pytest.raises(PccError, match="not found"):
        load_data_dir(tmp_path / "nope")
    (tmp_path / "e").mkdir()
    np.save(tmp_path / "e" / "labels.npy", np.zeros(3, np.int64))
    with pytest.raises(PccError, match="no inputs"):
        load_data_dir(tmp_path / "e")


def test_dummy_data_is_learnable_and_deterministic():
    a = make_dummy_dataset(300, 20, 3, seed=4)
    b = make_dummy_dataset(300, 20, 3, seed=4)
    np.testing.assert_array_equal(a.x, b.x)
    # nearest class mean separates the classes well
    means = np.stack([a.x[a.y == c].mean(0) for c in range(3)])
    pred = np.argmin(((a.x[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == a.y).mean() > 0.8
