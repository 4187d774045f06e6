"""Next-character generation of a pentary char-LM: tokens per second on the simulator against onnxruntime.

The model is the trainer's character transformer (``char_transformer``: token and learned position embeddings,
pre-norm blocks of causal multi-head attention and a GELU MLP, a linear head) on the built-in corpus, trained
for ``--steps`` steps (0: its random initialisation).  ``pcc compile lm.json`` (calibrated on 64 training
windows) runs on the simulator through ``pcc generate``'s path (:func:`pcc.drivers.generate.load_language_model`);
the peer is the same model's float twin on onnxruntime: the trainer's torch mirror (pentary weights ``q * s``,
float activations) exported with ``torch.onnx.export(dynamo=False)``, one intra-op thread (the simulator uses one
core), default graph optimizations (the weight projection folds into constants).  Both generate ``--tokens``
characters from the same prompt at temperature 0.8 with the same seed, one full ``[1, context]`` window per
character, as ``pcc generate`` does; the first tokens of each are untimed (numba's compilation, onnxruntime's
first run).  The two texts are compared character by character (the simulator rounds activations to 8 pents,
the twin does not, so a draw near a boundary between two characters can differ and the texts part there).

    .venv/bin/python bench/bench_charlm.py [--context 32] [--layers 2] [--heads 2] [--dim 32] [--steps 120]
        [--tokens 96]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPT = "The "
WARMUP = 2
TEMPERATURE, SEED = 0.8, 0


def _build(d: Path, context: int, layers: int, heads: int, dim: int, steps: int) -> tuple[Path, Path, float]:
    """Train (or initialise) the char-LM, write ``lm.json`` and its calibration set; returns the paths and the
    pentary validation loss (nats per character) on 8,000 held-out characters."""
    from pcc.trainer.charlm import CharLMTrainer, Vocabulary, char_transformer, default_corpus, windows

    text, _ = default_corpus()
    vocab = Vocabulary.from_text(text)
    ids = vocab.encode(text[:100_000])
    train, held = ids[:80_000], ids[80_000:88_000]
    model = char_transformer(len(vocab), context=context, layers=layers, heads=heads, dim=dim, vocabulary=vocab.chars)
    trainer = CharLMTrainer(model, learning_rate=1e-2, log=None)
    if steps:
        trainer.train(train, steps=steps, batch_size=16)
    loss = trainer.evaluate(held, quantized=True)
    path = d / "lm.json"
    model.save(path)
    cal, _ = windows(train, context)
    np.savez(d / "cal.npz", input=cal[:64])
    return path, d / "cal.npz", float(loss)


def _onnx_twin(model_json: Path, out: Path, context: int) -> Path:
    """The torch mirror of the trained model (pentary weights, float activations) as ONNX."""
    import torch

    from pcc.trainer.model import PentaryModel
    from pcc.trainer.torch_engine import build_net

    net = build_net(PentaryModel.load(model_json)).eval()
    x = torch.zeros((1, context), dtype=torch.int64)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(out), dynamo=False, input_names=["input"], output_names=["output"])
    return out


def _timed_generation(lm: object, tokens: int) -> tuple[str, float]:
    """The text sampled after PROMPT (TEMPERATURE, SEED) and the tokens per second of the timed part (after
    WARMUP tokens)."""
    from pcc.drivers.generate import sample

    sample(lm, PROMPT, WARMUP, temperature=TEMPERATURE, seed=SEED)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    text = sample(lm, PROMPT, tokens, temperature=TEMPERATURE, seed=SEED)  # type: ignore[arg-type]
    return text, tokens / (time.perf_counter() - t0)


def measure(context: int, layers: int, heads: int, dim: int, steps: int, tokens: int) -> dict:
    import onnxruntime as ort

    from pcc.drivers.compile import compile_model
    from pcc.drivers.generate import LanguageModel, load_language_model

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        path, cal, loss = _build(d, context, layers, heads, dim, steps)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        compile_model(path, output=d / "lm.pasm", calibration=cal)
        t_compile = time.perf_counter() - t0
        sim = load_language_model(d / "lm.pasm")
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
        sess = ort.InferenceSession(
            str(_onnx_twin(path, d / "lm.onnx", context)), so, providers=["CPUExecutionProvider"]
        )
        peer = LanguageModel(sim.vocabulary, context, "onnxruntime", lambda x: sess.run(None, {"input": x})[0])
        text_sim, tps_sim = _timed_generation(sim, tokens)
        text_ort, tps_ort = _timed_generation(peer, tokens)
    same = sum(a == b for a, b in zip(text_sim, text_ort, strict=True))
    first = next((i for i, (a, b) in enumerate(zip(text_sim, text_ort, strict=True)) if a != b), tokens)
    return dict(
        loss=loss, t_train=t_train, t_compile=t_compile, sim=tps_sim, ort=tps_ort, same=same, first=first,
        text_sim=text_sim, text_ort=text_ort,
    )  # fmt: skip


def _args(quick: bool) -> dict:
    return dict(context=32, layers=2, heads=2, dim=32, steps=120 if not quick else 20, tokens=96)


def rows(quick: bool = False) -> list:
    """The row of docs/benchmarks.md (bench/run_all.py): char-LM tokens/s, simulator vs onnxruntime."""
    from common import PY, Row, rate

    a = _args(quick)
    r = measure(**a)
    return [
        Row(
            f"char-LM generation, simulator vs onnxruntime ({a['layers']} layers, width {a['dim']}, {a['heads']} "
            f"heads, context {a['context']}, trained {a['steps']} steps: {r['loss']:.2f} nats/char; {a['tokens']} "
            f"tokens sampled, a full window each; {r['same']}/{a['tokens']} characters equal)",
            rate(r["sim"], "tokens/s"),
            peer=f"onnxruntime, 1 thread, float twin: {rate(r['ort'], 'tokens/s')}",
            ratio=r["sim"] / r["ort"],
            target="reported (issue #15)",
            command=f"{PY} bench/bench_charlm.py " + " ".join(f"--{k} {v}" for k, v in a.items()),
        )
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for k, v in _args(False).items():
        ap.add_argument(f"--{k}", type=int, default=v)
    args = ap.parse_args()
    t0 = time.perf_counter()
    r = measure(**vars(args))
    print(
        f"pentary validation loss {r['loss']:.3f} nats/char; train {r['t_train']:.1f} s, compile {r['t_compile']:.1f} s"
    )
    print(f"simulator   {r['sim']:8.1f} tokens/s  {r['text_sim']!r}")
    print(f"onnxruntime {r['ort']:8.1f} tokens/s  {r['text_ort']!r}")
    print(
        f"ratio {r['sim'] / r['ort']:.3g}; {r['same']}/{args.tokens} characters equal, first difference at {r['first']}"
    )
    print(f"bench wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
