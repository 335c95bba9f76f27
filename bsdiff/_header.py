"""The patch header: pack, unpack, and verify it before any payload byte is parsed.

A patch is ``header || payload``. The header names everything a device must check before it
trusts a single payload byte: which codec, which base (size + sha256), which result (size +
sha256), and how long the payload is. Version 2 (written now, ~52 bytes) is compact because on
small model changes the header is a visible share of the patch; it holds the first 128 bits
of each sha256 and one CRC-32 over header and payload, checked first. Version 1 (140 bytes,
full hashes, a payload sha256) is still read: devices may hold such patches. See ``FORMAT.md``
for both layouts and for why 128 bits of each hash are enough here.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

from bsdiff.errors import BaseMismatchError, PatchCorruptError, PatchLimitError

__all__ = [
    "FORMAT_VERSION",
    "HASH_BYTES",
    "MAGIC",
    "MAGIC_V1",
    "PatchHeader",
    "pack_header",
    "unpack_header",
]

MAGIC = b"LLD\x1a"
"""Four bytes that open every version-2 patch (``\\x1a`` stops a text viewer at the header)."""
MAGIC_V1 = b"LLDELTA\x1a"
"""The eight bytes that open a version-1 patch."""
FORMAT_VERSION = 2
HASH_BYTES = 16
"""Bytes of each sha256 a version-2 header keeps (128 bits; FORMAT.md says why that is safe)."""
_CRC_AT = len(MAGIC)
_CRC_END = _CRC_AT + 4
_V1_BODY = struct.Struct("<8sHHIQQQ32s32s32s")
_V1_CRC = struct.Struct("<I")
V1_HEADER_SIZE = _V1_BODY.size + _V1_CRC.size  # 140
_MAX_VARINT = 10  # 64-bit values


@dataclass(frozen=True)
class PatchHeader:
    """The checked header of a patch. ``codec`` is the numeric codec id.

    ``base_sha256`` and ``result_sha256`` hold the sha256 prefix the patch stores (16 bytes in
    version 2, all 32 in version 1); ``payload_sha256`` is None in version 2 (the CRC covers
    the payload). ``header_size`` is where the payload starts.
    """

    codec: int
    base_size: int
    result_size: int
    payload_size: int
    base_sha256: bytes
    result_sha256: bytes
    payload_sha256: bytes | None = None
    version: int = FORMAT_VERSION
    flags: int = 0
    header_size: int = 0


def varint(value: int) -> bytes:
    """Unsigned LEB128, the minimal spelling."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def pack_header(h: PatchHeader, payload: bytes | bytearray | memoryview) -> bytes:
    """The header for ``payload`` described by ``h`` (its payload hash/size fields are ignored).

    Writes version 2 unless ``h.version`` is 1 (kept for tests of the version-1 reader).
    """
    if h.version == 1:
        body = _V1_BODY.pack(
            MAGIC_V1,
            1,
            h.codec,
            h.flags,
            h.base_size,
            h.result_size,
            len(payload),
            h.base_sha256,
            h.result_sha256,
            hashlib.sha256(payload).digest(),
        )
        return body + _V1_CRC.pack(zlib.crc32(body))
    rest = b"".join(
        [
            bytes([FORMAT_VERSION, h.codec]),
            varint(h.base_size),
            varint(h.result_size),
            varint(len(payload)),
            h.base_sha256[:HASH_BYTES],
            h.result_sha256[:HASH_BYTES],
        ]
    )
    crc = zlib.crc32(payload, zlib.crc32(rest))
    return MAGIC + struct.pack("<I", crc) + rest


