"""Data directories on disk: rows read on demand, features in bounded memory, image layouts, sample rates
and the preprocessing flags."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from pcc.cli import main
from pcc.diagnostics import PccError
from pcc.trainer.data import NpyRows, load_data_dir, split
from pcc.trainer.model import PentaryModel
from pcc.trainer.multimodal import AudioProcessor, ImageProcessor, MultimodalFusion


def test_npy_rows_match_np_load(tmp_path, rng):
    a = rng.standard_normal((37, 5, 3)).astype(np.float32)
    np.save(tmp_path / "c.npy", a)
    np.save(tmp_path / "f.npy", np.asfortranarray(a))
    for name in ("c.npy", "f.npy"):
        rows = NpyRows(tmp_path / name)
        assert rows.shape == a.shape and len(rows) == 37
        np.testing.assert_array_equal(rows[:], a)
        np.testing.assert_array_equal(rows[5:9], a[5:9])
        idx = np.array([0, 1, 2, 7, 8, 30, 36])
        sub = rows.subset(idx)
        np.testing.assert_array_equal(sub[:], a[idx])
        np.testing.assert_array_equal(sub[2:5], a[idx[2:5]])
        np.testing.assert_array_equal(np.asarray(sub.subset(np.array([1, 3]))), a[idx[[1, 3]]])
    np.save(tmp_path / "o.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects"):  # refused before anything is unpickled
        NpyRows(tmp_path / "o.npy")


def _write_dir(path, n, clip, rng, images=None):
    path.mkdir()
    np.save(path / "labels.npy", rng.integers(0, 3, n))
    np.save(path / "audio.npy", (0.3 * rng.standard_normal((n, clip))).astype(np.float32))
    if images is not None:
        np.save(path / "images.npy", images)
    return path


def _peak_bytes(d) -> int:
    tracemalloc.start()
    try:
        ds = load_data_dir(d, ["audio"])
        tr, va = split(ds, 0.2, 0)
        fusion = MultimodalFusion(["audio"])
        fusion.transform(tr.x, fit=True)
        fusion.transform(va.x)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_feature_memory_does_not_grow_with_the_raw_data(tmp_path, rng):
    # 4x the clips: the raw audio grows by 19 MB, the [N, 640] features by 2.5 MB
    small = _peak_bytes(_write_dir(tmp_path / "s", 400, 4000, rng))
    large = _peak_bytes(_write_dir(tmp_path / "l", 1600, 4000, rng))
    raw_growth = 1200 * 4000 * 4
    assert large - small < raw_growth / 3, (small, large)


def test_nan_in_a_later_chunk_is_found_before_training(tmp_path, rng):
    d = _write_dir(tmp_path / "d", 600, 100, rng)
    a = np.load(d / "audio.npy")
    a[517, 3] = np.nan
    np.save(d / "audio.npy", a)
    with pytest.raises(PccError, match=r"audio.npy contains NaN or infinity \(sample 517\)"):
        load_data_dir(d, ["audio"])


@pytest.mark.parametrize("width", [1, 3, 4])
def test_channels_first_images_of_width_1_3_4(tmp_path, rng, width):
    hwc = rng.integers(0, 256, (6, 3, width, 3)).astype(np.uint8)  # 3 rows of `width` RGB pixels
    chw = np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))  # [6, 3, 3, width]: both ends could be channels
    ref = ImageProcessor(size=4, layout="hwc").process(hwc)
    np.testing.assert_allclose(ImageProcessor(size=4, layout="chw").process(chw), ref, rtol=1e-6)
    with pytest.raises(PccError, match="ambiguous") as info:
        ImageProcessor(size=4).process(chw)
    assert "--image-layout chw" in info.value.format()
    d = tmp_path / "d"
    d.mkdir()
    np.save(d / "labels.npy", np.arange(6) % 2)
    np.save(d / "images.npy", chw)
    with pytest.raises(PccError, match="images.npy: the channel axis of images of shape .* is ambiguous"):
        load_data_dir(d, ["image"])
    with pytest.raises(PccError, match="image layout hwc: the last axis of shape \\[3, 5, 5\\]"):
        ImageProcessor(layout="hwc").process(np.zeros((2, 3, 5, 5), np.uint8))
    ds = load_data_dir(d, ["image"], "chw")
    fusion = MultimodalFusion(["image"], image={"size": 4, "layout": "chw"})
    fusion.feature_mean = fusion.feature_std = None
    np.testing.assert_allclose(fusion._fuse(fusion._features({"image": ds.x["image"][:]}, True)), ref, rtol=1e-6)


def test_audio_at_another_sample_rate_is_resampled():
    from scipy.signal import resample_poly

    from pcc.trainer.multimodal import hz_to_mel, mel_to_hz

    t16, t8 = np.arange(16000) / 16000, np.arange(8000) / 8000
    tone = lambda t: 0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1800 * t)  # noqa: E731
    p16, p8 = AudioProcessor(), AudioProcessor(input_rate=8000)
    ref = p16.log_mel(tone(t16)[None].astype(np.float32))[0]
    got = p8.log_mel(p8.resample(tone(t8)[None]).astype(np.float32))[0]
    # the same one second at 16 kHz: the loud mel bins below 3.5 kHz agree within 2 dB
    centres = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(8000.0), 42))[1:-1]
    loud = (centres < 3500)[:, None] & (ref > ref.max() - 40)
    assert got.shape == ref.shape and loud.sum() > 100
    assert np.abs(got - ref)[loud].max() < 2.0
    # read as 16 kHz without resampling, the 440 Hz tone would sit an octave up
    wrong = p16.log_mel(tone(t8)[None].astype(np.float32))[0]
    assert np.argmax(wrong.mean(1)) > np.argmax(ref.mean(1))
    np.testing.assert_allclose(p8.resample(tone(t8)[None]), resample_poly(tone(t8)[None], 2, 1, axis=1))
    assert AudioProcessor.from_dict(p8.to_dict()).input_rate == 8000
    assert AudioProcessor(sample_rate=22050, input_rate=44100).resample(np.zeros((1, 4410))).shape == (1, 2205)


def test_preprocessing_flags_reach_the_model(capsys, tmp_path, rng):
    d = tmp_path / "d"
    d.mkdir()
    n = 30
    np.save(d / "labels.npy", np.arange(n) % 3)
    (d / "text.json").write_text(json.dumps([f"word{i % 7} other{i % 5} x" for i in range(n)]))
    np.save(d / "images.npy", rng.integers(0, 256, (n, 3, 10, 3)).astype(np.uint8))  # channels first, width 3
    np.save(d / "audio.npy", (0.2 * rng.standard_normal((n, 4000))).astype(np.float32))  # 8 kHz, 0.5 s
    args = ["train", "--data-dir", str(d), "--epochs", "1", "--vocab-size", "6", "--max-length", "2",
            "--image-size", "4", "--image-layout", "chw", "--n-mels", "12", "--sample-rate", "8000",
            "--save-model", "--model-name", "pp"]  # fmt: skip
    rc, out, err = _run(capsys, args)
    assert rc == 0, err
    saved = json.loads((tmp_path / "trained_models" / "pp.json").read_text())
    procs = saved["multimodal"]["processors"]
    assert procs["text"]["vocab_size"] == 6 and procs["text"]["max_length"] == 2
    assert len(procs["text"]["vocabulary"]) == 4
    assert procs["image"]["size"] == [4, 4] and procs["image"]["layout"] == "chw"
    assert procs["audio"]["n_mels"] == 12 and procs["audio"]["input_rate"] == 8000
    assert saved["input_dim"] == 64 + 3 * 16 + 12 * 16
    assert PentaryModel.load(tmp_path / "trained_models" / "pp.json").input_dim == saved["input_dim"]
    rc, out, err = _run(capsys, args[:-3] + ["--image-layout", "auto"])
    assert rc == 1 and "ambiguous" in err and "--image-layout chw" in err
    rc, out, err = _run(capsys, [*args[:5], "--n-mels", "0"])
    assert rc == 1 and "--n-mels must be at least 1" in err


def _run(capsys, args):
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("shape,size", [((2, 3, 5, 7), (9, 11)), ((3, 3, 7, 5), (11, 9)), ((2, 3, 16, 12), (4, 3)),
                                        ((2, 3, 12, 16), (3, 4)), ((1, 3, 6, 6), (6, 6))])  # fmt: skip
def test_batch_resize_matches_torch(rng, shape, size):
    import torch
    import torch.nn.functional as F

    x = rng.random(shape, dtype=np.float32)
    ip = ImageProcessor(size=size)
    got = ip.resize(x)
    t = torch.from_numpy(x)
    if size[0] >= shape[2]:
        ref = F.interpolate(t, size=size, mode="bilinear", align_corners=False).numpy()
    else:
        ref = F.adaptive_avg_pool2d(t, size).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
