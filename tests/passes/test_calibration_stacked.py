"""Calibration runs its samples stacked: the float reference runs S samples of a batch-1 graph in one pass
(``interpreter.run(samples=S)``) and every value equals, bit for bit, the per-sample runs stacked; the
quantize pass gives the same pent IR and weights, bit for bit, with the samples stacked or run one by one."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))

from zoo_models import build_zoo  # noqa: E402

from pcc import interpreter  # noqa: E402
from pcc.diagnostics import PccError  # noqa: E402
from pcc.frontends import onnx as onnx_frontend  # noqa: E402
from pcc.ir import Module  # noqa: E402
from pcc.parser import parse_module  # noqa: E402
from pcc.pass_manager import parse_pipeline  # noqa: E402
from pcc.passes import quantize_calibrate  # noqa: E402
from pcc.passes.pipeline import FLOAT_PASSES  # noqa: E402
from pcc.passes.quantize import quantize_module  # noqa: E402
from pcc.printer import print_module, weights_npz_bytes  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def zoo_module(name: str, tmp_path: Path, fold: bool = True) -> Module:
    m, xs = build_zoo(name)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, xs, str(path), dynamo=False, input_names=["x"], output_names=["y"])
    module = onnx_frontend.load(path)
    if fold:
        for p in parse_pipeline(FLOAT_PASSES):
            p.run(module)
    return module


# shufflenet: chunk (split), concat, channel shuffle (reshape / transpose), depthwise convs; mobilenet_v3:
# squeeze-excitation (x * s[c]), hard-swish, a residual add; inception: parallel branches, max/avg pooling
@pytest.mark.parametrize("name", ["shufflenet_v2", "mobilenet_v3", "inception"])
def test_stacked_run_equals_per_sample_runs_bit_for_bit(name: str, tmp_path: Path) -> None:
    module = zoo_module(name, tmp_path, fold=False)  # batch norms and all, as imported
    xs = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    assert interpreter.stacked_values(module.main) is not None
    seen: dict[str, list[np.ndarray]] = {}

    def observe(op, results):  # noqa: ANN001, ANN202
        for r, a in zip(op.results, results, strict=True):
            seen.setdefault(r.name or "", []).append(a)

    stacked = interpreter.run(module, {"x": xs}, samples=3, return_all=True, observe=observe)
    for i in range(3):
        one = interpreter.run(module, {"x": xs[i : i + 1]}, return_all=True)
        for k, v in one.items():
            if k in seen:  # a value computed from the inputs: sample i of the stacked run
                assert np.array_equal(stacked[k][i : i + 1], v), (k, i)
    assert len(seen) > 20


def test_graphs_that_cannot_stack_are_said_so() -> None:
    batch2 = parse_module(
        "module @m {\n  func @main(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {\n"
        "    %y = nn.relu(%x) : tensor<2x4xf32>\n    return %y\n  }\n}"
    )
    folds = parse_module(
        "module @m {\n  func @main(%x: tensor<1x2x4xf32>) -> tensor<2x4xf32> {\n"
        "    %y = nn.reshape(%x) : tensor<2x4xf32>\n    return %y\n  }\n}"
    )
    for m in (batch2, folds):
        assert interpreter.stacked_values(m.main) is None
        with pytest.raises(PccError, match="cannot run samples stacked"):
            interpreter.run(m, {"x": np.zeros((2, *m.main.args[0].type.shape[1:]), np.float32)}, samples=2)


def quantized(module: Module, cal: dict[str, np.ndarray], **opts: object) -> tuple[str, bytes]:
    quantize_module(module, cal, **opts)
    return print_module(module), weights_npz_bytes(module)


def pent_program(module: Module) -> tuple[list[tuple[str, dict]], dict[str, np.ndarray]]:
    """The quantized graph as (op name, attributes) per op and its weights by name."""
    ops = [(op.name, dict(op.attributes)) for op in module.main.body]
    return ops, {k: np.asarray(v) for k, v in module.weight_data.items()}


def assert_same_program_up_to_rounding(a: Module, b: Module, pent_share: float = 1.0) -> None:
    """The same ops and weight pents (at least ``pent_share`` of them), every scale within 1e-5 relative, the
    integer biases and tables within one unit (and 1e-5 relative) and the multipliers within 1e-5: two
    calibrations whose float runs differ only in the products' last bits."""
    (ops_a, w_a), (ops_b, w_b) = pent_program(a), pent_program(b)
    assert [n for n, _ in ops_a] == [n for n, _ in ops_b]
    for (name, x), (_, y) in zip(ops_a, ops_b, strict=True):
        assert x.keys() == y.keys(), name
        for k in x:
            if k == "scale":
                assert x[k] == pytest.approx(y[k], rel=1e-5), (name, k)
            elif k not in ("mult", "shift"):
                assert x[k] == y[k], (name, k)
    assert w_a.keys() == w_b.keys()
    for k in w_a:
        u, v = w_a[k], w_b[k]
        if k.endswith(".p5"):
            assert np.mean(u == v) >= pent_share, k
        elif k.endswith((".mult", ".shift")):
            continue  # checked together below: mult / 2**shift
        elif np.issubdtype(u.dtype, np.integer):  # biases, tables: values rounded at the scales
            d = np.abs(u.astype(np.float64) - v.astype(np.float64))
            assert np.all(d <= 1 + 1e-5 * np.abs(u.astype(np.float64))), k
        else:
            assert np.allclose(u, v, rtol=1e-5, atol=0), k
        if k.endswith(".mult"):
            base = k[: -len(".mult")]
            ra = u / np.exp2(w_a[base + ".shift"].astype(np.float64))
            rb = v / np.exp2(w_b[base + ".shift"].astype(np.float64))
            assert np.allclose(ra, rb, rtol=1e-5, atol=0), k


