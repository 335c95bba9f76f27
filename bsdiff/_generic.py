"""Generic (format-blind) binary codecs, registered by name and numeric id.

Each codec turns ``(old, new)`` into a payload and back. The registry holds:

* ``hdiffpatch`` (id 2) — the default, chosen by measurement (see ``FORMAT.md``): smallest
  patches of the candidates on every model pair measured, 4× faster to make than bsdiff4,
  zstd inside so applying is fast. Needs the ``hdiffpatch`` wheel on the device.
* ``zstd-dict`` (id 4) — ``zstd --patch-from`` done with python-zstandard: the old file is a
  raw-content dictionary, long-distance matching on. Needs nothing but zstandard; fast to make,
  larger than hdiffpatch when little changed.
* ``bsdiff4`` (id 3) — the classic, kept as an alternate. Slow to make on large files.
* ``zstd`` (id 1) — the new file compressed on its own: the floor every delta must beat.

Optional libraries are imported lazily; a missing one raises :class:`CodecUnavailableError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import zstandard

from bsdiff.errors import CodecUnavailableError, DeltaError, PatchCorruptError

__all__ = ["GENERIC", "GenericCodec", "default_generic", "zstd_decompress_exact"]

Buffer = bytes | bytearray | memoryview

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
    )
}
"""Generic codecs by name; see the module docstring for why ``hdiffpatch`` is the default."""


def default_generic() -> GenericCodec:
    """hdiffpatch when installed, else zstd-dict (which needs nothing beyond zstandard)."""
    hd = GENERIC["hdiffpatch"]
    return hd if hd.available() else GENERIC["zstd-dict"]
