"""Frame sources of the device service, one module each, registered by name.

``source.type`` in the device config picks one: ``folder`` (image files, the default),
``video`` (a video file), ``rtsp`` (an RTSP camera or stream), ``mjpeg`` (an HTTP MJPEG
stream), ``v4l2`` (a local camera). Each module holds its settings model (``extra="forbid"``)
and a factory; :data:`SOURCES` maps the name to both and :func:`open_source` opens one.
Live sources keep the latest frame only and reconnect with backoff (:mod:`._capture`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import Discriminator, Tag

from runtime.sources.base import Frame, Source, SourceHealth, SourceSettingsBase
from runtime.sources.folder import FolderSource, FolderSourceSettings
from runtime.sources.mjpeg import MjpegSourceSettings, open_mjpeg
from runtime.sources.rtsp import RtspSourceSettings, open_rtsp
from runtime.sources.v4l2 import V4l2SourceSettings, open_v4l2
from runtime.sources.video import VideoFileSource, VideoSourceSettings

__all__ = [
    "SOURCES",
    "AnySourceSettings",
    "FolderSource",
    "FolderSourceSettings",
    "Frame",
    "MjpegSourceSettings",
    "RtspSourceSettings",
    "Source",
    "SourceHealth",
    "SourceSettingsBase",
    "V4l2SourceSettings",
    "VideoFileSource",
    "VideoSourceSettings",
    "open_source",
    "source_key",
]

Factory = Callable[[Any, Path], Source]

#: source type -> (settings model, factory(settings, state_dir))
SOURCES: dict[str, tuple[type[SourceSettingsBase], Factory]] = {
    "folder": (FolderSourceSettings, FolderSource.from_settings),
    "video": (VideoSourceSettings, VideoFileSource.from_settings),
    "rtsp": (RtspSourceSettings, open_rtsp),
    "mjpeg": (MjpegSourceSettings, open_mjpeg),
    "v4l2": (V4l2SourceSettings, open_v4l2),
}


def _source_type(v: Any) -> str:
    if isinstance(v, dict):
        return str(v.get("type", "folder"))  # no type: the folder source (older configs)
    return str(getattr(v, "type", "folder"))


AnySourceSettings = Annotated[
    Annotated[FolderSourceSettings, Tag("folder")]
    | Annotated[VideoSourceSettings, Tag("video")]
    | Annotated[RtspSourceSettings, Tag("rtsp")]
    | Annotated[MjpegSourceSettings, Tag("mjpeg")]
    | Annotated[V4l2SourceSettings, Tag("v4l2")],
    Discriminator(_source_type),
]


def open_source(settings: SourceSettingsBase, state_dir: Path) -> Source:
    """Open the source ``settings`` describe (live sources start their reader thread)."""
    _, factory = SOURCES[settings.type]  # type: ignore[attr-defined]
    return factory(settings, state_dir)


def source_key(settings: SourceSettingsBase) -> str:
    """The source's identity where its cursor is stored: type, name and what it reads (a
    cursor of another folder or camera must not apply)."""
    what = next(
        (str(getattr(settings, k)) for k in ("path", "url", "device") if hasattr(settings, k)),
        "",
    )
    return f"{settings.type}:{settings.name}:{what}"  # type: ignore[attr-defined]
