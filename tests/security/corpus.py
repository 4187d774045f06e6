"""The hostile-input corpus as data: each case is files + a command line + the message its one error must match.

``CASES`` maps a case id to :class:`Case`.  File contents are bytes, text, or a function of the fixture folder
(which holds valid files: ``model.json``, ``relu.pir``, ``prog.pasm`` + ``prog.weights.bin``, ``prog.pbin``,
``sum.pasm``, ``x.npy``, ``gemm.onnx``, ``data/``) returning bytes.  In ``argv``, ``{d}`` is the case's folder
(where its files are written, beside copies of the fixtures); a literal brace is doubled (``{{``).
"""

from __future__ import annotations

import functools
import io
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Content = bytes | str | Callable[[Path], bytes]


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    pattern: str  # regex the one error line (and what follows) must match
    files: dict[str, Content] = field(default_factory=dict)
    code: int = 1  # 2: a usage error, reported by the command-line parser
    env: dict[str, str] = field(default_factory=dict)  # environment for the run (e.g. a lowered PCC_LIMIT_*)
    unchanged: tuple[str, ...] = ()  # fixture files the command must leave byte for byte as they were


CASES: dict[str, Case] = {}


def add(
    name: str,
    argv: str,
    pattern: str,
    code: int = 1,
    *,
    env: dict[str, str] | None = None,
    unchanged: tuple[str, ...] = (),
    **files: Content,
) -> None:
    assert name not in CASES, name
    named = {k.replace("__", "."): v for k, v in files.items()}
    CASES[name] = Case(tuple(argv.split()), pattern, named, code, dict(env or {}), unchanged)


def npy(arr: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=True)
    return b.getvalue()


def npy_header(descr: str, shape: str, fortran: str = "False") -> bytes:
    text = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}".encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


def fixture(name: str, edit: Callable[[bytes], bytes] = lambda b: b) -> Callable[[Path], bytes]:
    return lambda d: edit((d / name).read_bytes())


def json_edit(name: str, fn: Callable[[dict], object]) -> Callable[[Path], bytes]:
    def make(d: Path) -> bytes:
        doc = json.loads((d / name).read_text())
        out = fn(doc)
        return json.dumps(doc if out is None else out).encode()

    return make


# --------------------------------------------------------------------------------------------- IR text

IR_HEAD = "module @m {\n  func @main(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {\n"
IR_TAIL = "    return %y\n  }\n}\n"


def ir(*lines: str, head: str = IR_HEAD, tail: str = IR_TAIL) -> str:
    return head + "".join(f"    {ln}\n" for ln in lines) + tail


IR_CASES = {
    "empty": ("", r"m\.pir:1:1: error: "),
    "binary": ("\x00\x01\x02garbage", r"m\.pir:1:\d+: error: "),
    "nul-in-name": (ir("%y = nn.relu(%x\x00) : tensor<1x4xf32>"), r"m\.pir:3:\d+: error: "),
    "unclosed-module": (IR_HEAD, r"m\.pir:\d+:\d+: error: "),
    "huge-dim": (ir("%y = nn.relu(%x) : tensor<99999999999x4xf32>"), r"m\.pir:\d+:\d+: error: "),
    "huge-arg-dim": (
        "module @m {\n  func @main(%x: tensor<99999999999x99999xf32>) -> tensor<1x4xf32> {\n"
        "    %y = nn.relu(%x) : tensor<1x4xf32>\n" + IR_TAIL,
        r"m\.pir:\d+:\d+: error: .*(more than|allowed|does not match)",
    ),
    "rank-300": (
        "module @m {\n  func @main(%x: tensor<" + "1x" * 300 + "f32>) -> tensor<1x4xf32> {\n"
        "    %y = nn.relu(%x) : tensor<1x4xf32>\n" + IR_TAIL,
        r"m\.pir:\d+:\d+: error: .*rank 300",
    ),
    "output-rank-70": (
        "module @m {\n  func @main(%x: tensor<1x4xf32>) -> tensor<" + "1x" * 69 + "4xf32> {\n"
        "    %y = nn.reshape(%x) {shape = [" + "1, " * 69 + "4]} : tensor<" + "1x" * 69 + "4xf32>\n" + IR_TAIL,
        r"m\.pir:3:\d+: error: .*rank 70, more than the 16 allowed",
    ),
    "negative-dim": (ir("%y = nn.relu(%x) : tensor<-1x4xf32>"), r"m\.pir:3:\d+: error: "),
    "unknown-dtype": (ir("%y = nn.relu(%x) : tensor<1x4xf99>"), r"m\.pir:3:\d+: error: "),
    "p30": (ir("%y = nn.relu(%x) : tensor<1x4xp30>"), r"m\.pir:3:\d+: error: "),
    "deep-attr": (
        ir("%y = nn.relu(%x) {a = " + "[" * 5000 + "]" * 5000 + "} : tensor<1x4xf32>"),
        r"m\.pir(:\d+:\d+)?: error: .*(nest|deep)",
    ),
    "big-int-attr": (ir("%y = nn.relu(%x) {a = " + "9" * 5000 + "} : tensor<1x4xf32>"), r"m\.pir(:\d+:\d+)?: error: "),
    "unknown-op": (ir("%y = nn.frobnicate(%x) : tensor<1x4xf32>"), r"m\.pir:3:\d+: error: unknown op"),
    "undefined": (ir("%y = nn.relu(%z) : tensor<1x4xf32>"), r"m\.pir:3:\d+: error: .*undefined"),
    "type-mismatch": (ir("%y = nn.relu(%x) : tensor<1x5xf32>"), r"m\.pir:\d+:\d+: error: "),
    "no-return": (ir("%y = nn.relu(%x) : tensor<1x4xf32>", tail="  }\n}\n"), r"m\.pir:\d+:\d+: error: |m\.pir: error"),
    "return-undefined": (ir("%y = nn.relu(%x) : tensor<1x4xf32>", tail="    return %q\n  }\n}\n"), r"m\.pir:\d+:\d+"),
    "two-funcs": (
        ir(
            "%y = nn.relu(%x) : tensor<1x4xf32>",
            tail=IR_TAIL[:-2] + "  func @main(%x: tensor<1xf32>) -> tensor<1xf32> {\n    return %x\n  }\n}\n",
        ),
        r"m\.pir:\d+:\d+: error: ",
    ),
    "weights-missing-file": (
        'module @m weights("nope.npz") {\n  weight @w : tensor<4x4xf32>\n'
        + ir("%y = nn.relu(%x) : tensor<1x4xf32>")[len("module @m {\n") :],
        r"m\.pir:1:\d+: error: weights file .* not found",
    ),
    "weight-no-data": (
        "module @m {\n  weight @w : tensor<4x4xf32>\n"
        + ir("%y = nn.relu(%x) : tensor<1x4xf32>")[len("module @m {\n") :],
        r"m\.pir:2:\d+: error: weight @w",
    ),
    "dense-wrong-count": (
        "module @m {\n  weight @w : tensor<2xf32> = dense<[1.0, 2.0, 3.0]>\n"
        + ir("%y = nn.relu(%x) : tensor<1x4xf32>")[len("module @m {\n") :],
        r"m\.pir:2:\d+: error: ",
    ),
    "dense-pent-range": (
        "module @m {\n  weight @w : tensor<2xp5> = dense<[1, 9]>\n"
        + ir("%y = nn.relu(%x) : tensor<1x4xf32>")[len("module @m {\n") :],
        r"m\.pir:2:\d+: error: ",
    ),
    "long-line": (ir("%y = nn.relu(%x) : tensor<1x4xf32> " + "x" * 1_000_000), r"m\.pir:3:\d+: error: "),
    "bad-utf8": (b"module @m {\xff\xfe}", r"m\.pir(:\d+:\d+)?: error: "),
    "quote-name": (ir('%y = nn.relu(%x) {name = "unterminated} : tensor<1x4xf32>'), r"m\.pir:3:\d+: error: "),
}
for _name, (_text, _pat) in IR_CASES.items():
    add(f"ir-{_name}-opt", "opt {d}/m.pir -o {d}/o.pir", _pat, m__pir=_text)
    add(f"ir-{_name}-compile", "compile {d}/m.pir -o {d}/o.pasm", _pat, m__pir=_text)
    add(f"ir-{_name}-check", "check {d}/m.pir", _pat, m__pir=_text)


