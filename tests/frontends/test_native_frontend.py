"""The native frontend: trainer JSON models import with their pents intact and compute what the trainer does."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pcc import interpreter
from pcc.diagnostics import PccError
from pcc.dialects import nn
from pcc.frontends import load_model, native
from pcc.parser import parse_file
from pcc.printer import write_module
from pcc.verifier import verify_module

trainer_model = pytest.importorskip("pcc.trainer.model")
layers = pytest.importorskip("pcc.trainer.layers")


def _cnn(seed: int = 2):  # noqa: ANN202
    L = layers
    model = trainer_model.PentaryModel.sequential(
        [
            L.PentaryConv2D(1, 4, 3, padding=1),
            L.PentaryBatchNorm(4),
            L.PentaryReLU(),
            L.PentaryMaxPool2D(2),
            L.PentaryConv2D(4, 6, 3, stride=2, padding=1, use_bias=False),
            L.PentaryReLU(),
            L.Flatten(),
            L.Dropout(0.3),
            L.PentaryLinear(24, 10),
        ],
        (1, 8, 8),
        seed=seed,
    )
    rng = np.random.default_rng(seed)
    bn = model.layers[1]
    bn.running_mean[:] = rng.standard_normal(4)
    bn.running_var[:] = rng.random(4) + 0.5
    bn.gamma.value[:] = rng.random(4) + 0.5
    return model


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_matches_trainer_inference(kind: str, tmp_path) -> None:  # noqa: ANN001
    model = trainer_model.PentaryModel(64, 10, [32, 16], seed=1) if kind == "mlp" else _cnn()
    path = tmp_path / f"{kind}.json"
    model.save(path)
    shape = (5, 64) if kind == "mlp" else (5, 1, 8, 8)
    module = native.load(path, {"input": shape})
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = interpreter.run(module, {"input": x})["output"]
    np.testing.assert_allclose(got, model.predict(x), rtol=1e-5, atol=1e-6)


def test_pents_and_scales_are_kept_exactly(tmp_path) -> None:  # noqa: ANN001
    model = _cnn()
    path = tmp_path / "cnn.json"
    model.save(path)
    d = json.loads(path.read_text())
    module = native.load(path)
    dqs = module.main.ops_of(nn.DequantizeWeight)
    assert len(dqs) == 3
    for i in (0, 4, 8):
        q = module.weight_data[f"layer{i}.weight.p5"]
        assert module.weights[f"layer{i}.weight.p5"].type.dtype == "p5"
        np.testing.assert_array_equal(q, np.array(d["layers"][i]["weight_pentary"], np.int8))
        np.testing.assert_array_equal(
            module.weight_data[f"layer{i}.weight.scale"], np.array(d["layers"][i]["weight_scale"], np.float32)
        )
    conv = module.main.ops_of(nn.Conv2d)[0]
    assert isinstance(conv.operands[1].owner, nn.DequantizeWeight)
    assert conv.loc.node == "layer0.conv2d" and conv.loc.file == str(path)
    # the pents survive the .pir/.npz round trip
    write_module(module, tmp_path / "cnn.pir")
    back = parse_file(tmp_path / "cnn.pir")
    verify_module(back)
    np.testing.assert_array_equal(back.weight_data["layer4.weight.p5"], module.weight_data["layer4.weight.p5"])


def test_keep_pentary_false_gives_float_weights(tmp_path) -> None:  # noqa: ANN001
    model = _cnn()
    path = tmp_path / "cnn.json"
    model.save(path)
    a, b = native.load(path), native.load(path, keep_pentary=False)
    assert not b.main.ops_of(nn.DequantizeWeight) and all(v.type.dtype != "p5" for v in b.weights.values())
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(
        interpreter.run(a, {"input": x})["output"], interpreter.run(b, {"input": x})["output"]
    )


def test_seed_format_keys(tmp_path) -> None:  # noqa: ANN001
    """The seed's ModelQuantizer keys: ``weights_pentary`` with a per-tensor ``weights_scale``, pentary bias."""
    rng = np.random.default_rng(3)
    q1, q2 = rng.integers(-2, 3, (8, 4)), rng.integers(-2, 3, (3, 8))
    bq = rng.integers(-2, 3, 8)
    d = {
        "input_dim": 4,
        "output_dim": 3,
        "hidden_dims": [8],
        "layers": [
            {
                "type": "linear",
                "in_features": 4,
                "out_features": 8,
                "use_bias": True,
                "weights_pentary": q1.tolist(),
                "weights_scale": 0.25,
                "bias_pentary": bq.tolist(),
                "bias_scale": 0.1,
            },
            {"type": "relu"},
            {
                "type": "linear",
                "in_features": 8,
                "out_features": 3,
                "use_bias": False,
                "weight_pentary": q2.tolist(),
                "weight_scale": [0.5, 0.125, 1.0],
            },
        ],
    }
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(d))
    module = load_model(path)
    assert module.weights["layer0.weight.scale"].type.shape == ()
    x = rng.standard_normal((1, 4)).astype(np.float32)
    h = np.maximum(x @ (q1 * np.float32(0.25)).astype(np.float32).T + (bq * np.float32(0.1)).astype(np.float32), 0)
    ref = h @ (q2 * np.array([0.5, 0.125, 1.0], np.float32)[:, None]).astype(np.float32).T
    np.testing.assert_allclose(interpreter.run(module, {"input": x})["output"], ref, rtol=1e-6, atol=1e-7)


