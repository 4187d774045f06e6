"""pcc.quant: the shared pentary weight quantizer."""

from __future__ import annotations

import numpy as np
import pytest

from pcc.quant import dequantize, quantize_weights, quantize_with_scale, reconstruction_error


def _brute_force_error(row: np.ndarray) -> float:
    m = np.abs(row).max()
    best = np.inf
    for s in np.linspace(m / 12, m, 6000):
        q = np.clip(np.rint(row / s), -2, 2)
        best = min(best, float(np.sum((row - s * q) ** 2)))
    return best


@pytest.mark.parametrize("dist", ["normal", "laplace", "uniform"])
def test_mse_scale_is_near_the_brute_force_optimum(rng, dist):
    w = {
        "normal": rng.standard_normal,
        "laplace": lambda s: rng.laplace(size=s),
        "uniform": lambda s: rng.uniform(-1, 1, s),
    }[dist]((6, 200)).astype(np.float32)
    q, s = quantize_weights(w)
    for i in range(6):
        ours = reconstruction_error(w[i], q[i], s[i])
        assert ours <= _brute_force_error(w[i].astype(np.float64)) * 1.002 + 1e-9


def test_mse_beats_max_and_uses_all_levels(rng):
    w = rng.standard_normal((32, 256)).astype(np.float32)
    q, s = quantize_weights(w, method="mse")
    qm, sm = quantize_weights(w, method="max")
    assert reconstruction_error(w, q, s) < 0.6 * reconstruction_error(w, qm, sm)
    counts = np.bincount(q.ravel() + 2, minlength=5)
    assert counts[0] > 0.05 * q.size and counts[4] > 0.05 * q.size  # +-2 are really used
    np.testing.assert_allclose(sm, np.abs(w).max(axis=1) / 2, rtol=1e-6)


def test_shapes_dtypes_and_ranges(rng):
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    q, s = quantize_weights(w)
    assert q.dtype == np.int8 and q.shape == w.shape and q.min() >= -2 and q.max() <= 2
    assert s.dtype == np.float32 and s.shape == (8,)
    q1, s1 = quantize_weights(w, per_channel=False)
    assert np.ndim(s1) == 0 and isinstance(s1, np.float32)
    q2, s2 = quantize_weights(w, axis=1)
    assert s2.shape == (3,)
    np.testing.assert_array_equal(q2, quantize_with_scale(w, s2, axis=1))
    np.testing.assert_allclose(dequantize(q, s), q * s[:, None, None, None])


def test_per_channel_matches_quantizing_each_channel_alone(rng):
    w = (rng.standard_normal((5, 40)) * np.array([0.01, 0.1, 1, 10, 100])[:, None]).astype(np.float32)
    q, s = quantize_weights(w)
    for i in range(5):
        qi, si = quantize_weights(w[i], per_channel=False)
        np.testing.assert_array_equal(q[i], qi)
        assert s[i] == pytest.approx(float(si), rel=1e-6)


def test_deterministic_and_zero_channels(rng):
    w = rng.standard_normal((4, 50)).astype(np.float32)
    w[2] = 0
    a = quantize_weights(w)
    b = quantize_weights(w.copy())
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[1][2] == 1.0 and not a[0][2].any()
    q, s = quantize_weights(np.zeros((3, 3), np.float32), per_channel=False)
    assert s == 1.0 and not q.any()


def test_already_pentary_weights_round_trip_exactly(rng):
    q0 = rng.integers(-2, 3, (6, 30)).astype(np.int8)
    s0 = np.float32([0.5, 0.01, 3.0, 0.2, 1.5, 7.0])
    w = dequantize(q0, s0)
    q, s = quantize_weights(w)
    np.testing.assert_allclose(dequantize(q, s), w, rtol=1e-6, atol=0)


def test_init_scale_tracks_the_full_search(rng):
    w = rng.standard_normal((16, 64)).astype(np.float32)
    q, s = quantize_weights(w)
    w2 = w + 0.01 * rng.standard_normal(w.shape).astype(np.float32)
    qt, st = quantize_weights(w2, init_scale=s, refine_steps=3)
    qf, sf = quantize_weights(w2)
    assert reconstruction_error(w2, qt, st) <= reconstruction_error(w2, qf, sf) * 1.01


def test_large_tensor_blocks_agree_with_small_path(rng, monkeypatch):
    import pcc.quant as qmod

    w = rng.standard_normal((64, 300)).astype(np.float32)
    q_small, s_small = quantize_weights(w)
    monkeypatch.setattr(qmod, "_BLOCK", 1000)  # force the blocked code path
    q_big, s_big = quantize_weights(w)
    np.testing.assert_allclose(s_big, s_small, rtol=1e-5)
    assert np.mean(q_big != q_small) < 0.01
    q1, s1 = quantize_weights(w.ravel(), per_channel=False)
    monkeypatch.setattr(qmod, "_BLOCK", 1 << 22)
    q2, s2 = quantize_weights(w.ravel(), per_channel=False)
    assert float(s1) == pytest.approx(float(s2), rel=1e-5)


def test_blocked_refinement_matches_the_straightforward_lloyd_steps(rng, monkeypatch):
    """The refinement's blocked path (one reused buffer for every block, the last one shorter) gives the same
    scales, bit for bit, as Lloyd steps written out per block with fresh arrays."""
    import pcc.quant as qmod

    rows = (rng.standard_normal((37, 301)) * rng.uniform(0.1, 2.0, (37, 1))).astype(np.float32)
    start = (np.abs(rows).max(axis=1) / 2).astype(np.float32)
    monkeypatch.setattr(qmod, "_BLOCK", 1000)  # blocks of 3 rows, the last of 1
    blocks = qmod._blocks(*rows.shape)
    assert len(blocks) > 1 and len({r.stop - r.start for r, _ in blocks}) > 1
    for cache in (0, 1 << 26):  # |w| per step and block, or kept for all steps
        monkeypatch.setattr(qmod, "_MAG_CACHE", cache)
        got = qmod._refine(rows, start, 4)
        scale = start.copy()
        for _ in range(4):
            inv = np.float32(1.0) / np.where(scale > 0, scale, 1).astype(np.float32)
            a_dot, q_dot = np.zeros(37), np.zeros(37)
            for rs, cs in blocks:
                a = np.abs(rows[rs, cs])
                q = np.minimum(np.rint(a * inv[rs, None]), 2.0)
                a_dot[rs] += np.einsum("ij,ij->i", a, q)
                q_dot[rs] += np.einsum("ij,ij->i", q, q)
            new = np.where(q_dot > 0, a_dot / np.maximum(q_dot, 1.0), scale).astype(np.float32)
            if np.array_equal(new, scale):
                break
            scale = new
        np.testing.assert_array_equal(got, scale)


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        quantize_weights(np.ones(3, np.float32), method="nope")
    with pytest.raises(ValueError, match="axis"):
        quantize_weights(np.ones((2, 2), np.float32), axis=3)