def _npz_member(name: str, data: bytes, method: int = 0) -> bytes:
    import zipfile

    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", compression=method) as z:
        z.writestr(name, data)
    return b.getvalue()


def _pent_ir(old: bytes, new: bytes) -> Callable[[Path], bytes]:
    def edit(b: bytes) -> bytes:
        assert old in b, old
        return b.replace(old, new, 1)

    return fixture("pent.pir", edit)


PENT_CASES = {
    "addr-negative": (_pent_ir(b"addr = 0", b"addr = -5"), r"m\.pir:\d+:\d+: error: .*addr.*>= 0"),
    "scale-negative": (_pent_ir(b"scale = ", b"scale = -"), r"m\.pir:\d+:\d+: error: .*scale"),
    "tile-zeros": (_pent_ir(b"tile = [3, 1]", b"tile = [0, 0]"), r"m\.pir:\d+:\d+: error: .*'tile' .*>= 1"),
}
for _name, (_data, _pat) in PENT_CASES.items():
    add(f"pent-{_name}-opt", "opt {d}/m.pir -o {d}/o.pir", _pat, m__pir=_data)
    add(f"pent-{_name}-compile", "compile {d}/m.pir -o {d}/o.pasm", _pat, m__pir=_data)

_W_DECL = (
    'module @m weights("w.npz") {\n  weight @w : tensor<4x4xf32>\n'
    + ir("%y = nn.relu(%x) : tensor<1x4xf32>")[len("module @m {\n") :]
)
SIDECARS = {
    "raw-bytes": (_npz_member("w.npy", b"\x00" * 64), r"m\.pir:1:\d+: error: .*not a \.npy|m\.pir:2:\d+: error: .*npy"),
    "bomb": (_npz_member("w.npy", npy_header("'<f4'", "(4, 4)") + bytes(300 << 20), 8), r"zip bomb|inflates"),
    "claims-tib": (_npz_member("w.npy", npy_header("'<f4'", "(1048576, 1048576)")), r"more than the .* allowed"),
    "wrong-shape": (_npz_member("w.npy", npy(np.zeros((4, 5), np.float32))), r"m\.pir:2:\d+: error: weight @w"),
    "object": (_npz_member("w.npy", npy(np.array([None], dtype=object))), r"Python objects"),
    "not-zip": ("PK\x03\x04 nope", r"m\.pir:1:\d+: error: weights file"),
    "truncated": (_npz_member("w.npy", npy(np.zeros((4, 4), np.float32)))[:-40], r"m\.pir:\d+:\d+: error: "),
    "nonliteral-header": (_npz_member("w.npy", npy_header("f()", "(4, 4)")), r"malformed \.npy header"),
    "complex": (_npz_member("w.npy", npy(np.zeros((4, 4), np.complex64))), r"dtype complex64 is not supported"),
    "not-npy-member": (_npz_member("w.txt", b"hello"), r"is not an \.npy array"),
}
for _name, (_data, _pat) in SIDECARS.items():
    add(f"sidecar-{_name}-opt", "opt {d}/m.pir -o {d}/o.pir", _pat, m__pir=_W_DECL, w__npz=_data)
    add(f"sidecar-{_name}-compile", "compile {d}/m.pir -o {d}/o.pasm", _pat, m__pir=_W_DECL, w__npz=_data)

