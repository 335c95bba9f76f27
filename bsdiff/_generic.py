"""Generic (format-blind) binary codecs, registered by name and numeric id.

Each codec turns ``(old, new)`` into a payload and back. The registry holds:

* ``hdiffpatch`` (id 2) — the default, chosen by measurement (see ``FORMAT.md``): smallest
  patches of the candidates on every model pair measured, 4× faster to make than bsdiff4,
  zstd inside so applying is fast. Needs the ``hdiffpatch`` wheel on the device.
* ``zstd-dict`` (id 4) — ``zstd --patch-from`` done with python-zstandard: the old file is a
  raw-content dictionary, long-distance matching on. Needs nothing but zstandard; fast to make,
  larger than hdiffpatch when little changed.
* ``hdiffpatch-lzma`` (id 5) — the same hdiffpatch diff, uncompressed, with its framing
  stripped and one raw LZMA stream around it: smaller by tens of bytes on tiny diffs (a
  re-export), which is where a few bytes matter. Used by ``auto`` when it is the smallest.
  Applied by our own reader, streamed from a memory-mapped base (no hdiffpatch on the device).
* ``bsdiff4`` (id 3) — the classic, kept as an alternate. Slow to make on large files.
* ``zstd`` (id 1) — the new file compressed on its own: the floor every delta must beat.

Optional libraries are imported lazily; a missing one raises :class:`CodecUnavailableError`.
"""

from __future__ import annotations

import contextlib
import importlib
import lzma
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import zstandard

from bsdiff._header import read_varint, varint
from bsdiff.errors import CodecUnavailableError, DeltaError, PatchCorruptError

__all__ = [
    "GENERIC",
    "GenericCodec",
    "default_generic",
    "lzma_pack",
    "lzma_unpack",
    "small_diffs",
    "zstd_decompress_exact",
]

Buffer = bytes | bytearray | memoryview
Writer = Callable[[Buffer], object]

_ZSTD_FULL_LEVEL = 19
_ZSTD_DICT_LEVEL = 9
_HDIFF_ZSTD_LEVEL = 19
_HDIFF_SMALL = 1 << 20


