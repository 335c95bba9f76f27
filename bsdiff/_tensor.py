"""The tensor-aware codec: a model file as non-tensor bytes plus tensors, each coded on its own.

Making a patch (hub side) takes the tensor byte ranges of the old and the new file (found by a
format walker, e.g. :func:`bsdiff._onnx.find_onnx_tensors`) and matches every new tensor to an
old one: same bytes anywhere in the old file (a rename or re-export costs a table entry), else
same name and element type, else same type and shape. Then each new tensor is

* ``COPY`` — identical to the matched old tensor; no tensor payload at all;
* ``DELTA`` — the bit patterns of the new elements minus those of the old (integer subtraction
  modulo 2^bits, zigzag-mapped so small changes of either sign are small numbers), split into
  byte planes; if the new tensor is longer (a class added to a head), the extra elements are
  stored raw;
* ``EXTEND`` — the old tensor is a prefix of the new one (a class added to a head): the
  prefix is copied, the extra elements stored raw;
* ``RAW`` — no useful old counterpart: the new elements' byte planes as they are.

Each (kind of data, element width, byte plane) is one zstd stream across all tensors, so a
fine-tune's nearly-constant high bytes cost almost nothing. The non-tensor bytes (the graph)
are delta-coded against the old file's non-tensor bytes with a generic codec.

Applying needs no model parser: the patch records the byte ranges of the old tensors and the
layout of the new file. Apply validates the whole table against the sizes before it writes a
byte, then streams the new file out tensor by tensor (chunked, so memory stays near one chunk
besides the old file and the small non-tensor part). See ``FORMAT.md`` for the byte layout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import zstandard

from bsdiff._generic import (
    GENERIC,
    GenericCodec,
    lzma_pack,
    lzma_unpack,
    small_diffs,
    zstd_decompress_exact,
)
from bsdiff._onnx import Tensor
from bsdiff.errors import CodecUnavailableError, PatchCorruptError

__all__ = [
    "KIND_COPY",
    "KIND_DELTA",
    "KIND_EXTEND",
    "KIND_RAW",
    "apply_tensor_payload",
    "make_tensor_payload",
]

Buffer = bytes | bytearray | memoryview
Writer = Callable[[Buffer], object]

KIND_COPY = 0
KIND_DELTA = 1
KIND_RAW = 2
KIND_EXTEND = 3
_CLASS_DELTA = 0
_CLASS_RAW = 1
_WIDTHS = (1, 2, 4, 8)
_CHUNK = 1 << 16  # elements per apply step: bounds the numpy temporaries to ~1 MiB
_META_MAX = 64 << 20
_STREAM_LEVEL = 3
_STREAM_WINDOW_LOG = 17
_META_LEVEL = 19


# --- varints -------------------------------------------------------------------------------


def _put(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("varint must be non-negative")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zz(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzz(value: int) -> int:
    return value >> 1 if value & 1 == 0 else -((value + 1) >> 1)


class _Reader:
    """Varints out of a bytes buffer; running off the end is a corrupt patch."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def get(self) -> int:
        result = 0
        shift = 0
        data = self.data
        pos = self.pos
        while True:
            if pos >= len(data) or shift > 63:
                raise PatchCorruptError("tensor patch table is truncated or malformed")
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos
                return result
            shift += 7

    def many(self, n: int) -> list[int]:
        return [self.get() for _ in range(n)]

    def count(self, limit: int, what: str) -> int:
        n = self.get()
        if n > limit:
            raise PatchCorruptError(f"tensor patch claims {n} {what}, more than possible")
        return n


# --- element arithmetic --------------------------------------------------------------------


def _udtype(width: int) -> np.dtype[np.unsignedinteger]:
    return np.dtype(f"<u{width}")


def _zigzag_delta(new: np.ndarray, old: np.ndarray, width: int) -> np.ndarray:
    diff = (new - old).view(f"<i{width}")  # modular: unsigned subtraction wraps
    bits = 8 * width - 1
    return ((diff << 1) ^ (diff >> bits)).view(_udtype(width))


def _unzigzag_add(z: np.ndarray, old: np.ndarray) -> np.ndarray:
    signed = (z >> 1) ^ np.negative(z & 1)  # unsigned negate wraps to all-ones
    return old + signed


def _planes(values: np.ndarray, width: int) -> list[np.ndarray]:
    as_bytes = values.view(np.uint8).reshape(-1, width)
    return [np.ascontiguousarray(as_bytes[:, p]) for p in range(width)]


