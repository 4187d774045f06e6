"""The modality processors of multimodal training: fixed, deterministic (seeded) feature extractors that run
in NumPy before the pentary network, vectorised over the batch; :mod:`pcc.trainer.multimodal` fuses their
outputs.

* :class:`TextProcessor` - lower-cased word tokens, a vocabulary built from the training texts (the
  ``vocab_size - 2`` most frequent tokens; id 0 is padding, id 1 unknown), truncation/padding to
  ``max_length``, and a fixed random embedding table (seeded) mean-pooled over the tokens, i.e. a random
  projection of the bag of words.  ``pooling="flatten"`` keeps the token positions instead.
* :class:`ImageProcessor` - HWC or CHW (or grey HW), uint8 (0..255) or float (0..1) images, any batch of them;
  resized to ``size`` with a separable resampling matrix (``area`` averaging for downscaling, ``bilinear`` with
  half-pixel centres for upscaling, as ``torch.nn.functional.interpolate``), then ImageNet normalisation.
* :class:`AudioProcessor` - a windowed STFT (periodic Hann window, centred frames, reflect padding), the power
  spectrum through a triangular mel filterbank (HTK or Slaney mel scale, optional Slaney area normalisation),
  ``10 log10`` (dB), pooled to ``n_frames`` time bins, and normalised per clip.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from pcc.diagnostics import PccError
from pcc.trainer.layers import Embedding

__all__ = [
    "TextProcessor",
    "ImageProcessor",
    "AudioProcessor",
    "IMAGE_LAYOUTS",
    "image_layout",
    "resize_matrix",
    "mel_filterbank",
    "hz_to_mel",
    "mel_to_hz",
]

F32 = np.float32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


# --- text -----------------------------------------------------------------------------------------------------


class TextProcessor:
    """Tokenise, map to vocabulary ids, embed and pool.  Fit the vocabulary with :meth:`fit`; an unfitted
    processor fits itself on the first texts it sees."""

    PAD, UNK = 0, 1

    def __init__(
        self,
        vocab_size: int = 1000,
        max_length: int = 32,
        embed_dim: int = 64,
        pooling: str = "mean",
        seed: int = 0,
        lowercase: bool = True,
        learned: bool = False,
    ) -> None:
        if vocab_size < 3 or max_length < 1 or embed_dim < 1:
            raise PccError("text processor: vocab_size >= 3, max_length >= 1 and embed_dim >= 1 are required")
        if pooling not in ("mean", "flatten"):
            raise PccError(f"text processor: pooling must be 'mean' or 'flatten', got {pooling!r}")
        self.vocab_size = int(vocab_size)
        self.max_length = int(max_length)
        self.embed_dim = int(embed_dim)
        self.pooling = pooling
        self.seed = int(seed)
        self.lowercase = lowercase
        if learned and pooling != "mean":
            raise PccError("text processor: a learned embedding needs pooling='mean'")
        self.learned = bool(learned)
        self.vocab: dict[str, int] = {}
        self.table = Embedding(self.vocab_size, self.embed_dim, padding_idx=self.PAD)
        rng = np.random.default_rng(self.seed)
        self.table.weight.value[...] = rng.standard_normal((self.vocab_size, self.embed_dim)).astype(F32)
        self.table.weight.value[self.PAD] = 0.0

    @property
    def embedding(self) -> np.ndarray:
        """The ``[vocab_size, embed_dim]`` table (fixed seeded N(0, 1), or trained when ``learned``)."""
        return self.table.weight.value

    @property
    def output_dim(self) -> int:
        return self.embed_dim * (self.max_length if self.pooling == "flatten" else 1)

    def tokenize(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise PccError(f"text processor: expected a string, got {type(text).__name__}")
        return _TOKEN.findall(text.lower() if self.lowercase else text)

    def fit(self, texts: Sequence[str]) -> TextProcessor:
        """Build the vocabulary from ``texts``: the most frequent tokens (ties in alphabetical order)."""
        counts = Counter(tok for t in texts for tok in self.tokenize(t))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: self.vocab_size - 2]
        self.vocab = {tok: i + 2 for i, (tok, _) in enumerate(ranked)}
        return self

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``[N, max_length]`` int32 token ids (0 = padding, 1 = unknown)."""
        if not self.vocab:
            self.fit(texts)
        ids = np.zeros((len(texts), self.max_length), np.int32)
        for i, t in enumerate(texts):
            toks = [self.vocab.get(tok, self.UNK) for tok in self.tokenize(t)[: self.max_length]]
            ids[i, : len(toks)] = toks
        return ids

    def process(self, texts: str | Sequence[str]) -> np.ndarray:
        """Features of one text (``[output_dim]``) or of a list (``[N, output_dim]``)."""
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        ids = self.encode(batch)
        if self.pooling == "flatten":
            out = self.embedding[ids].reshape(len(batch), -1).astype(F32)
        else:
            out = self.table.pooled(ids)  # sum / sqrt(token count): unit variance whatever the length
        return out[0] if single else out

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "embed_dim": self.embed_dim,
            "pooling": self.pooling,
            "seed": self.seed,
            "lowercase": self.lowercase,
            "vocabulary": sorted(self.vocab, key=self.vocab.__getitem__),
            **({"learned": True, "embedding": self.embedding.tolist()} if self.learned else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextProcessor:
        p = cls(d["vocab_size"], d["max_length"], d["embed_dim"], d.get("pooling", "mean"), d.get("seed", 0))
        p.lowercase = bool(d.get("lowercase", True))
        p.vocab = {tok: i + 2 for i, tok in enumerate(d.get("vocabulary", []))}
        if d.get("learned"):
            table = np.asarray(d.get("embedding"), np.float64)
            if table.shape != (p.vocab_size, p.embed_dim) or not np.all(np.isfinite(table)):
                raise PccError(f"text processor: 'embedding' must be {p.vocab_size} x {p.embed_dim} finite numbers")
            p.learned = True
            p.embedding[...] = table
        return p


# --- images ---------------------------------------------------------------------------------------------------


def resize_matrix(n_in: int, n_out: int, method: str = "auto") -> np.ndarray:
    """``[n_out, n_in]`` resampling matrix along one axis.

    ``area``: each output pixel averages the input interval it covers (exact fractional overlaps), the right
    filter for downscaling.  ``bilinear``: linear interpolation at half-pixel centres (``align_corners=False``),
    edge-clamped.  ``auto`` picks ``area`` when shrinking and ``bilinear`` otherwise.
    """
    if method == "auto":
        method = "area" if n_out < n_in else "bilinear"
    m = np.zeros((n_out, n_in), np.float64)
    if method == "area":
        ratio = n_in / n_out
        lo = np.arange(n_out) * ratio
        hi = lo + ratio
        edges = np.arange(n_in)
        overlap = np.minimum(hi[:, None], edges[None, :] + 1) - np.maximum(lo[:, None], edges[None, :])
        m = np.maximum(overlap, 0) / ratio
    elif method == "bilinear":
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0, n_in - 1)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        frac = src - i0
        rows = np.arange(n_out)
        np.add.at(m, (rows, i0), 1 - frac)
        np.add.at(m, (rows, i1), frac)
    else:
        raise PccError(f"unknown resize method {method!r} (expected 'area', 'bilinear' or 'auto')")
    return m.astype(F32)


