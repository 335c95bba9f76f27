"""The fixed 140-byte patch header: pack, unpack, and verify it before any payload is parsed.

A patch is ``header || payload``. The header names everything a device must check before it
trusts a single payload byte: which codec, which base (size + sha256), which result (size +
sha256), and the payload (size + sha256). A CRC-32 over the header catches a flipped header byte
before any field is believed. See ``FORMAT.md`` for the byte layout.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

from bsdiff.errors import BaseMismatchError, PatchCorruptError, PatchLimitError

__all__ = ["FORMAT_VERSION", "HEADER_SIZE", "MAGIC", "PatchHeader", "pack_header", "unpack_header"]

MAGIC = b"LLDELTA\x1a"
"""Eight bytes that open every patch (``\\x1a`` stops a text viewer printing the payload)."""
FORMAT_VERSION = 1
_BODY = struct.Struct("<8sHHIQQQ32s32s32s")
_CRC = struct.Struct("<I")
HEADER_SIZE = _BODY.size + _CRC.size  # 140


@dataclass(frozen=True)
class PatchHeader:
    """The verified header of a patch. ``codec`` is the numeric codec id."""

    codec: int
    base_size: int
    result_size: int
    payload_size: int
    base_sha256: bytes
    result_sha256: bytes
    payload_sha256: bytes
    version: int = FORMAT_VERSION
    flags: int = 0


def pack_header(h: PatchHeader) -> bytes:
    """Serialise ``h``, CRC included."""
    body = _BODY.pack(
        MAGIC,
        h.version,
        h.codec,
        h.flags,
        h.base_size,
        h.result_size,
        h.payload_size,
        h.base_sha256,
        h.result_sha256,
        h.payload_sha256,
    )
    return body + _CRC.pack(zlib.crc32(body))


def unpack_header(patch: bytes | bytearray | memoryview) -> PatchHeader:
    """Parse and sanity-check the header of ``patch`` (not the payload).

    Raises PatchCorruptError on a short patch, bad magic, CRC, version or flags, or a payload
    size that is not exactly the bytes following the header.
    """
    view = memoryview(patch)
    if len(view) < HEADER_SIZE:
        raise PatchCorruptError(
            f"patch is {len(view)} bytes, shorter than its {HEADER_SIZE}-byte header"
        )
    body = bytes(view[: _BODY.size])
    (crc,) = _CRC.unpack(view[_BODY.size : HEADER_SIZE])
    magic, version, codec, flags, base_size, result_size, payload_size, b_sha, r_sha, p_sha = (
        _BODY.unpack(body)
    )
    if magic != MAGIC:
        raise PatchCorruptError("not a leanloop delta patch (bad magic)")
    if zlib.crc32(body) != crc:
        raise PatchCorruptError("patch header checksum mismatch (corrupted header)")
    if version != FORMAT_VERSION:
        raise PatchCorruptError(
            f"patch format version {version} is not supported (want {FORMAT_VERSION})"
        )
    if flags != 0:
        raise PatchCorruptError(f"patch header has unknown flags {flags:#x}")
    if payload_size != len(view) - HEADER_SIZE:
        raise PatchCorruptError(
            f"patch payload is {len(view) - HEADER_SIZE} bytes, header says {payload_size}"
        )
    return PatchHeader(
        codec, base_size, result_size, payload_size, b_sha, r_sha, p_sha, version, flags
    )


def verify_before_apply(
    h: PatchHeader,
    old: bytes | bytearray | memoryview,
    payload: memoryview,
    max_result: int | None,
) -> None:
    """Check ``h`` against the caller's cap, the base file and the payload, cheapest first.

    Raises PatchLimitError, BaseMismatchError or PatchCorruptError.
    """
    if max_result is not None and h.result_size > max_result:
        raise PatchLimitError(
            f"patch result is {h.result_size} bytes, above the cap of {max_result}"
        )
    if h.base_size != len(old):
        raise BaseMismatchError(f"patch base is {h.base_size} bytes, this file is {len(old)}")
    if hashlib.sha256(old).digest() != h.base_sha256:
        raise BaseMismatchError(f"patch base sha256 {h.base_sha256.hex()[:16]}… is not this file")
    if hashlib.sha256(payload).digest() != h.payload_sha256:
        raise PatchCorruptError("patch payload sha256 mismatch (corrupted payload)")
