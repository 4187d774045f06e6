"""The torch engine (``pcc train --engine torch``) against the NumPy engine, torch's own ops and itself.

Parity runs on continuous inputs (digits plus Gaussian noise): on the raw digits (multiples of 1/16) and
pentary weights many pre-activations are exactly zero, and the sign of a rounding residue there (which the
two engines' products sum in different orders) decides the ReLU's subgradient, so trajectories part after a
few steps although both engines compute the same function.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pcc import quant  # noqa: E402
from pcc.cli import main  # noqa: E402
from pcc.diagnostics import PccError  # noqa: E402
from pcc.trainer import checkpoint, torch_quant  # noqa: E402
from pcc.trainer.data import load_digits_dataset, make_multimodal_dataset, split  # noqa: E402
from pcc.trainer.layers import (  # noqa: E402
    Dropout,
    Flatten,
    PentaryBatchNorm,
    PentaryConv2D,
    PentaryLinear,
    PentaryMaxPool2D,
    PentaryReLU,
)
from pcc.trainer.model import PentaryModel  # noqa: E402
from pcc.trainer.multimodal import MultimodalFusion, TextProcessor, TextTuner  # noqa: E402
from pcc.trainer.torch_engine import TorchTrainer  # noqa: E402
from pcc.trainer.trainer import LossFunction, PentaryTrainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def noisy_digits(n: int = 800) -> tuple[np.ndarray, np.ndarray]:
    train, _ = load_digits_dataset()
    x = np.asarray(train.x, np.float32).reshape(len(train.x), -1)[:n]
    x = x + np.random.default_rng(1).normal(0, 0.05, x.shape).astype(np.float32)
    return x, train.y[:n]


def mlp(seed: int = 0) -> PentaryModel:
    return PentaryModel(64, 10, [32, 16], seed=seed)


def cnn(seed: int = 0) -> PentaryModel:
    # no bias before a BatchNorm: its gradient would be zero up to rounding noise (which Adam normalises into
    # full steps of arbitrary sign), and the running mean would carry that noise into inference
    layers = [
        PentaryConv2D(1, 8, 3, padding=1, use_bias=False), PentaryBatchNorm(8), PentaryReLU(), PentaryMaxPool2D(2),
        PentaryConv2D(8, 8, 3, padding=1, use_bias=False), PentaryBatchNorm(8), PentaryReLU(), PentaryMaxPool2D(2),
        Flatten(), PentaryLinear(8 * 2 * 2, 16, use_bias=False), PentaryBatchNorm(16), PentaryReLU(),
        PentaryLinear(16, 10),
    ]  # fmt: skip
    return PentaryModel.sequential(layers, (1, 8, 8), seed=seed)


def pents(model: PentaryModel) -> list[np.ndarray]:
    return [layer.quantized()[0] for layer in model.weight_layers()]


# --- parity with the NumPy engine ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, options",
    [
        (mlp, {}),
        (mlp, {"optimizer": "sgd", "weight_decay": 1e-3, "loss_fn": "mse", "schedule": "constant"}),
        (cnn, {}),
        (mlp, {"quant": "max"}),
    ],
    ids=["mlp-adam", "mlp-sgd-mse-decay", "cnn-bn-adam", "mlp-max-scales"],
)
def test_numpy_and_torch_engines_agree_step_by_step(build, options):
    x, y = noisy_digits(800)  # batch 16: 50 steps an epoch, 2 epochs = 100 steps (an epoch boundary inside)
    options = dict(options)
    loss_name = options.pop("loss_fn", "cross_entropy")
    method = options.pop("quant", "mse")
    models = [build(0), build(0)]
    for m in models:
        for layer in m.weight_layers():
            layer.quant_method = method
    np_losses: list[float] = []
    loss = LossFunction.cross_entropy_loss if loss_name == "cross_entropy" else LossFunction.mse_loss

    def recording(out, targets):
        value, grad = loss(out, targets)
        np_losses.append(value)
        return value, grad

    ref = PentaryTrainer(models[0], recording, 0.01, log=None, **options)
    ref.train((x, y), None, epochs=2, batch_size=16)
    ours = TorchTrainer(models[1], loss_name, 0.01, log=None, device="cpu", record_steps=True, **options)
    ours.train((x, y), None, epochs=2, batch_size=16)
    assert len(ours.step_losses) == 100
    a, b = np.array(np_losses[:100]), np.array(ours.step_losses)
    np.testing.assert_allclose(b, a, rtol=1e-4)
    for p, q in zip(pents(ref.model), pents(ours.model), strict=True):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_allclose(ours.model.flat_values, ref.model.flat_values, rtol=0, atol=1e-4)
    assert ours.metrics["train_acc_pentary"] == pytest.approx(ref.metrics["train_acc_pentary"], abs=1 / 800)
    assert ours.metrics["engine"] == {
        "name": "torch",
        "device": "cpu",
        "precision": "fp32",
        "world_size": 1,
        "compile": False,
        "cuda_graph": False,
    }


def test_inference_matches_numpy_for_every_layer_rule():
    # maxpool padding beyond half a window takes the explicit -inf padding path; dropout is the identity
    layers = [
        PentaryConv2D(2, 4, 3, stride=2, padding=1), PentaryBatchNorm(4), PentaryReLU(),
        PentaryMaxPool2D(3, stride=1, padding=2), PentaryMaxPool2D(2), Flatten(), Dropout(0.3),
        PentaryLinear(4 * 2 * 2, 5),
    ]  # fmt: skip
    model = PentaryModel.sequential(layers, (2, 5, 5), seed=3)
    bn = model.layers[1]
    bn.running_mean[...] = [0.1, -0.2, 0.3, 0.0]
    bn.running_var[...] = [0.5, 2.0, 1.0, 1.5]
    x = np.random.default_rng(0).standard_normal((7, 50)).astype(np.float32)
    tr = TorchTrainer(model, log=None, device="cpu")
    for quantized in (True, False):
        np.testing.assert_allclose(tr.predict(x, quantized), model.predict(x, quantized), rtol=1e-5, atol=1e-5)


# --- the quantizer on the device ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, per_channel", [((32, 64), True), ((8, 3, 3, 3), True), ((40, 7), False)])
def test_torch_scale_search_and_tracking_match_pcc_quant(shape, per_channel):
    rng = np.random.default_rng(5)
    w = (rng.standard_normal(shape) * rng.uniform(0.1, 3.0, (shape[0],) + (1,) * (len(shape) - 1))).astype(np.float32)
    w[1] = 0  # an all-zero channel gets scale 1
    q, s = quant.quantize_weights(w, per_channel, 0, "mse")
    st = torch_quant.search_scale(torch.from_numpy(w), per_channel).numpy()
    np.testing.assert_allclose(st, s, rtol=1e-5)
    np.testing.assert_array_equal(quant.quantize_with_scale(w, st, per_channel), q)
    start = np.asarray(s, np.float32) * np.float32(1.2)
    _, s2 = quant.quantize_weights(w, per_channel, 0, "mse", init_scale=start, refine_steps=2)
    s2t = torch_quant.track_scale(torch.from_numpy(w), torch.as_tensor(start), per_channel).numpy()
    np.testing.assert_allclose(s2t, s2, rtol=1e-5)


@pytest.mark.parametrize("width", [2, 32])
def test_fused_tracking_of_many_tensors_matches_pcc_quant_per_tensor(width):
    # the training step's one pass over all layers: rows of several lengths (the longest, one whole tensor of
    # 280, reduced over eight levels at width 2), an all-zero channel, a row without a previous scale
    rng = np.random.default_rng(7)
    specs = [((16, 1, 3, 3), True), ((12, 16, 3, 3), True), ((10, 128), True), ((40, 7), False), ((3, 9), True)]
    rows, prevs, refs = [], [], []
    for shape, per_channel in specs:
        w = (rng.standard_normal(shape) * rng.uniform(0.1, 3.0, (shape[0],) + (1,) * (len(shape) - 1))).astype(
            np.float32
        )
        w[1] = 0
        rows.append(torch.from_numpy(w.reshape(shape[0], -1) if per_channel else w.reshape(1, -1)))
        start = np.asarray(quant.quantize_weights(w, per_channel, 0, "mse")[1], np.float32).reshape(-1) * 1.2
        start[0] = 0.0 if per_channel else start[0]  # no previous scale: refinement starts at max|w| / 2
        prevs.append(start.astype(np.float32))
        _, s = quant.quantize_weights(w, per_channel, 0, "mse", init_scale=start, refine_steps=2)
        refs.append(np.asarray(s, np.float32).reshape(-1))
    plan = torch_quant.RowPlan([tuple(r.shape) for r in rows], width=width)
    assert plan.rows == sum(r.shape[0] for r in rows) and len(plan.levels) == (8 if width == 2 else 1)
    chunks = plan.chunks([r.abs() for r in rows])
    got = torch_quant.track_rows(chunks, torch.from_numpy(np.concatenate(prevs)), plan.chunk_row, *plan.levels)
    np.testing.assert_allclose(got.numpy(), np.concatenate(refs), rtol=1e-5)
    sums = plan.reduce(chunks.sum(dim=1)).numpy()
    np.testing.assert_allclose(sums, np.concatenate([r.abs().sum(dim=1).numpy() for r in rows]), rtol=1e-5)
    assert plan.reduce(chunks.amax(dim=1), "amax").numpy().tolist() == [
        v for r in rows for v in r.abs().amax(dim=1).tolist()
    ]


def test_bf16_autocast_keeps_every_weight_a_pent_times_its_channel_scale():
    x, y = noisy_digits(128)
    tr = TorchTrainer(cnn(0), "cross_entropy", 0.01, log=None, device="cpu", precision="bf16")
    tr.train((x, y), None, epochs=1, batch_size=32)
    assert tr.metrics["engine"]["precision"] == "bf16"
    seen = []

    def record(mod, args):
        w = mod.effective_weight().detach()  # training mode: sets the step's scale too
        seen.append((w, mod.train_scale))

    hooks = [m.register_forward_pre_hook(record) for m in tr.net.weight_layers()]
    tr.net.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tr.net(torch.from_numpy(x[:32]))
    for h in hooks:
        h.remove()
    assert len(seen) == 4
    for w, s in seen:
        wb = w.bfloat16().float()  # what autocast hands the product
        sb = s.bfloat16().float().reshape((-1,) + (1,) * (w.dim() - 1))
        ratio = wb / sb  # bf16(q s) == q bf16(s): the pent survives the rounding exactly
        assert torch.equal(ratio, ratio.round()) and ratio.abs().max() == 2
    fp32 = TorchTrainer(cnn(0), "cross_entropy", 0.01, log=None, device="cpu").predict(x[:64])
    bf16 = TorchTrainer(cnn(0), "cross_entropy", 0.01, log=None, device="cpu", precision="bf16").predict(x[:64])
    np.testing.assert_allclose(bf16, fp32, rtol=0.05, atol=0.05)


# --- command line, model file, checkpoints ------------------------------------------------------------------


def _cli(args: list[str]) -> int:
    return main(["train", "--dataset", "digits", "--input-dim", "64", "--hidden-dims", "32", "16", *args])


def test_cli_torch_engine_writes_a_model_that_compiles(capsys, tmp_path):
    args = ["--engine", "torch", "--device", "cpu", "--epochs", "2", "--save-model", "--model-name", "t", "--plot"]
    assert _cli(args) == 0
    out = capsys.readouterr().out
    assert "engine: torch on cpu, fp32, 1 process(es)" in out and "epoch   2/2" in out
    model_file = tmp_path / "trained_models" / "t.json"
    metrics = json.loads((tmp_path / "trained_models" / "t.metrics.json").read_text())
    assert metrics["metrics"]["engine"]["name"] == "torch" and len(metrics["history"]) == 2
    assert (tmp_path / "trained_models" / "t.png").stat().st_size > 1000
    model = PentaryModel.load(model_file)
    test = load_digits_dataset()[1]
    acc = model.accuracy(np.asarray(test.x, np.float32).reshape(len(test.x), -1), test.y)
    assert acc == pytest.approx(metrics["metrics"]["val_acc_pentary"], abs=1e-9)
    assert main(["compile", str(model_file), "--emit", "asm", "-o", str(tmp_path / "t.pasm")]) == 0
    assert (tmp_path / "t.pasm").stat().st_size > 0


@pytest.mark.parametrize(
    "args, match",
    [
        (["--checkpoint-every", "2"], "need --engine torch"),
        (["--resume", "x.npz"], "need --engine torch"),
        (["--compile"], "need --engine torch"),
        (["--engine", "jax"], "--engine must be one of numpy, torch"),
        (["--engine", "torch", "--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
        (["--engine", "torch", "--device", "cpu", "--precision", "fp8"], "precision must be one of"),
        (["--engine", "torch", "--device", "cpu", "--resume", "missing.npz"], "checkpoint not found"),
    ],
)
def test_cli_torch_engine_errors(capsys, args, match):
    assert _cli(["--epochs", "1", *args]) == 1
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_missing_torch_is_one_clear_error(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    assert _cli(["--epochs", "1", "--engine", "torch"]) == 1
    err = capsys.readouterr().err
    assert "the torch engine needs PyTorch" in err and "pip install 'pcc[torch]'" in err


def _train_cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "pcc", "train", "--engine", "torch", "--device", "cpu", "--dataset", "digits",
        "--input-dim", "64", "--epochs", "10", "--save-model", "--output-dir", str(out), "--model-name", "m", *extra,
    ]  # fmt: skip


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    full = tmp_path / "full"
    assert main(_train_cmd(full)[3:]) == 0
    killed = tmp_path / "killed"
    ckpt = killed / "m.ckpt.npz"
    proc = subprocess.Popen(_train_cmd(killed, "--checkpoint-every", "1"), env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ckpt.exists(), "no checkpoint was written"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert not (killed / "m.json").exists(), "the run finished before it was killed"
    # every entry is plain data: readable without pickles
    with np.load(ckpt, allow_pickle=False) as z:
        assert {"state", "opt.0.exp_avg"} <= set(z.files)
    assert main(_train_cmd(killed, "--resume", str(ckpt))[3:]) == 0
    assert (killed / "m.json").read_bytes() == (full / "m.json").read_bytes()
    hist_full = json.loads((full / "m.metrics.json").read_text())["history"]
    hist_res = json.loads((killed / "m.metrics.json").read_text())["history"]
    assert [r["train_loss"] for r in hist_res] == [r["train_loss"] for r in hist_full]


def _small_checkpoint(tmp_path: Path, **options) -> tuple[TorchTrainer, Path]:
    x, y = noisy_digits(64)
    path = tmp_path / "c.ckpt.npz"
    tr = TorchTrainer(mlp(0), log=None, device="cpu", checkpoint_every=1, checkpoint_path=path, **options)
    tr.train((x, y), None, epochs=2, batch_size=32)
    return tr, path


def test_checkpoint_is_validated_before_use(tmp_path):
    _, path = _small_checkpoint(tmp_path)
    fresh = TorchTrainer(PentaryModel(64, 10, [32, 8]), log=None, device="cpu")
    with pytest.raises(PccError, match=r"entry 'param.layers.2.weight': shape \[8, 32\], expected|shape"):
        fresh.load_checkpoint(path)
    other_lr = TorchTrainer(mlp(0), "cross_entropy", 0.02, log=None, device="cpu")
    with pytest.raises(PccError, match="learning_rate = 0.01, this run has 0.02"):
        other_lr.load_checkpoint(path)
    other_opt = TorchTrainer(mlp(0), log=None, device="cpu", optimizer="sgd")
    with pytest.raises(PccError, match="unexpected entry|missing entries"):
        other_opt.load_checkpoint(path)
    same = TorchTrainer(mlp(0), log=None, device="cpu")
    same.load_checkpoint(path)
    with pytest.raises(PccError, match="the checkpointed run had epochs = 2, this one has 3"):
        same.train(noisy_digits(64), None, epochs=3, batch_size=32)
    # a pickled object array, a huge declared shape and a non-zip file are refused before any allocation
    arrays = dict(np.load(path, allow_pickle=False))
    bad = tmp_path / "bad.npz"
    checkpoint.write(bad, {**arrays, "state": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(PccError, match="entry 'state': dtype object"):
        TorchTrainer(mlp(0), log=None, device="cpu").load_checkpoint(bad)
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (1 << 40,)})
        zf.writestr("state.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:])
    huge = tmp_path / "huge.npz"
    huge.write_bytes(buf.getvalue())
    with pytest.raises(PccError, match="at most"):
        TorchTrainer(mlp(0), log=None, device="cpu").load_checkpoint(huge)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(PccError, match="not a checkpoint"):
        TorchTrainer(mlp(0), log=None, device="cpu").load_checkpoint(tmp_path / "text.npz")


def test_dropout_run_resumes_exactly(tmp_path):
    layers = [PentaryLinear(64, 32), PentaryReLU(), Dropout(0.2), PentaryLinear(32, 10)]
    x, y = noisy_digits(96)
    path = tmp_path / "d.ckpt.npz"
    full = TorchTrainer(PentaryModel.sequential(layers, (64,)), log=None, device="cpu")
    full.train((x, y), None, epochs=3, batch_size=32)
    first = TorchTrainer(
        PentaryModel.sequential([PentaryLinear(64, 32), PentaryReLU(), Dropout(0.2), PentaryLinear(32, 10)], (64,)),
        log=None,
        device="cpu",
        checkpoint_every=1,
        checkpoint_path=path,
    )
    first.train((x, y), None, epochs=3, batch_size=32)
    np.testing.assert_array_equal(first.model.flat_values, full.model.flat_values)
    resumed = TorchTrainer(
        PentaryModel.sequential([PentaryLinear(64, 32), PentaryReLU(), Dropout(0.2), PentaryLinear(32, 10)], (64,)),
        log=None,
        device="cpu",
    )
    resumed.load_checkpoint(path)  # written after epoch 2
    resumed.train((x, y), None, epochs=3, batch_size=32)
    np.testing.assert_array_equal(resumed.model.flat_values, full.model.flat_values)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]


# --- distributed ----------------------------------------------------------------------------------------------

_WORKER = """
import sys
import numpy as np
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
from test_torch_engine import cnn, noisy_digits
from pcc.trainer.torch_engine import TorchTrainer
x, y = noisy_digits(400)
tr = TorchTrainer(cnn(0), "cross_entropy", 0.01, log=None, device="cpu")
tr.train((x, y), None, epochs=2, batch_size=40)
if tr.is_main_process:
    np.save({out!r}, tr.model.flat_values)
    with open({out!r} + ".json", "w") as f:
        import json
        json.dump({{"metrics": tr.metrics, "history": tr.history}}, f)
