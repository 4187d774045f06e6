"""``pcc train`` / ``pcc convert`` / ``pcc quantize`` through ``pcc.cli.main``, including the seed's commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pcc.cli import main
from pcc.trainer.cli import expand_multi_value_options
from pcc.trainer.model import PentaryModel


def _run(capsys, args: list[str]) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_expand_multi_value_options():
    assert expand_multi_value_options(["--hidden-dims", "64", "32", "--epochs", "2"]) == [
        "--hidden-dims", "64", "--hidden-dims", "32", "--epochs", "2",
    ]  # fmt: skip
    assert expand_multi_value_options(["--modalities", "text", "image", "audio"]) == [
        "--modalities", "text", "--modalities", "image", "--modalities", "audio",
    ]  # fmt: skip
    assert expand_multi_value_options(["--hidden-dims=8", "4"]) == ["--hidden-dims=8", "--hidden-dims", "4"]
    assert expand_multi_value_options(["--epochs", "2", "x"]) == ["--epochs", "2", "x"]


def test_seed_basic_command(capsys, tmp_path):
    # the seed's "Basic Training" command (epochs reduced)
    args = ("train --input-dim 128 --output-dim 10 --hidden-dims 64 32 --epochs 2 --batch-size 32 "
            "--learning-rate 0.01 --save-model").split()  # fmt: skip
    rc, out, err = _run(capsys, args)
    assert rc == 0, err
    assert "synthetic data" in out and "epoch   2/2" in out and "val pentary" in out
    saved = sorted((tmp_path / "trained_models").iterdir())
    model_json = next(p for p in saved if p.name.endswith(".json") and not p.name.endswith(".metrics.json"))
    d = json.loads(model_json.read_text())
    assert d["input_dim"] == 128 and d["hidden_dims"] == [64, 32] and d["output_dim"] == 10
    metrics = json.loads(model_json.with_suffix(".metrics.json").read_text())["metrics"]
    for k in ("train_loss_float", "train_acc_pentary", "val_loss_pentary", "val_acc_float"):
        assert k in metrics


def test_seed_multimodal_command(capsys, tmp_path):
    args = ("train --multimodal --modalities text image audio --fusion-method concat --epochs 4 --batch-size 16 "
            "--learning-rate 0.01 --save-model --n-samples 300 --model-name mm").split()  # fmt: skip
    rc, out, err = _run(capsys, args)
    assert rc == 0, err
    metrics = json.loads((tmp_path / "trained_models" / "mm.metrics.json").read_text())["metrics"]
    assert metrics["val_acc_pentary"] > 0.4  # chance is 1/8: the fused model learns from all three modalities
    d = json.loads((tmp_path / "trained_models" / "mm.json").read_text())
    assert d["multimodal"]["modalities"] == ["text", "image", "audio"]


def _data_dir(path, n=60, rng=None):
    from pcc.trainer.data import make_multimodal_dataset

    ds = make_multimodal_dataset(n, ["text", "image"], 4, seed=2)
    path.mkdir()
    np.save(path / "labels.npy", ds.y)
    (path / "text.json").write_text(json.dumps(ds.x["text"]))
    np.save(path / "images.npy", ds.x["image"])
    return path


def test_seed_custom_data_command(capsys, tmp_path):
    d = _data_dir(tmp_path / "data")
    args = ["train", "--data-dir", str(d), "--multimodal", "--modalities", "text", "image", "--epochs", "2",
            "--save-model", "--output-dir", "./trained_models", "--model-name", "custom"]  # fmt: skip
    rc, out, err = _run(capsys, args)
    assert rc == 0, err
    assert (tmp_path / "trained_models" / "custom.json").is_file()
    assert "synthetic" not in out


def test_data_dir_without_multimodal(capsys, tmp_path):
    d = _data_dir(tmp_path / "data")
    rc, out, err = _run(capsys, ["train", "--data-dir", str(d), "--epochs", "1", "--output-dim", "4"])
    assert rc == 0, err
    assert "fused by concat" in out


def test_malformed_data_dir_is_one_error_before_training(capsys, tmp_path):
    d = _data_dir(tmp_path / "data")
    (d / "text.json").write_text('["only one"]')
    rc, out, err = _run(capsys, ["train", "--data-dir", str(d), "--multimodal", "--modalities", "text", "image"])
    assert rc == 1
    assert err.strip().splitlines()[0].endswith("error: text.json has 1 samples but labels.npy has 60")
    assert "Traceback" not in err and "epoch" not in out


def test_output_dim_sets_the_one_hot_width(capsys, tmp_path):
    rc, out, err = _run(capsys, ["train", "--n-samples", "60", "--output-dim", "3", "--epochs", "1", "--input-dim",
                                 "8", "--save-model", "--model-name", "w"])  # fmt: skip
    assert rc == 0, err
    assert PentaryModel.load(tmp_path / "trained_models" / "w.json").output_dim == 3
    d = _data_dir(tmp_path / "data")  # labels 0..3
    rc, out, err = _run(capsys, ["train", "--data-dir", str(d), "--output-dim", "3", "--epochs", "1"])
    assert rc == 1 and "label 3" in err and "--output-dim 4" in err


def test_digits_sgd_plot_and_mse(capsys, tmp_path):
    args = ["train", "--dataset", "digits", "--input-dim", "64", "--epochs", "2", "--optimizer", "sgd", "--loss",
            "mse", "--plot", "--model-name", "dg", "--seed", "3", "--threads", "1"]  # fmt: skip
    rc, out, err = _run(capsys, args)
    assert rc == 0, err
    png = tmp_path / "trained_models" / "dg.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args,match",
    [
        (["--hidden-dims", "64", "x"], "--hidden-dims takes whole numbers"),
        (["--modalities", "text", "video", "--multimodal"], "unknown modality 'video'"),
        (["--fusion-method", "mean"], "--fusion-method must be one of"),
        (["--loss", "hinge"], "--loss must be one of"),
        (["--dataset", "mnist"], "--dataset must be one of"),
        (["--dataset", "digits", "--input-dim", "10"], "--input-dim 10 does not match the data's 64 features"),
        (["--epochs", "0"], "--epochs"),
    ],
)
def test_bad_arguments(capsys, args, match):
    rc, out, err = _run(capsys, ["train", *args])
    assert rc == 1 and match in err, err


def test_same_seed_same_model(capsys, tmp_path):
    for name in ("a", "b"):
        assert _run(capsys, ["train", "--n-samples", "80", "--input-dim", "6", "--epochs", "2", "--seed", "7",
                             "--save-model", "--model-name", name])[0] == 0  # fmt: skip
    a = json.loads((tmp_path / "trained_models" / "a.json").read_text())
    b = json.loads((tmp_path / "trained_models" / "b.json").read_text())
    assert a == b


def test_quantize_command(capsys, tmp_path):
    PentaryModel(12, 3, [6]).save(tmp_path / "m.json")
    rc, out, err = _run(capsys, ["quantize", "m.json", "-o", "q.json", "--method", "per_tensor"])
    assert rc == 0, err
    d = json.loads((tmp_path / "q.json").read_text())
    assert isinstance(d["layers"][0]["weight_scale"], float) and "weight_float" not in d["layers"][0]
    assert PentaryModel.load(tmp_path / "q.json").output_dim == 3
    (tmp_path / "bad.json").write_text("[1, 2")
    rc, out, err = _run(capsys, ["quantize", "bad.json", "-o", "q2.json"])
    assert rc == 1 and "invalid JSON" in err and not (tmp_path / "q2.json").exists()


def test_convert_command_errors(capsys, tmp_path):
    rc, out, err = _run(capsys, ["convert", "model.tflite", "-o", "x.json"])
    assert rc == 1 and "expected a .onnx, .pt2, .pt or .pth file" in err
    rc, out, err = _run(capsys, ["convert", "missing.onnx"])
    assert rc == 1 and "missing.onnx: error: no such file" in err
