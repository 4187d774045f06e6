"""The character-level LM: corpus, vocabulary, training, ``pcc train --model transformer`` and ``pcc generate``
on the float interpreter (the simulator's agreement test is in tests/compile/test_charlm_sim.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcc.cli import main
from pcc.diagnostics import PccError
from pcc.drivers.generate import load_language_model, sample
from pcc.trainer.charlm import CharLMTrainer, Vocabulary, char_transformer, default_corpus, lm_loss
from pcc.trainer.model import PentaryModel


class _Result:
    def __init__(self, code: int, output: str) -> None:
        self.exit_code, self.output = code, output


class _Runner:
    """``pcc`` in-process (``pcc.cli.main``: errors are one line and exit code 1, as at the shell)."""

    capsys: pytest.CaptureFixture[str]

    def invoke(self, _app: object, args: list[str]) -> _Result:
        self.capsys.readouterr()
        code = main(args)
        out = self.capsys.readouterr()
        return _Result(code, out.out + out.err)


runner = _Runner()
app = None


@pytest.fixture(autouse=True)
def _capture(capsys: pytest.CaptureFixture[str]) -> None:
    runner.capsys = capsys


def test_default_corpus_is_the_pydoc_topics_text() -> None:
    text, desc = default_corpus()
    assert len(text) > 300_000 and "pydoc_data/topics.py" in desc
    assert 'The "assert" statement' in text and "topics = {" not in text  # the strings, not the source


def test_vocabulary_round_trip_and_errors() -> None:
    v = Vocabulary.from_text("hello world")
    assert v.chars == " dehlorw"
    assert v.decode(v.encode("low")) == "low"
    with pytest.raises(PccError, match="outside the model's vocabulary: 'x', 'z'"):  # sorted
        v.encode("zex")


def test_lm_loss_matches_a_hand_computation() -> None:
    logits = np.array([[[0.0, np.log(3.0)], [1.0, 1.0]]], np.float32)
    loss, grad = lm_loss(logits, np.array([[1, 0]]))
    assert loss == pytest.approx((-np.log(0.75) - np.log(0.5)) / 2, rel=1e-6)
    assert np.allclose(grad[0, 0], [0.25 / 2, -0.25 / 2]) and np.allclose(grad[0, 1], [-0.25, 0.25])


def _train_small(steps: int, dim: int, batch: int) -> tuple[float, float, float]:
    text, _ = default_corpus()
    v = Vocabulary.from_text(text)
    ids = v.encode(text[:60_000])
    model = char_transformer(len(v), context=16, layers=1, heads=2, dim=dim, vocabulary=v.chars)
    tr = CharLMTrainer(model, learning_rate=1e-2, log=None)
    before = tr.evaluate(ids[50_000:], quantized=True)
    tr.train(ids[:50_000], steps=steps, batch_size=batch)
    return before, tr.evaluate(ids[50_000:], True), tr.evaluate(ids[50_000:], False)


def test_training_lowers_the_loss() -> None:
    before, pent, flt = _train_small(60, 16, 8)
    assert before > 4.0 and pent < before - 0.7  # uniform over ~100 characters is 4.6 nats
    assert abs(pent - flt) < 0.3


@pytest.mark.slow
def test_training_lowers_the_loss_and_pentary_tracks_float() -> None:
    before, pent, flt = _train_small(150, 32, 16)
    assert before > 4.0 and pent < 3.0
    assert abs(pent - flt) < 0.15


def _train_cli(tmp_path: Path, text: Path | None = None, *extra: str) -> tuple[Path, dict]:
    args = ["train", "--model", "transformer", "--context", "8", "--layers", "1", "--heads", "1", "--dim", "8"]
    args += ["--steps", "20", "--batch-size", "4", "--save-model", "--output-dir", str(tmp_path)]
    args += ["--model-name", "lm", *extra]
    if text is not None:
        args += ["--text", str(text)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "lm.metrics.json").read_text())
    return tmp_path / "lm.json", metrics


def test_cli_trains_on_a_text_file_and_generates(tmp_path: Path) -> None:
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    model_path, metrics = _train_cli(tmp_path, corpus)
    m = metrics["metrics"]
    assert m["units"] == "nats per character" and m["steps"] == 20
    assert all(r["quantized"] for r in metrics["history"])  # the default: QAT from the first step
    assert np.isfinite(m["val_loss_pentary"]) and np.isfinite(m["val_loss_float"])
    assert metrics["config"]["vocabulary_size"] == len(set("the cat sat on the mat. "))
    model = PentaryModel.load(model_path)
    assert model.vocabulary == "".join(sorted(set("the cat sat on the mat. ")))
    r = runner.invoke(app, ["generate", str(model_path), "--prompt", "the ", "--tokens", "12", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert "float interpreter" in r.output and "the " in r.output
    # the interpreter's next-character logits are the trainer's pentary forward
    lm = load_language_model(model_path)
    ids = lm.encode("the cat")
    assert np.allclose(lm.next_logits(ids), model.predict(ids[None])[0, -1], atol=1e-5)
    assert sample(lm, "the", 10, 0.0) == sample(lm, "the", 10, 0.0)
    bad = runner.invoke(app, ["generate", str(model_path), "--prompt", "THE", "--tokens", "3"])
    assert bad.exit_code == 1 and "outside the model's vocabulary: 'E', 'H', 'T'" in bad.output


def test_cli_refuses_flags_that_do_not_apply(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "--model", "transformer", "--epochs", "3"])
    assert r.exit_code == 1 and "--epochs do(es) not apply to --model transformer" in r.output
    r = runner.invoke(app, ["train", "--context", "8"])
    assert r.exit_code == 1 and "--context need --model transformer" in r.output
    r = runner.invoke(app, ["train", "--model", "transformer", "--dim", "10", "--heads", "4"])
    assert r.exit_code == 1 and "multiple of --heads" in r.output
    short = tmp_path / "short.txt"
    short.write_text("abc", encoding="utf-8")
    r = runner.invoke(app, ["train", "--model", "transformer", "--text", str(short)])
    assert r.exit_code == 1 and "too short" in r.output
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00abc")
    r = runner.invoke(app, ["train", "--model", "transformer", "--text", str(binary)])
    assert r.exit_code == 1 and "not UTF-8" in r.output


def test_generate_refuses_a_vocabulary_of_another_program(tmp_path: Path) -> None:
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("abcabcabd " * 30, encoding="utf-8")
    model_path, _ = _train_cli(tmp_path, corpus)
    pir = tmp_path / "lm.pir"
    r = runner.invoke(app, ["compile", str(model_path), "--emit", "ir", "-o", str(pir)])
    assert r.exit_code == 0, r.output
    tok = json.loads((tmp_path / "lm.tokenizer.json").read_text())
    assert tok["vocabulary"] == list(" abcd") and tok["context"] == 8
    r = runner.invoke(app, ["generate", str(pir), "--prompt", "ab", "--tokens", "4"])
    assert r.exit_code == 0, r.output
    pir.write_text(pir.read_text() + "\n")  # another program now
    r = runner.invoke(app, ["generate", str(pir), "--prompt", "ab", "--tokens", "4"])
    assert r.exit_code == 1 and "written for another program" in r.output
    (tmp_path / "lm.tokenizer.json").unlink()
    r = runner.invoke(app, ["generate", str(pir), "--prompt", "ab"])
    assert r.exit_code == 1 and "no vocabulary" in r.output


def _tiny_trainer(**kwargs: object) -> tuple[CharLMTrainer, np.ndarray]:
    text, _ = default_corpus()
    v = Vocabulary.from_text(text)
    ids = v.encode(text[:20_000])
    model = char_transformer(len(v), context=8, layers=1, heads=1, dim=8, vocabulary=v.chars)
    return CharLMTrainer(model, learning_rate=1e-2, log=None, **kwargs), ids


def test_time_budget_stops_before_the_budget_and_the_schedule_follows_the_clock() -> None:
    tr, ids = _tiny_trainer(warmup=5)
    hist = tr.train(ids, steps=None, batch_size=4, time_budget=1.0, eval_every=0)
    # the last step ends within the budget (give or take a scheduling delay of a loaded machine)
    assert len(hist) > 20 and hist[-1]["seconds"] <= 1.25 and tr.train_time < 1.5
    progress = [r["progress"] for r in hist]
    assert progress == sorted(progress) and progress[0] < 0.1 and progress[-1] > 0.7
    # warm-up for 5 steps (or the first tenth of the budget: a loaded machine may get fewer steps into it),
    # then cosine decay over the clock to a tenth of the peak
    k = next(i for i, r in enumerate(hist) if i >= 5 or r["progress"] >= 0.1)
    lrs = [r["lr"] for r in hist]
    assert k >= 1 and lrs[:k] == pytest.approx([1e-2 * (i + 1) / 5 for i in range(k)])
    assert lrs[-1] < 0.3 * 1e-2 and all(a >= b for a, b in zip(lrs[k:-1], lrs[k + 1 :], strict=True))
    # a step cap ends the run first when it comes first, and the schedule then ends with it
    tr2, _ = _tiny_trainer(warmup=5)
    hist2 = tr2.train(ids, steps=30, batch_size=4, time_budget=60.0, eval_every=0)
    end = 1e-3 + 9e-3 * 0.5 * (1 + np.cos(np.pi * 26 / 27))  # after a warm-up of 3 steps (a tenth)
    assert len(hist2) == 30 and hist2[-1]["lr"] == pytest.approx(end)


def test_the_float_twin_follows_the_schedule_and_data_of_a_timed_run() -> None:
    tr, ids = _tiny_trainer(warmup=5, float_warmup=0.3)
    hist = tr.train(ids, steps=None, batch_size=4, time_budget=0.7, eval_every=0)
    quantized = [r["quantized"] for r in hist]
    assert not quantized[0] and quantized[-1] and quantized == sorted(quantized)  # float first, then QAT
    twin, _ = _tiny_trainer(qat=False)
    twin_hist = twin.train(ids, batch_size=4, follow=hist, eval_every=0)
    assert len(twin_hist) == len(hist) and [r["lr"] for r in twin_hist] == [r["lr"] for r in hist]
    assert not any(r["quantized"] for r in twin_hist)
    # same data order: the float steps before QAT started are the same steps, so the same losses
    n_float = quantized.index(True)
    assert [r["loss"] for r in twin_hist[:n_float]] == pytest.approx([r["loss"] for r in hist[:n_float]], rel=1e-5)
    with pytest.raises(PccError, match="time budget"):
        twin.train(ids, time_budget=0.0)
    with pytest.raises(PccError, match="no steps"):
        twin.train(ids, follow=[{"step": 1}])


def test_cli_time_budget_and_float_twin(tmp_path: Path) -> None:
    args = ["train", "--model", "transformer", "--context", "8", "--layers", "1", "--heads", "1", "--dim", "8"]
    args += ["--time-budget", "1.5", "--float-twin", "--float-warmup", "0.2", "--batch-size", "4"]
    args += ["--save-model", "--output-dir", str(tmp_path), "--model-name", "lm"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "float twin" in r.output and "pentary - float twin" in r.output
    doc = json.loads((tmp_path / "lm.metrics.json").read_text())
    m, cfg = doc["metrics"], doc["config"]
    assert cfg["time_budget"] == 1.5 and cfg["steps"] is None and cfg["float_twin"] and cfg["float_warmup"] == 0.2
    assert m["steps"] == len(doc["history"]) > 5 and m["train_seconds"] <= 2.0
    assert m["twin_gap"] == pytest.approx(m["val_loss_pentary"] - m["val_loss_float_twin"])
    assert (tmp_path / "lm.json").exists()
    for bad, msg in (
        (["--time-budget", "0"], "--time-budget must be a number of seconds > 0"),
        (["--float-warmup", "1"], "--float-warmup must be a fraction"),
        (["--float-twin", "--no-qat"], "does not go with --no-qat"),
    ):
        r = runner.invoke(app, ["train", "--model", "transformer", *bad])
        assert r.exit_code == 1 and msg in r.output, r.output
    r = runner.invoke(app, ["train", "--float-twin"])
    assert r.exit_code == 1 and "--float-twin need --model transformer" in r.output
