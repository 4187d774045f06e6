"""Crafted ``.pt2`` files: each attack vector of ``torch.export.load`` is refused before anything runs.

Every archive starts as a real ``torch.export.save`` output and is edited as a zip.  The payloads would create
a marker file if unpickled or evaluated; the tests check each is refused by ``pcc compile``, ``pcc convert`` and
``pcc check`` with one diagnostic naming the file and the part, and that the marker never appears.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
from security_helpers import assert_one_diagnostic, edit_zip, run_cli

torch = pytest.importorskip("torch")

from pcc.diagnostics import PccError  # noqa: E402
from pcc.frontends.pt2 import check_expr, read_exported_program  # noqa: E402


class _Touch:
    """Unpickling this runs ``open(marker, 'w')``: the marker file proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)
        self.register_buffer("shift", torch.arange(4, dtype=torch.float32))

    def forward(self, x):  # noqa: ANN001, ANN201
        return torch.relu(self.fc(x)) + self.shift


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:  # noqa: ANN001
    d = tmp_path_factory.mktemp("pt2")
    torch.manual_seed(0)
    net = _Net().eval()
    static = d / "net.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(2, 6),)), static)
    dyn = d / "dyn.pt2"
    batch = torch.export.Dim("batch", min=2, max=64)
    torch.export.save(torch.export.export(net, (torch.randn(2, 6),), dynamic_shapes={"x": {0: batch}}), dyn)
    return {"static": static, "dyn": dyn}


def _json_edit(name: str, fn):  # noqa: ANN001, ANN202
    def edit(parts: dict[str, bytes]) -> dict[str, bytes]:
        key = next(k for k in parts if k.endswith(name))
        parts[key] = json.dumps(fn(json.loads(parts[key]))).encode()
        return parts

    return edit


def _root(parts: dict[str, bytes]) -> str:
    return next(iter(parts)).split("/", 1)[0] + "/"


def _weights_pickled(marker: Path):  # noqa: ANN202
    def edit(parts: dict[str, bytes]) -> dict[str, bytes]:
        key = _root(parts) + "data/weights/model_weights_config.json"
        cfg = json.loads(parts[key])
        entry = next(iter(cfg["config"].values()))
        entry["use_pickle"] = True
        parts[key] = json.dumps(cfg).encode()
        parts[_root(parts) + "data/weights/" + entry["path_name"]] = pickle.dumps(_Touch(marker))
        return parts

    return edit


def _constants_pickled(marker: Path):  # noqa: ANN202
    def edit(parts: dict[str, bytes]) -> dict[str, bytes]:
        key = _root(parts) + "data/constants/model_constants_config.json"
        cfg = json.loads(parts[key])
        cfg["config"]["evil"] = {"path_name": "tensor_7", "is_param": False, "use_pickle": True, "tensor_meta": None}
        parts[key] = json.dumps(cfg).encode()
        parts[_root(parts) + "data/constants/tensor_7"] = pickle.dumps(_Touch(marker))
        return parts

    return edit


def _object_constant(prefix: str, marker: Path):  # noqa: ANN202
    def edit(parts: dict[str, bytes]) -> dict[str, bytes]:
        key = _root(parts) + "data/constants/model_constants_config.json"
        cfg = json.loads(parts[key])
        cfg["config"]["evil"] = {"path_name": prefix + "0", "is_param": False, "use_pickle": True, "tensor_meta": None}
        parts[key] = json.dumps(cfg).encode()
        parts[_root(parts) + "data/constants/" + prefix + "0"] = pickle.dumps(_Touch(marker))
        return parts

    return edit


def _add_part(rel: str, data: bytes):  # noqa: ANN202
    def edit(parts: dict[str, bytes]) -> dict[str, bytes]:
        parts[_root(parts) + rel] = data
        return parts

    return edit


def _expr(new: str):  # noqa: ANN202
    def fn(program: dict) -> dict:
        text = json.dumps(program)
        assert '"expr_str": ' in text
        start = text.index('"expr_str": ') + len('"expr_str": ')
        end = text.index('"', start + 1) + 1
        return json.loads(text[:start] + json.dumps(new) + text[end:])

    return _json_edit("models/model.json", fn)


def _range_key(new: str):  # noqa: ANN202
    def fn(program: dict) -> dict:
        program["range_constraints"][new] = {"min_val": 0, "max_val": 4}
        return program

    return _json_edit("models/model.json", fn)


