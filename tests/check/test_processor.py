"""``PentaryProcessor``: the seed's deployment example on models the trainer wrote, run on the simulator and
compared with the pent reference (bit for bit) and with the trainer's own pentary forward pass."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from pcc.diagnostics import PccError


def test_seed_deployment_example(digits_mlp: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed's "Deployment Example", with the seed's module names mapped to pcc's and the conversion step
    (which the seed left open: "implementation depends on processor ISA") filled in."""
    monkeypatch.chdir(digits_mlp["path"].parent)
    scope: dict = {"x_train": digits_mlp["x_train"], "x_test": digits_mlp["x_val"]}
    code = """
        from pcc.trainer.pentary_trainer import PentaryTrainer, PentaryModel
        from pcc.trainer.pentary_simulator import PentaryProcessor

        # Load trained model
        trainer = PentaryTrainer(model=PentaryModel(128, 10))
        trainer.load_model('trained_model.json')

        # Deploy on processor
        processor = PentaryProcessor()
        # Convert model to processor instructions
        processor.load_model(trainer, calibration=x_train[:256])
        classes = processor.predict(x_test)
        """
    exec(compile(textwrap.dedent(code), "<seed deployment example>", "exec"), scope)
    processor, trainer = scope["processor"], scope["trainer"]
    x, y = digits_mlp["x_val"], digits_mlp["y_val"]
    classes = scope["classes"]
    assert classes.shape == (len(x),) and classes.dtype.kind == "i"
    # bit for bit: the simulator computes the pent reference's integers
    np.testing.assert_array_equal(processor.run(x, quantized=True), processor.reference(x, quantized=True))
    np.testing.assert_array_equal(processor.run(x), processor.reference(x))
    # against the trainer's own forward pass (pentary weights, float activations and requantization)
    own = trainer.model.predict_classes(x)
    agreement = float(np.mean(classes == own))
    assert agreement >= 0.97, agreement
    acc_sim, acc_own = float(np.mean(classes == y)), float(np.mean(own == y))
    assert acc_own > 0.7 and abs(acc_sim - acc_own) <= 0.02
    # the instructions
    prog = processor.program
    assert prog.instructions[-1].mnemonic == "HALT" and len(processor.instructions) == len(prog.instructions)
    asm = processor.assembly
    assert "; @layer layer0.linear" in asm and ".input input, shape=[1, 64]" in asm
    assert [d.name for d in prog.inputs] == ["input"] and prog.outputs[0].shape == (1, 10)
    assert "instructions" in repr(processor)


def test_profile_and_save(digits_mlp: dict, tmp_path: Path) -> None:
    from pcc.cli import main
    from pcc.trainer.pentary_simulator import PentaryProcessor

    p = PentaryProcessor().load_model(str(digits_mlp["path"]), calibration=digits_mlp["x_train"][:128])
    x = digits_mlp["x_val"][:5]
    out = p.run(x)
    assert out.shape == (5, 10) and out.dtype == np.float32
    prof = p.profile()
    assert prof.runs == 5 and prof.total.cycles == 5 * p.compiled.cycles
    assert [r.name for r in prof.rows] == ["layer0.linear", "layer2.linear"]
    assert "layer0.linear" in prof.table()
    p.reset_profile()
    assert p.profile().runs == 0
    # a saved program runs with pcc run to the same outputs
    written = p.save(tmp_path / "mlp.pasm")
    assert [w.name for w in written] == ["mlp.pasm", "mlp.weights.bin"]
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(tmp_path / "mlp.pasm"), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["output"], out)
    p.save(tmp_path / "mlp.pbin")
    assert (tmp_path / "mlp.pbin").read_bytes()[:4] == b"PBIN"
    # one sample, flat or shaped, and a single vector
    np.testing.assert_array_equal(p.run(x[0]), out[:1])
    np.testing.assert_array_equal(p.predict(x[:2]), np.argmax(out[:2], axis=1))


def test_model_sources_agree(digits_mlp: dict) -> None:
    """A file path, the loaded PentaryModel, its dict and the trainer compile to the same program."""
    from pcc.trainer.model import PentaryModel
    from pcc.trainer.pentary_simulator import PentaryProcessor
    from pcc.trainer.trainer import PentaryTrainer

    cal = digits_mlp["x_train"][:64]
    model = PentaryModel.load(digits_mlp["path"])
    trainer = PentaryTrainer(model=model, log=None)
    texts = set()
    for src in (digits_mlp["path"], model, model.to_dict(), trainer):
        asm = PentaryProcessor().load_model(src, calibration=cal).assembly
        texts.add("\n".join(x for x in asm.splitlines()[1:] if ".incbin" not in x))  # not the names
    assert len(texts) == 1


def test_cnn_from_the_trainer() -> None:
    from sklearn.datasets import load_digits

    from pcc.trainer.layers import (
        Flatten,
        PentaryBatchNorm,
        PentaryConv2D,
        PentaryLinear,
        PentaryMaxPool2D,
        PentaryReLU,
    )
    from pcc.trainer.pentary_simulator import PentaryProcessor
    from pcc.trainer.pentary_trainer import PentaryModel, PentaryTrainer

    d = load_digits()
    x, y = (d.data / 16).astype(np.float32), d.target
    layers = [
        PentaryConv2D(1, 4, 3, padding=1),
        PentaryBatchNorm(4),
        PentaryReLU(),
        PentaryMaxPool2D(2),
        Flatten(),
        PentaryLinear(4 * 4 * 4, 10),
    ]
    cnn = PentaryModel.sequential(layers, input_shape=(1, 8, 8))
    trainer = PentaryTrainer(model=cnn, learning_rate=0.01, log=None)
    trainer.train(train_data=(x[:1400], y[:1400]), epochs=2, batch_size=32)
    p = PentaryProcessor().load_model(trainer, calibration=x[:256])
    xv = x[1400:1600]  # flat [B, 64] rows are reshaped to the model's [1, 8, 8]
    np.testing.assert_array_equal(p.run(xv, quantized=True), p.reference(xv, quantized=True))
    assert np.mean(p.predict(xv) == trainer.model.predict_classes(xv)) >= 0.97
    assert p.program.inputs[0].shape == (1, 1, 8, 8) and p.program.inputs[0].order == (0, 2, 3, 1)


def test_errors_and_the_calibration_fallback(digits_mlp: dict) -> None:
    from pcc.passes.quantize import CalibrationWarning
    from pcc.trainer.pentary_simulator import PentaryProcessor

    p = PentaryProcessor()
    with pytest.raises(PccError, match="no model loaded"):
        p.run(np.zeros(64))
    with pytest.raises(PccError, match="cannot compile a int"):
        p.load_model(3)
    with pytest.raises(PccError, match="no such file"):
        p.load_model(digits_mlp["path"], calibration="missing.npz")
    with pytest.warns(CalibrationWarning, match="no calibration data"):
        p.load_model(digits_mlp["path"])
    with pytest.raises(PccError, match="expected samples of shape"):
        p.run(np.zeros((2, 63)))
    with pytest.raises(PccError, match="NaN"), warnings.catch_warnings():
        p.run(np.full((1, 64), np.nan))
    with pytest.raises(PccError, match="expected samples of shape"):
        PentaryProcessor().load_model(digits_mlp["path"], calibration=np.zeros((4, 3)))
