"""``type: mjpeg`` — an HTTP MJPEG stream (``multipart/x-mixed-replace``), as IP cameras and
``ffmpeg -f mpjpeg`` serve it, through FFmpeg.

Latest-frame semantics, reconnect with backoff and the frame-rate cap come from
:class:`~runtime.sources._capture.LiveCapture`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from runtime.sources._capture import LiveCapture
from runtime.sources._ffmpeg import open_ffmpeg
from runtime.sources.base import SourceSettingsBase
from runtime.sources.rtsp import _redact

__all__ = ["MjpegSourceSettings", "open_mjpeg"]


class MjpegSourceSettings(SourceSettingsBase):
    """``type: mjpeg`` — an HTTP(S) MJPEG URL."""

    type: Literal["mjpeg"]
    url: str = Field(pattern=r"^https?://", description="http:// or https:// URL of the stream")
    timeout_s: float = Field(default=5.0, gt=0, description="open/read timeout before reconnect")
    backoff_min_s: float = Field(default=0.5, gt=0, description="first reconnect delay")
    backoff_max_s: float = Field(default=30.0, gt=0, description="longest reconnect delay")


def open_mjpeg(s: MjpegSourceSettings, state_dir: Path) -> LiveCapture:
    # The mpjpeg demuxer reads multipart/x-mixed-replace; without it FFmpeg guesses (and may
    # wait for more data than a frame to do so).
    return LiveCapture(
        "mjpeg",
        s.name,
        lambda: open_ffmpeg(s.url, s.timeout_s, "f;mpjpeg"),
        fps_limit=s.fps_limit,
        poll_interval_s=s.poll_interval_s,
        backoff_min_s=s.backoff_min_s,
        backoff_max_s=s.backoff_max_s,
        describe=_redact(s.url),
    )