@pytest.mark.parametrize(
    "name, opts",
    [
        ("mobilenet_v3", {}),  # bias correction through the quantized simulation
        ("squeezenet", {"calib_method": "percentile"}),
        ("resnet", {"weight_method": "gptq"}),  # the hessians of the simulation's inputs
    ],
)
@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_quantize_stacked_agrees_with_one_run_per_sample(
    name: str, opts: dict, engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The products of a stacked group run as one product, so the float runs differ from one run per sample
    in the last bits only: the same program up to that rounding; and a calibration is deterministic."""
    cal = {"x": np.random.default_rng(3).standard_normal((6, 3, 64, 64)).astype(np.float32)}
    stacked = zoo_module(name, tmp_path)
    text, blob = quantized(stacked, cal, calib_engine=engine, **opts)
    assert quantized(zoo_module(name, tmp_path), cal, calib_engine=engine, **opts) == (text, blob)
    groups: list[int] = []
    real = quantize_calibrate.StackedRun.__init__

    def init(self, g, batches, eng="numpy"):  # noqa: ANN001, ANN202
        real(self, g, batches, eng)
        groups.append(len(self.sizes))

    monkeypatch.setattr(quantize_calibrate.StackedRun, "__init__", init)
    monkeypatch.setattr(quantize_calibrate, "STACK_ELEMENTS", 1)  # groups of one sample: one run each
    single = zoo_module(name, tmp_path)
    quantize_module(single, cal, calib_engine=engine, **opts)
    assert groups == [1] * 6 + [6]  # six float runs of one sample, one simulation of six groups
    assert_same_program_up_to_rounding(stacked, single, 0.999 if opts.get("weight_method") == "gptq" else 1.0)


def test_torch_engine_agrees_with_numpy(tmp_path: Path) -> None:
    """calib-engine=torch (float32 kernels of torch) and numpy (the reference kernels) give the same program up
    to the products' rounding; an unknown engine is refused."""
    cal = {"x": np.random.default_rng(4).standard_normal((5, 3, 64, 64)).astype(np.float32)}
    a, b = zoo_module("mobilenet_v3", tmp_path), zoo_module("mobilenet_v3", tmp_path)
    quantize_module(a, cal, calib_engine="numpy")
    quantize_module(b, cal, calib_engine="torch")
    assert_same_program_up_to_rounding(a, b)
    with pytest.raises(PccError, match="calib-engine must be"):
        quantize_module(zoo_module("mobilenet_v3", tmp_path), cal, calib_engine="gpu")


def test_engine_choice() -> None:
    """auto takes torch only for runs large enough to pay for its import and first calls."""
    g = parse_module(
        "module @m {\n  weight @w : tensor<4x2xf32> = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]>\n"
        "  func @main(%x: tensor<1x4xf32>) -> tensor<1x2xf32> {\n"
        "    %y = nn.matmul(%x, @w) : tensor<1x2xf32>\n    return %y\n  }\n}"
    ).main
    assert quantize_calibrate.product_macs(g) == 4 * 2
    big = quantize_calibrate.TORCH_MIN_MACS // 8 + 1
    assert quantize_calibrate.pick_engine("auto", g, big) == "torch"
    assert quantize_calibrate.pick_engine("auto", g, big - 2) == "numpy"
    assert quantize_calibrate.pick_engine("numpy", g, big) == "numpy"
    assert quantize_calibrate.pick_engine("torch", g, 1) == "torch"
    with pytest.raises(PccError, match="calib-engine must be"):
        quantize_calibrate.pick_engine("fast", g, 1)


# max pooling by the torch engine: (op text, operand shapes, result shape); each must give the reference
# kernel's values exactly (on a stack of 3 samples)
TORCH_EXACT = [
    ("nn.max_pool(%x) {kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]}", [(3, 4, 9, 9)], (3, 4, 5, 5)),
    ("nn.max_pool(%x) {kernel_shape = [2, 2], strides = [2, 2]}", [(3, 4, 9, 9)], (3, 4, 4, 4)),
    ("nn.max_pool(%x) {kernel_shape = [2, 2], strides = [2, 2], ceil_mode = true}", [(3, 4, 9, 9)], (3, 4, 5, 5)),
    ("nn.max_pool(%x) {kernel_shape = [3, 3], dilations = [2, 2]}", [(3, 4, 9, 9)], (3, 4, 5, 5)),
    ("nn.max_pool(%x) {kernel_shape = [3, 3], pads = [1, 1, 1, 1]}", [(3, 4, 9, 9)], (3, 4, 9, 9)),
    ("nn.max_pool(%x) {kernel_shape = [3, 2], strides = [2, 3], pads = [0, 1, 2, 0]}", [(3, 4, 9, 9)], (3, 4, 5, 3)),
    ("nn.max_pool(%x) {kernel_shape = [2, 2], pads = [2, 2, 2, 2]}", [(3, 4, 9, 9)], (3, 4, 12, 12)),  # -inf
    ("nn.max_pool(%x) {kernel_shape = [3, 3], strides = [2, 2], ceil_mode = true}", [(3, 4, 8, 8)], (3, 4, 4, 4)),
]
# forms torch's kernels do not take: the reference runs them
TORCH_REFERENCE = [
    ("nn.max_pool(%x) {kernel_shape = [3], strides = [2]}", [(3, 4, 9)], (3, 4, 4)),
    ("nn.max_pool(%x) {kernel_shape = [2, 2]}", [(3, 4, 9, 9)], (3, 4, 8, 8), np.float64),
    ("nn.add(%x, %y)", [(3, 4, 9, 9), (1, 4, 1, 1)], (3, 4, 9, 9)),  # elementwise ops: numpy's ufuncs
]


def one_op(text: str, shapes: list[tuple[int, ...]], result: tuple[int, ...], dtype: type = np.float32) -> Module:
    def ty(shape: tuple[int, ...]) -> str:
        return f"tensor<{'x'.join(map(str, (1, *shape[1:])))}x{np.dtype(dtype).kind}{np.dtype(dtype).itemsize * 8}>"

    names = ["%x", "%y"][: len(shapes)]
    args = ", ".join(f"{n}: {ty(s)}" for n, s in zip(names, shapes, strict=True))
    return parse_module(
        f"module @m {{\n  func @main({args}) -> {ty(result)} {{\n"
        f"    %r = {text} : {ty(result)}\n    return %r\n  }}\n}}"
    )


def channels_last(a: np.ndarray) -> np.ndarray:
    """``a`` (4-D) with the same values in the memory layout of a torch conv's result (channels last)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", TORCH_EXACT + TORCH_REFERENCE)
def test_torch_engine_max_pooling_equals_the_reference(case: tuple, layout: str) -> None:
    """The torch engine's max pooling gives the reference kernel's values bit for bit on a stack of samples,
    whatever the padding, strides, dilation and ceil mode, in either memory layout of its input (a torch conv's
    channels-last result keeps its layout); the forms it does not take (float64, 1-D windows) and the ops it has
    no kernel for fall back to the reference."""
    text, shapes, result, *dtype = case
    op = one_op(text, shapes, result, *dtype).main.body[0]
    rng = np.random.default_rng(5)
    args = [rng.standard_normal(s).astype(dtype[0] if dtype else np.float32) for s in shapes]
    flat = args[0].reshape(-1)  # zeros and a subnormal (+0 and -0 in no common window: a tie's sign is torch's)
    flat[[0, 1, -1]] = [0.0, 1e-40, -0.0]
    if layout == "channels_last" and args[0].ndim == 4:
        args[0] = channels_last(args[0])
    stacked = [s[0] == 3 for s in shapes]
    (ref,) = interpreter.eval_stacked(op, args, stacked, 3)
    (got,) = quantize_calibrate.eval_group(op, args, stacked, 3, "torch")
    if layout == "channels_last" and case in TORCH_EXACT:
        assert not got.flags.c_contiguous and quantize_calibrate._dense(got)
    assert got.shape == ref.shape == result and got.dtype == ref.dtype
    assert got.tobytes() == ref.tobytes()  # the sign of a zero too
    took = quantize_calibrate._torch_eval(op, args)
    assert (took is not None) == (case in TORCH_EXACT)


@pytest.mark.parametrize("name", ["mobilenet_v3", "inception", "resnet"])
def test_torch_engine_programs_equal_those_of_torch_products_alone(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With max pooling in torch as well as the products, and the elementwise ops writing over dying operands,
    the quantize pass gives the program (pent IR and weights) byte for byte that it gives with only the products
    in torch and every result a new array."""
    cal = {"x": np.random.default_rng(6).standard_normal((6, 3, 64, 64)).astype(np.float32)}
    both = quantized(zoo_module(name, tmp_path), cal, calib_engine="torch")
    products = {k: v for k, v in quantize_calibrate.TORCH_KERNELS.items() if k in quantize_calibrate.PRODUCTS}
    assert len(products) < len(quantize_calibrate.TORCH_KERNELS)
    monkeypatch.setattr(quantize_calibrate, "TORCH_KERNELS", products)
    monkeypatch.setattr(quantize_calibrate, "INPLACE", {})
    assert quantized(zoo_module(name, tmp_path), cal, calib_engine="torch") == both


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_calibration_runs_write_over_dying_operands_only(engine: str) -> None:
    """An elementwise op writes its result over an operand that the run allocated and no one reads any more
    (the add over the first ReLU's result, the second ReLU over the add's); never over one whose memory a live
    value shares (the first ReLU's input, which a reshape views)."""
    w = ", ".join(str(v) for v in np.random.default_rng(7).standard_normal(4 * 4 * 9).round(3))
    m = parse_module(
        f"module @m {{\n  weight @w : tensor<4x4x3x3xf32> = dense<[{w}]>\n"
        "  func @main(%x: tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> {\n"
        "    %c = nn.conv2d(%x, @w) {strides = [1, 1], pads = [1, 1, 1, 1], group = 1} : tensor<1x4x8x8xf32>\n"
        "    %f = nn.reshape(%c) {shape = [1, 4, 8, 8]} : tensor<1x4x8x8xf32>\n"
        "    %r = nn.relu(%c) : tensor<1x4x8x8xf32>\n"
        "    %y = nn.add(%r, %f) : tensor<1x4x8x8xf32>\n"
        "    %z = nn.relu(%y) : tensor<1x4x8x8xf32>\n    return %z\n  }\n}"
    )
    xs = np.random.default_rng(8).standard_normal((3, 4, 8, 8)).astype(np.float32)
    run = quantize_calibrate.StackedRun(m.main, [{"x": xs[i : i + 1]} for i in range(3)], engine)
    c, f, r, y = (run.step(m, op)[0][0] for op in m.main.body[:4])
    assert np.shares_memory(c, f) and not np.shares_memory(r, c)  # the view of %c kept %c intact
    assert np.shares_memory(y, r)  # the add took the ReLU's array
    want = np.maximum(c, 0) + c
    assert np.array_equal(y, want)
    (z,) = run.step(m, m.main.body[4])[0]
    assert np.shares_memory(z, y) and np.array_equal(z, np.maximum(want, 0))
    assert interpreter.run(m, {"x": xs}, samples=3)["z"] == pytest.approx(z, rel=1e-5, abs=1e-5)


def test_torch_engine_conv_in_channels_last_layout_equals_nchw() -> None:
    """The torch engine runs convs in the channels-last layout (oneDNN's faster one here) whatever its operands'
    layout: the values equal the NCHW conv's to float32 rounding, the result is dense (an in-place op may write
    over it) and the observers read it in memory order (the same max |x|)."""
    op = one_op(
        "nn.conv2d(%x, %y) {strides = [2, 2], pads = [1, 1, 1, 1], dilations = [1, 1], group = 1}",
        [(3, 5, 9, 9), (7, 5, 3, 3)],
        (3, 7, 5, 5),
    ).main.body[0]
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 5, 9, 9)).astype(np.float32)
    w = rng.standard_normal((7, 5, 3, 3)).astype(np.float32)
    (ref,) = interpreter.eval_stacked(op, [x, w], [True, False], 3)
    for xin in (x, channels_last(x)):
        (got,) = quantize_calibrate.eval_group(op, [xin, w], [True, False], 3, "torch")
        assert got.shape == ref.shape and quantize_calibrate._dense(got)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        obs = quantize_calibrate.RangeObserver("minmax", 99.99, False)
        obs.add(op.results[0], got)
        assert obs.range_of(op.results[0]) == float(np.abs(np.ascontiguousarray(got)).max())
    assert not quantize_calibrate._dense(x[:, :, ::2])
    assert quantize_calibrate._dense(x) and quantize_calibrate._dense(channels_last(x))


@pytest.mark.parametrize("size", [5, 1 << 17])
def test_observer_extremes_equal_numpys(size: int) -> None:
    """The observers' (max, -min) pass (torch's single pass where torch is loaded and the array is large)
    gives numpy's values, an infinity and a NaN included."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    for special in (None, np.inf, -np.inf, np.nan):
        a = rng.standard_normal(size).astype(np.float32)
        if special is not None:
            a[size // 2] = special
        hi, nlo = quantize_calibrate._extremes(a)
        want = (float(np.max(a)), -float(np.min(a)))
        assert (hi, nlo) == want or (np.isnan(want[0]) and np.isnan(hi) and np.isnan(nlo))
