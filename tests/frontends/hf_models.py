"""HF transformers models built from small configs (random initialisation, nothing downloaded).

``build_hf(name, impl)`` returns an eval-mode module taking ``(input_ids, attention_mask)`` and returning the
first output (BERT's last hidden state, GPT-2's logits), with example inputs: two sequences of 16 tokens, the
second padded after 11.  ``impl`` is the attention implementation transformers selects ("sdpa" or "eager").
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", reason="the HF model tests need the transformers package")

VOCAB, SEQ = 100, 16
HF = ("bert", "gpt2")
IMPLS = ("sdpa", "eager")


class _First(torch.nn.Module):
    """The model's first output for ``(input_ids, attention_mask)`` (no key/value cache)."""

    def __init__(self, model: torch.nn.Module, cache: bool) -> None:
        super().__init__()
        self.model, self.cache = model, cache

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        extra = {"use_cache": False} if self.cache else {}
        return self.model(input_ids=ids, attention_mask=mask, **extra)[0]


def hf_config(name: str, impl: str, **sizes: int):  # noqa: ANN201
    """A small config of ``name`` (bert: 2 layers, width 32, 4 heads; gpt2 likewise), ``sizes`` overriding."""
    if name == "bert":
        kw = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=32)  # fmt: skip
        kw.update(sizes)
        return transformers.BertConfig(attn_implementation=impl, **kw)
    if name == "gpt2":
        kw = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=0, eos_token_id=0)
        kw.update(sizes)
        return transformers.GPT2Config(attn_implementation=impl, **kw)
    raise ValueError(f"unknown HF model {name!r}")


def build_hf(name: str, impl: str, seed: int = 0, **sizes: int) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """The model (random weights from ``seed``) and its example inputs."""
    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = hf_config(name, impl, **sizes)
        model = (transformers.BertModel if name == "bert" else transformers.GPT2LMHeadModel)(cfg)
    m = _First(model, cache=name == "gpt2").eval()
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, cfg.vocab_size, (2, SEQ), generator=g)
    mask = torch.ones(2, SEQ, dtype=torch.long)
    mask[1, 11:] = 0
    return m, (ids, mask)


class _Embeds(torch.nn.Module):
    """The model on ``inputs_embeds`` (float [1, seq, width]) with every position attended: the token lookup is
    left to the caller and the attention mask is a constant of the export."""

    def __init__(self, model: torch.nn.Module, cache: bool) -> None:
        super().__init__()
        self.model, self.cache = model, cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(x.shape[:2], dtype=torch.long)
        extra = {"use_cache": False} if self.cache else {}
        return self.model(inputs_embeds=x, attention_mask=mask, **extra)[0]


def build_hf_embeds(name: str, impl: str, seed: int = 0, seq: int = SEQ, **sizes: int):  # noqa: ANN201
    """``build_hf``'s model taking token embeddings instead of ids, and an example input (1 x seq x width)."""
    m, _ = build_hf(name, impl, seed, **sizes)
    width = m.model.config.hidden_size
    x = torch.randn(1, seq, width, generator=torch.Generator().manual_seed(seed + 2)) * 0.5
    return _Embeds(m.model, m.cache).eval(), x


def pentary_exact_onnx(model):  # noqa: ANN001, ANN201
    """An ONNX model with every 2-D Gemm / MatMul weight initializer projected onto ``s_c x {-2..2}`` per output
    column (``s_c``: the column's max |w| / 2), so quantizing the weights loses nothing."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name for t in out.graph.initializer}
    axis: dict[str, int] = {}
    for nd in out.graph.node:
        if nd.op_type == "Gemm":
            axis[nd.input[1]] = 0 if next((a.i for a in nd.attribute if a.name == "transB"), 0) else 1
        elif nd.op_type == "MatMul" and nd.input[1] in inits:
            axis[nd.input[1]] = 1
    for k, t in enumerate(out.graph.initializer):
        w = numpy_helper.to_array(t).astype(np.float64)
        if t.name not in axis or w.ndim != 2:
            continue
        s = np.maximum(np.abs(w).max(axis=1 - axis[t.name], keepdims=True), 1e-6) / 2
        q = (np.clip(np.rint(w / s), -2, 2) * s).astype(np.float32)
        out.graph.initializer[k].CopyFrom(numpy_helper.from_array(q, t.name))
    return out


def pentary_exact_torch(model):  # noqa: ANN001, ANN201
    """``model`` with every matrix and convolution weight (a parameter named ``*weight`` of two or more axes:
    ``nn.Linear`` ``[out, in]``, attention's ``in_proj_weight``, ``nn.Conv2d`` ``[out, in, kh, kw]``, GPT-2's
    ``Conv1D`` ``[in, out]``, embedding tables) projected onto ``s_c x {-2..2}`` per output channel (``s_c``: the
    channel's max |w| / 2), in place: a tied head (GPT-2's ``lm_head`` is ``wte``) is projected per vocabulary
    row, which is its output channel; returns the model."""
    with torch.no_grad():
        for mod in model.modules():
            for pname, w in mod.named_parameters(recurse=False):
                if not pname.endswith("weight") or w.ndim < 2:
                    continue
                out_axis = 1 if type(mod).__name__ == "Conv1D" else 0
                rest = tuple(a for a in range(w.ndim) if a != out_axis)
                s = w.abs().amax(dim=rest, keepdim=True).clamp_min(1e-6) / 2
                w.copy_(torch.clamp(torch.round(w / s), -2, 2) * s)
    return model
