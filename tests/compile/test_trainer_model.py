"""A trainer-format (JSON) model with pentary weights compiles keeping its pents exactly; the program on the
simulator matches the float reference to the activation rounding."""

from __future__ import annotations

import json

import numpy as np
from compile_helpers import sim_matches_reference

from pcc import interpreter
from pcc.backend.assembler import assemble_file
from pcc.backend.codegen import write_program
from pcc.drivers.compile import compile_module
from pcc.frontends import load_model
from pcc.passes.pipeline import default_passes
from pcc.runtime.simulator import run_program


def test_json_pentary_model(tmp_path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(3)
    q1, q2 = rng.integers(-2, 3, (8, 4)), rng.integers(-2, 3, (3, 8))
    d = {
        "input_dim": 4,
        "layers": [
            {
                "type": "linear",
                "in_features": 4,
                "out_features": 8,
                "use_bias": True,
                "weights_pentary": q1.tolist(),
                "weights_scale": 0.25,
                "bias_pentary": rng.integers(-2, 3, 8).tolist(),
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
    path = tmp_path / "m.json"
    path.write_text(json.dumps(d))
    x = rng.standard_normal((64, 4)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", input=x)
    float_model = load_model(path)
    ref = np.concatenate([interpreter.run(float_model, {"input": x[i : i + 1]})["output"] for i in range(8)])
    m = load_model(path)
    result = compile_module(m, default_passes(calibration=tmp_path / "cal.npz"))
    gemms = [op for op in m.main.body if op.name == "pent.gemm"]
    np.testing.assert_array_equal(m.weight(gemms[0].operands[1]), q1)  # the trainer's pents, unchanged
    np.testing.assert_array_equal(m.weight(gemms[1].operands[1]), q2)
    write_program(result.compiled, tmp_path / "m.pasm")
    prog = assemble_file(tmp_path / "m.pasm")
    sim_matches_reference(m, prog, seeds=2)
    out = run_program(prog, {"input": x[:8]})["output"]
    assert np.max(np.abs(out - ref)) < 1e-4 * np.max(np.abs(ref))