def _optional(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise CodecUnavailableError(f"codec library {module!r} is not installed") from e


def zstd_decompress_exact(
    payload: Buffer,
    size: int,
    dict_data: zstandard.ZstdCompressionDict | None = None,
    window_log: int | None = None,
) -> bytes:
    """Decompress one zstd frame that must yield exactly ``size`` bytes (no more is read)."""
    kwargs: dict[str, object] = {}
    if dict_data is not None:
        kwargs["dict_data"] = dict_data
    if window_log is not None:
        kwargs["max_window_size"] = 1 << window_log
    try:
        reader = zstandard.ZstdDecompressor(**kwargs).stream_reader(payload)  # type: ignore[arg-type]
        out = _read_exact(reader, size)
        if reader.read(1):
            raise PatchCorruptError("zstd stream holds more data than the patch says")
    except zstandard.ZstdError as e:
        raise PatchCorruptError(f"zstd stream is corrupt: {e}") from e
    return out


def _read_exact(reader: zstandard.ZstdDecompressionReader, size: int) -> bytes:
    parts: list[bytes] = []
    left = size
    while left > 0:
        chunk = reader.read(min(left, 1 << 20))
        if not chunk:
            raise PatchCorruptError(f"zstd stream ended {left} bytes early")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _window_log(old_size: int, new_size: int) -> int:
    return min(31, max(10, (old_size + new_size).bit_length()))


# --- zstd (no reference) -------------------------------------------------------------------


def _zstd_diff(old: Buffer, new: Buffer) -> bytes:
    return zstandard.ZstdCompressor(level=_ZSTD_FULL_LEVEL, threads=-1).compress(new)


def _zstd_patch(old: Buffer, payload: Buffer, size: int) -> bytes:
    return zstd_decompress_exact(payload, size)


# --- zstd with the old file as a raw-content dictionary (zstd --patch-from) ----------------


def _zstd_dict_params(old_size: int, new_size: int) -> zstandard.ZstdCompressionParameters:
    wl = _window_log(old_size, new_size)
    # A raw dictionary is indexed into the ordinary hash tables: at a level's default hash log
    # most of a multi-megabyte base is overwritten and never matched, hence the large tables.
    hl = min(26, max(wl, 17))
    return zstandard.ZstdCompressionParameters.from_level(
        _ZSTD_DICT_LEVEL, window_log=wl, hash_log=hl, chain_log=hl, enable_ldm=True, threads=-1
    )


def _zstd_dict_diff(old: Buffer, new: Buffer) -> bytes:
    if not old:
        return _zstd_diff(old, new)
    d = zstandard.ZstdCompressionDict(bytes(old), dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    params = _zstd_dict_params(len(old), len(new))
    return zstandard.ZstdCompressor(dict_data=d, compression_params=params).compress(new)


def _zstd_dict_patch(old: Buffer, payload: Buffer, size: int) -> bytes:
    if not old:
        return zstd_decompress_exact(payload, size)
    d = zstandard.ZstdCompressionDict(bytes(old), dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return zstd_decompress_exact(payload, size, d, _window_log(len(old), size))


# --- hdiffpatch ----------------------------------------------------------------------------


def _hdiff_diff(old: Buffer, new: Buffer) -> bytes:
    hd = _optional("hdiffpatch")
    window = min(27, max(10, len(new).bit_length()))
    old_b, new_b = bytes(old), bytes(new)
    out: bytes = hd.diff(
        old_b,
        new_b,
        hd.ZStdConfig(level=_HDIFF_ZSTD_LEVEL, window=window),
        validate=False,
        big_cache_match=True,
    )
    if len(out) <= _HDIFF_SMALL:
        # Small diffs (little changed, or a model's graph bytes): LZMA often saves a few
        # percent and decompresses in no time at this size. hdiffpatch re-encodes without
        # re-diffing, and its payload names its compressor, so either applies the same way.
        alt: bytes = hd.recompress(out, hd.COMPRESSION_LZMA)
        out = min(out, alt, key=len)
    return out


def _hdiff_patch(old: Buffer, payload: Buffer, size: int) -> bytes:
    hd = _optional("hdiffpatch")
    try:
        out: bytes = hd.apply(bytes(old), bytes(payload))
    except (hd.HDiffPatchError, ValueError) as e:
        raise PatchCorruptError(f"hdiffpatch payload does not apply: {e}") from e
    return out


# --- hdiffpatch, uncompressed, in one raw LZMA stream (small diffs) -------------------------
#
# A small hdiffpatch diff is four separately compressed sections behind a text magic and
# eleven sizes: on a re-export (a few hundred bytes) that framing is a tenth of the patch.
# ``hdiffpatch-lzma`` keeps the uncompressed diff minus its magic and the two file sizes the
# patch header already holds, optionally with its cover list transposed (all first fields,
# then all second, then all third: each field is then a run of similar numbers), in one raw
# LZMA1 stream with literal context bits off. The stream's end marker and range-coder flush
# are trimmed as far as decoding (zero-padded) still gives the exact diff, checked at make.
#
#   payload := varint (body_len * 2 + transposed), lzma1_raw(body)[:-trimmed]

_HDIFF_MAGIC = b"HDIFF13&\x00"  # "HDIFF13&" + compressor name ("" = none) + NUL
_LZMA_RAW = [
    {"id": lzma.FILTER_LZMA1, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0, "pb": 0}
]
_LZMA_PAD = bytes(16)
_LZMA_TRIM_MAX = 12
_LZMA_TRIM_BELOW = 1 << 20  # trimming decodes the stream a dozen times: only for small diffs


def _hd_uint(value: int) -> bytes:
    """HDiffPatch's size encoding: 7-bit groups, most significant first, 0x80 = more."""
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(groups))


def _read_hd_uint(data: Buffer, pos: int) -> tuple[int, int]:
    value = 0
    for _ in range(10):
        if pos >= len(data):
            break
        b = data[pos]
        pos += 1
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, pos
    raise PatchCorruptError("hdiffpatch diff header is malformed")


def _hdiff_prefix(old_size: int, new_size: int) -> bytes:
    return _HDIFF_MAGIC + _hd_uint(new_size) + _hd_uint(old_size)


def _cover_section(body: Buffer) -> tuple[int, int, int]:
    """(cover count, start, end) of the cover list in a prefix-less uncompressed diff."""
    pos = 0
    fields: list[int] = []
    for _ in range(9):  # covers, cover bytes, 0, rle ctrl, 0, rle code, 0, new data, 0
        value, pos = _read_hd_uint(body, pos)
        fields.append(value)
    count, size = fields[0], fields[1]
    if pos + size > len(body):
        raise PatchCorruptError("hdiffpatch diff cover list is out of bounds")
    return count, pos, pos + size


def _token_end(data: Buffer, pos: int, first_cont: int) -> int:
    """End of one HDiffPatch packed integer at ``pos`` (continuation bit ``first_cont`` in its
    first byte, which is 0x40 when the top bit is a sign tag, 0x80 after)."""
    cont = first_cont
    for _ in range(11):
        if pos >= len(data):
            break
        b = data[pos]
        pos += 1
        if not b & cont:
            return pos
        cont = 0x80
    raise PatchCorruptError("hdiffpatch diff cover list is malformed")


_COVER_FIELDS = (0x40, 0x80, 0x80)  # old position (sign-tagged), new position gap, length


def _transpose(body: bytes) -> bytes:
    count, start, end = _cover_section(body)
    fields: list[list[bytes]] = [[], [], []]
    pos = start
    for _ in range(count):
        for f, cont in enumerate(_COVER_FIELDS):
            stop = _token_end(body, pos, cont)
            fields[f].append(body[pos:stop])
            pos = stop
    if pos != end:
        raise PatchCorruptError("hdiffpatch diff cover list does not add up")
    return body[:start] + b"".join(b"".join(f) for f in fields) + body[end:]


def _untranspose(body: bytes) -> bytes:
    count, start, end = _cover_section(body)
    fields: list[list[bytes]] = []
    pos = start
    for cont in _COVER_FIELDS:
        tokens: list[bytes] = []
        for _ in range(count):
            stop = _token_end(body, pos, cont)
            tokens.append(body[pos:stop])
            pos = stop
        fields.append(tokens)
    if pos != end:
        raise PatchCorruptError("hdiffpatch-lzma cover list does not add up")
    covers = b"".join(a + b + c for a, b, c in zip(*fields, strict=True))
    return body[:start] + covers + body[end:]


def lzma_unpack(data: Buffer, size: int) -> bytes:
    """Exactly ``size`` bytes out of a (possibly trimmed) stream from :func:`lzma_pack`."""
    try:
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_RAW)
        out = dec.decompress(bytes(data) + _LZMA_PAD, max_length=size)
    except lzma.LZMAError as e:
        raise PatchCorruptError(f"raw LZMA stream is corrupt: {e}") from e
    if len(out) != size:
        raise PatchCorruptError("raw LZMA stream ended early")
    return out


def lzma_pack(data: bytes) -> bytes:
    """``data`` as one raw LZMA1 stream (lc=lp=pb=0), its tail trimmed as far as
    :func:`lzma_unpack` still restores ``data`` exactly (streams up to 1 MiB)."""
    packed = lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_RAW)
    if len(data) > _LZMA_TRIM_BELOW:
        return packed
    for trim in range(min(_LZMA_TRIM_MAX, len(packed) - 1), 0, -1):
        try:
            if lzma_unpack(packed[:-trim], len(data)) == data:
                return packed[:-trim]
        except DeltaError:
            continue
    return packed


