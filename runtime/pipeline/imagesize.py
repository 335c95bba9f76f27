"""Read an encoded image's declared size from its header, before anything is decoded.

A frame is a few hundred bytes to a few megabytes, but the pixels it *declares* are what a
decoder allocates: a 389 KB PNG of zeros can declare 20000×20000 and take 1.7 GB while OpenCV
decodes it. :func:`declared_size` reads width and height from the first bytes of a PNG, JPEG,
WebP or BMP file (no pixel data touched, nothing allocated), so the pipeline can refuse a frame
over its pixel limit before calling the decoder (see
:func:`~runtime.pipeline.preprocess.decode_image`).

Pure byte parsing with :mod:`struct`; formats and offsets:

- PNG: the ``IHDR`` chunk that must follow the signature — big-endian width, height.
- JPEG: the first start-of-frame marker (``SOF0``–``SOF15`` except ``DHT``/``JPG``/``DAC``),
  found by walking the marker segments; height then width, big-endian.
- WebP: the first chunk of the RIFF container — ``VP8X`` (canvas size, 24-bit little-endian
  minus one), ``VP8L`` (14-bit fields minus one) or ``VP8 `` (the key frame header's 14-bit
  sizes).
- BMP: the DIB header — 16-bit sizes for the old ``BITMAPCOREHEADER``, else signed 32-bit
  (a negative height means top-down rows).
"""

from __future__ import annotations

import struct

__all__ = ["FORMATS", "declared_size", "image_format"]

FORMATS = ("png", "jpeg", "webp", "bmp")
"""The encodings a device accepts as frames."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RST0-7: no length field
_JPEG_SCAN_LIMIT = 1 << 20  # a SOF this far in is not a camera frame


def image_format(data: bytes) -> str | None:
    """``'png'``, ``'jpeg'``, ``'webp'``, ``'bmp'`` from the magic bytes, or None."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    return None


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) the header declares, or None when the format is not one of
    :data:`FORMATS` or its header is truncated or malformed. Reads only header bytes."""
    fmt = image_format(data)
    try:
        if fmt == "png":
            return _png(data)
        if fmt == "jpeg":
            return _jpeg(data)
        if fmt == "webp":
            return _webp(data)
        if fmt == "bmp":
            return _bmp(data)
    except (struct.error, IndexError):
        return None
    return None


def _png(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)


def _jpeg(data: bytes) -> tuple[int, int] | None:
    i, end = 2, min(len(data), _JPEG_SCAN_LIMIT)
    while i < end:
        if data[i] != 0xFF:
            return None  # lost sync: not a well-formed marker stream
        while i < end and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= end:
            return None
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before
            return None
        (length,) = struct.unpack(">H", data[i : i + 2])
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">HH", data[i + 3 : i + 7])
            return int(w), int(h)
        i += length
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    body = 20
    if chunk == b"VP8X":
        w = int.from_bytes(data[body + 4 : body + 7], "little") + 1
        h = int.from_bytes(data[body + 7 : body + 10], "little") + 1
        if len(data) < body + 10:
            return None
        return w, h
    if chunk == b"VP8L":
        if data[body] != 0x2F:
            return None
        (bits,) = struct.unpack("<I", data[body + 1 : body + 5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        if data[body + 3 : body + 6] != b"\x9d\x01\x2a":
            return None
        w, h = struct.unpack("<HH", data[body + 6 : body + 10])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    return None


def _bmp(data: bytes) -> tuple[int, int] | None:
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:
        w, h = struct.unpack("<HH", data[18:22])
        return int(w), int(h)
    if header < 40:
        return None
    w, h = struct.unpack("<ii", data[18:26])
    return abs(int(w)), abs(int(h))