def _entropy_bytes(planes: Sequence[np.ndarray]) -> float:
    """Order-0 entropy of each plane in bytes: a cheap stand-in for its zstd size."""
    total = 0.0
    for p in planes:
        if p.size == 0:
            continue
        counts = np.bincount(p, minlength=256)
        probs = counts[counts > 0] / p.size
        total += float(-(probs * np.log2(probs)).sum()) * p.size / 8
    return total


# --- making --------------------------------------------------------------------------------


@dataclass
class _Entry:
    kind: int
    width: int
    ref: int  # index into the old tensors, -1 for RAW
    tensor: Tensor


def _digest(data: memoryview, t: Tensor) -> bytes:
    return hashlib.blake2b(data[t.offset : t.offset + t.length], digest_size=16).digest()


def _match(
    old: memoryview, new: memoryview, old_t: Sequence[Tensor], new_t: Sequence[Tensor]
) -> list[_Entry]:
    by_hash: dict[bytes, list[int]] = {}
    for i, t in enumerate(old_t):
        by_hash.setdefault(_digest(old, t), []).append(i)
    by_name = {t.name: i for i, t in reversed(list(enumerate(old_t))) if t.name}
    entries: list[_Entry | None] = []
    used: set[int] = set()
    # Pass 1: identical bytes anywhere (prefer the same name), then the same name.
    for t in new_t:
        same = by_hash.get(_digest(new, t))
        if same:
            named = [i for i in same if old_t[i].name == t.name]
            free = [i for i in same if i not in used]
            ref = (named or free or same)[0]
            used.add(ref)
            entries.append(_Entry(KIND_COPY, t.width, ref, t))
            continue
        ref_by_name = by_name.get(t.name)
        if (
            ref_by_name is not None
            and old_t[ref_by_name].dtype == t.dtype
            and (old_t[ref_by_name].width == t.width)
        ):
            used.add(ref_by_name)
            entries.append(_Entry(KIND_DELTA, t.width, ref_by_name, t))
            continue
        entries.append(None)
    # Pass 2: a renamed and changed tensor: the first unused old tensor of the same type+shape.
    by_shape: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    for i, t in enumerate(old_t):
        if i not in used:
            by_shape.setdefault((t.dtype, t.dims), []).append(i)
    out: list[_Entry] = []
    for t, e in zip(new_t, entries, strict=True):
        if e is not None:
            out.append(e)
            continue
        same_shape = by_shape.get((t.dtype, t.dims), [])
        if same_shape and old_t[same_shape[0]].width == t.width:
            out.append(_Entry(KIND_DELTA, t.width, same_shape.pop(0), t))
        else:
            out.append(_Entry(KIND_RAW, t.width, -1, t))
    return out


def _check_layout(tensors: Sequence[Tensor], size: int) -> bool:
    end = 0
    for t in tensors:
        if t.offset < end or t.offset + t.length > size:
            return False
        end = t.offset + t.length
    return True


def _skeleton(data: memoryview, tensors: Sequence[Tensor]) -> bytes:
    parts: list[memoryview] = []
    pos = 0
    for t in tensors:
        parts.append(data[pos : t.offset])
        pos = t.offset + t.length
    parts.append(data[pos:])
    return b"".join(parts)


def _gaps(tensors: Sequence[Tensor]) -> list[int]:
    out: list[int] = []
    end = 0
    for t in tensors:
        out.append(t.offset - end)
        end = t.offset + t.length
    return out


def _skeleton_patch(
    old_skel: bytes, new_skel: bytes, codec: GenericCodec | None
) -> tuple[GenericCodec, bytes]:
    """The skeleton through ``codec``, or through every small-diff codec, keeping the smallest.

    A skeleton is tens of kilobytes, so trying several codecs costs milliseconds; which one
    wins depends on the change (renames favour hdiffpatch's approximate matches, a few bytes
    changed favour zstd with the old skeleton as dictionary).
    """
    if codec is not None:
        return codec, codec.diff(old_skel, new_skel)
    zd = GENERIC["zstd-dict"]
    options = [*small_diffs(old_skel, new_skel), (zd, zd.diff(old_skel, new_skel))]
    return min(options, key=lambda o: len(o[1]))