# --------------------------------------------------------------------------------------------- assembly

PASM_CASES = {
    "empty-ok-run": ("", r"error: "),
    "zero-bomb": (".data\n.zero 60000000\n.text\nHALT\n", r"a\.pasm:2:\d+: error: \.zero 60000000"),
    "zero-negative": (".data\n.zero -5\n.text\nHALT\n", r"a\.pasm:2:\d+: error: "),
    "zero-huge": (".data\n.zero 99999999999999\n.text\nHALT\n", r"a\.pasm:2:\d+: error: "),
    "unknown-mnemonic": (".text\nFROB P1, P2\n", r"a\.pasm:2:\d+: error: "),
    "bad-register": (".text\nMOVI P99, 1\nHALT\n", r"a\.pasm:2:\d+: error: "),
    "imm-overflow": (".text\nMOVI P1, 9999999999999999999999\nHALT\n", r"a\.pasm:2:\d+: error: "),
    "undefined-label": (".text\nJMP nowhere\nHALT\n", r"a\.pasm:2:\d+: error: "),
    "duplicate-label": (".text\na:\na:\nHALT\n", r"a\.pasm:3:\d+: error: "),
    "input-register": (".input P1\n.text\nHALT\n", r"a\.pasm:1:\d+: error: "),
    "input-addr-neg": (".input x, shape=[4], pents=8, scale=1.0, addr=-5\n.text\nHALT\n", r"a\.pasm:1:\d+: error: "),
    "input-shape-huge": (
        ".input x, shape=[99999999999], pents=8, scale=1.0, addr=0\n.text\nHALT\n",
        r"a\.pasm:1:\d+: error: ",
    ),
    "output-rank-70": (
        ".output y, shape=[" + ",".join(["1"] * 70) + "], pents=8, scale=1.0, addr=0\n.text\nHALT\n",
        r"a\.pasm:1:\d+: error: shape has rank 70, more than the 16 allowed",
    ),
    "input-rank-300": (
        ".input x, shape=[" + ",".join(["1"] * 300) + "], pents=8, scale=1.0, addr=0\n.text\nHALT\n",
        r"a\.pasm:1:\d+: error: ",
    ),
    "input-scale-nan": (".input x, shape=[4], pents=8, scale=nan, addr=0\n.text\nHALT\n", r"a\.pasm:1:\d+: error: "),
    "input-scale-1e300": (
        ".input x, shape=[4], pents=8, scale=1e999, addr=0\n.text\nHALT\n",
        r"a\.pasm:1:\d+: error: ",
    ),
    "input-pents-0": (".input x, shape=[4], pents=0, scale=1.0, addr=0\n.text\nHALT\n", r"a\.pasm:1:\d+: error: "),
    "input-pents-str": ('.input x, shape=[4], pents="8", scale=1.0, addr=0\n.text\nHALT\n', r"a\.pasm:1:\d+: error: "),
    "output-twice": (
        ".output y, shape=[1], pents=8, scale=1.0, addr=0\n"
        ".output y, shape=[1], pents=8, scale=1.0, addr=0\n.text\nHALT\n",
        r"a\.pasm:2:\d+: error: ",
    ),
    "incbin-missing": ('.data\n.incbin "missing.bin"\n.text\nHALT\n', r"a\.pasm:2:\d+: error: cannot read include"),
    "incbin-dir": ('.data\n.incbin "."\n.text\nHALT\n', r"a\.pasm:2:\d+: error: "),
    "word-text": (".text\n.word 5\nHALT\n", r"a\.pasm:2:\d+: error: "),
    "equ-loop": (".equ A, B\n.equ B, A\n.text\nHALT\n", r"a\.pasm:1:\d+: error: "),
    "long-line": (".text\nHALT " + "x" * 1_000_000 + "\n", r"a\.pasm:2:\d+: error: "),
    "binary-junk": (b"\x00\xff\xfe\x01", r"a\.pasm(:\d+:\d+)?: error: "),
    "mem-operand": (".text\nLOAD P1, [P2 + 99999999999]\nHALT\n", r"a\.pasm:2:\d+: error: "),
    "branch-far": (".text\nBNE P1, 99999999999\nHALT\n", r"a\.pasm:2:\d+: error: "),
    "directive-unknown": (".frob 1\n", r"a\.pasm:1:\d+: error: "),
    "label-register": (".text\nP1:\nHALT\n", r"a\.pasm:2:\d+: error: "),
    "string-word": ('.data\n.word "x"\n.text\nHALT\n', r"a\.pasm:2:\d+: error: "),
}
for _name, (_text, _pat) in PASM_CASES.items():
    add(f"pasm-{_name}-asm", "asm {d}/a.pasm -o {d}/a.pbin", _pat, a__pasm=_text)
    add(f"pasm-{_name}-run", "run {d}/a.pasm", _pat, a__pasm=_text)
del CASES["pasm-empty-ok-run-asm"]  # an empty program assembles (to a program with no code); running it fails

# --------------------------------------------------------------------------------------------- binaries


def _truncate(n: int) -> Callable[[bytes], bytes]:
    return lambda b: b[:n]


def _flip(at: int, value: int) -> Callable[[bytes], bytes]:
    def edit(b: bytes) -> bytes:
        out = bytearray(b)
        out[at % len(out)] = value
        return bytes(out)

    return edit


for _n in (0, 1, 3, 4, 7, 8, 12, 16, 24, 32, 48, 64, 100):
    for _cmd, _argv in (("disasm", "disasm {d}/b.pbin"), ("run", "run {d}/b.pbin")):
        add(f"pbin-cut{_n}-{_cmd}", _argv, r"b\.pbin(:\d+)?: error: ", b__pbin=fixture("prog.pbin", _truncate(_n)))


