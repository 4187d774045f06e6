"""The model JSON format: seed keys, extensions, round trips, atomic writes, clear load errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pcc.diagnostics import PccError
from pcc.trainer.layers import Flatten, PentaryBatchNorm, PentaryConv2D, PentaryLinear, PentaryMaxPool2D, PentaryReLU
from pcc.trainer.model import PentaryModel
from pcc.trainer.trainer import PentaryTrainer


def _cnn(seed: int = 0) -> PentaryModel:
    layers = [
        PentaryConv2D(1, 4, 3, padding=1), PentaryBatchNorm(4), PentaryReLU(), PentaryMaxPool2D(2),
        Flatten(), PentaryLinear(64, 10),
    ]  # fmt: skip
    return PentaryModel.sequential(layers, (1, 8, 8), seed=seed)


def test_mlp_json_has_the_seed_keys(tmp_path):
    model = PentaryModel(512, 10, [128, 64])
    model.save(tmp_path / "m.json")
    d = json.loads((tmp_path / "m.json").read_text())
    assert d["input_dim"] == 512 and d["output_dim"] == 10 and d["hidden_dims"] == [128, 64]
    assert [ly["type"] for ly in d["layers"]] == ["linear", "relu", "linear", "relu", "linear"]
    lin = d["layers"][0]
    for key in ("in_features", "out_features", "use_bias", "weight_pentary", "bias_pentary", "weight_scale",
                "bias_scale", "bias", "weight_float"):  # fmt: skip
        assert key in lin, key
    q = np.asarray(lin["weight_pentary"])
    assert q.shape == (128, 512) and set(np.unique(q)) <= {-2, -1, 0, 1, 2}
    assert len(lin["weight_scale"]) == 128  # per output channel
    assert isinstance(lin["bias_scale"], float)
    w = np.asarray(lin["weight_float"], np.float32)
    np.testing.assert_array_equal(w, model.layers[0].weight.value)


def test_cnn_json_layers_and_round_trip(tmp_path, rng):
    model = _cnn()
    x = rng.random((5, 64)).astype(np.float32)
    model.layers[1].running_mean[...] = rng.standard_normal(4)
    model.save(tmp_path / "cnn.json")
    d = json.loads((tmp_path / "cnn.json").read_text())
    assert d["input_shape"] == [1, 8, 8]
    conv = d["layers"][0]
    assert conv["type"] == "conv2d" and conv["kernel_size"] == [3, 3] and conv["stride"] == [1, 1]
    assert conv["padding"] == [1, 1] and np.asarray(conv["weight_pentary"]).shape == (4, 1, 3, 3)
    bn = d["layers"][1]
    assert set(bn) >= {"gamma", "beta", "running_mean", "running_var", "eps", "num_features"}
    assert d["layers"][3] == {"type": "maxpool2d", "kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]}
    loaded = PentaryModel.load(tmp_path / "cnn.json")
    for quantized in (True, False):
        np.testing.assert_array_equal(loaded.predict(x, quantized), model.predict(x, quantized))
    loaded.save(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == d


def test_pentary_only_json_loads_and_dequantizes(tmp_path, rng):
    model = PentaryModel(16, 4, [8])
    d = model.to_dict(include_float=False)
    assert "weight_float" not in d["layers"][0]
    loaded = PentaryModel.from_dict(json.loads(json.dumps(d)))
    x = rng.random((3, 16)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)
    q, s = model.layers[0].quantized()
    np.testing.assert_allclose(loaded.layers[0].weight.value, q * s[:, None], rtol=1e-6)


def test_seed_style_scalar_scale_and_missing_float_bias(rng):
    d = {
        "input_dim": 4, "output_dim": 2, "hidden_dims": [],
        "layers": [{"type": "linear", "in_features": 4, "out_features": 2, "use_bias": True,
                    "weight_pentary": [[1, 0, -1, 2], [0, 0, 1, -2]], "bias_pentary": [1, -1],
                    "weight_scale": 0.05, "bias_scale": 0.01}],
    }  # fmt: skip
    m = PentaryModel.from_dict(d)
    np.testing.assert_allclose(m.layers[0].weight.value, np.array([[1, 0, -1, 2], [0, 0, 1, -2]]) * 0.05, rtol=1e-6)
    np.testing.assert_allclose(m.layers[0].bias.value, [0.01, -0.01], rtol=1e-6)


def test_save_is_atomic_and_refuses_nan(tmp_path):
    model = PentaryModel(4, 2, [3])
    model.save(tmp_path / "m.json")
    before = (tmp_path / "m.json").read_text()
    model.layers[0].weight.value[0, 0] = np.nan
    trainer = PentaryTrainer(model, log=None)
    with pytest.raises(PccError, match="NaN|infinite"):
        trainer.save_model(tmp_path / "m.json")
    assert (tmp_path / "m.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary files left behind


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d["layers"][0].pop("in_features"), "layer 0 \\(linear\\): missing key"),
        (lambda d: d["layers"][0].update(weight_float=[[1.0]]), "layer 0 \\(linear\\): weight_float has shape"),
        (lambda d: d["layers"].append({"type": "softmax"}), "unknown layer type 'softmax'"),
        (lambda d: d["layers"][2].update(in_features=7), "layer 2"),
        (lambda d: d["layers"][0].update(weight_pentary=[[3] * 4] * 3, weight_float=None) or
         d["layers"][0].pop("weight_float"), "integers in -2..2"),
    ],
)  # fmt: skip
def test_bad_model_json_is_one_clear_error(mutate, match):
    d = PentaryModel(4, 2, [3]).to_dict()
    mutate(d)
    with pytest.raises(PccError, match=match):
        PentaryModel.from_dict(d)


def test_invalid_json_file(tmp_path):
    (tmp_path / "bad.json").write_text('{"layers": [}')
    with pytest.raises(PccError) as err:
        PentaryModel.load(tmp_path / "bad.json")
    assert "invalid JSON" in err.value.format() and "bad.json:1:" in err.value.format()
    with pytest.raises(PccError, match="no such file"):
        PentaryModel.load(tmp_path / "missing.json")


def test_loaded_model_evaluates_and_continues_training(tmp_path, rng):
    x = rng.standard_normal((200, 10)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    trainer = PentaryTrainer(PentaryModel(10, 2, [16]), log=None)
    trainer.train((x, y), (x, y), epochs=3, batch_size=20)
    trainer.save_model(tmp_path / "m.json")
    loss_before, acc_before = trainer.evaluate((x, y))
    t2 = PentaryTrainer(PentaryModel(128, 10), log=None)
    t2.load_model(tmp_path / "m.json")
    assert t2.model.input_dim == 10
    assert t2.evaluate((x, y)) == pytest.approx((loss_before, acc_before))
    t2.train((x, y), (x, y), epochs=5, batch_size=20)
    assert t2.evaluate((x, y))[0] < loss_before


def test_quantized_model_keeps_bn_fold_exact(rng):
    """Per-channel scales: folding BatchNorm into the conv changes scales only, never the pents."""
    model = _cnn()
    conv, bn = model.layers[0], model.layers[1]
    bn.gamma.value[...] = rng.uniform(0.5, 2, 4)
    bn.running_var[...] = rng.uniform(0.5, 2, 4)
    q, s = conv.quantized()
    factor = bn.gamma.value / np.sqrt(bn.running_var + bn.eps)
    from pcc.quant import quantize_weights

    q2, s2 = quantize_weights(conv.weight.value * factor[:, None, None, None])
    np.testing.assert_array_equal(q2, q)
    np.testing.assert_allclose(s2, s * factor, rtol=1e-5)


def test_per_tensor_training_writes_the_seeds_scalar_scale(tmp_path, capsys):
    from pcc import quant
    from pcc.cli import main

    rc = main(["train", "--n-samples", "60", "--input-dim", "6", "--epochs", "2", "--per-tensor", "--save-model",
               "--model-name", "pt"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    path = tmp_path / "trained_models" / "pt.json"
    d = json.loads(path.read_text())
    assert d["quantization"] == {"method": "mse", "granularity": "per_tensor"}
    for layer in (ly for ly in d["layers"] if ly["type"] == "linear"):
        assert isinstance(layer["weight_scale"], float)  # a number, as in the seed's format
        q, s = quant.quantize_weights(np.asarray(layer["weight_float"], np.float32), per_channel=False)
        assert layer["weight_pentary"] == q.tolist() and layer["weight_scale"] == float(s)
    loaded = PentaryModel.load(path)
    assert not loaded.weight_layers()[0].per_channel
    loaded.save(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == d


def test_the_quantizers_older_key_set_is_still_read(tmp_path, rng):
    from pcc.trainer.quantizer import ModelQuantizer

    w = rng.standard_normal((3, 4)).astype(np.float32)
    seed_dict = {"layers": [{"type": "linear", "weights": w.tolist(), "bias": [0.1, 0.2, 0.3]}]}
    out = ModelQuantizer("per_tensor").quantize_model_from_dict(seed_dict)
    layer = out["layers"][0]
    assert {"weight_pentary", "weight_scale"} <= set(layer) and "weights" not in layer
    old = dict(layer)
    old["weights_pentary"], old["weights_scale"] = old.pop("weight_pentary"), old.pop("weight_scale")
    x = rng.standard_normal((5, 4)).astype(np.float32)
    a = PentaryModel.from_dict(out).predict(x)
    b = PentaryModel.from_dict({**out, "layers": [old]}).predict(x)
    np.testing.assert_array_equal(a, b)
    ref = x @ (np.asarray(layer["weight_pentary"]) * layer["weight_scale"]).T + np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-6)


def test_jsonable_rows_of_plain_numbers_match_the_element_by_element_rule() -> None:
    """Rows of plain ints or floats take a fast path; its result must be what converting each element gives."""
    import math

    from pcc.trainer.model_format import jsonable

    doc = {
        "ints": [1, -2, 10**400],
        "floats": [0.5, -1e300],
        "mixed": [1, 2.5, True, np.int64(3), np.float32(0.25)],
        "rows": ([1, 2], (3.0, 4.0)),
        "bools": [True, False],
        "empty": [],
        "arr": np.arange(4, dtype=np.int8).reshape(2, 2),
    }
    out = jsonable(doc)
    assert out == {
        "ints": [1, -2, 10**400],
        "floats": [0.5, -1e300],
        "mixed": [1, 2.5, True, 3, 0.25],
        "rows": [[1, 2], [3.0, 4.0]],
        "bools": [True, False],
        "empty": [],
        "arr": [[0, 1], [2, 3]],
    }
    assert type(out["rows"][1]) is list and out["ints"] is not doc["ints"]  # copies, tuples become lists
    assert [type(v) for v in out["mixed"]] == [int, float, bool, int, float]
    json.dumps(out, allow_nan=False)
    for bad in ([1.0, math.nan], [math.inf], (2.0, -math.inf), [1, math.nan]):
        with pytest.raises(ValueError, match="NaN or infinite"):
            jsonable({"w": [bad]})
