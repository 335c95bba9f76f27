"""Nothing a frame can do stops the device: a real ``leanloop device run`` process is fed frames
that make the decoder raise or that declare too many pixels, and keeps serving the next ones."""

from __future__ import annotations

import struct
import zlib

from loopkit import Device, Loop
from typer.testing import CliRunner

from leanloop.cli import app


def declaring_png(w: int, h: int) -> bytes:
    """A 1 KB gray PNG whose header declares ``w``×``h`` pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(1000)))
        + chunk(b"IEND", b"")
    )


def _drop(dev: Device, name: str, data: bytes) -> None:
    tmp = dev.inbox / f".{name}"
    tmp.write_bytes(data)
    tmp.rename(dev.inbox / name)


def test_device_goes_on_when_frames_make_the_decoder_raise_or_declare_too_many_pixels(
    loop: Loop,
) -> None:
    # A pixel limit above OpenCV's own: the 60000x60000 frame reaches cv2.imdecode, which raises.
    dev = loop.serving_device(inference={"max_frame_pixels": 10**10})
    _drop(dev, "a0.png", declaring_png(60000, 60000))
    _drop(dev, "a1.png", declaring_png(60000, 60000))
    dev.feed(1)  # f000000.png, after the bad ones in name order
    st = dev.wait("3 frames", lambda st: st["counters"]["frames"] >= 3)
    res = dev.results()
    assert "cannot be decoded" in res["a0.png"]["error"]
    assert "CV_IO_MAX_IMAGE_PIXELS" in res["a1.png"]["error"]
    assert "error" not in res["f000000.png"] and res["f000000.png"]["stages"]["detector"]
    assert st["counters"]["frame_errors"] == 2
    assert st["update_state"] == "committed"  # frame errors are not a bundle's fault
    assert st["engines"] == {"detector": "onnxruntime", "classifier": "onnxruntime"}
    r = CliRunner().invoke(app, ["status", "--config", str(dev.config)])
    assert r.exit_code == 0, r.output
    assert "classifier: onnxruntime, detector: onnxruntime" in r.stdout
    assert r.stdout.count("engines") == 1
    log = dev.tail()
    assert log.count("frame a0.png failed") == 1
    assert "frame a1.png failed" not in log  # rate-limited: one warning per 10 s

    # With the default limit the frame is refused from its header, before decoding.
    dev.reconfigure(inference={})
    dev.wait("running", lambda st: st.get("pid") == dev.proc.pid)
    _drop(dev, "f000000z.png", declaring_png(20000, 20000))  # before f000001
    dev.feed(1)
    dev.wait("5 frames", lambda st: len(dev.results()) >= 5)
    res = dev.results()
    assert "declares 20000x20000 pixels, more than the limit" in res["f000000z.png"]["error"]
    assert "error" not in res["f000001.png"]
    assert dev.proc.poll() is None
