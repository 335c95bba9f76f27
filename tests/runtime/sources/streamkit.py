"""Real stream servers for the source tests, started and stopped by the tests themselves.

- :func:`mjpeg_server`: ``hil/mjpeg_server.py`` (aiohttp, multipart/x-mixed-replace) in a
  subprocess of the project's Python.
- :func:`rtsp_server`: ``hil/rtsp_server.py`` (GStreamer's RTSP server) in a subprocess of the
  system Python, which has the GStreamer bindings; skips with the reason when they are missing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SYSTEM_PYTHON = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(cmd: list[str], timeout: float = 15.0) -> tuple[subprocess.Popen[str], str]:
    p = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    line = p.stdout.readline()
    if not line.startswith("ready ") or time.monotonic() > deadline:
        p.kill()
        p.wait()
        raise RuntimeError(f"{cmd[:3]} did not start: {line!r}")
    return p, line.split()[1]


def _stop(p: subprocess.Popen[str]) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def mjpeg_server(
    port: int, fps: float = 20.0, frames: int = 0, size: str = "160x120"
) -> Iterator[str]:
    p, url = _start(
        [
            sys.executable,
            "-m",
            "hil.mjpeg_server",
            "--port",
            str(port),
            "--fps",
            str(fps),
            "--frames",
            str(frames),
            "--size",
            size,
        ]
    )
    try:
        yield url
    finally:
        _stop(p)


def rtsp_available() -> str | None:
    """None when the RTSP server can run here, else why not."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} missing (the GStreamer bindings live there)"
    probe = (
        "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "assert Gst.ElementFactory.find('jpegenc') and Gst.ElementFactory.find('rtpjpegpay')"
    )
    r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30)
    if r.returncode != 0:
        return (
            "GStreamer RTSP server not installed (apt-get install python3-gi "
            "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good)"
        )
    return None


@contextmanager
def rtsp_server(port: int, fps: int = 15) -> Iterator[str]:
    why = rtsp_available()
    if why:
        pytest.skip(why)
    p, url = _start(
        [
            SYSTEM_PYTHON,
            str(ROOT / "hil" / "rtsp_server.py"),
            "--port",
            str(port),
            "--fps",
            str(fps),
        ]
    )
    try:
        yield url
    finally:
        _stop(p)


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None
