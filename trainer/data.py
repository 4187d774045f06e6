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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pcc.arrays import load_npy
from pcc.diagnostics import Location, PccError, read_input
from pcc.trainer.multimodal import IMAGE_LAYOUTS, image_layout

__all__ = [
    "Dataset",
    "load_digits_dataset",
    "make_dummy_dataset",
    "make_multimodal_dataset",
    "load_data_dir",
    "split",
    "MODALITY_FILES",
    "NpyRows",
    "image_layout",
    "IMAGE_LAYOUTS",
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


class NpyRows:
    """Rows of a ``.npy`` file, read from disk on demand (``rows[a:b]`` -> an array of those rows).

    The header is read with ``np.load(..., mmap_mode="r", allow_pickle=False)`` (object arrays are refused);
    the rows are then read with plain file reads, not through a mapping, so the memory used is that of the rows
    asked for, whatever the size of the file.  ``subset(idx)`` gives a view of some rows (no data is read).
    """

    def __init__(self, path: str | Path, index: np.ndarray | None = None) -> None:
        self.path = Path(path)
        m = np.load(self.path, mmap_mode="r", allow_pickle=False)
        if not isinstance(m, np.memmap) or m.ndim < 1:
            raise ValueError(f"{self.path.name} is not an array file")
        self.file_shape: tuple[int, ...] = tuple(m.shape)
        self.dtype = m.dtype
        self.offset = int(m.offset)
        self.fortran = bool(m.ndim > 1 and m.flags.f_contiguous and not m.flags.c_contiguous)
        del m
        self.row_shape = self.file_shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.index = np.arange(self.file_shape[0]) if index is None else np.asarray(index, np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.row_shape)

    @property
    def ndim(self) -> int:
        return len(self.file_shape)

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, idx: np.ndarray) -> NpyRows:
        out = object.__new__(NpyRows)
        out.__dict__.update(self.__dict__)
        out.index = self.index[np.asarray(idx, np.int64)]
        return out

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("NpyRows takes a slice of rows")
        return self.read(self.index[key])

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The given rows (file row numbers) as one array, read in runs of consecutive rows."""
        out = np.empty((len(rows), *self.row_shape), self.dtype)
        if not len(rows):
            return out
        if self.fortran:  # rows are not contiguous in the file: map it for this read only
            m = np.load(self.path, mmap_mode="r", allow_pickle=False)
            out[...] = m[rows]
            del m
            return out
        flat = out.reshape(len(rows), -1).view(np.uint8).reshape(len(rows), self.row_bytes)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        with open(self.path, "rb") as f:
            for seg in np.split(np.arange(len(rows)), breaks):
                first = int(rows[seg[0]])
                f.seek(self.offset + first * self.row_bytes)
                got = f.readinto(memoryview(flat[seg[0] : seg[-1] + 1]).cast("B"))
                if got != len(seg) * self.row_bytes:
                    raise PccError(f"{self.path.name} is truncated", Location(str(self.path)))
        return out

    def chunks(self, size: int = 256) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rows)`` over all rows, ``size`` at a time."""
        for a in range(0, len(self), size):
            yield a, self[a : a + size]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[:]
        return a if dtype is None else a.astype(dtype)


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
            x: Any = {m: _subset(v, idx) for m, v in self.x.items()}
        else:
            x = self.x[idx]
        return Dataset(x, self.y[idx], self.description, list(self.notes))


def _subset(v: Any, idx: np.ndarray) -> Any:
    if isinstance(v, list):
        return [v[i] for i in idx]
    if isinstance(v, NpyRows):
        return v.subset(idx)
    return np.asarray(v)[idx]


def split(data: Dataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Deterministic shuffled split: the last ``val_fraction`` of a seeded permutation is validation."""
    n = len(data)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    if n >= 2 and val_fraction > 0:
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


def _npy_rows(path: Path) -> NpyRows:
    try:
        return NpyRows(path)
    except ValueError as exc:
        raise PccError(f"cannot load {path.name}: {exc}", Location(str(path))) from None
    except OSError as exc:
        raise PccError(f"cannot read {path.name}: {exc}", Location(str(path))) from None


def _check_finite(a: NpyRows) -> None:
    """NaN/infinity check of a float file, one chunk at a time."""
    if not np.issubdtype(a.dtype, np.floating):
        return
    for start, rows in a.chunks(256):
        bad = ~np.isfinite(rows.reshape(len(rows), -1)).all(axis=1)
        if bad.any():
            raise PccError(
                f"{a.path.name} contains NaN or infinity (sample {start + int(np.argmax(bad))})", Location(str(a.path))
            )


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
    raw = read_input(path, "a text.json file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PccError("text.json is not UTF-8", Location(str(path))) from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise PccError("text.json is nested too deeply", Location(str(path))) from None
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


def _load_images(path: Path, n: int, layout: str = "auto") -> NpyRows:
    a = _npy_rows(path)
    if a.ndim not in (3, 4):
        raise PccError(
            f"images.npy must be [N, H, W], [N, H, W, C] or [N, C, H, W], got shape {list(a.file_shape)}",
            Location(str(path)),
        )
    if a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.floating):
        raise PccError(f"images.npy must be uint8 (0..255) or float (0..1), got dtype {a.dtype}", Location(str(path)))
    if 0 in a.file_shape[1:]:
        raise PccError(f"images.npy has an empty image shape {list(a.file_shape[1:])}", Location(str(path)))
    try:
        image_layout(a.row_shape, layout)
    except PccError as exc:
        raise PccError(f"images.npy: {exc.message}", Location(str(path)), notes=exc.notes) from None
    _check_count(path, a.file_shape[0], n)
    _check_finite(a)
    return a


def _load_audio(path: Path, n: int) -> NpyRows:
    a = _npy_rows(path)
    if a.ndim != 2:
        raise PccError(f"audio.npy must be [N, samples], got shape {list(a.file_shape)}", Location(str(path)))
    if not np.issubdtype(a.dtype, np.floating):
        raise PccError(f"audio.npy must hold float waveforms (-1..1), got dtype {a.dtype}", Location(str(path)))
    _check_count(path, a.file_shape[0], n)
    _check_finite(a)
    return a


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


def load_data_dir(data_dir: str | Path, modalities: Sequence[str] | None = None, image_layout: str = "auto") -> Dataset:
    """Load and check a data directory.

    ``modalities`` given (``--multimodal`` or ``--modalities``): each one's file must exist and the result is a
    dict of modality -> samples (exactly those modalities).  ``None``: ``features.npy`` if present (an array),
    else every modality file that is present (a dict).  Images and audio stay on disk (:class:`NpyRows`, read
    in chunks when features are computed); everything is checked here, in chunks, before any training.  Any
    problem raises one PccError naming the file.
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
            x[m] = _load_images(path, n, image_layout)
        else:
            x[m] = _load_audio(path, n)
    return Dataset(x, y, f"{d}: {', '.join(MODALITY_FILES[m] for m in x)}, {n} samples")
