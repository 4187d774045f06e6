"""Training data: scikit-learn's digits, synthetic data, and the seed's data directory layout.

Data directory (every file optional except ``labels.npy``)::

    data_dir/
    ├── labels.npy     # [N] integer class labels
    ├── text.json      # list of N strings
    ├── images.npy     # [N, H, W], [N, H, W, C] or [N, C, H, W]; uint8 (0..255) or float (0..1)
    ├── audio.npy      # [N, samples] float waveforms (-1..1)
    └── features.npy   # [N, D] float feature vectors (pcc extension, used without --multimodal)

``.npy`` files are loaded with ``allow_pickle=False``.  :func:`load_data_dir` checks everything (presence,
dtypes, shapes, sample counts, JSON syntax) and raises one :class:`~pcc.diagnostics.PccError` before any
training starts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pcc.arrays import load_npy
from pcc.diagnostics import Location, PccError

__all__ = [
    "Dataset",
    "load_digits_dataset",
    "make_dummy_dataset",
    "make_multimodal_dataset",
    "load_data_dir",
    "split",
    "MODALITY_FILES",
]

F32 = np.float32
MODALITY_FILES = {"text": "text.json", "image": "images.npy", "audio": "audio.npy"}

_KEYWORDS = [
    "red", "green", "blue", "yellow", "purple", "orange", "black", "white", "pink", "brown", "grey", "cyan",
    "gold", "silver", "violet", "olive",
]  # fmt: skip
_FILLER = [
    "the", "a", "small", "large", "object", "looks", "very", "quite", "with", "near", "shape", "thing",
    "this", "is", "some", "bright", "dull", "round", "square", "item",
]  # fmt: skip


@dataclass
class Dataset:
    """Inputs ``x`` (an array ``[N, ...]`` or a dict of modality -> N samples) and integer labels ``y``."""

    x: Any
    y: np.ndarray
    description: str = ""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> Dataset:
        if isinstance(self.x, dict):
            x: Any = {
                m: ([v[i] for i in idx] if isinstance(v, list) else np.asarray(v)[idx]) for m, v in self.x.items()
            }
        else:
            x = self.x[idx]
        return Dataset(x, self.y[idx], self.description, list(self.notes))


def split(data: Dataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Deterministic shuffled split: the last ``val_fraction`` of a seeded permutation is validation."""
    n = len(data)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    if n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return data.subset(np.sort(perm[n_val:])), data.subset(np.sort(perm[:n_val]))


