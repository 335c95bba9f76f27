"""File sources: a video file written by the test (OpenCV's writer, MJPEG in AVI) and the
folder of images; each frame once, resume after a restart, the config models."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from runtime.config import DeviceConfig
from runtime.sources import (
    AnySourceSettings,
    FolderSource,
    FolderSourceSettings,
    VideoFileSource,
    VideoSourceSettings,
    open_source,
)


def _write_video(path: Path, n: int) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 48))
    assert w.isOpened()
    for i in range(n):
        w.write(np.full((48, 64, 3), i * 8, np.uint8))
    w.release()


def _drain(src: VideoFileSource, limit: int = 1000) -> list[tuple[str, int]]:
    out = []
    for _ in range(limit):
        f = src.next()
        if f is None:
            if src.health()["state"] in ("ended", "error"):
                break
            continue
        assert f.image is not None
        out.append((f.id, int(f.image[0, 0, 0])))
        src.done(f)
    return out


def test_video_source_reads_every_frame_once_when_restarted_midway(tmp_path: Path) -> None:
    clip = tmp_path / "gate.avi"
    _write_video(clip, 30)
    s = VideoSourceSettings.model_validate({"type": "video", "path": str(clip), "name": "v"})
    src = open_source(s, tmp_path)
    assert isinstance(src, VideoFileSource)
    first = [src.next() for _ in range(12)]
    for f in first:
        assert f is not None
        src.done(f)
    src.close()  # persists the cursor (a clean stop)
    again = open_source(s, tmp_path)
    assert isinstance(again, VideoFileSource)
    rest = _drain(again)
    again.close()
    ids = [f.id for f in first if f is not None] + [i for i, _ in rest]
    assert ids == [f"gate.avi#{i:08d}" for i in range(30)]
    levels = [lv for _, lv in rest]
    assert all(abs(lv - (12 + k) * 8) <= 3 for k, lv in enumerate(levels)), levels
    assert again.health()["state"] == "closed" and again.health()["frames"] == 18


def test_video_source_ends_when_file_is_read_and_loops_when_asked(tmp_path: Path) -> None:
    clip = tmp_path / "c.avi"
    _write_video(clip, 5)
    once = VideoFileSource(clip, tmp_path / "cur1.json")
    assert len(_drain(once)) == 5
    assert once.health()["state"] == "ended" and once.next() is None
    looped = VideoFileSource(clip, tmp_path / "cur2.json", loop=True)
    got = [f.id for f in (looped.next() for _ in range(14)) if f is not None]
    assert got[:5] == [f"c.avi#{i:08d}" for i in range(5)]
    assert got[5:10] == [f"c.avi~0001#{i:08d}" for i in range(5)]


def test_video_source_starts_over_when_file_is_replaced(tmp_path: Path) -> None:
    clip = tmp_path / "c.avi"
    _write_video(clip, 6)
    src = VideoFileSource(clip, tmp_path / "cur.json")
    assert len(_drain(src)) == 6
    src.close()
    _write_video(clip, 9)  # a new recording under the same name
    src = VideoFileSource(clip, tmp_path / "cur.json")
    assert len(_drain(src)) == 9


def test_video_source_says_error_when_file_is_missing(tmp_path: Path) -> None:
    src = VideoFileSource(tmp_path / "none.mp4", tmp_path / "cur.json")
    assert src.next() is None
    h = src.health()
    assert h["state"] == "error" and "cannot open" in h["last_error"]


def test_folder_source_gives_each_file_once_in_name_order(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    for n in ("b.png", "a.png", ".hidden.png"):
        _ok, buf = cv2.imencode(".png", np.zeros((4, 4), np.uint8))
        (inbox / n).write_bytes(buf.tobytes())
    os.utime(inbox / "a.png", (1_700_000_000, 1_700_000_000))  # written by the camera then
    src = open_source(FolderSourceSettings(path=inbox, pattern="*.png"), tmp_path)
    assert isinstance(src, FolderSource)
    got = [src.next() for _ in range(3)]
    assert [f.id for f in got if f is not None] == ["a.png", "b.png"]
    assert got[0] is not None and got[0].data and got[0].image is None
    assert got[0].ts == 1_700_000_000
    assert src.health()["state"] == "idle" and src.health()["frames"] == 2


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"type": "rtsp", "url": "http://x"}, "should match pattern"),
        ({"type": "mjpeg", "url": "http://x", "transport": "tcp"}, "Extra inputs"),
        ({"type": "camera"}, "does not match any of the expected tags"),
        ({"type": "video"}, "path"),
        ({"type": "v4l2", "fourcc": "MJPEG"}, "at most 4"),
    ],
)
def test_source_config_is_refused_when_wrong(raw: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        TypeAdapter(AnySourceSettings).validate_python(raw)


def test_source_config_is_folder_when_type_is_omitted() -> None:
    cfg = DeviceConfig.model_validate({"source": {"path": "/x", "pattern": "*.png"}})
    assert isinstance(cfg.source, FolderSourceSettings) and cfg.source.pattern == "*.png"
    cam = DeviceConfig.model_validate({"source": {"type": "rtsp", "url": "rtsp://h/cam"}})
    assert cam.source.type == "rtsp"
