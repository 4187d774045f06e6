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
