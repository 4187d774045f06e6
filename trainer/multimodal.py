"""Multimodal fusion: the modality processors (:mod:`pcc.trainer.preprocess`: text, image, audio) run and their
features fuse into one vector per sample.

* :class:`MultimodalFusion` - runs the processors and fuses: ``concat`` (flatten and concatenate),
  ``add`` / ``multiply`` (each modality first projected by a fixed seeded random matrix to ``common_dim``,
  so shapes always match), ``attention`` (the projected modality vectors as tokens through parameter-free
  scaled dot-product self-attention, the attended tokens concatenated).
* :class:`TextTuner`, :class:`FusionTuner` - the parts that train with the network (a learned text embedding,
  learned attention-fusion projections).

The processors are re-exported here, where they have always been imported from.

Everything is deterministic (seeded) and vectorised over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pcc.diagnostics import PccError
from pcc.trainer import fusion_grad
from pcc.trainer.layers import Embedding
from pcc.trainer.preprocess import (
    IMAGE_LAYOUTS,
    AudioProcessor,
    ImageProcessor,
    TextProcessor,
    hz_to_mel,
    image_layout,
    mel_filterbank,
    mel_to_hz,
    resize_matrix,
)

__all__ = [
    "TextProcessor",
    "ImageProcessor",
    "AudioProcessor",
    "MultimodalFusion",
    "TextTuner",
    "FusionTuner",
    "MODALITIES",
    "FUSION_METHODS",
    "IMAGE_LAYOUTS",
    "image_layout",
    "resize_matrix",
    "mel_filterbank",
    "hz_to_mel",
    "mel_to_hz",
]

F32 = np.float32
MODALITIES = ("text", "image", "audio")
FUSION_METHODS = ("concat", "add", "multiply", "attention")


# --- fusion ---------------------------------------------------------------------------------------------------


class MultimodalFusion:
    """Process and fuse several modalities into one feature vector per sample.

    ``modalities`` is a subset of ``text``, ``image``, ``audio``; ``fusion_method`` one of
    :data:`FUSION_METHODS`.  ``text``, ``image`` and ``audio`` are processor objects or keyword dicts for them.
    """

    def __init__(
        self,
        modalities: Sequence[str] = MODALITIES,
        fusion_method: str = "concat",
        common_dim: int = 128,
        seed: int = 0,
        text: TextProcessor | dict[str, Any] | None = None,
        image: ImageProcessor | dict[str, Any] | None = None,
        audio: AudioProcessor | dict[str, Any] | None = None,
        learned_attention: bool = False,
    ) -> None:
        mods = list(dict.fromkeys(modalities))
        unknown = [m for m in mods if m not in MODALITIES]
        if not mods or unknown:
            raise PccError(
                f"unknown modality {unknown[0]!r}" if unknown else "no modalities given",
                notes=[f"modalities are {', '.join(MODALITIES)}"],
            )
        if fusion_method not in FUSION_METHODS:
            raise PccError(f"unknown fusion method {fusion_method!r} (expected one of {', '.join(FUSION_METHODS)})")
        self.modalities = mods
        self.fusion_method = fusion_method
        self.common_dim = int(common_dim)
        self.seed = int(seed)
        kinds = {"text": (TextProcessor, text), "image": (ImageProcessor, image), "audio": (AudioProcessor, audio)}
        self.processors: dict[str, Any] = {}
        for m in mods:
            cls, given = kinds[m]
            self.processors[m] = given if isinstance(given, cls) else cls(**(given or {}))
        self._proj: dict[str, np.ndarray] = {}
        self.feature_mean: np.ndarray | None = None
        self.feature_std: np.ndarray | None = None
        if learned_attention and fusion_method != "attention":
            raise PccError("learned attention parameters need fusion_method='attention'")
        # the learned attention's query, key and value matrices [D, D] (identity at first: the parameter-free
        # fusion) and their gradients, trained with the network by FusionTuner; None: parameter-free
        self.attention_params: list[np.ndarray] | None = None
        self.attention_grads: list[np.ndarray] | None = None
        if learned_attention:
            eye = np.eye(self.common_dim, dtype=F32)
            self.set_attention_params([eye.copy(), eye.copy(), eye.copy()])

    def set_attention_params(self, params: list[np.ndarray]) -> None:
        """Use ``params`` (query, key, value matrices, each ``[common_dim, common_dim]``) as the learned attention
        (one flat buffer, so that an optimiser steps all three at once)."""
        d = self.common_dim
        self.attention_flat = np.concatenate([np.asarray(p, F32).reshape(-1) for p in params])
        self.attention_flat_grads = np.zeros_like(self.attention_flat)
        self.attention_params = [self.attention_flat[i * d * d : (i + 1) * d * d].reshape(d, d) for i in range(3)]
        self.attention_grads = [self.attention_flat_grads[i * d * d : (i + 1) * d * d].reshape(d, d) for i in range(3)]

    @property
    def learned_attention(self) -> bool:
        return self.attention_params is not None

    @property
    def text_processor(self) -> TextProcessor | None:
        return self.processors.get("text")

    @property
    def learned_text(self) -> bool:
        """Whether the text embedding is trained with the network (:class:`TextTuner`)."""
        tp = self.processors.get("text")
        return bool(tp is not None and tp.learned)

    @property
    def text_columns(self) -> slice:
        """Where the text features sit in a ``concat`` fused vector."""
        start = 0
        for m in self.modalities:
            if m == "text":
                return slice(start, start + self.modality_dim(m))
            start += self.modality_dim(m)
        raise PccError("the fusion has no text modality")

    def modality_dim(self, m: str) -> int:
        return int(self.processors[m].output_dim)

    @property
    def output_dim(self) -> int:
        if self.fusion_method == "concat":
            return sum(self.modality_dim(m) for m in self.modalities)
        if self.fusion_method == "attention":
            return self.common_dim * len(self.modalities)
        return self.common_dim

    def _projection(self, m: str) -> np.ndarray:
        if m not in self._proj:
            d = self.modality_dim(m)
            rng = np.random.default_rng([self.seed, MODALITIES.index(m)])
            self._proj[m] = (rng.standard_normal((d, self.common_dim)) / np.sqrt(d)).astype(F32)
        return self._proj[m]

    def fit(self, data: dict[str, Any]) -> MultimodalFusion:
        """Fit what depends on the data on a batch of training samples: the text vocabulary, then the mean and
        standard deviation of every fused feature, used from then on to standardise the output (wide,
        uncentred inputs such as dark images otherwise push a ReLU layer's units to death in a few steps)."""
        self._fit(data)
        return self

    def _fit(self, data: dict[str, Any]) -> np.ndarray:
        return self.transform(data, fit=True)

    def transform(
        self, data: dict[str, Any], fit: bool = False, batch_size: int = 128, progress: Any = None
    ) -> np.ndarray:
        """``[N, output_dim]`` fused features of ``{modality: N samples}``, computed ``batch_size`` samples at a
        time: the modalities' values may be lists, arrays or rows read from disk on demand
        (:class:`pcc.trainer.data.NpyRows`), so memory is bounded by the batch and the ``[N, output_dim]``
        result, not by the raw data.  ``fit``: first fit the text vocabulary on all texts, then the feature
        statistics on the result.  ``progress`` (a :class:`pcc.trainer.progress.Progress`) is updated per
        batch."""
        return self.transform_with_context(data, fit, batch_size, progress)[0]

    def transform_with_context(
        self, data: dict[str, Any], fit: bool = False, batch_size: int = 128, progress: Any = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`transform`, and for a learned text embedding under ``add``, ``multiply`` or ``attention`` the
        text modality's fixed context (:func:`pcc.trainer.fusion_grad.text_context`) of every row, which
        :class:`TextTuner` needs to recompute the fused vectors from the table (``None`` otherwise)."""
        missing = [m for m in self.modalities if m not in data]
        if missing:
            raise PccError(f"multimodal data lacks modality {missing[0]!r} (have: {', '.join(data) or 'none'})")
        counts = {m: len(data[m]) if not isinstance(data[m], str) else 1 for m in self.modalities}
        if len(set(counts.values())) > 1:
            sizes = ", ".join(f"{m}: {c}" for m, c in counts.items())
            raise PccError(f"modalities have different sample counts ({sizes})")
        if fit:
            if "text" in self.processors:
                self.processors["text"].fit(_text_list(data["text"]))
            self.feature_mean = self.feature_std = None
        n = next(iter(counts.values()))
        out = np.empty((n, self.output_dim), F32)
        keep = (self.learned_text and self.fusion_method != "concat") or self.learned_attention
        contexts: list[np.ndarray] = []
        step = max(int(batch_size), 1)
        for a in range(0, n, step):
            chunk = {m: _rows(data[m], a, a + step) for m in self.modalities}
            feats = self._features(chunk, batched=True)
            out[a : a + step] = self._fuse(feats)
            if keep:
                contexts.append(self._text_context(feats))
            if progress is not None:
                progress.update(min(step, n - a))
        if fit:
            self.feature_mean = out.mean(axis=0).astype(F32)
            sd = out.std(axis=0)
            self.feature_std = np.where(sd > 1e-6, sd, 1.0).astype(F32)
            if self.learned_text and self.fusion_method == "concat":  # the trained columns are used as they are
                self.feature_mean[self.text_columns], self.feature_std[self.text_columns] = 0.0, 1.0
            out -= self.feature_mean
            out /= self.feature_std
        return out, np.concatenate(contexts) if contexts else None

    def _text_context(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        proj = [feats[m] @ self._projection(m) for m in self.modalities]
        if not self.learned_text:  # learned attention alone: every row's whole token stack
            return np.stack(proj, axis=1).astype(F32)
        return fusion_grad.text_context(self.fusion_method, proj, self.modalities.index("text"))

    def fuse_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """The standardised attention fusion of fixed token stacks ``[N, M, D]`` with the current parameters."""
        out = fusion_grad.fuse("attention", None, tokens, None, self.attention_params)
        if self.feature_mean is not None and self.feature_std is not None:
            out = (out - self.feature_mean) / self.feature_std
        return out.astype(F32)

    def fuse_tokens_backward(self, tokens: np.ndarray, grad: np.ndarray) -> None:
        """Add the gradients of ``sum(grad * fuse_tokens(tokens))`` w.r.t. the attention matrices into
        :attr:`attention_grads`."""
        if self.feature_std is not None:
            grad = np.asarray(grad, F32) / self.feature_std
        fusion_grad.fuse_backward("attention", None, tokens, None, grad, self.attention_params, self.attention_grads)

    def fuse_text(self, text: np.ndarray, context: np.ndarray) -> np.ndarray:
        """The standardised fused vectors of a projected fusion from the pooled text features ``text`` and the
        rows' fixed ``context`` (:meth:`transform_with_context`)."""
        k = self.modalities.index("text")
        out = fusion_grad.fuse(self.fusion_method, text @ self._projection("text"), context, k, self.attention_params)
        if self.feature_mean is not None and self.feature_std is not None:
            out = (out - self.feature_mean) / self.feature_std
        return out.astype(F32)

    def fuse_text_backward(self, text: np.ndarray, context: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """The gradient with respect to ``text`` of ``sum(grad * fuse_text(text, context))``."""
        if self.feature_std is not None:
            grad = np.asarray(grad, F32) / self.feature_std
        proj = self._projection("text")
        k = self.modalities.index("text")
        du = fusion_grad.fuse_backward(
            self.fusion_method, text @ proj, context, k, grad, self.attention_params, self.attention_grads
        )
        return (du @ proj.T).astype(F32)

    def _features(self, data: dict[str, Any], batched: bool) -> dict[str, np.ndarray]:
        missing = [m for m in self.modalities if m not in data]
        if missing:
            raise PccError(f"multimodal data lacks modality {missing[0]!r} (have: {', '.join(data) or 'none'})")
        feats: dict[str, np.ndarray] = {}
        for m in self.modalities:
            p, v = self.processors[m], data[m]
            if m == "text":
                f = p.process(_text_list(v) if batched else v)
            elif m == "image":
                f = p.process(v, batched=batched)
            else:
                f = p.process(np.asarray(v))
            feats[m] = np.atleast_2d(f)
        n = {len(f) for f in feats.values()}
        if len(n) > 1:
            sizes = ", ".join(f"{m}: {len(f)}" for m, f in feats.items())
            raise PccError(f"modalities have different sample counts ({sizes})")
        return feats

    def _fuse(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        out = self._fuse_raw(feats)
        if self.feature_mean is not None and self.feature_std is not None:
            out = (out - self.feature_mean) / self.feature_std
        return out.astype(F32)

    def _fuse_raw(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        if self.fusion_method == "concat":
            return np.concatenate([feats[m] for m in self.modalities], axis=1).astype(F32)
        proj = [feats[m] @ self._projection(m) for m in self.modalities]  # each [N, common_dim]
        if self.fusion_method == "add":
            return np.sum(proj, axis=0).astype(F32)
        if self.fusion_method == "multiply":
            return np.prod(proj, axis=0).astype(F32)
        tokens = np.stack(proj, axis=1)  # [N, M, D]
        if self.learned_attention:
            return fusion_grad.fuse("attention", None, tokens.astype(F32), None, self.attention_params)
        tokens = (tokens - tokens.mean(-1, keepdims=True)) / (tokens.std(-1, keepdims=True) + F32(1e-5))
        scores = tokens @ tokens.transpose(0, 2, 1) / F32(np.sqrt(self.common_dim))  # [N, M, M]
        scores -= scores.max(-1, keepdims=True)
        w = np.exp(scores)
        w /= w.sum(-1, keepdims=True)
        return (w @ tokens).reshape(len(tokens), -1).astype(F32)

    def process(self, data: dict[str, Any]) -> np.ndarray:
        """Fused 1-d feature vector of one sample ``{modality: value}``."""
        return self._fuse(self._features(data, batched=False))[0]

    def process_batch(self, data: dict[str, Any], fit: bool = False) -> np.ndarray:
        """``[N, output_dim]`` fused features of a batch ``{modality: N values}`` (``fit``: fit first, on this
        batch)."""
        return self.transform(data, fit=fit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "modalities": list(self.modalities),
            "fusion_method": self.fusion_method,
            "common_dim": self.common_dim,
            "seed": self.seed,
            "processors": {m: p.to_dict() for m, p in self.processors.items()},
            "output_dim": self.output_dim,
            "feature_mean": None if self.feature_mean is None else self.feature_mean.tolist(),
            "feature_std": None if self.feature_std is None else self.feature_std.tolist(),
            **(
                {"attention": {k: p.tolist() for k, p in zip(("wq", "wk", "wv"), self.attention_params, strict=True)}}
                if self.attention_params is not None
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MultimodalFusion:
        procs = d.get("processors", {})
        kinds = {"text": TextProcessor, "image": ImageProcessor, "audio": AudioProcessor}
        built = {m: kinds[m].from_dict(v) for m, v in procs.items() if m in kinds}
        f = cls(d["modalities"], d.get("fusion_method", "concat"), d.get("common_dim", 128), d.get("seed", 0), **built)
        att = d.get("attention")
        if att is not None:
            dim = f.common_dim
            if f.fusion_method != "attention" or not isinstance(att, dict):
                raise PccError("'attention' parameters need fusion_method 'attention' and an object of wq, wk, wv")
            mats = []
            for key in ("wq", "wk", "wv"):
                v = att.get(key)
                rows_ok = isinstance(v, list) and all(isinstance(r, list) and len(r) == dim for r in v)
                if not rows_ok or len(v) != dim:
                    raise PccError(f"multimodal attention {key!r} must be a [{dim}][{dim}] list of numbers")
                a = np.asarray(v, np.float64)
                if a.dtype.kind != "f" or not np.all(np.isfinite(a)):
                    raise PccError(f"multimodal attention {key!r} must hold finite numbers")
                mats.append(a.astype(F32))
            f.set_attention_params(mats)
        if d.get("feature_mean") is not None and d.get("feature_std") is not None:
            f.feature_mean = np.asarray(d["feature_mean"], F32)
            f.feature_std = np.asarray(d["feature_std"], F32)
        return f


class _TableParams:
    """The flat-buffer view of an embedding table that the optimisers of :mod:`pcc.trainer.optim` step."""

    def __init__(self, table: Embedding) -> None:
        self.flat_values = table.weight.value.reshape(-1)
        self.flat_grads = table.weight.grad.reshape(-1)
        self.decay_mask = np.zeros_like(self.flat_values)
        assert np.shares_memory(self.flat_values, table.weight.value)


class TextTuner:
    """Trains the text embedding together with the network.

    ``concat``: the fused vectors hold the pooled text embedding in :attr:`MultimodalFusion.text_columns`; for
    each batch :meth:`features` rewrites those columns from the current table (``Embedding.pooled``) and the
    network's input gradient of those columns goes back through :meth:`backward` (``Embedding.pooled_backward``).
    ``add``, ``multiply``, ``attention``: every fused feature depends on the text, so :meth:`features` recomputes
    the whole vector from the pooled text and each row's fixed context of the other modalities
    (``contexts``, from :meth:`MultimodalFusion.transform_with_context`), and :meth:`backward` takes the whole
    input gradient back through the fusion (:meth:`MultimodalFusion.fuse_text_backward`) to the table.
    :meth:`step` applies the same optimiser and learning rate as the network's.  ``ids`` holds the token ids
    (``TextProcessor.encode``) of each split's rows: ``{"train": [N, L], "val": [M, L]}``; ``contexts`` the
    same splits' contexts.
    """

    def __init__(
        self,
        fusion: MultimodalFusion,
        ids: dict[str, np.ndarray],
        optimizer: str = "adam",
        momentum: float = 0.9,
        contexts: dict[str, np.ndarray | None] | None = None,
    ) -> None:
        from pcc.trainer.optim import make_optimizer

        if not fusion.learned_text:
            raise PccError("the fusion's text embedding is not learned (TextProcessor(learned=True))")
        self.fusion = fusion
        self.processor: TextProcessor = fusion.processors["text"]
        self.table = self.processor.table
        self.concat = fusion.fusion_method == "concat"
        self.columns = fusion.text_columns if self.concat else slice(None)
        self.ids = {k: np.asarray(v, np.int64) for k, v in ids.items()}
        self.contexts: dict[str, np.ndarray] = {}
        if not self.concat:
            for k, v in self.ids.items():
                ctx = (contexts or {}).get(k)
                if ctx is None and len(v):
                    raise PccError(f"fusion {fusion.fusion_method} needs the text context of split {k!r}")
                if ctx is not None and len(ctx) != len(v):
                    raise PccError(f"split {k!r}: {len(v)} token rows but {len(ctx)} context rows")
                self.contexts[k] = ctx if ctx is not None else np.zeros((0,), F32)
        self._batch: tuple[np.ndarray, np.ndarray] | None = None
        self.optimizer = make_optimizer(optimizer, _TableParams(self.table), momentum, 0.0)  # type: ignore[arg-type]

    def features(self, x: np.ndarray, split: str, rows: np.ndarray) -> np.ndarray:
        """The batch ``x`` (rows ``rows`` of ``split``) with its text-dependent features from the current table."""
        text = self.table.pooled(self.ids[split][rows], training=True)
        if not self.concat:
            ctx = self.contexts[split][rows]
            self._batch = (text, ctx)
            return self.fusion.fuse_text(text, ctx)
        out = np.array(x, dtype=F32)
        out[:, self.columns] = text
        return out

    def backward(self, input_grad: np.ndarray) -> None:
        self.table.weight.grad[...] = 0.0
        if self.concat:
            self.table.pooled_backward(input_grad[:, self.columns])
            return
        assert self._batch is not None, "backward before features()"
        self.table.pooled_backward(self.fusion.fuse_text_backward(*self._batch, input_grad))

    def step(self, lr: float) -> None:
        self.optimizer.step(lr)
        self.table.weight.value[self.table.padding_idx] = 0.0

    def refresh(self, x: np.ndarray | None, split: str) -> None:
        """Rewrite the text-dependent features of all rows of ``split`` in ``x`` (in place) from the current
        table."""
        if x is None or not len(x):
            return
        ids = self.ids[split]
        for a in range(0, len(x), 1024):
            text = self.table.pooled(ids[a : a + 1024])
            if self.concat:
                x[a : a + 1024, self.columns] = text
            else:
                x[a : a + 1024] = self.fusion.fuse_text(text, self.contexts[split][a : a + 1024])

    def state(self) -> list[np.ndarray]:
        """What the best-epoch snapshot must keep besides the network: the table."""
        return [self.table.weight.value]


class _FlatParams:
    """The flat buffers of the learned attention matrices, for the optimisers of :mod:`pcc.trainer.optim`."""

    def __init__(self, fusion: MultimodalFusion) -> None:
        self.flat_values = fusion.attention_flat
        self.flat_grads = fusion.attention_flat_grads
        self.decay_mask = np.zeros_like(self.flat_values)


class FusionTuner:
    """Trains the learned attention fusion's query, key and value matrices with the network (and the text
    embedding too when it is learned: then a :class:`TextTuner` is inside, and the text's gradient and the
    matrices' gradients come from one pass back through the fusion).

    Each batch's fused vectors are recomputed from the rows' fixed token stacks (``contexts``, from
    :meth:`MultimodalFusion.transform_with_context`) with the current matrices; :meth:`backward` takes the
    network's input gradient back through the standardisation and the attention to the matrices
    (:func:`pcc.trainer.fusion_grad.fuse_backward`); :meth:`step` applies the network's optimiser rule and
    learning rate.  The interface is :class:`TextTuner`'s, so :class:`PentaryTrainer` drives either."""

    def __init__(
        self,
        fusion: MultimodalFusion,
        contexts: dict[str, np.ndarray | None],
        optimizer: str = "adam",
        momentum: float = 0.9,
        ids: dict[str, np.ndarray] | None = None,
    ) -> None:
        from pcc.trainer.optim import make_optimizer

        if not fusion.learned_attention:
            raise PccError("the fusion has no learned attention (MultimodalFusion(..., learned_attention=True))")
        self.fusion = fusion
        self.text = TextTuner(fusion, ids, optimizer, momentum, contexts) if fusion.learned_text and ids else None
        self.contexts = {k: v for k, v in contexts.items() if v is not None}
        self._batch: np.ndarray | None = None
        self.optimizer = make_optimizer(optimizer, _FlatParams(fusion), momentum, 0.0)  # type: ignore[arg-type]

    def features(self, x: np.ndarray, split: str, rows: np.ndarray) -> np.ndarray:
        if self.text is not None:
            return self.text.features(x, split, rows)
        self._batch = self.contexts[split][rows]
        return self.fusion.fuse_tokens(self._batch)

    def backward(self, input_grad: np.ndarray) -> None:
        assert self.fusion.attention_grads is not None
        self.fusion.attention_flat_grads[...] = 0.0
        if self.text is not None:  # fills the matrices' gradients too (MultimodalFusion.fuse_text_backward)
            self.text.backward(input_grad)
            return
        assert self._batch is not None, "backward before features()"
        self.fusion.fuse_tokens_backward(self._batch, input_grad)

    def step(self, lr: float) -> None:
        self.optimizer.step(lr)
        if self.text is not None:
            self.text.step(lr)

    def refresh(self, x: np.ndarray | None, split: str) -> None:
        if x is None or not len(x):
            return
        if self.text is not None:
            self.text.refresh(x, split)
            return
        ctx = self.contexts[split]
        for a in range(0, len(x), 1024):
            x[a : a + 1024] = self.fusion.fuse_tokens(ctx[a : a + 1024])

    def state(self) -> list[np.ndarray]:
        return [self.fusion.attention_flat] + (self.text.state() if self.text is not None else [])


def _rows(v: Any, start: int, stop: int) -> Any:
    """Samples ``start:stop`` of one modality's values (a list, an array, or rows read from a file)."""
    if isinstance(v, str):
        return [v]
    return v[start:stop]


def _text_list(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, np.ndarray):
        v = v.tolist()
    items = list(v)
    bad = next((i for i, t in enumerate(items) if not isinstance(t, str)), None)
    if bad is not None:
        raise PccError(f"text sample {bad} is a {type(items[bad]).__name__}, not a string")
    return items
