"""Reading ``.pt2`` files (``torch.export.save``) without running anything that is in them.

``torch.export.load`` trusts the archive: it unpickles (``weights_only=False``) weights and constants whose
config says ``use_pickle``, legacy ``.pt`` parts, custom and opaque objects and, after a failed safe load, the
sample inputs; it evaluates symbolic-shape strings with ``sympy.sympify`` (Python ``eval``); it loads the
shared libraries of ``data/aotinductor/``; and it falls back to an older, pickle-based zip layout.  pcc never
calls it.  :func:`read_exported_program` opens the zip itself and checks every part before anything is
deserialized:

- the archive: member count and sizes (declared and actual, inflation ratio) within :mod:`pcc.limits`, one root
  folder, ``archive_format`` ``pt2``, ``archive_version`` 0, little-endian, and only the parts
  ``torch.export.save`` writes for one program;
- refused outright: pickled payloads (``use_pickle``), legacy pickled weights/constants, custom and opaque
  objects, AOTInductor parts, the pre-2.8 layout;
- the program JSON: every symbolic expression (``expr_str``, range-constraint names) must match a small grammar
  (symbols such as ``s0``/``u3``, integers, ``+ - * // %``, comparisons and a short list of functions), every
  operator name must be ``torch.ops.aten.*``/``torch.ops.prims.*`` or a listed ``_operator``/``math``/
  ``torch.sym_*`` name, no custom objects, no guard code;
- weights and constants are built from the raw bytes here, sizes/strides/offsets checked against the record
  before allocation (never ``torch.load``); the sample inputs are never read.

Only then does torch's ``ExportedProgramDeserializer`` turn the checked JSON into an ``ExportedProgram``.
Every refusal is one :class:`PccError` naming the file and the part.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pcc import limits
from pcc.diagnostics import Location, PccError

__all__ = ["read_exported_program"]

INSTALL_HINT = "reading .pt2 files needs torch: pip install 'pcc[torch]'"

# --------------------------------------------------------------------------------------------- the grammar

_SYMBOL = re.compile(r"(?:s|u|zf|zuf|ps)[0-9]{1,5}")
#: functions a symbolic expression may call (sympy and torch.utils._sympy.functions); no powers or shifts,
#: whose integer evaluation can take unbounded time
_FUNCTIONS = frozenset(
    "FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv TruncToInt IntTrueDiv "
    "FloatTrueDiv ToFloat Identity RoundToInt Max Min Eq Ne Lt Le Gt Ge And Or Not Abs".split()
)
_CONSTANTS = frozenset({"True", "False"})
_TOKEN = re.compile(
    r"\s*(?:(?P<num>[0-9]{1,19}(?:\.[0-9]{1,19})?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>//|==|!=|<=|>=|[-+*/%(),<>]))"
)
_MAX_PARENS = 32
_BINARY = frozenset({"+", "-", "*", "/", "//", "%", "==", "!=", "<", "<=", ">", ">="})
#: how torch 2.13 writes a bare symbol with its assumptions; checked as a whole, then read as the symbol
_SYMBOL_CALL = re.compile(
    r"Symbol\('((?:s|u|zf|zuf|ps)[0-9]{1,5})'"
    r"(?:,\s*(?:positive|negative|nonnegative|nonpositive|integer|real|finite|zero|nonzero|even|odd)=(?:True|False))*\)"
)

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_ATEN_OP = re.compile(rf"torch\.ops\.(?:aten|prims)\.{_IDENT}\.{_IDENT}")
_PLAIN_OPS = frozenset(
    [
        "_operator." + n
        for n in "getitem add sub mul floordiv mod neg pos truediv eq ne lt le gt ge and_ or_ not_".split()
    ]
    + ["math." + n for n in "ceil floor trunc sqrt".split()]
    + ["torch." + n for n in "sym_float sym_int sym_max sym_min sym_not sym_ite sym_sum".split()]
)
_VERIFIERS = frozenset({"ATEN", "TRAINING"})
#: node metadata the deserializer reads as plain strings (the rest resolves names or is dropped)
_NODE_METADATA = frozenset({"stack_trace", "nn_module_stack", "torch_fn"})


def check_expr(text: Any) -> str | None:
    """Why ``text`` is not an allowed symbolic expression, or None if it is.

    The grammar: ``expr := unary* atom (binop unary* atom)*``; ``atom := number | symbol | True | False |
    '(' expr ')' | function '(' expr (',' expr)* ')'``; ``binop := + - * / // % == != < <= > >=``.
    """
    if not isinstance(text, str):
        return f"expected a string, got {type(text).__name__}"
    lim = limits.current().max_expr_chars
    if len(text) > lim:
        return f"{len(text)} characters, more than {lim}"
    text = _SYMBOL_CALL.sub(lambda m: m.group(1), text).rstrip()
    if not text.strip():
        return "empty"
    pos, operand = 0, True  # operand: an atom (or a unary sign) comes next
    parens: list[bool] = []  # per open parenthesis: is it a function call (commas allowed)
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            return f"unexpected character {text[pos:].lstrip()[:1]!r} at offset {pos}"
        pos = m.end()
        num, name, op = m.group("num"), m.group("name"), m.group("op")
        if operand:
            if num is not None:
                operand = False
            elif name is not None:
                call = _TOKEN.match(text, pos)
                if call is not None and call.group("op") == "(":
                    if name not in _FUNCTIONS:
                        return f"function {name!r} is not allowed"
                    pos = call.end()
                    parens.append(True)
                elif _SYMBOL.fullmatch(name) or name in _CONSTANTS:
                    operand = False
                else:
                    return f"name {name!r} is not a shape symbol"
            elif op == "(":
                parens.append(False)
            elif op not in ("-", "+"):
                return f"expected a value at offset {m.start('op')}, got {op!r}"
        elif op == ")":
            if not parens:
                return "unbalanced ')'"
            parens.pop()
        elif op == ",":
            if not parens or not parens[-1]:
                return "',' outside a function call"
            operand = True
        elif op in _BINARY:
            operand = True
        else:
            return f"expected an operator at offset {m.start()}, got {m.group().strip()!r}"
        if len(parens) > _MAX_PARENS:
            return f"nested more than {_MAX_PARENS} deep"
    if parens:
        return "unbalanced '('"
    if operand:
        return "ends without a value"
    return None


def check_target(text: Any) -> bool:
    """Whether ``text`` is an operator name the reader lets torch resolve."""
    return isinstance(text, str) and (_ATEN_OP.fullmatch(text) is not None or text in _PLAIN_OPS)


# --------------------------------------------------------------------------------------------- the archive

_REFUSED_PARTS = [
    (
        "data/aotinductor/",
        "AOTInductor compiled code (a native shared library); pcc never loads code from a model file",
    ),
    ("data/executorch/", "an ExecuTorch program; pcc reads only torch.export programs"),
    ("data/mtia", "an MTIA artifact; pcc reads only torch.export programs"),
    ("xl_model_weights/", "externally stored weights; pcc reads only weights stored in the archive"),
]
_OLD_FORMAT = {
    "version",
    "serialized_exported_program.json",
    "serialized_state_dict.pt",
    "serialized_state_dict.json",
    "serialized_constants.pt",
    "serialized_constants.json",
    "serialized_example_inputs.pt",
}
_PLAIN_PARTS = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}


class _Archive:
    """A checked zip: member names relative to the root folder, read with their sizes enforced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lims = limits.current()
        self.loc = Location(str(path))
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise PccError(f"cannot read: {exc.strerror or exc}", self.loc) from None
        if size > self.lims.max_file_bytes:
            raise self.error(None, f"{size:,} bytes, more than the {self.lims.max_file_bytes:,} allowed")
        try:
            self.zf = zipfile.ZipFile(path)
            infos = self.zf.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise self.error(
                None, f"not a torch.export program (.pt2: a zip file written by torch.export.save): {exc}"
            ) from None
        if len(infos) > self.lims.max_archive_members:
            raise self.error(None, f"{len(infos):,} members, more than the {self.lims.max_archive_members:,} allowed")
        names = [i.filename for i in infos]
        for name in names:
            if name in _OLD_FORMAT or name.startswith("extra_files/"):
                raise self.error(
                    name,
                    "the pre-2.8 torch.export layout, which stores pickles; save the program "
                    "again with a current torch.export.save",
                )
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1 or not all("/" in n for n in names):
            raise self.error(None, "not a torch.export program (.pt2): its members do not share one root folder")
        self.root = roots.pop() + "/"
        self.infos: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            rel = info.filename[len(self.root) :]
            if rel in self.infos:
                raise self.error(rel, "appears twice in the archive")
            if not re.fullmatch(r"[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*/?", rel) or ".." in rel.split("/"):
                raise self.error(rel, "has an unexpected name")
            if info.flag_bits & 0x1:
                raise self.error(rel, "is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise self.error(rel, f"uses zip compression method {info.compress_type}; expected stored or deflated")
            if info.file_size > self.lims.max_archive_bytes:
                raise self.error(
                    rel, f"declares {info.file_size:,} bytes, more than the {self.lims.max_archive_bytes:,} allowed"
                )
            if (
                info.compress_type == zipfile.ZIP_DEFLATED
                and info.file_size > 4096 + info.compress_size * self.lims.max_compression_ratio
            ):
                raise self.error(rel, f"inflates {info.compress_size:,} bytes to {info.file_size:,} (a zip bomb?)")
            total += info.file_size
            self.infos[rel] = info
        if total > self.lims.max_archive_bytes:
            raise self.error(
                None, f"members total {total:,} bytes, more than the {self.lims.max_archive_bytes:,} allowed"
            )

    def error(self, part: str | None, message: str) -> PccError:
        where = f"part {part!r}: " if part else ""
        return PccError(where + message, self.loc)

    def has(self, part: str) -> bool:
        return part in self.infos

    def read(self, part: str) -> bytes:
        info = self.infos.get(part)
        if info is None:
            raise self.error(part, "is missing")
        try:
            with self.zf.open(info) as f:
                data = f.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise self.error(part, f"cannot be read: {exc}") from None
        if len(data) != info.file_size:
            raise self.error(part, f"holds {len(data):,} bytes, not the {info.file_size:,} its header declares")
        return data

    def text(self, part: str) -> str:
        try:
            return self.read(part).decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(part, "is not UTF-8 text") from None

    def json(self, part: str) -> Any:
        try:
            return json.loads(self.text(part))
        except RecursionError:
            raise self.error(part, "is nested too deeply") from None
        except ValueError as exc:
            raise self.error(part, f"is not valid JSON: {exc}") from None


def _check_layout(ar: _Archive) -> str:
    """Check the member names; return the program's name."""
    for rel in ar.infos:
        for prefix, why in _REFUSED_PARTS:
            if rel.startswith(prefix):
                raise ar.error(rel, why)
    if not ar.has("archive_format") or ar.read("archive_format").strip() != b"pt2":
        raise ar.error("archive_format", "missing or not 'pt2'; not a torch.export archive")
    if not ar.has("archive_version") or ar.read("archive_version").strip() != b"0":
        got = ar.read("archive_version")[:20] if ar.has("archive_version") else b"(missing)"
        raise ar.error("archive_version", f"is {got!r}; pcc reads archive version 0 (torch 2.8 and later)")
    if ar.has("byteorder") and ar.read("byteorder").strip() != b"little":
        raise ar.error("byteorder", "is not 'little'; pcc reads little-endian archives only")
    models = sorted(m.group(1) for rel in ar.infos if (m := re.fullmatch(r"models/([A-Za-z0-9_]{1,100})\.json", rel)))
    if len(models) != 1:
        raise ar.error("models/", f"holds {len(models)} programs; pcc reads a file with exactly one")
    name = models[0]
    allowed = {
        f"models/{name}.json",
        f"data/weights/{name}_weights_config.json",
        f"data/constants/{name}_constants_config.json",
        f"data/sample_inputs/{name}.pt",  # present but never read
    }
    for rel in ar.infos:
        if rel in _PLAIN_PARTS or rel in allowed or rel.endswith("/"):
            continue
        if rel in (f"data/weights/{name}.pt", f"data/constants/{name}.pt"):
            raise ar.error(
                rel,
                "legacy pickled weights or constants; pcc never unpickles a model file "
                "(save the program again with a current torch.export.save)",
            )
        if rel.startswith(("data/constants/custom_obj_", "data/constants/opaque_obj_")):
            raise ar.error(rel, "a pickled custom or opaque object; pcc never unpickles a model file")
        if re.fullmatch(r"data/weights/weight_[0-9]{1,9}|data/constants/tensor_[0-9]{1,9}|extra/[^/]+", rel):
            continue
        raise ar.error(rel, "is not a part torch.export.save writes")
    return name


# --------------------------------------------------------------------------------------------- tensors


def _int_field(ar: _Archive, part: str, what: str, obj: Any) -> int:
    if not isinstance(obj, dict) or set(obj) != {"as_int"} or type(obj["as_int"]) is not int:
        raise ar.error(part, f"{what}: expected a concrete integer ({{'as_int': n}}), got {str(obj)[:80]}")
    return obj["as_int"]


def _load_payloads(ar: _Archive, torch: Any, config_part: str, folder: str, prefix: str) -> dict[str, Any]:
    """The tensors a weights/constants config describes, built from the raw records."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE

    config = ar.json(config_part)
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise ar.error(config_part, "expected an object with a 'config' object")
    lims = ar.lims
    bases: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for fqn, meta in config["config"].items():
        where = f"entry {fqn!r}"
        if not isinstance(meta, dict):
            raise ar.error(config_part, f"{where}: expected an object")
        if meta.get("use_pickle") is not False:
            raise ar.error(
                config_part,
                f"{where}: a pickled payload (use_pickle: {meta.get('use_pickle')!r}); "
                "pcc never unpickles a model file",
            )
        path_name = meta.get("path_name")
        if not isinstance(path_name, str) or not re.fullmatch(prefix + r"[0-9]{1,9}", path_name):
            raise ar.error(config_part, f"{where}: path_name {str(path_name)[:80]!r} is not {prefix}<n>")
        record = folder + path_name
        if not ar.has(record):
            raise ar.error(config_part, f"{where}: its record {record!r} is missing")
        tm = meta.get("tensor_meta")
        if not isinstance(tm, dict):
            raise ar.error(config_part, f"{where}: tensor_meta missing")
        try:
            dtype = _SERIALIZE_TO_TORCH_DTYPE[schema.ScalarType(tm.get("dtype"))]
        except (ValueError, KeyError, TypeError):
            dtype = None
        if dtype is None or dtype.is_complex or dtype == torch.uint16 or "float8" in str(dtype):
            raise ar.error(config_part, f"{where}: unsupported dtype code {str(tm.get('dtype'))[:20]}")
        if tm.get("layout") != schema.Layout.Strided.value:
            raise ar.error(config_part, f"{where}: only strided (dense) tensors are supported")
        dev = tm.get("device")
        if not isinstance(dev, dict) or not isinstance(dev.get("type"), str):
            raise ar.error(config_part, f"{where}: device missing")
        sizes_raw, strides_raw = tm.get("sizes"), tm.get("strides")
        if not isinstance(sizes_raw, list) or not isinstance(strides_raw, list) or len(sizes_raw) != len(strides_raw):
            raise ar.error(config_part, f"{where}: sizes and strides must be lists of one length")
        if len(sizes_raw) > lims.max_rank:
            raise ar.error(config_part, f"{where}: rank {len(sizes_raw)}, more than the {lims.max_rank} allowed")
        sizes = [_int_field(ar, config_part, f"{where}: size", s) for s in sizes_raw]
        strides = [_int_field(ar, config_part, f"{where}: stride", s) for s in strides_raw]
        offset = _int_field(ar, config_part, f"{where}: storage_offset", tm.get("storage_offset"))
        if any(s < 0 for s in sizes) or any(s < 0 for s in strides) or offset < 0:
            raise ar.error(config_part, f"{where}: negative size, stride or offset")
        itemsize = torch.empty((), dtype=dtype).element_size()
        numel = 1
        for s in sizes:
            numel *= s
        if numel * itemsize > lims.max_tensor_bytes:
            raise ar.error(
                config_part,
                f"{where}: {numel * itemsize:,} bytes, more than the "
                f"{lims.max_tensor_bytes:,} allowed (PCC_LIMIT_MAX_TENSOR_BYTES)",
            )
        nbytes = ar.infos[record].file_size
        if nbytes % itemsize:
            raise ar.error(record, f"{nbytes} bytes is not a whole number of {dtype} elements")
        extent = 0 if numel == 0 else offset + 1 + sum((s - 1) * st for s, st in zip(sizes, strides, strict=True))
        if extent > nbytes // itemsize:
            raise ar.error(record, f"{where} needs {extent:,} elements but the record holds {nbytes // itemsize:,}")
        if path_name not in bases:
            raw = bytearray(ar.read(record))
            bases[path_name] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        base = bases[path_name]
        if base.dtype != dtype:
            raise ar.error(config_part, f"{where}: record {record!r} is shared by tensors of different dtypes")
        t = torch.as_strided(base, sizes, strides, offset) if numel else torch.empty(sizes, dtype=dtype)
        if meta.get("is_param") is True:
            grad = tm.get("requires_grad") is True and (dtype.is_floating_point or dtype.is_complex)
            t = torch.nn.Parameter(t, requires_grad=grad)
        out[fqn] = t
    return out


# --------------------------------------------------------------------------------------------- the program


def _check_program(ar: _Archive, part: str, program: Any) -> None:
    """Walk the program JSON: nesting depth, expressions, operator names, custom objects; drop risky metadata."""
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise ar.error(part, "expected an object with a 'graph_module'")
    from torch._export.serde.schema import SCHEMA_VERSION

    version = program.get("schema_version")
    if not isinstance(version, dict) or version.get("major") != SCHEMA_VERSION[0]:
        raise ar.error(
            part,
            f"schema version {str(version)[:60]} is not this torch's {SCHEMA_VERSION[0]}.x; "
            "export the model again with the installed torch",
        )
    ranges = program.get("range_constraints", {})
    if not isinstance(ranges, dict):
        raise ar.error(part, "range_constraints: expected an object")
    for sym, rng in ranges.items():
        if not _SYMBOL.fullmatch(sym):
            raise ar.error(part, f"range_constraints: {sym[:80]!r} is not a shape symbol")
        if not isinstance(rng, dict):
            raise ar.error(part, f"range_constraints[{sym!r}]: expected an object")
        for key in ("min_val", "max_val"):
            v = rng.get(key)
            if v is not None and (type(v) is not int or abs(v) > 2**63):
                raise ar.error(part, f"range_constraints[{sym!r}].{key}: expected an integer, got {str(v)[:40]}")
    verifiers = program.get("verifiers", [])
    if not isinstance(verifiers, list) or not set(verifiers) <= _VERIFIERS:
        raise ar.error(part, f"verifiers {str(verifiers)[:80]}: expected some of {sorted(_VERIFIERS)}")
    program["guards_code"] = []  # Python source that ExportedProgram.module() would compile

    max_depth = ar.lims.max_nesting
    stack: list[tuple[Any, int]] = [(program, 0)]
    while stack:
        obj, depth = stack.pop()
        if depth > max_depth:
            raise ar.error(part, f"nested more than {max_depth} deep")
        if isinstance(obj, list):
            stack.extend((v, depth + 1) for v in obj)
            continue
        if not isinstance(obj, dict):
            continue
        if "target" in obj and "inputs" in obj and "outputs" in obj:  # a graph node
            node = str(obj.get("name", "?"))[:80]
            if not check_target(obj["target"]):
                raise ar.error(part, f"node {node!r}: operator {str(obj['target'])[:120]!r} is not an ATen/prims op")
            md = obj.get("metadata")
            if isinstance(md, dict):
                obj["metadata"] = {k: v for k, v in md.items() if k in _NODE_METADATA and isinstance(v, str)}
        for key, value in obj.items():
            if key == "expr_str":
                why = check_expr(value)
                if why is not None:
                    raise ar.error(part, f"symbolic expression {str(value)[:120]!r}: {why}")
            elif key == "as_operator" and not check_target(value):
                raise ar.error(part, f"operator argument {str(value)[:120]!r} is not an ATen/prims op")
            elif key in ("as_custom_obj", "custom_obj"):
                raise ar.error(part, "holds a custom (script) object; pcc reads plain tensor programs only")
            elif key == "custom_obj_values" and value:
                raise ar.error(part, "holds custom (script) objects; pcc reads plain tensor programs only")
            elif isinstance(value, (dict, list)):
                stack.append((value, depth + 1))


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """Keep torch's loggers from printing warnings (and tracebacks) while a program is deserialized."""
    names = ["torch._export", "torch.export", "torch.fx.experimental.symbolic_shapes", "torch._subclasses"]
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in names]
    for logger, _ in saved:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def read_exported_program(path: str | os.PathLike[str]) -> Any:
    """Read a ``.pt2`` file as a ``torch.export.ExportedProgram`` after checking all of it (module docstring)."""
    try:
        import torch
        from torch._export.serde import schema
        from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass
    except ImportError:
        raise PccError(INSTALL_HINT) from None
    p = Path(path)
    if not p.is_file():
        raise PccError("no such file" if not p.exists() else "not a file", Location(str(p)))
    ar = _Archive(p)
    with ar.zf:
        name = _check_layout(ar)
        part = f"models/{name}.json"
        program = ar.json(part)
        _check_program(ar, part, program)
        state_dict = _load_payloads(ar, torch, f"data/weights/{name}_weights_config.json", "data/weights/", "weight_")
        constants = _load_payloads(
            ar, torch, f"data/constants/{name}_constants_config.json", "data/constants/", "tensor_"
        )
    try:
        with _quiet_torch(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            serialized = _dict_to_dataclass(schema.ExportedProgram, program)
            return ExportedProgramDeserializer().deserialize(serialized, state_dict, constants, None)
    except RecursionError:
        raise ar.error(part, "is nested too deeply") from None
    except PccError:
        raise
    except Exception as exc:  # torch's own checks of a well-formed but inconsistent program
        raise ar.error(part, f"torch.export cannot deserialize it: {type(exc).__name__}: {str(exc)[:300]}") from None
