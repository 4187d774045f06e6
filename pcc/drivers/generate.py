"""``pcc generate``: sample text from a compiled character-level language model.

The program (``.pasm`` / ``.pbin`` from ``pcc compile lm.json``) runs on the simulator; its input is
``[1, T]`` character ids, its output ``[1, T, V]`` next-character logits.  The vocabulary travels beside it as
``<program stem>.tokenizer.json`` (written by ``pcc compile`` for a model with a ``tokenizer`` key), which records
the SHA-256 of the program file it was written with, so a vocabulary beside another program is refused.  A
model JSON (``lm.json``) or an imported ``.pir`` instead runs on the float reference interpreter (pentary
weights, float activations): the output says which engine produced it.

Each step feeds the last ``T`` characters (a shorter prompt is padded on the right with id 0; the causal
model's prediction at the prompt's last position does not depend on the padding), takes the logits at the last
real position, and draws the next character from ``softmax(logits / temperature)`` (temperature 0: the most
likely one) with a seeded generator.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import typer

from pcc.diagnostics import PccError, atomic_write, read_input_json

__all__ = [
    "generate_command",
    "LanguageModel",
    "load_language_model",
    "write_tokenizer",
    "tokenizer_path",
    "sample",
]

TOKENIZER_FORMAT = "pcc.tokenizer"


def tokenizer_path(program: Path) -> Path:
    return program.with_name(program.stem + ".tokenizer.json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_tokenizer(model_json: dict[str, Any], program: Path) -> Path | None:
    """Write ``<program stem>.tokenizer.json`` for a sequence model with a character vocabulary (else None)."""
    tok = model_json.get("tokenizer") if isinstance(model_json, dict) else None
    if not isinstance(tok, dict) or "vocabulary" not in tok:
        return None
    doc = {
        "format": TOKENIZER_FORMAT,
        "type": tok.get("type", "characters"),
        "vocabulary": list(tok["vocabulary"]),
        "context": int(model_json["input_shape"][0]),
        "program": program.name,
        "program_sha256": _sha256(program),
    }
    path = tokenizer_path(program)
    atomic_write(path, json.dumps(doc, ensure_ascii=False) + "\n")
    return path


def _read_vocabulary(tok: Any, where: str) -> str:
    from pcc.trainer.model import read_vocabulary

    try:
        vocab = read_vocabulary(tok)
    except ValueError as exc:
        raise PccError(f"{where}: {exc}") from None
    if vocab is None:
        raise PccError(f"{where}: no character vocabulary ('tokenizer' key)")
    return vocab


@dataclass
class LanguageModel:
    """A next-character predictor: ``logits(ids [1, T]) -> [T, V]`` on one engine."""

    vocabulary: str
    context: int
    engine: str  # "simulator" or "float interpreter"
    logits: Callable[[np.ndarray], np.ndarray]

    def encode(self, text: str, what: str = "the prompt") -> np.ndarray:
        from pcc.trainer.charlm import Vocabulary

        return Vocabulary(self.vocabulary).encode(text, what)

    def next_logits(self, ids: np.ndarray) -> np.ndarray:
        """Logits ``[V]`` of the character after ``ids`` (the last ``context`` of them are used)."""
        window = np.asarray(ids, np.int64)[-self.context :]
        n = len(window)
        padded = np.zeros((1, self.context), np.int64)
        padded[0, :n] = window
        return np.asarray(self.logits(padded), np.float64).reshape(self.context, -1)[n - 1]


def _interpreted(module: Any) -> Callable[[np.ndarray], np.ndarray]:
    from pcc import interpreter

    return lambda x: interpreter.run(module, {"input": x})["output"]


def load_language_model(path: Path, tokenizer: Path | None = None) -> LanguageModel:
    """A ``.pasm`` / ``.pbin`` program (simulator), or a model ``.json`` / ``.pir`` (float interpreter)."""
    path = Path(path)
    if not path.exists():
        raise PccError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        if tokenizer is not None:  # the model JSON carries its vocabulary: a second one would be ignored
            raise PccError(
                f"{tokenizer}: --tokenizer is for a compiled program (.pasm/.pbin/.pir); the model {path} "
                "holds its own vocabulary"
            )
        from pcc.frontends import native
        from pcc.trainer.model_format import read_json

        d = read_json(path)
        if not isinstance(d, dict) or not d.get("layers") or d["layers"][0].get("type") != "embedding":
            raise PccError(f"{path}: not a sequence model (its first layer is not an embedding)")
        vocab = _read_vocabulary(d.get("tokenizer"), str(path))
        module = native.load_dict(d, file=str(path), name=path.stem)
        context = int(d["input_shape"][0])
        return LanguageModel(vocab, context, "float interpreter", _interpreted(module))
    tok_path = tokenizer or tokenizer_path(path)
    if not tok_path.exists():
        raise PccError(
            f"{path}: no vocabulary: {tok_path} is missing (pcc compile writes it beside the program of a model "
            f"with a vocabulary; or give --tokenizer)"
        )
    tok = read_input_json(tok_path, "a tokenizer JSON file")
    if not isinstance(tok, dict) or tok.get("format") != TOKENIZER_FORMAT:
        raise PccError(f"{tok_path}: not a {TOKENIZER_FORMAT} file")
    if tok.get("program_sha256") != _sha256(path):
        raise PccError(f"{tok_path} was written for another program than {path} (SHA-256 differs); recompile")
    vocab = _read_vocabulary({"type": tok.get("type"), "vocabulary": tok.get("vocabulary")}, str(tok_path))
    context = tok.get("context")
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise PccError(f"{tok_path}: 'context' must be a positive integer")
    if suffix == ".pir":
        from pcc.parser import parse_file

        module = parse_file(path)
        return LanguageModel(vocab, context, "float interpreter", _interpreted(module))
    from pcc.runtime.cli import load_program
    from pcc.runtime.simulator import Simulator, run_program

    program = load_program(path)
    decl = {d.name: d for d in program.inputs}
    if "input" not in decl or tuple(decl["input"].shape) != (1, context):
        raise PccError(f"{path}: expected one input 'input' of shape [1, {context}] (token ids)")
    sim = Simulator(program)
    return LanguageModel(
        vocab, context, "simulator", lambda x: run_program(program, {"input": x}, simulator=sim)["output"]
    )


def sample(
    lm: LanguageModel,
    prompt: str,
    tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    on_char: Callable[[str], None] | None = None,
) -> str:
    """``tokens`` characters drawn after ``prompt`` (see the module docstring)."""
    if not prompt:
        raise PccError("the prompt is empty: give at least one character with --prompt")
    ids = list(lm.encode(prompt))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(tokens):
        z = lm.next_logits(np.asarray(ids))
        if temperature == 0:
            nxt = int(np.argmax(z))
        else:
            p = np.exp((z - z.max()) / temperature)
            p /= p.sum()
            nxt = int(rng.choice(len(p), p=p))
        ids.append(nxt)
        ch = lm.vocabulary[nxt]
        out.append(ch)
        if on_char is not None:
            on_char(ch)
    return "".join(out)


def generate_command(
    program: Path = typer.Argument(
        ..., help="A compiled LM (.pasm/.pbin: the simulator) or its model .json/.pir (the float interpreter)."
    ),
    prompt: str = typer.Option(..., "--prompt", help="Text to start from (characters of the model's vocabulary)."),
    tokens: int = typer.Option(200, "--tokens", help="Number of characters to generate."),
    temperature: float = typer.Option(
        0.8, "--temperature", help="Sampling temperature (0: always the most likely character)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling generator."),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="The vocabulary file [<program stem>.tokenizer.json]."
    ),
) -> None:
    """Generate text with a character-level language model compiled by pcc (pcc train --model transformer)."""
    if tokens < 0:
        raise PccError("--tokens must be 0 or more")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise PccError(f"--temperature must be a finite number >= 0, got {temperature}")
    lm = load_language_model(program, tokenizer)
    lm.encode(prompt)  # characters outside the vocabulary: one error before anything runs
    typer.echo(f"[{lm.engine}: {program.name}, context {lm.context}, {len(lm.vocabulary)} characters]", err=True)
    sys.stdout.write(prompt)
    t0 = time.perf_counter()

    def emit(ch: str) -> None:
        sys.stdout.write(ch)
        sys.stdout.flush()

    sample(lm, prompt, tokens, temperature, seed, emit)
    dt = time.perf_counter() - t0
    sys.stdout.write("\n")
    rate = tokens / dt if dt > 0 else float("inf")
    typer.echo(f"[{tokens} characters in {dt:.2f}s: {rate:.1f} characters/s on the {lm.engine}]", err=True)