def _hdiff_plain(old: Buffer, new: Buffer) -> bytes:
    hd = _optional("hdiffpatch")
    out: bytes = hd.diff(
        bytes(old), bytes(new), hd.COMPRESSION_NONE, validate=False, big_cache_match=True
    )
    return out


def _hdiff_lzma_from_plain(plain: bytes, old: Buffer, new: Buffer) -> bytes:
    new_size = len(new)
    prefix = _hdiff_prefix(len(old), new_size)
    if not plain.startswith(prefix):  # another hdiffpatch layout: say so rather than guess
        raise CodecUnavailableError("hdiffpatch wrote an unexpected diff layout")
    body = plain[len(prefix) :]
    if len(body) > _body_cap(new_size):
        raise CodecUnavailableError("hdiffpatch diff is too large for hdiffpatch-lzma")
    if not _reproduces(old, body, new):  # our applier must read this diff as hdiffpatch does
        raise CodecUnavailableError("hdiffpatch wrote a diff our applier does not reproduce")
    best = varint(len(body) * 2) + lzma_pack(body)
    try:
        moved = _transpose(body)
    except DeltaError:
        return best
    alt = varint(len(body) * 2 + 1) + lzma_pack(moved)
    return min(best, alt, key=len)


def _body_cap(new_size: int) -> int:
    """The largest uncompressed diff either side accepts: bounds what a payload can inflate."""
    return 2 * new_size + (1 << 20)