def _pbin_output_rank(rank: int) -> Callable[[Path], bytes]:
    """``sum.pbin`` with one output of the given rank (written by pcc's own writer, which does not check it)."""

    def make(d: Path) -> bytes:
        from pcc.backend import binary
        from pcc.backend.program import IODecl

        prog = binary.read(d / "sum.pbin")
        prog.outputs = [IODecl("y", (1,) * rank, 8, 1.0, 0)]
        return binary.to_bytes(prog)

    return make


for _cmd, _argv in (("disasm", "disasm {d}/b.pbin"), ("run", "run {d}/b.pbin")):
    add(f"pbin-output-rank-70-{_cmd}", _argv, r"b\.pbin.*error: .*rank 70, more than the 16 allowed",
        b__pbin=_pbin_output_rank(70))  # fmt: skip
for _i, (_at, _v) in enumerate([(0, 0), (1, 0x41), (2, 0), (3, 0xFF), (4, 99), (5, 0xFF)]):
    add(
        f"pbin-flip{_i}-disasm",
        "disasm {d}/b.pbin",
        r"b\.pbin(:\d+)?: error: |error: ",
        b__pbin=fixture("sum.pbin", _flip(_at, _v)),
    )
add("pbin-random-run", "run {d}/b.pbin", r"b\.pbin(:\d+)?: error: ", b__pbin=b"PBIN" + bytes(range(256)) * 4)
add("pbin-random-disasm", "disasm {d}/b.pbin", r"b\.pbin(:\d+)?: error: ", b__pbin=b"PBIN" + bytes(range(256)) * 4)
add("pbin-missing-run", "run {d}/none.pbin", r"no such file")

# --------------------------------------------------------------------------------------------- program inputs

NPY_INPUTS = {
    "empty": (b"", r"the file is empty"),
    "random": (bytes(range(200)), r"not a \.npy array"),
    "claims-tib": (npy_header("'<f4'", "(1048576, 1048576)"), r"more than the .* allowed"),
    "truncated": (npy(np.zeros((1, 4), np.float32))[:-3], r"truncated"),
    "nonliteral": (npy_header("__import__('os')", "(1, 4)"), r"malformed \.npy header"),
    "object": (npy(np.array([None, 1], dtype=object)), r"Python objects"),
    "complex": (npy(np.zeros((1, 4), np.complex64)), r"dtype complex64"),
    "strings": (npy(np.array([["a"] * 4])), r"real number array"),
    "npz": (_npz_member("x.npy", npy(np.zeros((1, 4), np.float32))), r"an \.npz archive"),
    "nan": (npy(np.full((1, 4), np.nan, np.float32)), r"NaN"),
    "wrong-shape": (npy(np.zeros((3, 3), np.float32)), r"has shape"),
    "rank-40": (npy_header("'<f4'", "(" + "1, " * 40 + ")"), r"rank 40"),
    "zero-size": (npy(np.zeros((0, 4), np.float32)), r"error: "),
}
for _name, (_data, _pat) in NPY_INPUTS.items():
    add(f"input-{_name}-run", "run {d}/prog.pasm -i input={d}/in.npy", _pat, in__npy=_data)
    add(f"input-{_name}-check", "check {d}/model.json -i input={d}/in.npy", _pat, in__npy=_data)
_CALIB = "compile {d}/model.json --calibration {d}/c.npz -o {d}/o.pasm"
for _name in ("empty", "random", "claims-tib", "truncated", "object", "complex", "npz"):
    add(f"calib-{_name}-compile", _CALIB, r"error: calibration file \S*c\.npz: ",
        c__npz=_npz_member("input.npy", NPY_INPUTS[_name][0]) if _name != "npz" else npy(np.zeros((4, 4))))  # fmt: skip

# --------------------------------------------------------------------------------------------- JSON models


def _layer0(fn: Callable[[dict], None]) -> Callable[[Path], bytes]:
    return json_edit("model.json", lambda m: fn(m["layers"][0]))