def _target(new: str, *, field: str = "target"):  # noqa: ANN202
    def fn(program: dict) -> dict:
        node = program["graph_module"]["graph"]["nodes"][0]
        if field == "target":
            node["target"] = new
        else:
            node["inputs"].append({"name": "op", "arg": {"as_operator": new}, "kind": 1})
        return program

    return _json_edit("models/model.json", fn)


def _old_format(marker: Path):  # noqa: ANN202
    def edit(parts: dict[str, bytes]) -> dict[str, bytes]:
        program = next(v for k, v in parts.items() if k.endswith("models/model.json"))
        evil = pickle.dumps(_Touch(marker))
        return {
            "version": b"8.20",
            "serialized_exported_program.json": program,
            "serialized_state_dict.pt": evil,
            "serialized_constants.pt": evil,
            "serialized_example_inputs.pt": evil,
        }

    return edit


def _marker_code(marker: Path) -> str:
    return f"__import__('builtins').open({str(marker)!r}, 'w')"


#: case id -> (base archive, editor factory taking the marker path, expected message regex)
CASES = {
    "weights-use-pickle": ("static", _weights_pickled, r"part 'data/weights/model_weights_config.json'.*use_pickle"),
    "constants-use-pickle": (
        "static",
        _constants_pickled,
        r"part 'data/constants/model_constants_config.json'.*pickle",
    ),
    "legacy-weights-pt": (
        "static",
        lambda m: _add_part("data/weights/model.pt", pickle.dumps(_Touch(m))),
        r"part 'data/weights/model.pt': legacy pickled",
    ),
    "legacy-constants-pt": (
        "static",
        lambda m: _add_part("data/constants/model.pt", pickle.dumps(_Touch(m))),
        r"part 'data/constants/model.pt': legacy pickled",
    ),
    "custom-obj": ("static", lambda m: _object_constant("custom_obj_", m), r"part 'data/constants/custom_obj_0'.*"),
    "opaque-obj": ("static", lambda m: _object_constant("opaque_obj_", m), r"part 'data/constants/opaque_obj_0'.*"),
    "sympify-expr": ("dyn", lambda m: _expr(_marker_code(m)), r"part 'models/model.json': symbolic expression"),
    "sympify-lambda": ("dyn", lambda m: _expr("(lambda: 0)()"), r"symbolic expression .\(lambda: 0\)\(\)."),
    "sympify-dunder": ("dyn", lambda m: _expr("s0.__class__"), r"symbolic expression"),
    "sympify-pow-bomb": ("dyn", lambda m: _expr("2**99999999999"), r"symbolic expression"),
    "sympify-shift-bomb": ("dyn", lambda m: _expr("LShift(1, 99999999999)"), r"function 'LShift' is not allowed"),
    "range-key": ("dyn", lambda m: _range_key(_marker_code(m)), r"range_constraints: .* is not a shape symbol"),
    "target-torch-load": ("static", lambda m: _target("torch.load"), r"node '.*': operator 'torch.load'"),
    "target-hub": ("static", lambda m: _target("torch.hub.load"), r"operator 'torch.hub.load'"),
    "target-extension": ("static", lambda m: _target("#evil:op"), r"operator '#evil:op'"),
    "target-os": ("static", lambda m: _target("os.system"), r"operator 'os.system'"),
    "as-operator-arg": ("static", lambda m: _target("torch.load", field="as_operator"), r"operator argument"),
    "aotinductor": (
        "static",
        lambda m: _add_part("data/aotinductor/model/model.so", b"\x7fELF"),
        r"part 'data/aotinductor/model/model.so': AOTInductor",
    ),
    "old-format": ("static", _old_format, r"part 'serialized_exported_program.json'|part 'version': the pre-2.8"),
}