def _hdiff_lzma_diff(old: Buffer, new: Buffer) -> bytes:
    return _hdiff_lzma_from_plain(_hdiff_plain(old, new), old, new)


def _reproduces(old: Buffer, body: bytes, new: Buffer) -> bool:
    want = memoryview(new)
    pos = 0

    def compare(chunk: Buffer) -> None:
        nonlocal pos
        piece = memoryview(chunk).cast("B")
        if want[pos : pos + len(piece)] != piece:
            raise PatchCorruptError("differs")
        pos += len(piece)

    try:
        _hdiff_apply_stream(old, body, len(want), compare)
    except DeltaError:
        return False
    return pos == len(want)


def _hdiff_lzma_stream(old: Buffer, payload: Buffer, size: int, write: Writer) -> None:
    view = memoryview(payload)
    head, pos = read_varint(view, 0, "hdiffpatch-lzma payload length is malformed")
    body_len, transposed = divmod(head, 2)
    if body_len > _body_cap(size):
        raise PatchCorruptError("hdiffpatch-lzma payload claims an impossible length")
    body = lzma_unpack(view[pos:], body_len)
    if transposed:
        body = _untranspose(body)
    _hdiff_apply_stream(old, body, size, write)


def _hdiff_lzma_patch(old: Buffer, payload: Buffer, size: int) -> bytes:
    parts: list[bytes] = []
    _hdiff_lzma_stream(old, payload, size, lambda b: parts.append(bytes(b)))
    return b"".join(parts)


# Our own applier for the (uncompressed) HDiffPatch diff, so a device streams the result to
# disk from a memory-mapped base instead of holding base, result and the library's own copy
# (three times the file; the wheel only takes and returns whole ``bytes``). Layout after the
# prefix: nine sizes (covers, cover bytes, 0, RLE control bytes, 0, RLE code bytes, 0, new
# data bytes, 0), then those four sections. The RLE section spans the whole result: for a
# covered byte it is added (mod 256) to the old byte the cover maps it to; bytes between
# covers come verbatim from the new-data section. A cover is (old position as a signed step
# from the previous cover's old end, gap of new bytes before it, length).

_APPLY_CHUNK = 1 << 20
_RLE_TAG_BITS = 2  # run kinds: 0 zeros, 1 0xFF bytes, 2 one byte repeated, 3 literal bytes


def _hd_tagged(data: Buffer, pos: int, tag_bits: int) -> tuple[int, int, int]:
    """(value, tag, next position) of one HDiffPatch packed integer with ``tag_bits`` tag."""
    if pos >= len(data):
        raise PatchCorruptError("hdiffpatch diff section ended early")
    b = data[pos]
    pos += 1
    tag = b >> (8 - tag_bits) if tag_bits else 0
    value = b & ((1 << (7 - tag_bits)) - 1)
    more = b & (1 << (7 - tag_bits))
    for _ in range(10):
        if not more:
            return value, tag, pos
        if pos >= len(data):
            break
        b = data[pos]
        pos += 1
        value = (value << 7) | (b & 0x7F)
        more = b & 0x80
    raise PatchCorruptError("hdiffpatch diff holds a malformed number")


