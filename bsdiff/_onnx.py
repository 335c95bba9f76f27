"""Find the tensors of an ONNX file by walking the protobuf wire format (no ``onnx`` package).

Only the patch *maker* (the hub) calls this; applying a patch never parses a model. The walk
visits ``ModelProto.graph`` (field 7), its ``initializer`` tensors (field 5) and the tensors of
node attributes (``Constant`` values, field 5 ``t``; sub-graphs ``g``/``graphs`` recursively),
and records, for every ``TensorProto`` that carries ``raw_data`` (field 9), its name, element
type and the byte range of that raw data in the file. Tensors stored as typed repeated fields
or as external data are left in the non-tensor bytes, where the generic coder still sees them.

Anything that does not parse as protobuf to the last byte is "not ONNX" (``None``), and the
caller falls back to the generic codec.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Tensor", "element_width", "find_onnx_tensors"]

_MIN_TENSOR_BYTES = 64
"""Smaller tensors stay in the non-tensor bytes: a table entry would cost more than it saves."""

# TensorProto.DataType -> bytes per element (sub-byte and odd types: 1, i.e. no plane split).
_WIDTH = {
    1: 4,  # FLOAT
    2: 1,  # UINT8
    3: 1,  # INT8
    4: 2,  # UINT16
    5: 2,  # INT16
    6: 4,  # INT32
    7: 8,  # INT64
    9: 1,  # BOOL
    10: 2,  # FLOAT16
    11: 8,  # DOUBLE
    12: 4,  # UINT32
    13: 8,  # UINT64
    14: 4,  # COMPLEX64 (two float32)
    15: 8,  # COMPLEX128 (two float64)
    16: 2,  # BFLOAT16
}


@dataclass(frozen=True)
class Tensor:
    """One tensor's raw data inside a model file: ``data[offset:offset + length]``."""

    name: str
    dtype: int
    dims: tuple[int, ...]
    offset: int
    length: int

    @property
    def width(self) -> int:
        """Bytes per element used for the bit-pattern delta (1 when not a whole multiple)."""
        return element_width(self.dtype, self.length)


def element_width(dtype: int, length: int) -> int:
    """Bytes per element of ONNX ``dtype``; 1 if unknown or ``length`` is not a multiple."""
    w = _WIDTH.get(dtype, 1)
    return w if length % w == 0 else 1


class _NotProtobuf(Exception):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _NotProtobuf
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """Every field of the message in ``buf[start:end]`` as (number, wire type, a, b).

    For length-delimited fields (a, b) is the byte range; for varints a is the value.
    """
    out: list[tuple[int, int, int, int]] = []
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _NotProtobuf
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            out.append((number, wire, value, 0))
        elif wire == 1:
            pos += 8
            out.append((number, wire, 0, 0))
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise _NotProtobuf
            out.append((number, wire, pos, pos + size))
            pos += size
        elif wire == 5:
            pos += 4
            out.append((number, wire, 0, 0))
        else:  # groups (3, 4) are not used by ONNX; 6, 7 do not exist
            raise _NotProtobuf
    if pos != end:
        raise _NotProtobuf
    return out


def _tensor(buf: memoryview, start: int, end: int) -> Tensor | None:
    name = ""
    dtype = 0
    dims: list[int] = []
    raw: tuple[int, int] | None = None
    for number, wire, a, b in _fields(buf, start, end):
        if number == 1 and wire == 0:
            dims.append(a)
        elif number == 1 and wire == 2:
            pos = a
            while pos < b:
                d, pos = _varint(buf, pos, b)
                dims.append(d)
        elif number == 2 and wire == 0:
            dtype = a
        elif number == 8 and wire == 2:
            name = bytes(buf[a:b]).decode("utf-8", "replace")
        elif number == 9 and wire == 2:
            raw = (a, b)
    if raw is None or raw[1] - raw[0] < _MIN_TENSOR_BYTES:
        return None
    return Tensor(name, dtype, tuple(dims), raw[0], raw[1] - raw[0])


def _graph(buf: memoryview, start: int, end: int, out: list[Tensor], depth: int) -> None:
    if depth > 16:
        raise _NotProtobuf
    for number, wire, a, b in _fields(buf, start, end):
        if wire != 2:
            continue
        if number == 5:  # initializer
            t = _tensor(buf, a, b)
            if t is not None:
                out.append(t)
        elif number == 1:  # node
            for n_number, n_wire, na, nb in _fields(buf, a, b):
                if n_number == 5 and n_wire == 2:  # attribute
                    _attribute(buf, na, nb, out, depth)


def _attribute(buf: memoryview, start: int, end: int, out: list[Tensor], depth: int) -> None:
    for number, wire, a, b in _fields(buf, start, end):
        if wire != 2:
            continue
        if number in (5, 10):  # t, tensors
            t = _tensor(buf, a, b)
            if t is not None:
                out.append(t)
        elif number in (6, 11):  # g, graphs
            _graph(buf, a, b, out, depth + 1)


def find_onnx_tensors(data: bytes | bytearray | memoryview) -> list[Tensor] | None:
    """The raw-data tensors of ONNX model ``data`` in file order, or None if it is not ONNX."""
    buf = memoryview(data)
    try:
        top = _fields(buf, 0, len(buf))
        numbers = {number for number, _, _, _ in top}
        if 1 not in numbers or 7 not in numbers:  # ir_version and graph
            return None
        out: list[Tensor] = []
        for number, wire, a, b in top:
            if number == 7 and wire == 2:
                _graph(buf, a, b, out, 0)
    except (_NotProtobuf, IndexError):
        return None
    out.sort(key=lambda t: t.offset)
    return out
