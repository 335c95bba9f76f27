"""``type: v4l2`` — a local camera (``/dev/videoN``) through OpenCV's V4L2 backend.

Latest-frame semantics, reconnect with backoff (a camera unplugged and plugged back) and the
frame-rate cap come from :class:`~runtime.sources._capture.LiveCapture`. The device unit needs
the camera drop-in (``systemd/leanloop.service.d/camera.conf``) to reach ``/dev/video*``.

Untested here: the test machine's kernel does not allow loading ``v4l2loopback``; the test
skips with that reason (tests/runtime/sources/test_v4l2.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
from pydantic import Field

from runtime.sources._capture import LiveCapture
from runtime.sources.base import SourceSettingsBase

__all__ = ["V4l2SourceSettings", "open_v4l2"]


class V4l2SourceSettings(SourceSettingsBase):
    """``type: v4l2`` — a V4L2 device."""

    type: Literal["v4l2"]
    device: Path = Field(default=Path("/dev/video0"), description="the camera's device node")
    width: int | None = Field(default=None, gt=0, description="requested frame width")
    height: int | None = Field(default=None, gt=0, description="requested frame height")
    fourcc: str | None = Field(
        default=None, min_length=4, max_length=4, description='pixel format, e.g. "MJPG", "YUYV"'
    )
    backoff_min_s: float = Field(default=0.5, gt=0, description="first reopen delay")
    backoff_max_s: float = Field(default=30.0, gt=0, description="longest reopen delay")


def _open(s: V4l2SourceSettings) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(s.device), cv2.CAP_V4L2)
    if cap.isOpened():
        if s.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*s.fourcc))
        if s.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, s.width)
        if s.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, s.height)
        if s.fps_limit:
            cap.set(cv2.CAP_PROP_FPS, s.fps_limit)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a driver queue of old ones
    return cap


def open_v4l2(s: V4l2SourceSettings, state_dir: Path) -> LiveCapture:
    return LiveCapture(
        "v4l2",
        s.name,
        lambda: _open(s),
        fps_limit=s.fps_limit,
        poll_interval_s=s.poll_interval_s,
        backoff_min_s=s.backoff_min_s,
        backoff_max_s=s.backoff_max_s,
        describe=str(s.device),
    )