class _Rle:
    """The RLE section as a stream of add-bytes, consumed front to back."""

    def __init__(self, ctrl: memoryview, code: memoryview) -> None:
        self.ctrl, self.code = ctrl, code
        self.cpos = self.dpos = 0
        self.kind = 0
        self.left = 0  # bytes left in the current run
        self.literal = memoryview(b"")

    def _next_run(self) -> None:
        length, self.kind, self.cpos = _hd_tagged(self.ctrl, self.cpos, _RLE_TAG_BITS)
        self.left = length + 1
        if self.kind == 2:
            if self.dpos >= len(self.code):
                raise PatchCorruptError("hdiffpatch diff RLE code ended early")
            self.literal = self.code[self.dpos : self.dpos + 1]
            self.dpos += 1
        elif self.kind == 3:
            if self.dpos + self.left > len(self.code):
                raise PatchCorruptError("hdiffpatch diff RLE code ended early")
            self.literal = self.code[self.dpos : self.dpos + self.left]
            self.dpos += self.left

    def take(self, n: int, want: bool) -> np.ndarray | None:
        """The next ``n`` add-bytes (None if all zero, or if not ``want``ed)."""
        out: np.ndarray | None = None
        done = 0
        while done < n:
            if self.left == 0:
                self._next_run()
            k = min(self.left, n - done)
            if want and self.kind != 0:
                if out is None:
                    out = np.zeros(n, np.uint8)
                if self.kind == 1:
                    out[done : done + k] = 0xFF
                elif self.kind == 2:
                    out[done : done + k] = self.literal[0]
                else:
                    start = len(self.literal) - self.left
                    out[done : done + k] = np.frombuffer(self.literal[start : start + k], np.uint8)
            self.left -= k
            done += k
        return out

    def exhausted(self) -> bool:
        return self.left == 0 and self.cpos == len(self.ctrl) and self.dpos == len(self.code)


def _hdiff_apply_stream(old: Buffer, body: bytes, size: int, write: Writer) -> None:
    """Write the result of the prefix-less uncompressed diff ``body`` applied to ``old``."""
    view = memoryview(body)
    pos = 0
    fields: list[int] = []
    for _ in range(9):
        value, pos = _read_hd_uint(view, pos)
        fields.append(value)
    count, cover_len, _, ctrl_len, _, code_len, _, new_len, _ = fields
    if pos + cover_len + ctrl_len + code_len + new_len != len(view):
        raise PatchCorruptError("hdiffpatch diff sections do not add up to its size")
    covers = view[pos : pos + cover_len]
    pos += cover_len
    rle = _Rle(view[pos : pos + ctrl_len], view[pos + ctrl_len : pos + ctrl_len + code_len])
    pos += ctrl_len + code_len
    new_data = view[pos:]
    o = memoryview(old)
    o_np = np.frombuffer(o, np.uint8) if len(o) else np.zeros(0, np.uint8)
    new_pos = old_end = cpos = dpos = 0
    for _ in range(count):
        step, back, cpos = _hd_tagged(covers, cpos, 1)
        gap, _, cpos = _hd_tagged(covers, cpos, 0)
        length, _, cpos = _hd_tagged(covers, cpos, 0)
        old_pos = old_end - step if back else old_end + step
        if (
            old_pos < 0
            or old_pos + length > len(o)
            or dpos + gap > len(new_data)
            or new_pos + gap + length > size
        ):
            raise PatchCorruptError("hdiffpatch diff cover is out of bounds")
        write(new_data[dpos : dpos + gap])
        rle.take(gap, want=False)
        dpos += gap
        for a in range(0, length, _APPLY_CHUNK):
            n = min(_APPLY_CHUNK, length - a)
            add = rle.take(n, want=True)
            start = old_pos + a
            if add is None:
                write(o[start : start + n])
            else:
                write((o_np[start : start + n] + add).tobytes())  # uint8: wraps mod 256
        new_pos += gap + length
        old_end = old_pos + length
    tail = size - new_pos
    if cpos != len(covers) or tail != len(new_data) - dpos:
        raise PatchCorruptError("hdiffpatch diff covers do not add up to the result")
    write(new_data[dpos:])
    rle.take(tail, want=False)
    if not rle.exhausted():
        raise PatchCorruptError("hdiffpatch diff RLE section does not match the result")