JSON_CASES: dict[str, tuple[Content, str]] = {
    "empty": (b"", r"m\.json(:\d+:\d+)?: error: "),
    "not-json": (b"{'a': 1}", r"m\.json(:\d+:\d+)?: error: "),
    "deep": (b"[" * 100_000 + b"]" * 100_000, r"m\.json(:\d+:\d+)?: error: .*(nest|deep)"),
    "list": (b"[1, 2, 3]", r"m\.json(:\d+:\d+)?: error: "),
    "no-layers": (json_edit("model.json", lambda m: m.__delitem__("layers")), r"m\.json.*error: .*layers"),
    "unknown-layer": (_layer0(lambda lay: lay.update(type="frobnicate")), r"m\.json.*error: .*frobnicate"),
    "pents-strings": (_layer0(lambda lay: lay.update(weight_pentary=[["2"] * 4] * 3)), r"m\.json.*error: "),
    "pents-huge": (_layer0(lambda lay: lay["weight_pentary"][0].__setitem__(0, 10**400)), r"m\.json.*error: "),
    "pents-out-of-range": (_layer0(lambda lay: lay["weight_pentary"][0].__setitem__(0, 3)), r"m\.json.*error: "),
    "scale-1e300": (_layer0(lambda lay: lay.update(weight_scale=[1e300] * 3)), r"m\.json.*error: .*scale"),
    "scale-negative": (_layer0(lambda lay: lay.update(weight_scale=[-1.0] * 3)), r"m\.json.*error: .*scale"),
    "scale-nan": (
        b'{"format": "pcc.pentary-model", "version": 1, "layers": [{"type": "linear", "in_features": 1, '
        b'"out_features": 1, "weight_pentary": [[1]], "weight_scale": NaN}]}',
        r"m\.json.*error: ",
    ),
    "bias-nan": (_layer0(lambda lay: lay.update(bias=[float("nan")] * 3)), r"m\.json.*error: "),
    "shape-mismatch": (_layer0(lambda lay: lay.update(weight_pentary=[[1, 0]] * 3)), r"m\.json.*error: "),
    "chain-break": (json_edit("model.json", lambda m: m["layers"][2].update(in_features=7)), r"m\.json.*error: "),
    "in-features-huge": (_layer0(lambda lay: lay.update(in_features=10**12)), r"m\.json.*error: "),
    "input-shape-huge": (json_edit("model.json", lambda m: m.update(input_shape=[99999999999])), r"m\.json.*error: "),
    "version-99": (json_edit("model.json", lambda m: m.update(version=99)), r"m\.json.*error: .*version"),
    "bn-negative-var": (
        json_edit(
            "model.json",
            lambda m: m["layers"].insert(
                1,
                {
                    "type": "batchnorm",
                    "num_features": 3,
                    "gamma": [1, 1, 1],
                    "beta": [0, 0, 0],
                    "running_mean": [0, 0, 0],
                    "running_var": [1, -1, 1],
                },
            ),
        ),
        r"m\.json.*error: layer 1 \(batchnorm\): 'running_var' holds a negative variance",
    ),
    "bn-eps-string": (
        json_edit(
            "model.json",
            lambda m: m["layers"].insert(
                1,
                {
                    "type": "batchnorm",
                    "num_features": 3,
                    "eps": "x",
                    "gamma": [1, 1, 1],
                    "beta": [0, 0, 0],
                    "running_mean": [0, 0, 0],
                    "running_var": [1, 1, 1],
                },
            ),
        ),
        r"m\.json.*error: .*'eps'",
    ),
}
for _name, (_data, _pat) in JSON_CASES.items():
    add(f"json-{_name}-compile", "compile {d}/m.json -o {d}/o.pasm", _pat, m__json=_data)
    add(f"json-{_name}-quantize", "quantize {d}/m.json -o {d}/o.json", _pat, m__json=_data)

# --------------------------------------------------------------------------------------------- ONNX


def _onnx(edit: Callable[[object], None]) -> Callable[[Path], bytes]:
    def make(d: Path) -> bytes:
        import onnx

        m = onnx.load_from_string((d / "gemm.onnx").read_bytes())
        edit(m)
        return m.SerializeToString()

    return make


def _no_opset(m: object) -> None:
    del m.opset_import[:]  # type: ignore[attr-defined]


def _opset(v: int) -> Callable[[object], None]:
    def edit(m: object) -> None:
        m.opset_import[0].version = v  # type: ignore[attr-defined]

    return edit


def _dup_output(m: object) -> None:
    g = m.graph  # type: ignore[attr-defined]
    n = g.node.add()
    n.CopyFrom(g.node[0])
    n.name = "again"


def _cycle(m: object) -> None:
    g = m.graph  # type: ignore[attr-defined]
    g.node[0].input[0] = g.node[-1].output[0]


def _neg_dim(m: object) -> None:
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = -1  # type: ignore[attr-defined]


def _raw_wrong(m: object) -> None:
    init = m.graph.initializer[0]  # type: ignore[attr-defined]
    init.raw_data = init.raw_data[:-4] if init.raw_data else b"\0\0"
    del init.float_data[:]


def _reshape_rank(rank: int) -> Callable[[object], None]:
    def edit(m: object) -> None:
        from onnx import helper, numpy_helper

        g = m.graph  # type: ignore[attr-defined]
        g.initializer.append(numpy_helper.from_array(np.array([1] * (rank - 1) + [3], np.int64), "s"))
        g.node.append(helper.make_node("Reshape", ["y", "s"], ["z"]))
        g.output[0].name = "z"
        g.output[0].type.tensor_type.ClearField("shape")  # unknown: the rank comes from the Reshape

    return edit


def _nonfinite(index: int, at: tuple[int, ...], value: float) -> Callable[[object], None]:
    def edit(m: object) -> None:
        from onnx import numpy_helper

        init = m.graph.initializer[index]  # type: ignore[attr-defined]
        a = numpy_helper.to_array(init).copy()
        a[at] = value
        init.CopyFrom(numpy_helper.from_array(a, init.name))

    return edit


