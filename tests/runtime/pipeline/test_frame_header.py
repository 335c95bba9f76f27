"""A frame's declared size is read from its header and a frame over the pixel limit is refused
before anything is decoded: sizes checked against OpenCV's own encoders, peak memory measured
in a separate process."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.errors import FrameError
from runtime.pipeline.imagesize import declared_size, image_format
from runtime.pipeline.preprocess import decode_image


def _encoded(ext: str, w: int, h: int, channels: int = 3, params: list[int] | None = None) -> bytes:
    rng = np.random.default_rng(w * 1000 + h)
    shape = (h, w) if channels == 1 else (h, w, channels)
    img = rng.integers(0, 255, size=shape, dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    ("ext", "channels", "params", "fmt"),
    [
        (".png", 3, None, "png"),
        (".png", 1, None, "png"),
        (".jpg", 3, None, "jpeg"),
        (".jpg", 1, None, "jpeg"),
        (".jpg", 3, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], "jpeg"),
        (".webp", 3, [cv2.IMWRITE_WEBP_QUALITY, 80], "webp"),  # lossy: VP8
        (".webp", 3, [cv2.IMWRITE_WEBP_QUALITY, 101], "webp"),  # lossless: VP8L
        (".webp", 4, [cv2.IMWRITE_WEBP_QUALITY, 80], "webp"),  # alpha: VP8X
        (".bmp", 3, None, "bmp"),
        (".bmp", 1, None, "bmp"),
    ],
)
def test_declared_size_matches_the_encoder_when_opencv_writes_the_frame(
    ext: str, channels: int, params: list[int] | None, fmt: str
) -> None:
    for w, h in [(37, 23), (1, 1), (640, 17)]:
        data = _encoded(ext, w, h, channels, params)
        assert image_format(data) == fmt
        assert declared_size(data) == (w, h), (ext, params, w, h)
        assert decode_image(data).shape[:2] == (h, w)


def _png_header(w: int, h: int, color_type: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def declaring_png(w: int, h: int) -> bytes:
    """A small PNG whose header declares ``w``×``h`` gray pixels (its data is far too short)."""
    idat = zlib.compress(bytes(1000))
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    chunk = struct.pack(">I", len(idat)) + b"IDAT" + idat + crc
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return _png_header(w, h) + chunk + end


def test_declared_size_is_none_when_the_header_is_truncated_or_unknown() -> None:
    for fmt_bytes in (
        _png_header(10, 10)[:20],
        _encoded(".jpg", 10, 10)[:30],
        _encoded(".webp", 10, 10)[:22],
        _encoded(".bmp", 10, 10)[:20],
        b"GIF89a\x10\x00\x10\x00",
        b"",
    ):
        assert declared_size(fmt_bytes) is None
    with pytest.raises(FrameError, match="not a PNG, JPEG, WebP or BMP"):
        decode_image(b"GIF89a\x10\x00\x10\x00" + bytes(100))
    with pytest.raises(FrameError, match="bad header"):
        decode_image(_encoded(".jpg", 10, 10)[:30])


def test_frame_is_refused_from_its_header_when_it_declares_more_pixels_than_the_limit() -> None:
    data = declaring_png(60000, 60000)
    with pytest.raises(FrameError, match="declares 60000x60000 pixels, more than the limit"):
        decode_image(data)
    small = _encoded(".png", 40, 30)
    with pytest.raises(FrameError, match="declares 40x30 pixels, more than the limit of 1000"):
        decode_image(small, max_pixels=1000)
    assert decode_image(small, max_pixels=1200).shape == (30, 40, 3)


def test_decoder_error_is_a_frame_error_when_opencv_raises_on_a_frame() -> None:
    # Over OpenCV's own limit (CV_IO_MAX_IMAGE_PIXELS): imdecode raises cv2.error.
    data = declaring_png(60000, 60000)
    with pytest.raises(cv2.error):
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    with pytest.raises(FrameError, match=r"cannot be decoded: .*CV_IO_MAX_IMAGE_PIXELS"):
        decode_image(data, max_pixels=10**12)


def _zeros_png(path: Path, side: int) -> None:
    """A valid gray PNG of ``side``×``side`` zeros, compressed row by row (a few hundred KB)."""
    z = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0 + the pixels
    parts = [z.compress(row) for _ in range(side)]
    idat = b"".join(parts) + z.flush()
    chunk = (
        struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    path.write_bytes(_png_header(side, side) + chunk + end)


_PROBE = """
import json, resource, sys
from runtime.pipeline.preprocess import decode_image
from runtime.errors import FrameError
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_image(data)
    error = None
except FrameError as e:
    error = str(e)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"error": error, "grew_kb": after - before}))
"""


def test_peak_memory_stays_small_when_a_small_png_declares_20000x20000(tmp_path: Path) -> None:
    png = tmp_path / "bomb.png"
    _zeros_png(png, 20000)
    assert png.stat().st_size < 1 << 20  # a few hundred KB on disk, 400 MB of pixels declared
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(png)], capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout)
    assert "declares 20000x20000 pixels" in got["error"]
    assert got["grew_kb"] < 20 * 1024, got  # decoding it would take >= 400 MB