from pcc.cli import main
rc = main({cli!r})
tr.close()
sys.exit(rc)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_follow_the_single_process_run(tmp_path):
    """torchrun with 2 CPU processes (gloo, loopback) == 1 process with the same global batch: a CNN with
    BatchNorm through the API (batch statistics reduced over the ranks) and an MLP through ``pcc train``."""
    cli = ["train", "--engine", "torch", "--device", "cpu", "--dataset", "digits", "--input-dim", "64",
           "--hidden-dims", "32", "--epochs", "2", "--batch-size", "64", "--save-model",
           "--output-dir", str(tmp_path / "dist"), "--model-name", "m"]  # fmt: skip
    script = tmp_path / "worker.py"
    out = str(tmp_path / "cnn.npy")
    script.write_text(_WORKER.format(root=str(ROOT), tests=str(Path(__file__).parent), out=out, cli=cli))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), str(script)]  # fmt: skip
    proc = subprocess.run(run, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    x, y = noisy_digits(400)
    single = TorchTrainer(cnn(0), "cross_entropy", 0.01, log=None, device="cpu")
    single.train((x, y), None, epochs=2, batch_size=40)
    np.testing.assert_allclose(np.load(out), single.model.flat_values, rtol=0, atol=1e-5)
    dist = json.loads(Path(out + ".json").read_text())
    assert dist["metrics"]["engine"]["world_size"] == 2
    for a, b in zip(dist["history"], single.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=1e-9)
    assert dist["metrics"]["train_acc_pentary"] == pytest.approx(single.metrics["train_acc_pentary"], abs=1e-9)

    # pcc train under torchrun: one model file, one metrics file, the single process's weights
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == ["m.json", "m.metrics.json"]
    assert main([*cli[:-4], "--output-dir", str(tmp_path / "one"), "--model-name", "m"]) == 0
    d2, d1 = (json.loads((tmp_path / f / "m.json").read_text()) for f in ("dist", "one"))
    for a, b in zip(d2["layers"], d1["layers"], strict=True):
        if "weight_float" in a:
            np.testing.assert_allclose(a["weight_float"], b["weight_float"], rtol=0, atol=1e-5)
            assert a["weight_pentary"] == b["weight_pentary"]
    m2 = json.loads((tmp_path / "dist" / "m.metrics.json").read_text())
    m1 = json.loads((tmp_path / "one" / "m.metrics.json").read_text())
    assert m2["metrics"]["engine"]["world_size"] == 2
    assert m2["metrics"]["val_acc_pentary"] == pytest.approx(m1["metrics"]["val_acc_pentary"], abs=1e-9)
    assert m2["history"][-1]["train_loss"] == pytest.approx(m1["history"][-1]["train_loss"], rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_engine_matches_cpu_engine_in_fp32():
    x, y = noisy_digits(800)
    cpu = TorchTrainer(cnn(0), "cross_entropy", 0.01, log=None, device="cpu", record_steps=True)
    cpu.train((x, y), None, epochs=2, batch_size=16)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    gpu = TorchTrainer(cnn(0), "cross_entropy", 0.01, log=None, device="cuda", precision="fp32", record_steps=True)
    gpu.train((x, y), None, epochs=2, batch_size=16)
    np.testing.assert_allclose(gpu.step_losses, cpu.step_losses, rtol=1e-4)
    for p, q in zip(pents(cpu.model), pents(gpu.model), strict=True):
        np.testing.assert_array_equal(p, q)
    bf = TorchTrainer(cnn(0), "cross_entropy", 0.01, log=None, device="cuda")
    bf.train((x, y), None, epochs=2, batch_size=16)
    assert bf.metrics["engine"]["precision"] == "bf16"
    # bf16 products change the trajectory, not the outcome (on the CPU: 80.5 % against 82.3 % in fp32)
    assert bf.metrics["train_acc_pentary"] == pytest.approx(cpu.metrics["train_acc_pentary"], abs=0.08)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_quantization_step_follows_the_eager_one_on_cuda():
    x, y = noisy_digits(800)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    runs = []
    for compiled in (False, True):
        options = {"precision": "fp32", "record_steps": True, "compile": compiled, "cuda_graph": False}
        tr = TorchTrainer(cnn(0), "cross_entropy", 0.01, log=None, device="cuda", **options)
        tr.train((x, y), None, epochs=2, batch_size=16)
        runs.append(tr)
    np.testing.assert_allclose(runs[1].step_losses, runs[0].step_losses, rtol=1e-4)
    for p, q in zip(pents(runs[0].model), pents(runs[1].model), strict=True):
        np.testing.assert_array_equal(p, q)


def _cuda_cnn_run(x, y, quant_method: str = "mse", **options) -> TorchTrainer:
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = cnn(0)
    for layer in model.weight_layers():
        layer.quant_method = quant_method
    tr = TorchTrainer(
        model, "cross_entropy", 0.01, log=None, device="cuda", precision="fp32", record_steps=True, **options
    )
    tr.train((x, y), None, epochs=2, batch_size=16)
    return tr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("quant_method", ["mse", "max"])
def test_cuda_graph_steps_follow_the_eager_ones(quant_method):
    # 808 samples at batch 16: 50 full batches (two warm-up steps, the capture, then replays) and a last one of 8
    # (eager) every epoch, whose first step (a full search) is eager too: the graph takes over the state the
    # eager steps leave (scales, gradients, BatchNorm statistics) at both ends of each epoch
    x, y = noisy_digits(808)
    eager = _cuda_cnn_run(x, y, quant_method, compile=False, cuda_graph=False)
    graph = _cuda_cnn_run(x, y, quant_method, compile=False, cuda_graph=True)
    assert graph.metrics["engine"]["cuda_graph"] and not eager.metrics["engine"]["cuda_graph"]
    assert len(graph.step_losses) == 102
    np.testing.assert_allclose(graph.step_losses, eager.step_losses, rtol=1e-5)
    for p, q in zip(pents(eager.model), pents(graph.model), strict=True):
        np.testing.assert_array_equal(p, q)
    for a, b in zip(eager.model.layers, graph.model.layers, strict=True):
        if isinstance(a, PentaryBatchNorm):
            np.testing.assert_allclose(b.running_mean, a.running_mean, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(b.running_var, a.running_var, rtol=1e-4, atol=1e-6)
    # compiled quantization inside the graph (what models of COMPILE_MIN_WEIGHTS weights get by default)
    both = _cuda_cnn_run(x, y, quant_method, compile=True)
    assert both.metrics["engine"]["compile"] and both.metrics["engine"]["cuda_graph"]
    assert not graph.metrics["engine"]["compile"]
    np.testing.assert_allclose(both.step_losses, eager.step_losses, rtol=1e-4)
    for p, q in zip(pents(eager.model), pents(both.model), strict=True):
        np.testing.assert_array_equal(p, q)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_follows_eager_with_sgd_mse_validation_and_a_second_run():
    # two parameter groups (weight decay), the mse loss, evaluations between epochs, the kept best epoch
    # copied back, then a second train() call on the same trainer (a new graph over the same parameters)
    x, y = noisy_digits(1000)
    runs = []
    for graph in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = False
        options = {"optimizer": "sgd", "weight_decay": 1e-3, "compile": False, "cuda_graph": graph}
        tr = TorchTrainer(mlp(0), "mse", 0.01, log=None, device="cuda", precision="fp32", record_steps=True, **options)
        tr.train((x[:808], y[:808]), (x[808:], y[808:]), epochs=3, batch_size=16, keep_best=True)
        tr.train((x[:808], y[:808]), None, epochs=1, batch_size=16)
        runs.append(tr)
    eager, graph = runs
    assert graph.metrics["engine"]["cuda_graph"]
    assert len(graph.step_losses) == 4 * 51
    np.testing.assert_allclose(graph.step_losses, eager.step_losses, rtol=1e-5)
    for a, b in zip(eager.history, graph.history, strict=True):
        assert b.get("val_acc") == pytest.approx(a.get("val_acc"), abs=0.011)
    for p, q in zip(pents(eager.model), pents(graph.model), strict=True):
        np.testing.assert_array_equal(p, q)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_failed_capture_leaves_the_run_eager(monkeypatch):
    x, y = noisy_digits(400)
    eager = _cuda_cnn_run(x, y, compile=False, cuda_graph=False)

    def refuse(*args, **kwargs):
        raise RuntimeError("capture refused")

    monkeypatch.setattr(torch.cuda, "graph", refuse)
    with pytest.warns(RuntimeWarning, match="capture refused"):
        tr = _cuda_cnn_run(x, y, compile=False)
    assert not tr.metrics["engine"]["cuda_graph"]
    np.testing.assert_allclose(tr.step_losses, eager.step_losses, rtol=1e-5)


def test_a_failing_compiled_step_falls_back_to_eager():
    x, y = noisy_digits(160)
    ref = TorchTrainer(mlp(0), "cross_entropy", 0.01, log=None, device="cpu", record_steps=True)
    ref.train((x, y), None, epochs=2, batch_size=16)
    tr = TorchTrainer(mlp(0), "cross_entropy", 0.01, log=None, device="cpu", record_steps=True, compile=True)
    tr._ensure_net()

    def broken(*args):
        raise RuntimeError("no compiler here")

    tr.net.step_fn = broken  # what a torch without a working compiler does at the first call
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        tr.train((x, y), None, epochs=2, batch_size=16)
    assert tr.net.step_fn is None and "no compiler here" in tr.net.compile_error
    assert tr.metrics["engine"]["compile"] is False
    np.testing.assert_array_equal(tr.step_losses, ref.step_losses)


def test_compile_and_cuda_graph_options():
    assert TorchTrainer(mlp(0), log=None, device="cpu").compile is False  # auto: on CUDA only
    tr = TorchTrainer(mlp(0), log=None, device="cpu", compile=True)
    tr._ensure_net()
    assert tr.compile is True  # an explicit choice stays
    if torch.cuda.is_available():  # auto on CUDA: by the model's size
        small = TorchTrainer(mlp(0), log=None, device="cuda")
        small._ensure_net()
        assert small.compile is False
        wide = TorchTrainer(PentaryModel(layers=[PentaryLinear(1024, 1024)], input_dim=1024), log=None, device="cuda")
        wide._ensure_net()
        assert wide.compile is True
    with pytest.raises(PccError, match="cuda_graph=True needs a CUDA device"):
        TorchTrainer(mlp(0), log=None, device="cpu", cuda_graph=True)
    with pytest.raises(PccError, match="compile must be True, False or 'auto'"):
        TorchTrainer(mlp(0), log=None, device="cpu", compile="yes")


def test_keep_best_and_patience_follow_the_numpy_engine():
    x, y = noisy_digits(800)
    xv, yv = x[600:], y[600:]
    x, y = x[:600], y[:600]
    runs = []
    for cls in (PentaryTrainer, TorchTrainer):
        kw = {"device": "cpu"} if cls is TorchTrainer else {}
        tr = cls(mlp(0), "cross_entropy", 0.05, log=None, **kw)
        tr.train((x, y), (xv, yv), epochs=12, batch_size=32, keep_best=True, patience=2)
        runs.append(tr)
    ref, ours = runs
    assert [r["val_acc"] for r in ours.history] == pytest.approx([r["val_acc"] for r in ref.history], abs=1e-9)
    for key in ("best_epoch", "kept_best", "stopped_early"):
        assert ours.metrics[key] == ref.metrics[key]
    assert ref.metrics["stopped_early"] or ref.metrics["best_epoch"] < 12  # the controls did something
    for p, q in zip(pents(ref.model), pents(ours.model), strict=True):
        np.testing.assert_array_equal(p, q)
    assert ours.metrics["val_acc_pentary"] == pytest.approx(ref.metrics["val_acc_pentary"], abs=1e-9)


def test_divergence_is_one_error_naming_the_step():
    x, y = noisy_digits(256)
    tr = TorchTrainer(mlp(0), "cross_entropy", 1e6, log=None, device="cpu")
    with pytest.raises(PccError, match=r"training diverged in epoch 1, step \d+"):
        tr.train((x, y), None, epochs=2, batch_size=32)


def test_multimodal_torch_run_learns_the_text_embedding_on_request(capsys, tmp_path):
    base = ["train", "--engine", "torch", "--device", "cpu", "--multimodal", "--n-samples", "120", "--epochs", "1"]
    assert main([*base, "--quiet"]) == 0  # auto: the fixed table
    assert main([*base, "--text-embedding", "learned", "--fusion-method", "add", "--quiet"]) == 0
    ckpt = ["--checkpoint-every", "1", "--output-dir", str(tmp_path)]
    assert main([*base, "--text-embedding", "learned", *ckpt]) == 1
    assert "checkpoints do not keep a learned text embedding" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["concat", "add", "attention"])
def test_torch_engine_trains_the_text_embedding_as_the_numpy_engine(method):
    ds = make_multimodal_dataset(160, ["text", "image"], 4, seed=3)
    tr, va = split(ds, 0.25, 3)
    runs = []
    for cls, extra in ((PentaryTrainer, {}), (TorchTrainer, {"device": "cpu"})):
        text = {"learned": True, "vocab_size": 40, "embed_dim": 8}
        fusion = MultimodalFusion(["image", "text"], method, common_dim=16, text=text, image={"size": 4})
        xtr, ctr = fusion.transform_with_context(tr.x, fit=True)
        xva, cva = fusion.transform_with_context(va.x)
        tp = fusion.processors["text"]
        ids = {"train": tp.encode(tr.x["text"]), "val": tp.encode(va.x["text"])}
        trainer = cls(PentaryModel(xtr.shape[1], 4, [16], seed=1), "cross_entropy", 0.01, log=None, **extra)
        trainer.text_tuner = TextTuner(fusion, ids, contexts={"train": ctr, "val": cva})
        trainer.train((xtr, tr.y), (xva, va.y), epochs=2, batch_size=16, keep_best=True)
        runs.append((tp.embedding.copy(), trainer.model.flat_values.copy(), xva, trainer.history))
    (t0, w0, v0, h0), (t1, w1, v1, h1) = runs
    assert np.abs(t0 - TextProcessor(vocab_size=40, embed_dim=8).embedding).max() > 1e-3  # it trained
    np.testing.assert_allclose(t1, t0, rtol=0, atol=1e-4)
    np.testing.assert_allclose(w1, w0, rtol=0, atol=1e-4)
    np.testing.assert_allclose(v1, v0, rtol=0, atol=1e-4)  # the validation features of the trained tables
    assert [r["val_acc"] for r in h1] == pytest.approx([r["val_acc"] for r in h0], abs=1 / 40)