def unpack_header(patch: bytes | bytearray | memoryview) -> PatchHeader:
    """Parse and check the header of ``patch``: magic, CRC, version, sizes (not the payload).

    Version 2: the CRC-32 over everything after it (header fields and payload) is checked
    before any field is believed. Raises PatchCorruptError on a short patch, bad magic, CRC or
    version, a malformed size, or a payload size that is not exactly the bytes that follow.
    """
    view = memoryview(patch)
    if bytes(view[: len(MAGIC_V1)]) == MAGIC_V1:
        return _unpack_v1(view)
    if len(view) < _CRC_END:
        raise PatchCorruptError(f"patch is {len(view)} bytes, too short for a header")
    if bytes(view[:_CRC_AT]) != MAGIC:
        raise PatchCorruptError("not a leanloop delta patch (bad magic)")
    (crc,) = struct.unpack("<I", view[_CRC_AT:_CRC_END])
    if zlib.crc32(view[_CRC_END:]) != crc:
        raise PatchCorruptError("patch checksum mismatch (corrupted or truncated patch)")
    fixed = bytes(view[_CRC_END : _CRC_END + 2])
    if len(fixed) < 2 or fixed[0] != FORMAT_VERSION:
        version = fixed[0] if fixed else "(missing)"
        raise PatchCorruptError(f"patch format version {version} is not supported (want 2)")
    pos = _CRC_END + 2
    sizes: list[int] = []
    for _ in range(3):
        value, pos = read_varint(view, pos)
        sizes.append(value)
    end = pos + 2 * HASH_BYTES
    if end > len(view):
        raise PatchCorruptError("patch header is truncated")
    base_size, result_size, payload_size = sizes
    if payload_size != len(view) - end:
        raise PatchCorruptError(
            f"patch payload is {len(view) - end} bytes, header says {payload_size}"
        )
    return PatchHeader(
        codec=fixed[1],
        base_size=base_size,
        result_size=result_size,
        payload_size=payload_size,
        base_sha256=bytes(view[pos : pos + HASH_BYTES]),
        result_sha256=bytes(view[pos + HASH_BYTES : end]),
        payload_sha256=None,
        version=FORMAT_VERSION,
        header_size=end,
    )


def read_varint(
    view: memoryview, pos: int, what: str = "patch header holds a malformed size"
) -> tuple[int, int]:
    """(value, position after it) of the unsigned LEB128 at ``pos``; raises PatchCorruptError
    with ``what`` when it is truncated, too long or not minimal."""
    value = 0
    for i in range(_MAX_VARINT):
        if pos + i >= len(view):
            break
        b = view[pos + i]
        value |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            if i and b == 0:
                break  # a non-minimal encoding: one value, one spelling
            return value, pos + i + 1
    raise PatchCorruptError(what)


def _unpack_v1(view: memoryview) -> PatchHeader:
    if len(view) < V1_HEADER_SIZE:
        raise PatchCorruptError(
            f"patch is {len(view)} bytes, shorter than its {V1_HEADER_SIZE}-byte header"
        )
    body = bytes(view[: _V1_BODY.size])
    (crc,) = _V1_CRC.unpack(view[_V1_BODY.size : V1_HEADER_SIZE])
    _magic, version, codec, flags, base_size, result_size, payload_size, b_sha, r_sha, p_sha = (
        _V1_BODY.unpack(body)
    )
    if zlib.crc32(body) != crc:
        raise PatchCorruptError("patch header checksum mismatch (corrupted header)")
    if version != 1:
        raise PatchCorruptError(f"patch format version {version} is not supported (want 1)")
    if flags != 0:
        raise PatchCorruptError(f"patch header has unknown flags {flags:#x}")
    if payload_size != len(view) - V1_HEADER_SIZE:
        raise PatchCorruptError(
            f"patch payload is {len(view) - V1_HEADER_SIZE} bytes, header says {payload_size}"
        )
    return PatchHeader(
        codec, base_size, result_size, payload_size, b_sha, r_sha, p_sha, 1, flags, V1_HEADER_SIZE
    )


def verify_before_apply(
    h: PatchHeader,
    old: bytes | bytearray | memoryview,
    payload: memoryview,
    max_result: int | None,
) -> None:
    """Check ``h`` against the caller's cap, the base file and (version 1) the payload hash.

    Raises PatchLimitError, BaseMismatchError or PatchCorruptError.
    """
    if max_result is not None and h.result_size > max_result:
        raise PatchLimitError(
            f"patch result is {h.result_size} bytes, above the cap of {max_result}"
        )
    if h.base_size != len(old):
        raise BaseMismatchError(f"patch base is {h.base_size} bytes, this file is {len(old)}")
    if not hashlib.sha256(old).digest().startswith(h.base_sha256):
        raise BaseMismatchError(f"patch base sha256 {h.base_sha256.hex()[:16]}… is not this file")
    if h.payload_sha256 is not None and hashlib.sha256(payload).digest() != h.payload_sha256:
        raise PatchCorruptError("patch payload sha256 mismatch (corrupted payload)")
