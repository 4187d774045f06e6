"""Text, image and audio processors; fusion; the synthetic multimodal generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcc.diagnostics import PccError
from pcc.trainer.data import make_multimodal_dataset
from pcc.trainer.multimodal import (
    AudioProcessor,
    ImageProcessor,
    MultimodalFusion,
    TextProcessor,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    resize_matrix,
)


def test_text_vocabulary_tokens_and_embedding():
    tp = TextProcessor(vocab_size=5, max_length=4, embed_dim=8)
    tp.fit(["the cat sat", "the dog sat", "The cat!"])
    assert tp.vocab == {"the": 2, "cat": 3, "sat": 4}  # most frequent first, ties alphabetical; 3 = vocab-2
    ids = tp.encode(["the dog sat on the mat", ""])
    np.testing.assert_array_equal(ids, [[2, 1, 4, 1], [0, 0, 0, 0]])  # truncated to 4, unknown = 1, pad = 0
    f = tp.process(["the cat", "cat the"])
    np.testing.assert_allclose(f[0], f[1], rtol=1e-6)  # mean pooling ignores order
    assert f.shape == (2, 8) and tp.process("the cat").shape == (8,)
    assert not tp.process([""]).any()
    flat = TextProcessor(vocab_size=5, max_length=4, embed_dim=8, pooling="flatten").fit(["a b"])
    assert flat.process("a b").shape == (32,)
    again = TextProcessor.from_dict(tp.to_dict())
    np.testing.assert_array_equal(again.process("the cat sat"), tp.process("the cat sat"))


def test_resize_matrices_area_and_bilinear():
    a = resize_matrix(8, 4, "area")
    np.testing.assert_allclose(a.sum(axis=1), 1, rtol=1e-6)
    x = np.arange(8, dtype=np.float32)
    np.testing.assert_allclose(a @ x, [0.5, 2.5, 4.5, 6.5])
    frac = resize_matrix(3, 2, "area")  # fractional overlaps
    np.testing.assert_allclose(frac, [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]], rtol=1e-6)
    img = torch.rand(1, 3, 5, 7)
    for size in [(9, 11), (3, 4)]:
        ref = F.interpolate(img, size=size, mode="bilinear", align_corners=False).numpy()
        rh, rw = resize_matrix(5, size[0], "bilinear"), resize_matrix(7, size[1], "bilinear")
        np.testing.assert_allclose(np.einsum("oh,nchw,pw->ncop", rh, img.numpy(), rw), ref, atol=1e-5)
    img = torch.rand(1, 3, 16, 12)
    ra, rb = resize_matrix(16, 4, "area"), resize_matrix(12, 3, "area")
    ref = F.adaptive_avg_pool2d(img, (4, 3)).numpy()
    np.testing.assert_allclose(np.einsum("oh,nchw,pw->ncop", ra, img.numpy(), rb), ref, atol=1e-5)


def test_image_layouts_dtypes_and_normalisation(rng):
    hwc = rng.integers(0, 256, (2, 12, 12, 3)).astype(np.uint8)
    chw = hwc.transpose(0, 3, 1, 2)
    ip = ImageProcessor(size=6)
    a, b = ip.process(hwc), ip.process(chw)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(ip.process(hwc.astype(np.float32) / 255), a, rtol=1e-5, atol=1e-5)
    assert a.shape == (2, 3 * 36)
    single = ip.process(chw[0])
    np.testing.assert_allclose(single, a[0], rtol=1e-6)
    grey = ip.process(hwc[:, :, :, 0], batched=True)
    assert grey.shape == (2, 108)
    flat = np.full((1, 4, 4, 3), 255, np.uint8)
    out = ImageProcessor(size=2, layout="hwc").process(flat).reshape(3, 2, 2)  # 4x4x3: ambiguous in auto
    np.testing.assert_allclose(out[:, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225], rtol=1e-5)
    with pytest.raises(PccError, match="channel"):
        ImageProcessor().process(np.zeros((2, 5, 5, 5), np.float32))


def test_mel_scales_and_filterbank():
    assert float(hz_to_mel(1000.0, "htk")) == pytest.approx(1000.0, rel=1e-3)
    assert float(hz_to_mel(1000.0, "slaney")) == pytest.approx(15.0)
    assert float(hz_to_mel(500.0, "slaney")) == pytest.approx(7.5)
    for scale in ("htk", "slaney"):
        f = np.array([50.0, 700.0, 3000.0, 7000.0])
        np.testing.assert_allclose(mel_to_hz(hz_to_mel(f, scale), scale), f, rtol=1e-9)
    fb = mel_filterbank(16000, 512, 40, norm=None)
    assert fb.shape == (40, 257) and fb.max() <= 1 + 1e-6 and (fb.max(axis=1) > 0.5).all()
    centres = np.argmax(fb, axis=1)
    assert np.all(np.diff(centres) >= 0)  # ordered by frequency
    area = mel_filterbank(16000, 512, 40, scale="slaney", norm="slaney")
    assert (area.sum(axis=1) > 0).all()


def test_stft_matches_torch(rng):
    ap = AudioProcessor(sample_rate=8000, n_fft=256, hop_length=64)
    x = rng.standard_normal((2, 2000)).astype(np.float32)
    ours = ap.stft_power(x)
    ref = torch.stft(torch.tensor(x), 256, 64, window=torch.hann_window(256), center=True, pad_mode="reflect",
                     return_complex=True).abs().pow(2).numpy()  # fmt: skip
    np.testing.assert_allclose(ours, ref.transpose(0, 2, 1), rtol=1e-3, atol=1e-3)


def test_audio_tone_lands_in_the_right_mel_band():
    ap = AudioProcessor(n_frames=4, normalize=False)
    t = np.arange(16000) / 16000
    low = ap.log_mel(np.sin(2 * np.pi * 300 * t)[None]).mean(axis=2)[0]
    high = ap.log_mel(np.sin(2 * np.pi * 3000 * t)[None]).mean(axis=2)[0]
    assert np.argmax(low) < np.argmax(high)
    f = ap.process(np.sin(2 * np.pi * 300 * t))
    assert f.shape == (40 * 4,)


@pytest.mark.parametrize("method", ["concat", "add", "multiply", "attention"])
def test_fusion_methods_with_mismatched_shapes(method, rng):
    fusion = MultimodalFusion(["text", "image", "audio"], fusion_method=method, common_dim=32)
    sample = {
        "text": "Sample text input",
        "image": rng.standard_normal((3, 40, 30)).astype(np.float32),
        "audio": rng.standard_normal(4000).astype(np.float32),
    }
    v = fusion.process(sample)
    assert v.ndim == 1 and v.shape[0] == fusion.output_dim and np.isfinite(v).all()
    batch = {k: [val, val] for k, val in sample.items()}
    batch["image"] = np.stack(batch["image"])
    batch["audio"] = np.stack(batch["audio"])
    b = fusion.process_batch(batch)
    np.testing.assert_allclose(b[0], v, rtol=1e-5, atol=1e-5)
    expected = {"concat": 64 + 3 * 16 * 16 + 40 * 16, "add": 32, "multiply": 32, "attention": 96}[method]
    assert fusion.output_dim == expected


def test_fusion_errors_and_round_trip(rng):
    with pytest.raises(PccError, match="unknown modality 'video'"):
        MultimodalFusion(["text", "video"])
    with pytest.raises(PccError, match="fusion method"):
        MultimodalFusion(["text"], fusion_method="mean")
    fusion = MultimodalFusion(["text", "audio"])
    with pytest.raises(PccError, match="lacks modality 'audio'"):
        fusion.process({"text": "hi"})
    data = make_multimodal_dataset(20, ["text", "audio"], 4, seed=1)
    a = fusion.process_batch(data.x, fit=True)
    np.testing.assert_allclose(a.mean(axis=0), 0, atol=1e-4)  # standardised on the fitting data
    again = MultimodalFusion.from_dict(fusion.to_dict())
    np.testing.assert_allclose(again.process_batch(data.x), a, rtol=1e-5, atol=1e-5)


def test_synthetic_multimodal_data_is_deterministic_and_needs_every_modality():
    a = make_multimodal_dataset(200, ["text", "image", "audio"], 10, seed=3)
    b = make_multimodal_dataset(200, ["text", "image", "audio"], 10, seed=3)
    assert a.x["text"] == b.x["text"]
    np.testing.assert_array_equal(a.x["image"], b.x["image"])
    np.testing.assert_array_equal(a.x["audio"], b.x["audio"])
    np.testing.assert_array_equal(a.y, b.y)
    assert a.x["image"].dtype == np.uint8 and a.x["image"].shape == (200, 32, 32, 3)
    assert a.x["audio"].dtype == np.float32 and np.abs(a.x["audio"]).max() <= 1
    assert set(np.unique(a.y)) == set(range(8))  # 2 x 2 x 2 factors
    # the label is not a function of any single modality: one modality's keyword matches several labels
    keyword = np.array([next(w for w in t.split() if w in ("red", "green")) for t in a.x["text"]])
    for kw in ("red", "green"):
        assert len(np.unique(a.y[keyword == kw])) == 4