def test_float_only_weights(tmp_path) -> None:  # noqa: ANN001
    d = {
        "input_dim": 2,
        "layers": [
            {"type": "linear", "in_features": 2, "out_features": 1, "use_bias": False, "weights": [[0.5, -1.5]]}
        ],
    }
    path = tmp_path / "f.json"
    path.write_text(json.dumps(d))
    module = native.load(path)
    assert not module.main.ops_of(nn.DequantizeWeight)
    out = interpreter.run(module, {"input": np.array([[2.0, 1.0]], np.float32)})["output"]
    np.testing.assert_allclose(out, [[-0.5]])


@pytest.mark.parametrize(
    ("layers_json", "message"),
    [
        (
            [{"type": "linear", "in_features": 4, "out_features": 2, "use_bias": False}],
            r"layer 0 \(linear\): no weights",
        ),
        (
            [
                {
                    "type": "linear",
                    "in_features": 4,
                    "out_features": 2,
                    "use_bias": False,
                    "weight_pentary": [[0, 1, 2, 3], [0, 0, 0, 0]],
                    "weight_scale": 1.0,
                }
            ],
            r"layer 0 \(linear\): 'weight_pentary' must hold integers in -2..2",
        ),
        (
            [
                {
                    "type": "linear",
                    "in_features": 4,
                    "out_features": 2,
                    "use_bias": False,
                    "weight_pentary": [[0, 1, 2]],
                    "weight_scale": 1.0,
                }
            ],
            r"layer 0 \(linear\): 'weight_pentary' has shape \[1, 3\], expected \[2, 4\]",
        ),
        ([{"type": "linear", "in_features": 5, "out_features": 2}], r"layer 0 \(linear\): expects 5 input features"),
        (
            [{"type": "relu"}, {"type": "lstm"}, {"type": "gru"}],
            r"unsupported layer types: layer 1 \('lstm'\), layer 2 \('gru'\)",
        ),
        ([{"type": "relu"}, {"type": "gelu"}], r"layer 1 \(gelu\): 'gelu' belongs to sequence models"),
        (
            [
                {
                    "type": "linear",
                    "in_features": 4,
                    "out_features": 2,
                    "use_bias": True,
                    "weight_pentary": [[0] * 4] * 2,
                    "weight_scale": [1.0, 1.0],
                }
            ],
            r"use_bias is true but there is no bias",
        ),
    ],
)
def test_bad_layers_name_the_layer(tmp_path, layers_json, message) -> None:  # noqa: ANN001
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"input_dim": 4, "layers": layers_json}))
    with pytest.raises(PccError, match=message):
        native.load(path)


def test_bad_json_points_at_the_error(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "broken.json"
    path.write_text('{"input_dim": 4,\n "layers": [}\n')
    with pytest.raises(PccError) as info:
        native.load(path)
    assert info.value.loc.line == 2 and "invalid JSON" in info.value.message
    with pytest.raises(PccError, match="no such file"):
        native.load(tmp_path / "nope.json")


def test_input_shape_checks(tmp_path) -> None:  # noqa: ANN001
    model = _cnn()
    path = tmp_path / "cnn.json"
    model.save(path)
    flat = native.load(path, {"input": (2, 64)})  # the trainer's flat input convention
    x = np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)
    np.testing.assert_allclose(interpreter.run(flat, {"input": x})["output"], model.predict(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(PccError, match="does not match the model's per-sample input shape"):
        native.load(path, {"input": (2, 63)})
    with pytest.raises(PccError, match="only input is 'input'"):
        native.load(path, {"x": (2, 64)})
