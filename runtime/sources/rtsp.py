"""``type: rtsp`` — an RTSP camera or stream (H.264/H.265/MJPEG over RTP), through FFmpeg.

Latest-frame semantics, reconnect with backoff and the frame-rate cap come from
:class:`~runtime.sources._capture.LiveCapture`. ``transport: tcp`` (the default) interleaves
RTP in the RTSP connection, which survives NAT and lossy links better than UDP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from runtime.sources._capture import LiveCapture
from runtime.sources._ffmpeg import open_ffmpeg
from runtime.sources.base import SourceSettingsBase

__all__ = ["RtspSourceSettings", "open_rtsp"]


class RtspSourceSettings(SourceSettingsBase):
    """``type: rtsp`` — an RTSP URL (``rtsp://user:pass@host:554/path``)."""

    type: Literal["rtsp"]
    url: str = Field(pattern=r"^rtsps?://", description="rtsp:// or rtsps:// URL of the stream")
    transport: Literal["tcp", "udp"] = Field(default="tcp", description="RTP transport")
    timeout_s: float = Field(default=5.0, gt=0, description="open/read timeout before reconnect")
    backoff_min_s: float = Field(default=0.5, gt=0, description="first reconnect delay")
    backoff_max_s: float = Field(default=30.0, gt=0, description="longest reconnect delay")


def open_rtsp(s: RtspSourceSettings, state_dir: Path) -> LiveCapture:
    return LiveCapture(
        "rtsp",
        s.name,
        lambda: open_ffmpeg(s.url, s.timeout_s, f"rtsp_transport;{s.transport}"),
        fps_limit=s.fps_limit,
        poll_interval_s=s.poll_interval_s,
        backoff_min_s=s.backoff_min_s,
        backoff_max_s=s.backoff_max_s,
        describe=_redact(s.url),
    )


def _redact(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    cred, at, host = rest.rpartition("@")
    if not at:
        return url
    user = cred.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