@pytest.mark.parametrize("command", ["compile", "convert", "check"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_crafted_pt2_refused(case: str, command: str, base: dict[str, Path], tmp_path: Path) -> None:
    which, factory, pattern = CASES[case]
    marker = tmp_path / "MARKER"
    bad = edit_zip(base[which], tmp_path / f"{case}.pt2", factory(marker))
    argv = {
        "compile": ["compile", bad, "-o", tmp_path / "out.pasm"],
        "convert": ["convert", bad, "-o", tmp_path / "out.json"],
        "check": ["check", bad],
    }[command]
    rc, _, err = run_cli(argv)
    assert not marker.exists(), "the payload ran"
    assert_one_diagnostic(rc, err, pattern)
    assert f"{case}.pt2: error: " in err
    assert not (tmp_path / "out.pasm").exists() and not (tmp_path / "out.json").exists()


def test_sample_inputs_are_never_read(base: dict[str, Path], tmp_path: Path) -> None:
    """torch retries the sample inputs with weights_only=False; pcc does not read them at all."""
    marker = tmp_path / "MARKER"

    def edit(parts: dict[str, bytes]) -> dict[str, bytes]:
        parts[_root(parts) + "data/sample_inputs/model.pt"] = pickle.dumps(_Touch(marker))
        return parts

    bad = edit_zip(base["static"], tmp_path / "inputs.pt2", edit)
    ep = read_exported_program(bad)
    assert not marker.exists()
    assert ep.example_inputs is None
    ref = torch.export.load(base["static"]).module()
    x = torch.randn(2, 6)
    torch.testing.assert_close(ep.module()(x), ref(x))


def test_guard_code_is_dropped(base: dict[str, Path], tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"

    def fn(program: dict) -> dict:
        program["guards_code"] = [_marker_code(marker)]
        return program

    bad = edit_zip(base["static"], tmp_path / "guards.pt2", _json_edit("models/model.json", fn))
    ep = read_exported_program(bad)
    ep.module()(torch.randn(2, 6))
    assert not marker.exists()


def test_source_fn_metadata_dropped(base: dict[str, Path], tmp_path: Path) -> None:
    def fn(program: dict) -> dict:
        program["graph_module"]["graph"]["nodes"][0]["metadata"]["source_fn_stack"] = "x,torch.hub.load"
        return program

    ep = read_exported_program(edit_zip(base["static"], tmp_path / "meta.pt2", _json_edit("models/model.json", fn)))
    assert all("source_fn_stack" not in n.meta for n in ep.graph.nodes)


def test_weights_match_torch(base: dict[str, Path]) -> None:
    """The reader's own weight decoding gives torch's tensors (values, strides, parameters)."""
    for which in ("static", "dyn"):
        ours, ref = read_exported_program(base[which]), torch.export.load(base[which])
        assert ours.state_dict.keys() == ref.state_dict.keys()
        for k, v in ref.state_dict.items():
            torch.testing.assert_close(ours.state_dict[k], v)
            assert isinstance(ours.state_dict[k], torch.nn.Parameter) == isinstance(v, torch.nn.Parameter)
        for k, v in ref.constants.items():
            torch.testing.assert_close(ours.constants[k], v)


def _meta_edit(fn):  # noqa: ANN001, ANN202
    def edit(program: dict) -> dict:
        fn(next(iter(program["config"].values()))["tensor_meta"])
        return program

    return _json_edit("data/weights/model_weights_config.json", edit)


@pytest.mark.parametrize(
    ("case", "fn", "pattern"),
    [
        ("huge-size", lambda tm: tm["sizes"].__setitem__(0, {"as_int": 10**12}), r"more than the .* allowed"),
        ("beyond-record", lambda tm: tm["sizes"].__setitem__(0, {"as_int": 400}), r"needs .* elements but the record"),
        ("stride", lambda tm: tm["strides"].__setitem__(0, {"as_int": 10**9}), r"needs .* elements but the record"),
        ("offset", lambda tm: tm.__setitem__("storage_offset", {"as_int": 10**6}), r"the record holds"),
        ("negative", lambda tm: tm["sizes"].__setitem__(0, {"as_int": -3}), r"negative size"),
        ("symbolic", lambda tm: tm["sizes"].__setitem__(0, {"as_expr": {"expr_str": "s0"}}), r"concrete integer"),
        ("rank", lambda tm: tm.update(sizes=[{"as_int": 1}] * 99, strides=[{"as_int": 1}] * 99), r"rank 99"),
        ("complex", lambda tm: tm.__setitem__("dtype", 10), r"unsupported dtype"),
        ("bad-dtype", lambda tm: tm.__setitem__("dtype", 999), r"unsupported dtype"),
        ("sparse", lambda tm: tm.__setitem__("layout", 1), r"only strided"),
    ],
)
def test_tensor_meta_checked_before_allocation(case, fn, pattern, base, tmp_path) -> None:  # noqa: ANN001
    bad = edit_zip(base["static"], tmp_path / f"{case}.pt2", _meta_edit(fn))
    with pytest.raises(PccError, match=r"part 'data/weights/.*" + pattern):
        read_exported_program(bad)


def test_zip_bomb_and_lying_sizes(base: dict[str, Path], tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    bomb = tmp_path / "bomb.pt2"
    with zipfile.ZipFile(base["static"]) as z, zipfile.ZipFile(bomb, "w") as out:
        for info in z.infolist():
            out.writestr(info, z.read(info))
        out.writestr("net/extra/zeros", b"\0" * (64 << 20), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(PccError, match=r"part 'extra/zeros': inflates .* zip bomb"):
        read_exported_program(bomb)
    monkeypatch.setenv("PCC_LIMIT_MAX_ARCHIVE_MEMBERS", "5")
    with pytest.raises(PccError, match=r"members, more than the 5 allowed"):
        read_exported_program(base["static"])
    monkeypatch.delenv("PCC_LIMIT_MAX_ARCHIVE_MEMBERS")
    # a member whose header claims fewer bytes than it holds
    data = bytearray(base["static"].read_bytes())
    name = b"net/models/model.json"
    with zipfile.ZipFile(base["static"]) as z:
        info = z.getinfo(name.decode())
    central = data.rindex(name) - 46  # the central-directory entry of the member
    size_at = central + 24
    assert int.from_bytes(data[size_at : size_at + 4], "little") == info.file_size
    data[size_at : size_at + 4] = (info.file_size - 10).to_bytes(4, "little")
    liar = tmp_path / "liar.pt2"
    liar.write_bytes(bytes(data))
    with pytest.raises(PccError, match=r"part 'models/model.json'"):
        read_exported_program(liar)


@pytest.mark.parametrize(
    ("expr", "ok"),
    [
        ("s0", True),
        ("2*s0 + 1", True),
        ("FloorDiv(s0, 2) + Mod(u3, 4)", True),
        ("Eq(s0, 4)", True),
        ("Symbol('s77', positive=True, integer=True)", True),
        ("Max(1, s12) <= 64", True),
        ("", False),
        ("s0.__class__", False),
        ("__import__('os')", False),
        ("exec('1')", False),
        ("s0; 1", False),
        ("'text'", False),
        ("2**64", False),
        ("x", False),
        ("Symbol('s0', evil=True)", False),
        ("(" * 40 + "s0" + ")" * 40, False),
        ("s0)", False),
        ("s0 s1", False),
        ("Max()", False),
        ("2 * * 3", False),
        ("1" * 25, False),
    ],
)
def test_expression_grammar(expr: str, ok: bool) -> None:
    assert (check_expr(expr) is None) == ok, check_expr(expr)


def test_missing_and_directory(tmp_path: Path) -> None:
    os.mkdir(tmp_path / "d.pt2")
    for p, msg in [(tmp_path / "none.pt2", "no such file"), (tmp_path / "d.pt2", "not a file")]:
        with pytest.raises(PccError, match=msg):
            read_exported_program(p)


@pytest.mark.parametrize("command", ["compile", "convert", "check"])
def test_random_empty_truncated_pt2(command: str, base: dict[str, Path], tmp_path: Path) -> None:
    """No traceback from torch's logger or anything else: one diagnostic naming the file."""
    import random

    good = base["static"].read_bytes()
    rng = random.Random(0)
    files = {
        "empty.pt2": b"",
        "random.pt2": bytes(rng.randrange(256) for _ in range(4096)),
        "zipmagic.pt2": b"PK\x03\x04" + bytes(100),
    }
    for cut in (10, len(good) // 3, len(good) // 2, len(good) - 30, len(good) - 1):
        files[f"cut{cut}.pt2"] = good[:cut]
    for name, data in files.items():
        f = tmp_path / name
        f.write_bytes(data)
        argv = {
            "compile": ["compile", f, "-o", tmp_path / "o.pasm"],
            "convert": ["convert", f, "-o", tmp_path / "o.json"],
            "check": ["check", f],
        }[command]
        rc, _, err = run_cli(argv)
        assert_one_diagnostic(rc, err, rf"{name}: error: ")