def small_diffs(old: Buffer, new: Buffer) -> list[tuple[GenericCodec, bytes]]:
    """The hdiffpatch-based payloads for ``old`` → ``new`` from one diff run, for ``auto`` to
    keep the smallest: ``hdiffpatch`` (zstd inside; LZMA too when the diff is at most 1 MiB)
    and, when the uncompressed diff is at most 1 MiB, ``hdiffpatch-lzma`` (LZMA at preset 9e
    and our reader's check cost seconds per megabyte: only worth it where bytes are few).
    Empty if hdiffpatch is not installed."""
    if not GENERIC["hdiffpatch"].available():
        return []
    hd = _optional("hdiffpatch")
    plain = _hdiff_plain(old, new)
    window = min(27, max(10, len(new).bit_length()))
    best: bytes = hd.recompress(plain, hd.ZStdConfig(level=_HDIFF_ZSTD_LEVEL, window=window))
    if len(best) <= _HDIFF_SMALL:
        best = min(best, hd.recompress(plain, hd.COMPRESSION_LZMA), key=len)
    out = [(GENERIC["hdiffpatch"], best)]
    if len(plain) <= _LZMA_TRIM_BELOW:
        with contextlib.suppress(CodecUnavailableError):  # an unexpected layout
            out.append((GENERIC["hdiffpatch-lzma"], _hdiff_lzma_from_plain(plain, old, new)))
    return out


# --- bsdiff4 -------------------------------------------------------------------------------


def _bsdiff4_diff(old: Buffer, new: Buffer) -> bytes:
    bs = _optional("bsdiff4")
    out: bytes = bs.diff(bytes(old), bytes(new))
    return out


def _bsdiff4_patch(old: Buffer, payload: Buffer, size: int) -> bytes:
    bs = _optional("bsdiff4")
    try:
        out: bytes = bs.patch(bytes(old), bytes(payload))
    except (ValueError, OSError) as e:  # bsdiff4 raises ValueError on corrupt control data
        raise PatchCorruptError(f"bsdiff4 payload does not apply: {e}") from e
    return out


@dataclass(frozen=True)
class GenericCodec:
    """A format-blind codec. ``patch`` must return exactly ``size`` bytes or raise."""

    name: str
    id: int
    module: str | None
    diff: Callable[[Buffer, Buffer], bytes]
    patch_raw: Callable[[Buffer, Buffer, int], bytes]
    stream: Callable[[Buffer, Buffer, int, Writer], None] | None = None
    """Writes the result in pieces from a (memory-mapped) base, if the codec can."""

    def available(self) -> bool:
        """Whether the codec's library can be imported here."""
        if self.module is None:
            return True
        try:
            _optional(self.module)
        except DeltaError:
            return False
        return True

    def patch(self, old: Buffer, payload: Buffer, size: int) -> bytes:
        """Apply ``payload`` to ``old``; raises DeltaError (never a foreign exception)."""
        try:
            out = self.patch_raw(old, payload, size)
        except DeltaError:
            raise
        except (MemoryError, ValueError, TypeError, zstandard.ZstdError) as e:
            raise PatchCorruptError(f"{self.name} payload does not apply: {e}") from e
        if len(out) != size:
            raise PatchCorruptError(f"{self.name} produced {len(out)} bytes, expected {size}")
        return out


GENERIC: dict[str, GenericCodec] = {
    c.name: c
    for c in (
        GenericCodec("zstd", 1, None, _zstd_diff, _zstd_patch),
        GenericCodec("hdiffpatch", 2, "hdiffpatch", _hdiff_diff, _hdiff_patch),
        GenericCodec("bsdiff4", 3, "bsdiff4", _bsdiff4_diff, _bsdiff4_patch),
        GenericCodec("zstd-dict", 4, None, _zstd_dict_diff, _zstd_dict_patch),
        GenericCodec(
            "hdiffpatch-lzma",
            5,
            "hdiffpatch",
            _hdiff_lzma_diff,
            _hdiff_lzma_patch,
            _hdiff_lzma_stream,
        ),
    )
}
"""Generic codecs by name; see the module docstring for why ``hdiffpatch`` is the default."""


def default_generic() -> GenericCodec:
    """hdiffpatch when installed, else zstd-dict (which needs nothing beyond zstandard)."""
    hd = GENERIC["hdiffpatch"]
    return hd if hd.available() else GENERIC["zstd-dict"]