ONNX_CASES: dict[str, tuple[Content, str]] = {
    "empty": (b"", r"g\.onnx.*error: "),
    "random": (bytes(range(256)) * 8, r"g\.onnx.*error: "),
    "truncated": (fixture("gemm.onnx", lambda b: b[: len(b) // 2]), r"g\.onnx.*error: "),
    "no-opset": (_onnx(_no_opset), r"g\.onnx.*error: .*declares no ai.onnx opset"),
    "opset-99": (_onnx(_opset(99)), r"g\.onnx.*error: .*opset 99"),
    "dup-output": (_onnx(_dup_output), r"g\.onnx.*error: .*(written|twice|defined)"),
    "cycle": (_onnx(_cycle), r"g\.onnx.*error: .*cycle"),
    "neg-dim": (_onnx(_neg_dim), r"g\.onnx.*error: "),
    "raw-wrong-length": (_onnx(_raw_wrong), r"g\.onnx.*error: "),
    "nan-weight": (
        _onnx(_nonfinite(0, (1, 2), np.nan)),
        r"g\.onnx \(node .*error: .*(@w|'w') holds nan .*\[1, 2\]"
        r"|g\.onnx \(node 'Gemm_0'\).*error: .*@w\.t holds nan .*\[2, 1\]",  # canonicalize's rows-out copy
    ),
    "inf-bias": (_onnx(_nonfinite(1, (0,), np.inf)), r"g\.onnx \(node .*error: .*(@b|'b') holds inf at index \[0\]"),
    "output-rank-70": (_onnx(_reshape_rank(70)), r"g\.onnx.*error: .*(rank 70, more than the 16|only reshapes to)"),
}
for _name, (_data, _pat) in ONNX_CASES.items():
    add(f"onnx-{_name}-compile", "compile {d}/g.onnx -o {d}/o.pasm", _pat, g__onnx=_data)
    add(f"onnx-{_name}-convert", "convert {d}/g.onnx -o {d}/o.json", _pat, g__onnx=_data)

# --------------------------------------------------------------------------------------------- .pt2 / .pth

for _name, _data in {
    "empty": b"",
    "random": bytes(range(256)) * 16,
    "zip-magic": b"PK\x03\x04" + bytes(64),
    "truncated": fixture("net.pt2", lambda b: b[: len(b) // 2]),
    "tail-cut": fixture("net.pt2", lambda b: b[:-10]),
}.items():
    for _cmd, _argv in (
        ("compile", "compile {d}/t.pt2 -o {d}/o.pasm"),
        ("convert", "convert {d}/t.pt2 -o {d}/o.json"),
        ("check", "check {d}/t.pt2"),
    ):
        add(f"pt2-{_name}-{_cmd}", _argv, r"t\.pt2: error: ", t__pt2=_data)
for _name, _data in {
    "empty": b"",
    "random": bytes(range(256)) * 16,
    "legacy-pickle": b"\x80\x02}q\x00.",
    "zlib-junk": zlib.compress(b"x" * 100),
}.items():
    add(f"pth-{_name}-convert", "convert {d}/t.pth -o {d}/o.json", r"t\.pth: error: |error: .*t\.pth", t__pth=_data)

# --------------------------------------------------------------------------------------------- data folders

DATA_CASES: dict[str, tuple[dict[str, Content], str]] = {
    "labels-empty": ({"labels.npy": b""}, r"labels\.npy: error: .*empty"),
    "labels-object": ({"labels.npy": npy(np.array([None] * 12, dtype=object))}, r"labels\.npy: error: .*objects"),
    "labels-tib": ({"labels.npy": npy_header("'<i8'", "(1099511627776,)")}, r"labels\.npy: error: .*allowed"),
    "labels-float": ({"labels.npy": npy(np.full(12, 0.5, np.float32))}, r"labels\.npy.*error: .*integer class labels"),
    "features-empty": ({"features.npy": b""}, r"features\.npy: error: .*empty"),
    "features-random": ({"features.npy": bytes(range(100))}, r"features\.npy: error: .*not a \.npy"),
    "features-count": ({"features.npy": npy(np.zeros((5, 5), np.float32))}, r"features\.npy.*error: .*samples"),
}
for _name, (_files, _pat) in DATA_CASES.items():
    add(f"data-{_name}-train", "train --data-dir {d}/data --epochs 1", _pat,
        **{f"data/{k}".replace(".", "__"): v for k, v in _files.items()})  # fmt: skip

add(
    "data-images-empty-train",
    "train --data-dir {d}/data --multimodal --modalities image --epochs 1",
    r"images\.npy.*error: ",
    **{"data/images__npy": npy(np.zeros((12, 0, 0, 3), np.uint8))},
)
add(
    "data-text-deep-train",
    "train --data-dir {d}/data --multimodal --modalities text --epochs 1",
    r"text\.json.*error: |error: .*text\.json",
    **{"data/text__json": "[" * 100_000 + "]" * 100_000},
)

# --------------------------------------------------------------------------------------------- options

OPTION_CASES = {
    "lr-nan": ("train --learning-rate nan --epochs 1", r"learning.rate"),
    "lr-inf": ("train --learning-rate inf --epochs 1", r"learning.rate"),
    "wd-nan": ("train --weight-decay nan --epochs 1", r"weight.decay"),
    "grid-pull-neg": ("train --grid-pull -5 --epochs 1", r"grid.pull"),
    "hidden-huge": ("train --hidden-dims 999999999 --epochs 1", r"error: "),
    "samples-huge": ("train --n-samples 99999999999 --epochs 1", r"error: "),
    "input-shape-huge": ("compile {d}/gemm.onnx --input-shape x=1x99999999999 -o {d}/o.pasm", r"more than the", 2),
    "output-is-dir": ("compile {d}/model.json -o {d}", r"error: .*directory"),
    "max-steps-neg": ("run {d}/sum.pasm --max-steps -5", r"max-steps", 2),
    "percentile-500-opt": (
        "opt {d}/relu.pir --passes quantize{{calib-method=percentile,percentile=500}} -o {d}/o.pir",
        r"error: percentile must be in \(0, 100\], got 500",
    ),
    "percentile-nan-compile": (
        "compile {d}/relu.pir --passes quantize{{percentile=nan}},plan-memory,tile -o {d}/o.pasm",
        r"error: percentile must be in \(0, 100\], got nan",
    ),
    "calib-method-unknown": (
        "opt {d}/relu.pir --passes quantize{{calib-method=median}} -o {d}/o.pir",
        r"error: calib-method must be minmax or percentile, got 'median'",
    ),
    "max-batches-zero": (
        "opt {d}/relu.pir --passes quantize{{max-batches=0}} -o {d}/o.pir",
        r"error: max-batches must be at least 1, got 0",
    ),
    "table-entries-neg": (
        "compile {d}/relu.pir --passes quantize{{table-entries=-4}},plan-memory,tile -o {d}/o.pasm",
        r"error: table-entries must be at least 1, got -4",
    ),
}
for _name, (_argv, _pat, *_code) in OPTION_CASES.items():
    add(f"opt-{_name}", _argv, _pat, *_code)

# --------------------------------------------------------------------------------------------- paths

# an output that names an input (directly or through another spelling): refused, the input left as it was
SAME_PATH = {
    "asm": ("asm {d}/sum.pasm -o {d}/sum.pasm", "sum.pasm"),
    "asm-alias": ("asm {d}/sum.pasm -o {d}/data/../sum.pasm", "sum.pasm"),
    "disasm": ("disasm {d}/sum.pbin -o {d}/sum.pbin", "sum.pbin"),
    "opt": ("opt {d}/relu.pir -o {d}/relu.pir", "relu.pir"),
    "compile": ("compile {d}/model.json -o {d}/model.json", "model.json"),
    "export": ("export {d}/gemm.onnx -o {d}/gemm.onnx", "gemm.onnx"),
    "convert": ("convert {d}/gemm.onnx -o {d}/gemm.onnx", "gemm.onnx"),
    "quantize": ("quantize {d}/model.json -o {d}/model.json", "model.json"),
    "run-output": ("run {d}/sum.pasm -o {d}/sum.pasm", "sum.pasm"),
    "run-trace-input": ("run {d}/prog.pasm -i input={d}/x.npy --trace {d}/x.npy", "x.npy"),
    "run-profile-json": ("run {d}/prog.pbin --profile-json {d}/prog.pbin", "prog.pbin"),
    "check-json": ("check {d}/model.json -i input={d}/x.npy --json {d}/x.npy", "x.npy"),
}
for _name, (_argv, _input) in SAME_PATH.items():
    add(f"samepath-{_name}", _argv, r"error: .*the output would overwrite the input", unchanged=(_input,))

# a file over PCC_LIMIT_MAX_FILE_BYTES is refused before it is read (here 1 KiB against files of 2 KiB)
_SMALL = {"PCC_LIMIT_MAX_FILE_BYTES": "1K"}
_PAD = "#" * 2048 + "\n"
BIG_FILES: dict[str, tuple[str, dict[str, Content]]] = {
    "asm": ("asm {d}/b.pasm -o {d}/o.pbin", {"b.pasm": ";" + _PAD + ".text\nHALT\n"}),
    "run-pasm": ("run {d}/b.pasm", {"b.pasm": ";" + _PAD + ".text\nHALT\n"}),
    "incbin": (
        "asm {d}/i.pasm -o {d}/o.pbin",
        {"i.pasm": '.data\n.incbin "b.bin"\n.text\nHALT\n', "b.bin": bytes(2048)},
    ),  # noqa: E501
    "disasm": ("disasm {d}/b.pbin", {"b.pbin": b"PBIN" + bytes(2048)}),
    "opt": ("opt {d}/b.pir -o {d}/o.pir", {"b.pir": "//" + _PAD}),
    "compile-json": ("compile {d}/b.json -o {d}/o.pasm", {"b.json": " " * 2048 + "{}"}),
    "quantize": ("quantize {d}/b.json -o {d}/o.json", {"b.json": " " * 2048 + "{}"}),
    "check-json": ("check {d}/b.json", {"b.json": " " * 2048 + "{}"}),
    "charlm-text": ("train --model transformer --text {d}/t.txt --steps 1", {"t.txt": "ab" * 1024}),
    "tokenizer": ("generate {d}/prog.pasm --prompt ab --tokenizer {d}/t.json", {"t.json": " " * 2048 + "{}"}),
    "data-text": (
        "train --data-dir {d}/data --multimodal --modalities text --epochs 1",
        {"data/text.json": "[" + ", ".join(['"a"'] * 600) + "]"},
    ),  # fmt: skip
}
for _name, (_argv, _files) in BIG_FILES.items():
    add(f"bigfile-{_name}", _argv, r"error: .*2,\d\d\d bytes, more than the 1,024 allowed|error: .*more than the 1,024",
        env=_SMALL, **{k.replace(".", "__"): v for k, v in _files.items()})  # fmt: skip

# a device (read whole, it never ends) or a folder where a file is expected
for _name, _argv in {
    "asm": "asm /dev/zero -o {d}/o.pbin",
    "run": "run /dev/zero",
    "disasm": "disasm /dev/zero",
    "opt": "opt /dev/zero -o {d}/o.pir",
    "charlm-text": "train --model transformer --text /dev/zero --steps 1",
}.items():
    add(f"device-{_name}", _argv, r"/dev/zero: error: not a regular file")
for _name, _argv in {
    "asm": "asm {d}/data -o {d}/o.pbin",
    "disasm": "disasm {d}/data",
    "run": "run {d}/data",
    "opt": "opt {d}/data -o {d}/o.pir",
    "charlm-text": "train --model transformer --text {d}/data --steps 1",
    "tokenizer": "generate {d}/prog.pasm --prompt ab --tokenizer {d}/data",
}.items():
    add(f"folder-{_name}", _argv, r"data: error: is a directory")

# --------------------------------------------------------------------------------------------- ONNX sizes


def _init_type(elem: int) -> Callable[[object], None]:
    def edit(m: object) -> None:
        m.graph.initializer[0].data_type = elem  # type: ignore[attr-defined]

    return edit


def _init_dims(*dims: int) -> Callable[[object], None]:
    def edit(m: object) -> None:
        init = m.graph.initializer[0]  # type: ignore[attr-defined]
        del init.dims[:]
        init.dims.extend(dims)

    return edit


def _folded(op: str, *consts: np.ndarray) -> Callable[[object], None]:
    """``y + op(consts...)``: an op that pcc computes at import from constants (its size is in the file)."""

    def edit(m: object) -> None:
        from onnx import helper, numpy_helper

        g = m.graph  # type: ignore[attr-defined]
        names = [f"c{i}" for i in range(len(consts))]
        g.initializer.extend(numpy_helper.from_array(c, n) for c, n in zip(consts, names, strict=True))
        g.node.append(helper.make_node(op, names, ["c"]))
        g.node.append(helper.make_node("Add", ["y", "c"], ["z"]))
        g.output[0].name = "z"
        g.output[0].type.tensor_type.ClearField("shape")

    return edit


ONNX_SIZE_CASES: dict[str, tuple[Content, str]] = {
    "init-type-99": (_onnx(_init_type(99)), r"g\.onnx: error: initializer 'w' has element type type #99"),
    "init-dims-2e62": (_onnx(_init_dims(2**62, 2**62)), r"g\.onnx: error: initializer 'w' would take .* bytes"),
    "init-dims-overflow": (_onnx(_init_dims(2**32, 2**32, 4)), r"initializer 'w' would take .* more than"),
    "init-rank-40": (_onnx(_init_dims(*[1] * 40)), r"initializer 'w' has rank 40"),
    "constantofshape-pib": (
        _onnx(_folded("ConstantOfShape", np.array([100000] * 3, np.int64))),
        r"g\.onnx \(node .*error: ONNX node .*\(ConstantOfShape\) would take 4,000,000,000,000,000 bytes",
    ),
    "constantofshape-neg": (
        _onnx(_folded("ConstantOfShape", np.array([-3, 3], np.int64))),
        r"\(ConstantOfShape\) has an invalid dimension -3",
    ),
    "range-huge": (
        _onnx(_folded("Range", np.array(0.0, np.float32), np.array(1e12, np.float32), np.array(1.0, np.float32))),
        r"\(Range\) would take 3,999,999,983,616 bytes, more than",
    ),
    "range-step-0": (
        _onnx(_folded("Range", np.array(0, np.int64), np.array(5, np.int64), np.array(0, np.int64))),
        r"\(Range\): a range needs finite bounds and a nonzero step",
    ),
}
for _name, (_data, _pat) in ONNX_SIZE_CASES.items():
    for _cmd, _argv in (("compile", "compile {d}/g.onnx -o {d}/o.pasm"), ("check", "check {d}/g.onnx -i x={d}/x.npy")):
        add(f"onnx-{_name}-{_cmd}", _argv, _pat, g__onnx=_data)
    if _name.startswith("init-"):
        add(f"onnx-{_name}-convert", "convert {d}/g.onnx -o {d}/o.json", _pat, g__onnx=_data)

_JSON_CMDS = (("compile", "compile {d}/m.json -o {d}/o.pasm"), ("quantize", "quantize {d}/m.json -o {d}/o.json"))
for _name, _shape in {"neg": [-1], "zero": [0, 4]}.items():
    for _cmd, _argv in _JSON_CMDS:
        add(f"json-input-shape-{_name}-{_cmd}", _argv, r"m\.json: error: input_shape must hold dimensions >= 1",
            m__json=json_edit("model.json", lambda m, s=_shape: m.update(input_shape=s)))  # fmt: skip

# --------------------------------------------------------------------------------------------- .pt2 sizes


_PT2_CONSTANTS = {  # a constant tensor that pcc builds at import, of a size written in the file
    "full-huge": (
        lambda torch: torch.full((100000, 100000, 4), 1.0),
        r"\(aten\.full\.default\) would take 160,000,000,000 bytes",
    ),
    "arange-huge": (
        lambda torch: torch.arange(0, 10**12, 1),
        r"\(aten\.arange\.start_step\) would take 8,000,000,000,000 bytes",
    ),
}


@functools.cache
def _pt2_of(name: str) -> bytes:
    """A ``.pt2`` whose program computes ``x + constant.sum()`` for the constant ``_PT2_CONSTANTS[name]``."""
    import torch

    make = _PT2_CONSTANTS[name][0]

    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + make(torch).sum()

    buf = io.BytesIO()
    torch.export.save(torch.export.export(Net(), (torch.randn(1, 4),)), buf)
    return buf.getvalue()


for _name, (_, _pat) in _PT2_CONSTANTS.items():
    add(f"pt2-{_name}-compile", "compile {d}/t.pt2 -o {d}/o.pasm", _pat, t__pt2=lambda d, n=_name: _pt2_of(n))

# An output that names the calibration file: refused like one that names the model (SAME_PATH above).
OVERWRITE_CASES = {
    "compile-calibration": "compile {d}/model.json --calibration {d}/cal.npz -o {d}/cal.npz",
    "export-calibration": "export {d}/model.json --calibration {d}/cal.npz -o {d}/cal.npz",
}
for _name, _argv in OVERWRITE_CASES.items():
    add(f"overwrite-{_name}", _argv, r"error: .*the output would overwrite the input", unchanged=("cal.npz",))

# A program with nothing to run: refused by the assembler, at the file.
for _cmd, _argv in (("asm", "asm {d}/e.pasm -o {d}/e.pbin"), ("run", "run {d}/e.pasm")):
    add(f"pasm-empty-{_cmd}", _argv, r"e\.pasm:1:1: error: the program has no instructions", e__pasm="")
    add(
        f"pasm-data-only-{_cmd}",
        _argv,
        r"e\.pasm:1:1: error: the program has no instructions",
        e__pasm=".data\n.word 1\n",
    )

# An -o below a file (a file where a folder should be): one error that says which part of the path is a file.
for _cmd, _argv in (
    ("compile", "compile {d}/model.json -o {d}/model.json/o.pasm"),
    ("asm", "asm {d}/sum.pasm -o {d}/sum.pasm/sub/o.pbin"),
    ("quantize", "quantize {d}/model.json -o {d}/model.json/o.json"),
):
    add(f"output-below-file-{_cmd}", _argv, r"is a file, not a folder")
