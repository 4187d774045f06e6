"""Reading an ``.onnx`` file without copying its weights.

The protobuf library copies a ``bytes`` field three times on the way in: the file is read into memory, parsing
copies every ``raw_data`` into the message, and every access to ``TensorProto.raw_data`` returns a fresh copy.
For a ResNet-50 (97 MiB of weights) those copies are most of the import time.

:func:`read_model` maps the file read-only and walks the protobuf wire format of the three message levels that
hold the weights (``ModelProto.graph`` (field 7) -> ``GraphProto.initializer`` (5) -> ``TensorProto.raw_data``
(9)).  It builds a skeleton message without the large ``raw_data`` fields, which protobuf parses in
milliseconds, and returns the raw bytes of each stripped initializer as a zero-copy ``memoryview`` of the
mapping, keyed by the initializer's position.  The caller turns them into read-only NumPy views after checking
their length against the tensor's declared shape and element type.

Every length read from the file is checked against the bytes that remain before it is used.  Anything the walk
does not expect (a malformed varint, a length past the end, a group wire type, a field that protobuf would
merge such as a second ``graph``) returns ``None``, and the caller reads the file the ordinary way, where
protobuf's own parser reports what is wrong.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import onnx

__all__ = ["read_model", "STRIP_BYTES"]

#: ``raw_data`` fields at least this long are left out of the skeleton (smaller ones stay, so that shape
#: inference and constant folding see them as usual)
STRIP_BYTES = 4096

_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class _Malformed(Exception):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _encode_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: memoryview, pos: int, end: int):  # noqa: ANN202 - a generator of (field, wire type, start, body, body end)
    """The fields of the message in ``buf[pos:end]``: ``(number, wire type, field start, value start, value end)``."""
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed
        if wire == _VARINT:
            _, vend = _varint(buf, pos, end)
        elif wire == _I64:
            vend = pos + 8
        elif wire == _I32:
            vend = pos + 4
        elif wire == _LEN:
            n, pos = _varint(buf, pos, end)
            vend = pos + n
        else:  # groups (3, 4) are not used by ONNX
            raise _Malformed
        if vend > end:
            raise _Malformed
        yield number, wire, start, pos, vend
        pos = vend


def _length_delimited(number: int, body: bytes) -> bytes:
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(body)) + body


def _strip_tensor(buf: memoryview, pos: int, end: int) -> tuple[bytes, memoryview | None]:
    parts: list[bytes] = []
    raw: memoryview | None = None
    for number, wire, start, vstart, vend in _fields(buf, pos, end):
        if number == _TENSOR_RAW_DATA and wire == _LEN:
            raw = buf[vstart:vend]  # protobuf keeps the last occurrence of a bytes field
            continue
        parts.append(bytes(buf[start:vend]))
    if raw is not None and len(raw) < STRIP_BYTES:
        return bytes(buf[pos:end]), None
    return b"".join(parts), raw


def _skeleton(buf: memoryview) -> tuple[bytes, dict[int, memoryview]]:
    model_parts: list[bytes] = []
    raws: dict[int, memoryview] = {}
    seen_graph = False
    for number, wire, start, vstart, vend in _fields(buf, 0, len(buf)):
        if number != _MODEL_GRAPH:
            model_parts.append(bytes(buf[start:vend]))
            continue
        if wire != _LEN or seen_graph:  # protobuf would merge a repeated message field: leave that to it
            raise _Malformed
        seen_graph = True
        graph_parts: list[bytes] = []
        index = 0
        for gnum, gwire, gstart, gvstart, gvend in _fields(buf, vstart, vend):
            if gnum == _GRAPH_INITIALIZER and gwire == _LEN:
                body, raw = _strip_tensor(buf, gvstart, gvend)
                if raw is not None:
                    raws[index] = raw
                graph_parts.append(_length_delimited(_GRAPH_INITIALIZER, body))
                index += 1
            else:
                graph_parts.append(bytes(buf[gstart:gvend]))
        model_parts.append(_length_delimited(_MODEL_GRAPH, b"".join(graph_parts)))
    return b"".join(model_parts), raws


def read_model(path: Path) -> tuple[onnx.ModelProto, dict[int, memoryview]] | None:
    """The model of ``path`` without its large ``raw_data`` fields, and those fields' bytes (views on a read-only
    mapping of the file) by initializer position; ``None`` when the file is empty or its wire format is not what
    this walk expects (the caller then reads it with ``onnx.load``, which reports any error)."""
    with open(path, "rb") as f:
        if Path(path).stat().st_size == 0:
            return None
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    buf = memoryview(mapped)
    try:
        skeleton, raws = _skeleton(buf)
        model = onnx.ModelProto()
        model.ParseFromString(skeleton)
    except Exception:  # _Malformed, or protobuf's DecodeError on the skeleton
        return None
    return model, raws