IMAGE_LAYOUTS = ("auto", "hwc", "chw")


def image_layout(shape: Sequence[int], layout: str = "auto") -> str:
    """``"hw"``, ``"hwc"`` or ``"chw"`` of one image's ``shape``; PccError when it cannot be told.

    ``auto`` takes the axis of 1, 3 or 4 entries as the channel axis; when both the first and the last axis
    could be one (``[3, 32, 3]``: 3 rows of 32x3 pixels, or 3 channels of 32x3?), it refuses instead of
    guessing, and ``layout`` (``--image-layout``) must say."""
    shape = tuple(int(v) for v in shape)
    if len(shape) == 2:
        return "hw"
    if len(shape) != 3:
        raise PccError(f"an image is [H, W], [H, W, C] or [C, H, W], got shape {list(shape)}")
    first, last = shape[0] in (1, 3, 4), shape[-1] in (1, 3, 4)
    if layout == "chw" or layout == "hwc":
        if not (first if layout == "chw" else last):
            axis = "first" if layout == "chw" else "last"
            raise PccError(f"image layout {layout}: the {axis} axis of shape {list(shape)} is not 1, 3 or 4 channels")
        return layout
    if layout != "auto":
        raise PccError(f"image layout must be one of {', '.join(IMAGE_LAYOUTS)}, got {layout!r}")
    if first and last:
        raise PccError(
            f"the channel axis of images of shape {list(shape)} is ambiguous (first or last axis)",
            notes=["say which: --image-layout chw ([C, H, W]) or --image-layout hwc ([H, W, C]); Python: "
                   "ImageProcessor(layout='chw')"],
        )  # fmt: skip
    if first:
        return "chw"
    if last:
        return "hwc"
    raise PccError(f"no channel axis of 1, 3 or 4 in image shape {list(shape)}")