def load_digits_dataset(scaling: str = "unit") -> tuple[Dataset, Dataset]:
    """scikit-learn's bundled 8x8 digits (1797 samples, no download), split 80/20 with
    ``train_test_split(test_size=0.2, random_state=0)``.  ``scaling="unit"`` divides the 0..16 pixel
    values by 16 (inputs in [0, 1]); ``"standard"`` standardises with the training split's statistics."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise PccError("--dataset digits needs scikit-learn (pip install scikit-learn)") from None
    d = load_digits()
    x = d.data.astype(F32)
    xtr, xte, ytr, yte = train_test_split(x, d.target.astype(np.int64), test_size=0.2, random_state=0)
    if scaling == "unit":
        xtr, xte = xtr / F32(16), xte / F32(16)
    elif scaling == "standard":
        mu, sd = xtr.mean(0), xtr.std(0)
        sd[sd == 0] = 1
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    else:
        raise PccError(f"unknown scaling {scaling!r} (expected 'unit' or 'standard')")
    desc = "scikit-learn digits (8x8, inputs / 16), 80/20 split random_state=0"
    return Dataset(xtr.astype(F32), ytr, desc), Dataset(xte.astype(F32), yte, desc)


def make_dummy_dataset(n_samples: int, input_dim: int, n_classes: int, seed: int = 0) -> Dataset:
    """Learnable synthetic vectors: one Gaussian cluster per class (random unit-norm centres scaled to
    separate them) plus unit noise."""
    if n_samples < 2 or input_dim < 1 or n_classes < 1:
        raise PccError("dummy data needs --n-samples >= 2, --input-dim >= 1 and --output-dim >= 1")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, input_dim))
    centres *= 3.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.integers(0, n_classes, n_samples)
    x = centres[y] + rng.standard_normal((n_samples, input_dim))
    return Dataset(
        x.astype(F32),
        y.astype(np.int64),
        f"synthetic data: {n_samples} samples, {input_dim} features, {n_classes} Gaussian classes",
    )


def _factor_radices(n_classes: int, n_modalities: int) -> list[int]:
    """Values per modality factor: all >= 2, their product as large as possible but <= n_classes (so every
    combination is its own class); if even 2**M > n_classes, the smallest radices that cover the classes."""
    r = [2] * n_modalities
    if 2**n_modalities > n_classes:
        return r
    while True:
        for j in range(n_modalities):
            trial = r.copy()
            trial[j] += 1
            if math.prod(trial) <= n_classes:
                r = trial
                break
        else:
            return r


def make_multimodal_dataset(
    n_samples: int,
    modalities: Sequence[str] = ("text", "image", "audio"),
    n_classes: int = 10,
    seed: int = 0,
    image_size: int = 32,
    audio_length: int = 4000,
    sample_rate: int = 16000,
) -> Dataset:
    """Synthetic multimodal samples whose label depends on every modality.

    Each modality carries one hidden factor with ``r_m >= 2`` values: text - a colour keyword among filler
    words; image - the position and colour of a bright square on a noisy ``image_size`` x ``image_size`` RGB
    (uint8, HWC) image; audio - the pitch of a noisy tone (``audio_length`` float32 samples).  The label is the
    factors read as one mixed-radix number, the radices as large as possible with their product at most
    ``n_classes`` (10 classes over three modalities: 2 x 2 x 2, labels 0..7), so each combination of factors
    is its own class and changing any one factor changes the label: no modality alone determines it.  When
    ``2**M > n_classes`` the number is taken modulo ``n_classes``.  Deterministic for a given ``seed``.
    """
    mods = list(dict.fromkeys(modalities))
    if not mods:
        raise PccError("no modalities given")
    if n_samples < 2 or n_classes < 2:
        raise PccError("synthetic multimodal data needs --n-samples >= 2 and --output-dim >= 2")
    radices = _factor_radices(n_classes, len(mods))
    capacity = {"text": len(_KEYWORDS), "image": 48, "audio": 14}
    radices = [min(r, capacity[m]) for r, m in zip(radices, mods, strict=True)]
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, r, n_samples) for r in radices], axis=1)
    code = np.zeros(n_samples, np.int64)
    for j, r in enumerate(radices):
        code = code * r + factors[:, j]
    y = code % n_classes
    x: dict[str, Any] = {}
    for j, m in enumerate(mods):
        f = factors[:, j]
        if m == "text":
            texts = []
            for v in f:
                words = list(rng.choice(_FILLER, size=int(rng.integers(3, 8))))
                words.insert(int(rng.integers(0, len(words) + 1)), _KEYWORDS[int(v)])
                texts.append(" ".join(words))
            x["text"] = texts
        elif m == "image":
            s = image_size
            img = rng.integers(0, 60, size=(n_samples, s, s, 3)).astype(np.int64)
            cell = s // 4
            pos, colour = f % 16, f // 16
            jitter = rng.integers(0, max(cell // 4, 1) + 1, size=(n_samples, 2))
            for i in range(n_samples):  # one square per image: cheap, and clearer than a gather
                r0 = (pos[i] // 4) * cell + jitter[i, 0]
                c0 = (pos[i] % 4) * cell + jitter[i, 1]
                img[i, r0 : r0 + cell - 1, c0 : c0 + cell - 1, colour[i]] += 190
            x["image"] = np.clip(img, 0, 255).astype(np.uint8)
        else:
            t = np.arange(audio_length) / sample_rate
            freq = 250.0 * 1.25 ** f.astype(np.float64)
            phase = rng.uniform(0, 2 * np.pi, n_samples)
            wave = 0.5 * np.sin(2 * np.pi * freq[:, None] * t[None, :] + phase[:, None])
            wave += 0.1 * rng.standard_normal((n_samples, audio_length))
            x["audio"] = np.clip(wave, -1, 1).astype(F32)
    desc = (
        f"synthetic multimodal data: {n_samples} samples of {', '.join(mods)}; label = one hidden factor per "
        f"modality ({' x '.join(map(str, radices))} values) read as one number"
    )
    return Dataset(x, y, desc)


# --- data directory -------------------------------------------------------------------------------------------


def _npy(path: Path) -> np.ndarray:
    # strings pass here so that the checks below name what each file must hold; objects never load
    return load_npy(path, f"cannot load {path.name}", kinds="biufcSU")


def _check_count(path: Path, n: int, n_labels: int) -> None:
    if n != n_labels:
        raise PccError(
            f"{path.name} has {n} samples but labels.npy has {n_labels}", Location(str(path)),
            notes=["every file in the data directory holds one entry per sample, in the same order"],
        )  # fmt: skip


def _load_labels(path: Path) -> np.ndarray:
    if not path.is_file():
        raise PccError(
            "data directory has no labels.npy", Location(str(path.parent)),
            notes=["expected labels.npy ([N] integer labels) and text.json / images.npy / audio.npy"],
        )  # fmt: skip
    y = _npy(path)
    if y.ndim != 1:
        raise PccError(f"labels.npy must be 1-d [N], got shape {list(y.shape)}", Location(str(path)))
    if np.issubdtype(y.dtype, np.floating) and y.size and np.all(np.isfinite(y)) and np.all(y == np.rint(y)):
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise PccError(f"labels.npy must hold integer class labels, got dtype {y.dtype}", Location(str(path)))
    if y.size == 0:
        raise PccError("labels.npy is empty", Location(str(path)))
    if y.min() < 0:
        raise PccError(f"labels.npy holds a negative label ({int(y.min())})", Location(str(path)))
    return y.astype(np.int64)


def _load_text(path: Path, n: int) -> list[str]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PccError("text.json is not UTF-8", Location(str(path))) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        lines = text.splitlines()
        line = lines[exc.lineno - 1] if 0 < exc.lineno <= len(lines) else None
        raise PccError(
            f"invalid JSON in text.json: {exc.msg}", Location(str(path), exc.lineno, exc.colno), source_line=line
        ) from None
    if not isinstance(data, list):
        raise PccError(f"text.json must hold a list of strings, not a {type(data).__name__}", Location(str(path)))
    bad = next((i for i, t in enumerate(data) if not isinstance(t, str)), None)
    if bad is not None:
        raise PccError(f"text.json entry {bad} is a {type(data[bad]).__name__}, not a string", Location(str(path)))
    _check_count(path, len(data), n)
    return data


def _load_images(path: Path, n: int) -> np.ndarray:
    a = _npy(path)
    if a.ndim not in (3, 4):
        raise PccError(
            f"images.npy must be [N, H, W], [N, H, W, C] or [N, C, H, W], got shape {list(a.shape)}",
            Location(str(path)),
        )
    if a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.floating):
        raise PccError(f"images.npy must be uint8 (0..255) or float (0..1), got dtype {a.dtype}", Location(str(path)))
    if a.ndim == 4 and a.shape[1] not in (1, 3, 4) and a.shape[3] not in (1, 3, 4):
        raise PccError(f"images.npy: no channel axis of 1, 3 or 4 in shape {list(a.shape)}", Location(str(path)))
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise PccError("images.npy contains NaN or infinity", Location(str(path)))
    _check_count(path, a.shape[0], n)
    return a


def _load_audio(path: Path, n: int) -> np.ndarray:
    a = _npy(path)
    if a.ndim != 2:
        raise PccError(f"audio.npy must be [N, samples], got shape {list(a.shape)}", Location(str(path)))
    if not np.issubdtype(a.dtype, np.floating):
        raise PccError(f"audio.npy must hold float waveforms (-1..1), got dtype {a.dtype}", Location(str(path)))
    if not np.all(np.isfinite(a)):
        raise PccError("audio.npy contains NaN or infinity", Location(str(path)))
    _check_count(path, a.shape[0], n)
    return a.astype(F32)


def _load_features(path: Path, n: int) -> np.ndarray:
    a = _npy(path)
    if a.ndim < 2:
        raise PccError(f"features.npy must be [N, D] (or [N, ...]), got shape {list(a.shape)}", Location(str(path)))
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise PccError(f"features.npy must be numeric, got dtype {a.dtype}", Location(str(path)))
    if not np.all(np.isfinite(a)):
        raise PccError("features.npy contains NaN or infinity", Location(str(path)))
    _check_count(path, a.shape[0], n)
    return a.astype(F32)


def load_data_dir(data_dir: str | Path, modalities: Sequence[str] | None = None) -> Dataset:
    """Load and check a data directory.

    ``modalities`` given (``--multimodal``): each one's file must exist and the result is a dict of
    modality -> samples.  ``None``: ``features.npy`` if present (an array), else every modality file that is
    present (a dict).  Any problem raises one PccError naming the file.
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise PccError(f"data directory not found: {d}")
    y = _load_labels(d / "labels.npy")
    n = len(y)
    if modalities is None:
        feat = d / "features.npy"
        if feat.is_file():
            return Dataset(_load_features(feat, n), y, f"{d}: features.npy, {n} samples")
        modalities = [m for m, f in MODALITY_FILES.items() if (d / f).is_file()]
        if not modalities:
            raise PccError(
                f"data directory {d} has labels.npy but no inputs",
                notes=["add features.npy ([N, D]) or text.json / images.npy / audio.npy"],
            )
    x: dict[str, Any] = {}
    for m in modalities:
        if m not in MODALITY_FILES:
            raise PccError(f"unknown modality {m!r} (modalities are {', '.join(MODALITY_FILES)})")
        path = d / MODALITY_FILES[m]
        if not path.is_file():
            raise PccError(f"data directory {d} has no {MODALITY_FILES[m]} for modality {m!r}")
        if m == "text":
            x[m] = _load_text(path, n)
        elif m == "image":
            x[m] = _load_images(path, n)
        else:
            x[m] = _load_audio(path, n)
    return Dataset(x, y, f"{d}: {', '.join(MODALITY_FILES[m] for m in x)}, {n} samples")
