"""The V4L2 camera source through a v4l2loopback device fed by ffmpeg.

Needs the ``v4l2loopback`` kernel module loaded (``modprobe v4l2loopback``); a sandbox or a
container usually cannot load modules, and then this test skips with that reason — the V4L2
source is untested there (docs/operations.md says so).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from runtime.sources import V4l2SourceSettings, open_source


def _loopback_device() -> Path | None:
    for d in sorted(Path("/sys/class/video4linux").glob("video*")):
        try:
            name = (d / "name").read_text()
        except OSError:
            continue
        if "loopback" in name.lower() or "dummy" in name.lower():
            return Path("/dev") / d.name
    return None


def test_v4l2_source_gives_frames_when_loopback_camera_is_fed(tmp_path: Path) -> None:
    dev = _loopback_device()
    if dev is None:
        pytest.skip(
            "no v4l2loopback device (/sys/class/video4linux has none; loading the kernel "
            "module is not allowed here): the V4L2 source is untested on this machine"
        )
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed (apt-get install ffmpeg)")
    feeder = subprocess.Popen(
        [
            "ffmpeg",
            "-v",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=15",
            "-pix_fmt",
            "yuyv422",
            "-f",
            "v4l2",
            str(dev),
        ],
    )
    try:
        time.sleep(1.0)
        src = open_source(
            V4l2SourceSettings.model_validate({"type": "v4l2", "device": str(dev)}), tmp_path
        )
        try:
            assert src.wait_ready(10)
            got = []
            deadline = time.monotonic() + 10
            while len(got) < 5 and time.monotonic() < deadline:
                f = src.next()
                if f is not None:
                    got.append(f)
            assert len(got) == 5 and got[0].image is not None
        finally:
            src.close()
    finally:
        feeder.terminate()
        feeder.wait(5)