def make_tensor_payload(
    old: Buffer,
    new: Buffer,
    old_tensors: Sequence[Tensor],
    new_tensors: Sequence[Tensor],
    skeleton_codec: GenericCodec | None = None,
    level: int = _STREAM_LEVEL,
    version: int = 2,
) -> bytes | None:
    """The tensor-codec payload turning ``old`` into ``new``, or None if the layout is unusable.

    ``*_tensors`` are the tensor byte ranges of each file in file order. Raises
    CodecUnavailableError if ``skeleton_codec`` is not installed.
    """
    o = memoryview(old)
    n = memoryview(new)
    if not _check_layout(old_tensors, len(o)) or not _check_layout(new_tensors, len(n)):
        return None
    if skeleton_codec is not None and not skeleton_codec.available():
        raise CodecUnavailableError(f"codec {skeleton_codec.name!r} is not installed")
    entries = _match(o, n, old_tensors, new_tensors)

    streams: dict[int, list[np.ndarray]] = {}

    def emit(cls: int, width: int, values: np.ndarray) -> None:
        if values.size == 0:
            return
        for p, plane in enumerate(_planes(values, width)):
            streams.setdefault(cls * 64 + width * 8 + p, []).append(plane)

    for e in entries:
        t = e.tensor
        w = e.width
        new_vals = np.frombuffer(n, _udtype(w), t.length // w, t.offset)
        if e.kind == KIND_DELTA:
            ot = old_tensors[e.ref]
            m = min(ot.length, t.length) // w
            old_vals = np.frombuffer(o, _udtype(w), m, ot.offset)
            z = _zigzag_delta(new_vals[:m], old_vals, w)
            if not z.any():  # the old tensor is a prefix (a class added to a head)
                e.kind = KIND_EXTEND
                emit(_CLASS_RAW, w, new_vals[m:])
                continue
            if _entropy_bytes(_planes(z, w)) < _entropy_bytes(_planes(new_vals[:m], w)):
                emit(_CLASS_DELTA, w, z)
                emit(_CLASS_RAW, w, new_vals[m:])
                continue
            e.kind, e.ref = KIND_RAW, -1  # uncorrelated (e.g. a re-initialised head)
        if e.kind == KIND_RAW:
            emit(_CLASS_RAW, w, new_vals)

    old_skel = _skeleton(o, old_tensors)
    new_skel = _skeleton(n, new_tensors)
    skel_codec, skel_patch = _skeleton_patch(old_skel, new_skel, skeleton_codec)

    meta = bytearray()
    for v in (skel_codec.id, len(new_skel), len(skel_patch), len(old_tensors)):
        _put(meta, v)
    old_gaps = _gaps(old_tensors)
    for v in old_gaps:
        _put(meta, v)
    for t in old_tensors:
        _put(meta, t.length)
    _put(meta, len(entries))
    for e in entries:
        _put(meta, e.kind * 16 + e.width)
    for e, gap in zip(entries, _gaps(new_tensors), strict=True):
        _put(meta, _zz(gap - (old_gaps[e.ref] if e.ref >= 0 else 0)))
    prev = -1
    for e in entries:
        if e.ref >= 0:
            _put(meta, _zz(e.ref - (prev + 1)))
            prev = e.ref
        else:
            _put(meta, 0)
    for e in entries:
        if e.kind == KIND_COPY:
            _put(meta, 0)
        elif e.kind in (KIND_DELTA, KIND_EXTEND):
            _put(meta, _zz(e.tensor.length - old_tensors[e.ref].length))
        else:
            _put(meta, e.tensor.length)
    # A small window: byte planes gain little from long matches, and every stream's decoder
    # holds one window at apply time (eight streams × the level's default 2+ MiB otherwise).
    params = zstandard.ZstdCompressionParameters.from_level(
        level, window_log=_STREAM_WINDOW_LOG, threads=-1
    )
    compressor = zstandard.ZstdCompressor(compression_params=params)
    blobs: list[bytes] = []
    keys = sorted(streams)
    raw_lens: list[int] = []
    for key in keys:
        data = np.concatenate(streams[key]).tobytes() if streams[key] else b""
        raw_lens.append(len(data))
        blob = compressor.compress(data)
        if version >= 2 and len(blob) >= len(data):
            blob = data  # incompressible (e.g. a new row's low bytes): stored, no frame
        blobs.append(blob)
    _put(meta, len(keys))
    for seq in (keys, raw_lens, [len(b) for b in blobs]):
        for v in seq:
            _put(meta, v)

    if version >= 2:
        meta_z = lzma_pack(bytes(meta))
    else:
        meta_z = zstandard.ZstdCompressor(level=_META_LEVEL).compress(bytes(meta))
    head = bytearray()
    _put(head, len(meta))
    _put(head, len(meta_z))
    return b"".join([bytes(head), meta_z, skel_patch, *blobs])


# --- applying ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    skel_codec: GenericCodec
    skel_len: int
    skel_patch: memoryview
    old_ranges: list[tuple[int, int]]
    entries: list[tuple[int, int, int, int, int]]  # kind, width, ref, new length, skeleton gap
    streams: dict[int, memoryview]
    stream_sizes: dict[int, int]


def _plan(old_size: int, payload: memoryview, result_size: int, version: int = 2) -> _Plan:
    """Parse and check the whole table against the sizes before anything is written."""
    head = _Reader(bytes(payload[:20]))
    meta_len = head.get()
    meta_zlen = head.get()
    if meta_len > _META_MAX or head.pos + meta_zlen > len(payload):
        raise PatchCorruptError("tensor patch table size is out of bounds")
    meta_z = payload[head.pos : head.pos + meta_zlen]
    body = head.pos + meta_zlen
    if version >= 2:
        r = _Reader(lzma_unpack(meta_z, meta_len))
    else:
        r = _Reader(zstd_decompress_exact(meta_z, meta_len))

    codec_id = r.get()
    skel_codec = next((c for c in GENERIC.values() if c.id == codec_id), None)
    if skel_codec is None:
        raise PatchCorruptError(f"tensor patch names unknown skeleton codec id {codec_id}")
    skel_len = r.get()
    skel_patch_len = r.get()
    if skel_len > result_size or body + skel_patch_len > len(payload):
        raise PatchCorruptError("tensor patch skeleton sizes are out of bounds")
    skel_patch = payload[body : body + skel_patch_len]
    body += skel_patch_len

    n_old = r.count(old_size, "old tensors")
    old_gaps = r.many(n_old)
    old_lens = r.many(n_old)
    old_ranges: list[tuple[int, int]] = []
    pos = 0
    for gap, length in zip(old_gaps, old_lens, strict=True):
        start = pos + gap
        pos = start + length
        if pos > old_size:
            raise PatchCorruptError("tensor patch refers past the end of the base file")
        old_ranges.append((start, length))

    n_new = r.count(result_size, "new tensors")
    kinds = r.many(n_new)
    gaps = r.many(n_new)
    refs = r.many(n_new)
    lens = r.many(n_new)
    entries: list[tuple[int, int, int, int, int]] = []
    need: dict[int, int] = {}
    prev = -1
    gap_total = 0
    tensor_total = 0
    for kw, gap_z, ref_z, len_v in zip(kinds, gaps, refs, lens, strict=True):
        kind, width = divmod(kw, 16)
        if kind not in (KIND_COPY, KIND_DELTA, KIND_RAW, KIND_EXTEND) or width not in _WIDTHS:
            raise PatchCorruptError(f"tensor patch has a bad entry kind/width {kw:#x}")
        if kind == KIND_RAW:
            ref = -1
            length = len_v
            gap = _unzz(gap_z)
            m = 0
        else:
            ref = prev + 1 + _unzz(ref_z)
            if not 0 <= ref < n_old:
                raise PatchCorruptError(f"tensor patch refers to old tensor {ref} of {n_old}")
            prev = ref
            old_len = old_ranges[ref][1]
            gap = _unzz(gap_z) + old_gaps[ref]
            if kind == KIND_COPY:
                if len_v != 0:
                    raise PatchCorruptError("tensor patch copy entry carries a length")
                length = old_len
            else:
                length = old_len + _unzz(len_v)
            m = min(old_len, length) // width
        if gap < 0 or length < 0 or (kind != KIND_COPY and length % width):
            raise PatchCorruptError("tensor patch entry has an impossible size")
        if kind != KIND_COPY:
            tail = length // width - m
            for p in range(width):
                if m and kind == KIND_DELTA:
                    key = _CLASS_DELTA * 64 + width * 8 + p
                    need[key] = need.get(key, 0) + m
                if tail:
                    key = _CLASS_RAW * 64 + width * 8 + p
                    need[key] = need.get(key, 0) + tail
        gap_total += gap
        tensor_total += length
        entries.append((kind, width, ref, length, gap))
    if gap_total > skel_len or skel_len + tensor_total != result_size:
        raise PatchCorruptError("tensor patch layout does not add up to the result size")

    n_streams = r.count(64 * 2, "streams")
    keys = r.many(n_streams)
    raw_lens = r.many(n_streams)
    comp_lens = r.many(n_streams)
    if r.pos != len(r.data):
        raise PatchCorruptError("tensor patch table has trailing bytes")
    if keys != sorted(set(keys)) or dict(zip(keys, raw_lens, strict=True)) != {
        k: v for k, v in need.items() if v
    }:
        raise PatchCorruptError("tensor patch streams do not match its tensor table")
    streams: dict[int, memoryview] = {}
    for key, clen in zip(keys, comp_lens, strict=True):
        streams[key] = payload[body : body + clen]
        body += clen
    if body != len(payload):
        raise PatchCorruptError("tensor patch payload sections do not add up to its size")
    return _Plan(
        skel_codec,
        skel_len,
        skel_patch,
        old_ranges,
        entries,
        streams,
        dict(zip(keys, raw_lens, strict=True)),
    )


class _Stored:
    """A stored (uncompressed) stream, read like a zstd stream reader."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int) -> bytes:
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += len(out)
        return out


class _Planes:
    """One streaming zstd reader per (class, width, plane); reads exactly what is asked."""

    def __init__(self, streams: dict[int, memoryview], sizes: dict[int, int], version: int) -> None:
        # One decompressor each: readers of a shared ZstdDecompressor share its context.
        self.readers: dict[int, _Stored | zstandard.ZstdDecompressionReader] = {
            k: _Stored(v)
            if version >= 2 and len(v) == sizes[k]
            else zstandard.ZstdDecompressor().stream_reader(v)
            for k, v in streams.items()
        }

    def read(self, cls: int, width: int, count: int) -> np.ndarray:
        out = np.empty((count, width), dtype=np.uint8)
        for p in range(width):
            reader = self.readers[cls * 64 + width * 8 + p]
            got = 0
            while got < count:
                chunk = reader.read(count - got)
                if not chunk:
                    raise PatchCorruptError("tensor patch stream ended early")
                out[got : got + len(chunk), p] = np.frombuffer(chunk, np.uint8)
                got += len(chunk)
        return out.view(_udtype(width)).reshape(count)

    def finish(self) -> None:
        for reader in self.readers.values():
            if reader.read(1):
                raise PatchCorruptError("tensor patch stream holds more data than its table")


def apply_tensor_payload(
    old: Buffer, payload: Buffer, result_size: int, write: Writer, version: int = 2
) -> None:
    """Stream the result of tensor ``payload`` applied to ``old`` into ``write``.

    ``version`` is the patch format version: version 1 payloads hold a zstd table and only
    zstd streams; version 2 a raw LZMA table and stored streams where zstd would not shrink.

    Raises PatchCorruptError (malformed or inconsistent payload) or CodecUnavailableError.
    """
    o = memoryview(old)
    try:
        plan = _plan(len(o), memoryview(payload), result_size, version)
        old_skel = b"".join([o[a:b] for a, b in _between(plan.old_ranges, len(o))])
        skel = memoryview(plan.skel_codec.patch(old_skel, plan.skel_patch, plan.skel_len))
        planes = _Planes(plan.streams, plan.stream_sizes, version)
        spos = 0
        for kind, width, ref, length, gap in plan.entries:
            write(skel[spos : spos + gap])
            spos += gap
            if kind == KIND_COPY:
                start, old_len = plan.old_ranges[ref]
                write(o[start : start + old_len])
                continue
            count = length // width
            m = 0
            if kind == KIND_EXTEND:
                start, old_len = plan.old_ranges[ref]
                m = min(old_len, length) // width
                write(o[start : start + m * width])
            elif kind == KIND_DELTA:
                start, old_len = plan.old_ranges[ref]
                m = min(old_len, length) // width
                old_vals = np.frombuffer(o, _udtype(width), m, start)
                for a in range(0, m, _CHUNK):
                    b = min(m, a + _CHUNK)
                    z = planes.read(_CLASS_DELTA, width, b - a)
                    write(_unzigzag_add(z, old_vals[a:b]).tobytes())
            for a in range(m, count, _CHUNK):
                b = min(count, a + _CHUNK)
                write(planes.read(_CLASS_RAW, width, b - a).tobytes())
        write(skel[spos:])
        planes.finish()
    except zstandard.ZstdError as e:
        raise PatchCorruptError(f"tensor patch stream is corrupt: {e}") from e


def _between(ranges: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The byte ranges of ``0..size`` not covered by the sorted ``(start, length)`` ranges."""
    out: list[tuple[int, int]] = []
    pos = 0
    for start, length in ranges:
        out.append((pos, start))
        pos = start + length
    out.append((pos, size))
    return out