class ImageProcessor:
    """Resize and normalise images to ``[3, size, size]`` float32 (ImageNet mean/std per channel).

    ``layout`` is ``"auto"`` (the axis with 1, 3 or 4 entries is the channel axis; an error when the first and
    the last both could be, see :func:`image_layout`), ``"hwc"`` or ``"chw"``.  uint8 images are divided by
    255; float images are taken as 0..1.  Grey images are repeated to three channels; a fourth (alpha) channel
    is dropped.
    """

    def __init__(
        self,
        size: int | tuple[int, int] = 16,
        layout: str = "auto",
        resize_method: str = "auto",
        normalize: bool = True,
    ) -> None:
        self.size = (int(size), int(size)) if isinstance(size, int | np.integer) else (int(size[0]), int(size[1]))
        if layout not in IMAGE_LAYOUTS:
            raise PccError(f"image processor: layout must be auto, hwc or chw, got {layout!r}")
        self.layout = layout
        self.resize_method = resize_method
        self.normalize = normalize

    @property
    def output_dim(self) -> int:
        return 3 * self.size[0] * self.size[1]

    def _layout(self, shape: tuple[int, ...]) -> str:
        return image_layout(shape, self.layout)

    def to_nchw(self, images: np.ndarray, batched: bool) -> np.ndarray:
        """Batch of images as float32 NCHW in 0..1 with three channels."""
        a = np.asarray(images)
        if a.dtype == np.uint8:
            a = a.astype(F32) / F32(255.0)
        elif np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer):
            a = a.astype(F32)
        else:
            raise PccError(f"image processor: images must be uint8 or float, got dtype {a.dtype}")
        if not batched:
            a = a[None]
        if a.ndim not in (3, 4):
            raise PccError(f"image processor: expected [H, W], [H, W, C] or [C, H, W] images, got {list(a.shape[1:])}")
        layout = self._layout(a.shape[1:])
        if layout == "hw":
            a = a[:, None]
        elif layout == "hwc":
            a = a.transpose(0, 3, 1, 2)
        c = a.shape[1]
        if c == 1:
            a = np.repeat(a, 3, axis=1)
        elif c == 4:
            a = a[:, :3]
        elif c != 3:
            raise PccError(f"image processor: images need 1, 3 or 4 channels, got {c}")
        return a

    def resize(self, x: np.ndarray) -> np.ndarray:
        """``[N, C, H, W]`` -> ``[N, C, size, size]`` with the separable resampling matrices, as two matrix
        products over the whole batch (each axis one GEMM, the cheaper axis first); same size: unchanged."""
        n, c, h, w = x.shape
        oh, ow = self.size
        if (h, w) == (oh, ow):
            return np.ascontiguousarray(x, dtype=F32)
        rh = resize_matrix(h, oh, self.resize_method)
        rw = resize_matrix(w, ow, self.resize_method)
        x = np.ascontiguousarray(x, dtype=F32).reshape(n * c, h, w)
        if h * w * ow + oh * h * ow <= oh * h * w + oh * w * ow:  # width first
            y = (x.reshape(n * c * h, w) @ rw.T).reshape(n * c, h, ow)
            y = (rh @ y.transpose(1, 0, 2).reshape(h, n * c * ow)).reshape(oh, n * c, ow).transpose(1, 0, 2)
        else:
            y = (rh @ x.transpose(1, 0, 2).reshape(h, n * c * w)).reshape(oh, n * c, w).transpose(1, 0, 2)
            y = (y.reshape(n * c * oh, w) @ rw.T).reshape(n * c, oh, ow)
        return np.ascontiguousarray(y, dtype=F32).reshape(n, c, oh, ow)

    def process(self, images: np.ndarray, batched: bool | None = None) -> np.ndarray:
        """``[3*size*size]`` features for one image, ``[N, 3*size*size]`` for a batch (``batched`` default:
        a 4-d array, or 3-d when its last axis is not a channel axis and its first is not either)."""
        a = np.asarray(images)
        if batched is None:
            batched = a.ndim == 4 or (a.ndim == 3 and a.shape[-1] not in (1, 3, 4) and a.shape[0] not in (1, 3, 4))
        y = self.resize(self.to_nchw(a, batched))
        if self.normalize:
            y = (y - np.array(IMAGENET_MEAN, F32)[:, None, None]) / np.array(IMAGENET_STD, F32)[:, None, None]
        out = y.reshape(y.shape[0], -1).astype(F32)
        return out if batched else out[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "layout": self.layout,
            "resize_method": self.resize_method,
            "normalize": self.normalize,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageProcessor:
        return cls(tuple(d["size"]), d.get("layout", "auto"), d.get("resize_method", "auto"), d.get("normalize", True))


# --- audio ----------------------------------------------------------------------------------------------------


def hz_to_mel(f: np.ndarray | float, scale: str = "htk") -> np.ndarray:
    """Hertz to mel: HTK ``2595 log10(1 + f/700)``, or Slaney (linear below 1 kHz, logarithmic above)."""
    f = np.asarray(f, np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    if scale != "slaney":
        raise PccError(f"unknown mel scale {scale!r} (expected 'htk' or 'slaney')")
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def mel_to_hz(m: np.ndarray | float, scale: str = "htk") -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if scale != "slaney":
        raise PccError(f"unknown mel scale {scale!r} (expected 'htk' or 'slaney')")
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int = 40,
    fmin: float = 0.0,
    fmax: float | None = None,
    scale: str = "htk",
    norm: str | None = "slaney",
) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` triangular filters equally spaced on the mel scale.

    ``norm="slaney"`` divides each triangle by its width in Hz (``2 / (f_hi - f_lo)``, equal area);
    ``None`` leaves peaks at 1.
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mels = np.linspace(hz_to_mel(fmin, scale), hz_to_mel(fmax, scale), n_mels + 2)
    edges = mel_to_hz(mels, scale)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / np.maximum(mid - lo, 1e-10)
    down = (hi - freqs[None, :]) / np.maximum(hi - mid, 1e-10)
    fb = np.maximum(0.0, np.minimum(up, down))
    if norm == "slaney":
        fb *= 2.0 / (hi - lo)
    elif norm is not None:
        raise PccError(f"unknown mel filterbank norm {norm!r} (expected 'slaney' or None)")
    return fb.astype(F32)


class AudioProcessor:
    """Log-mel spectrogram features ``[n_mels * n_frames]`` of mono waveforms (values about -1..1).

    ``sample_rate`` is the rate the features are computed at; waveforms recorded at another rate are given with
    ``input_rate`` and resampled to ``sample_rate`` first (:meth:`resample`)."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        hop_length: int = 160,
        n_mels: int = 40,
        n_frames: int = 16,
        fmin: float = 0.0,
        fmax: float | None = None,
        mel_scale: str = "htk",
        normalize: bool = True,
        input_rate: int | None = None,
    ) -> None:
        if int(sample_rate) < 1 or (input_rate is not None and int(input_rate) < 1):
            raise PccError("audio processor: sample rates must be positive")
        if int(n_mels) < 1 or int(n_frames) < 1 or int(n_fft) < 2 or int(hop_length) < 1:
            raise PccError("audio processor: n_mels, n_frames, hop_length >= 1 and n_fft >= 2 are required")
        self.sample_rate = int(sample_rate)
        self.input_rate = None if input_rate is None else int(input_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.n_frames = int(n_frames)
        self.fmin = float(fmin)
        self.fmax = None if fmax is None else float(fmax)
        self.mel_scale = mel_scale
        self.normalize = normalize
        self.filterbank = mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax, mel_scale)
        n = np.arange(self.n_fft)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / self.n_fft)).astype(F32)  # periodic Hann

    @property
    def output_dim(self) -> int:
        return self.n_mels * self.n_frames

    def resample(self, audio: np.ndarray) -> np.ndarray:
        """``[N, L]`` waveforms at ``input_rate`` resampled to ``sample_rate`` (the rate the mel filterbank is
        built for) by ``scipy.signal.resample_poly`` (polyphase FIR, Kaiser window); unchanged when the rates
        are equal or ``input_rate`` is None."""
        if self.input_rate is None or self.input_rate == self.sample_rate:
            return audio
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(self.input_rate, self.sample_rate)
        return resample_poly(np.asarray(audio, np.float64), self.sample_rate // g, self.input_rate // g, axis=1)

    def stft_power(self, audio: np.ndarray) -> np.ndarray:
        """``[N, T, n_fft // 2 + 1]`` power spectra of centred, Hann-windowed frames."""
        x = np.asarray(audio, dtype=F32)
        pad = self.n_fft // 2
        mode = "reflect" if x.shape[1] > pad else "constant"
        x = np.pad(x, ((0, 0), (pad, pad)), mode=mode)
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft, axis=1)[:, :: self.hop_length]
        spec = np.fft.rfft(frames * self.window, axis=-1)
        return (spec.real**2 + spec.imag**2).astype(F32)

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """``[N, n_mels, T]`` log-mel spectrogram in dB (floor -100 dB)."""
        power = self.stft_power(audio)
        n, t, f = power.shape
        mel = (power.reshape(n * t, f) @ self.filterbank.T).reshape(n, t, -1)  # [N, T, n_mels], one GEMM
        return (10.0 * np.log10(np.maximum(mel, 1e-10))).transpose(0, 2, 1).astype(F32)

    def process(self, audio: np.ndarray) -> np.ndarray:
        """Features of one waveform (``[L]`` -> ``[n_mels * n_frames]``) or a batch (``[N, L]``)."""
        a = np.asarray(audio)
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise PccError(f"audio processor: waveforms must be numeric, got dtype {a.dtype}")
        single = a.ndim == 1
        if single:
            a = a[None]
        if a.ndim != 2 or a.shape[1] == 0:
            raise PccError(f"audio processor: expected [samples] or [N, samples] waveforms, got {list(a.shape)}")
        lm = self.log_mel(self.resample(a))
        pool = resize_matrix(lm.shape[2], self.n_frames, "area" if lm.shape[2] >= self.n_frames else "bilinear")
        feats = lm @ pool.T  # [N, n_mels, n_frames]
        if self.normalize:
            mu = feats.mean(axis=(1, 2), keepdims=True)
            sd = feats.std(axis=(1, 2), keepdims=True)
            feats = (feats - mu) / (sd + F32(1e-5))
        out = feats.reshape(len(a), -1).astype(F32)
        return out[0] if single else out

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "n_mels": self.n_mels,
            "n_frames": self.n_frames,
            "fmin": self.fmin,
            "fmax": self.fmax,
            "mel_scale": self.mel_scale,
            "normalize": self.normalize,
            "input_rate": self.input_rate,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioProcessor:
        return cls(**d)
