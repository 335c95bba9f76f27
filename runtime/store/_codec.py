"""How the sample store lays a record out in LMDB and what it costs on disk.

The pure part of :mod:`runtime.store.lmdb_store` (the layout is drawn in
:mod:`runtime.store._tables`): the record's bytes (a header, its meta JSON and its image, cut
into chunks of exactly one LMDB page), the priority key whose byte order is the number order,
the index entry the ``prio`` sub-database keeps per record, and the footprint arithmetic the
cap is enforced with (:func:`record_footprint`, :func:`reserve_bytes`). Nothing here touches
LMDB or the disk.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass

from runtime.store.record import SampleRecord

__all__ = [
    "FORMAT",
    "decode_priority_key",
    "priority_key",
    "record_footprint",
    "reserve_bytes",
]

FORMAT = 2
"""On-disk layout version, stored under ``meta[b"format"]``."""

_MAGIC = b"LLS2"
_HEADER = struct.Struct(">4s8sII")  # magic, priority key, meta length, image length
_ENTRY = struct.Struct(">BHI")  # flags, chunks, footprint; the final class follows
_CHUNK_NO = struct.Struct(">H")
_FLAG_PROTECTED = 0x01
_FLAG_PENDING = 0x02
_FLAG_RANDOM = 0x04
_PAGE_HEADER = 16  # an LMDB overflow page holds page size - 16 bytes
_NODE = 8  # LMDB leaf node header
_PGNO = 8  # a leaf node of an overflow value holds its page number
_FIXED_RESERVE_PAGES = 8  # meta pages, sub-database roots, free-list pages
_TREE_PAGES_PER_TXN = 16  # B-tree pages one write transaction copies (4 trees, depth <= 3)
_LAG_TXNS = 3  # pages freed by this many recent transactions are not reusable yet
_MAX_CLASS = 255
_SIGN = 1 << 63
_ALL = (1 << 64) - 1


def priority_key(priority: float) -> bytes:
    """8 bytes whose lexicographic order is the numeric order of ``priority`` (finite)."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", priority + 0.0))  # + 0.0: -0.0 -> 0.0
    bits = bits ^ _ALL if bits & _SIGN else bits | _SIGN
    return bits.to_bytes(8, "big")


def decode_priority_key(key: bytes) -> float:
    """Inverse of :func:`priority_key` (reads the first 8 bytes)."""
    bits = int.from_bytes(key[:8], "big")
    bits = bits ^ _SIGN if bits & _SIGN else bits ^ _ALL
    (value,) = struct.unpack(">d", struct.pack(">Q", bits))
    return float(value)


@dataclass(frozen=True)
class _Entry:
    """What the priority index says about a record."""

    flags: int
    chunks: int
    footprint: int
    cls: bytes

    @property
    def protected(self) -> bool:
        return bool(self.flags & _FLAG_PROTECTED)

    @property
    def pending(self) -> bool:
        return bool(self.flags & _FLAG_PENDING)

    @property
    def random(self) -> bool:
        return bool(self.flags & _FLAG_RANDOM)

    def pack(self) -> bytes:
        return _ENTRY.pack(self.flags, self.chunks, self.footprint) + self.cls


_GARBAGE = _Entry(0, 0, 0, b"")


class _Corrupt(Exception):
    """A stored value does not decode; the message says why."""


def _unpack_entry(raw: bytes) -> _Entry:
    if len(raw) < _ENTRY.size:
        raise _Corrupt("index entry too short")
    flags, chunks, footprint = _ENTRY.unpack_from(raw)
    return _Entry(int(flags), int(chunks), int(footprint), bytes(raw[_ENTRY.size :]))


def _class_bytes(record: SampleRecord) -> bytes:
    return record.final_class().encode()[:_MAX_CLASS]


def _class_prefix(cls: bytes) -> bytes:
    return bytes([len(cls)]) + cls


def _flags(record: SampleRecord) -> int:
    protected = record.feedback is not None and record.upload_state != "uploaded"
    return (
        (_FLAG_PROTECTED if protected else 0)
        | (_FLAG_PENDING if record.upload_state == "pending" else 0)
        | (_FLAG_RANDOM if record.random_slice else 0)
    )


def _index_bytes(id_len: int, chunks: int, cls_len: int, random_slice: bool) -> int:
    """Packed leaf bytes of one record's entries in every sub-database."""
    n = chunks * (_NODE + id_len + _CHUNK_NO.size + _PGNO)
    n += _NODE + 8 + id_len + _ENTRY.size + cls_len
    if random_slice:
        n += _NODE + id_len + 8  # rslice
    else:
        n += _NODE + 1 + cls_len + 8 + id_len  # cprio
        n += _NODE + 8 + id_len  # evict
    return n


def _footprint(id_len: int, chunks: int, cls_len: int, random_slice: bool, psize: int) -> int:
    return chunks * psize + 2 * _index_bytes(id_len, chunks, cls_len, random_slice)


def _chunks_of(record: SampleRecord, chunk_size: int) -> list[bytes]:
    meta = json.dumps(record.to_meta(), separators=(",", ":")).encode()
    blob = (
        _HEADER.pack(_MAGIC, priority_key(record.priority), len(meta), len(record.image))
        + meta
        + bytes(record.image)
    )
    out = [blob[i : i + chunk_size] for i in range(0, len(blob), chunk_size)]
    out[-1] = out[-1].ljust(chunk_size, b"\0")  # one whole page: never stored inline
    return out


def record_footprint(record: SampleRecord, page_size: int = mmap.PAGESIZE) -> int:
    """Bytes of the cap this record takes (its pages plus its share of the indexes)."""
    chunks = len(_chunks_of(record, page_size - _PAGE_HEADER))
    cls_len = len(_class_bytes(record))
    return _footprint(len(record.id.encode()), chunks, cls_len, record.random_slice, page_size)


def reserve_bytes(largest_write: int, page_size: int = mmap.PAGESIZE) -> int:
    """The part of ``max_bytes`` no record may use, given the largest footprint one write
    transaction has stored (see the module story)."""
    lag = _LAG_TXNS * (largest_write + _TREE_PAGES_PER_TXN * page_size)
    return _FIXED_RESERVE_PAGES * page_size + lag


def _u64(v: int) -> bytes:
    return max(0, v).to_bytes(8, "big")


def _decode(rid: bytes, blob: bytes, with_image: bool = True) -> SampleRecord:
    if len(blob) < _HEADER.size:
        raise _Corrupt("shorter than its header")
    magic, _pkey, meta_len, image_len = _HEADER.unpack_from(blob)
    if magic != _MAGIC:
        raise _Corrupt("bad magic")
    start = _HEADER.size
    end = start + meta_len + (image_len if with_image else 0)
    if end > len(blob):
        raise _Corrupt("lengths past the end")
    try:
        meta = json.loads(blob[start : start + meta_len])
        image = bytes(blob[start + meta_len : end]) if with_image else b""
        record = SampleRecord.from_meta(meta, image)
        image_size = meta.get("image_size", image_len)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _Corrupt(f"meta does not decode ({type(e).__name__})") from e
    if record.id.encode() != rid:
        raise _Corrupt("id does not match its key")
    if image_size != image_len:  # found by fuzzing: int() of a stored string could raise
        raise _Corrupt("image size does not match")
    return record
