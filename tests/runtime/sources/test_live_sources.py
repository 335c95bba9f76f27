"""Live sources against real servers the tests start: an HTTP MJPEG stream (aiohttp) and an
RTSP stream (GStreamer's RTSP server). Latest-frame semantics, the rate cap, reconnect after the
server stops and comes back, health."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from runtime.sources import (
    Frame,
    MjpegSourceSettings,
    RtspSourceSettings,
    Source,
    open_source,
)
from tests.runtime.sources.streamkit import free_port, mjpeg_server, rtsp_server


def _take(src: Source, n: int, timeout: float = 15.0, sleep: float = 0.0) -> list[Frame]:
    out: list[Frame] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        f = src.next()
        if f is not None:
            out.append(f)
            time.sleep(sleep)
    assert len(out) == n, f"{len(out)} of {n} frames in {timeout} s; health {src.health()}"
    return out


def _until(cond, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _mjpeg(url: str, tmp_path: Path, **kw: object) -> Source:
    s = MjpegSourceSettings.model_validate(
        {
            "type": "mjpeg",
            "url": url,
            "timeout_s": 2.0,
            "backoff_min_s": 0.2,
            "backoff_max_s": 0.5,
            **kw,
        }
    )
    return open_source(s, tmp_path)


def test_mjpeg_source_gives_frames_in_time_order_when_server_streams(tmp_path: Path) -> None:
    port = free_port()
    with mjpeg_server(port) as url:
        src = _mjpeg(url, tmp_path, name="gate")
        try:
            assert src.wait_ready(10)
            frames = _take(src, 10)
        finally:
            src.close()
    ids = [f.id for f in frames]
    assert all(i.startswith("gate@") for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 10
    assert all(abs(f.ts - time.time()) < 30 for f in frames)
    assert frames[0].image is not None and frames[0].image.shape == (120, 160, 3)
    h = src.health()
    assert h["kind"] == "mjpeg" and h["frames"] == 10 and h["errors"] == 0


def test_mjpeg_source_drops_and_counts_when_pipeline_is_slower(tmp_path: Path) -> None:
    port = free_port()
    with mjpeg_server(port, fps=25) as url:
        src = _mjpeg(url, tmp_path)
        try:
            assert src.wait_ready(10)
            # A pipeline at ~5 frames/s behind a 25 frames/s camera.
            frames = _take(src, 6, sleep=0.2)
        finally:
            src.close()
    levels = [int(f.image[0, 0, 0]) for f in frames if f.image is not None]  # frame number
    gaps = [b - a for a, b in itertools.pairwise(levels[1:])]
    assert min(gaps) >= 2, f"stale frames were queued, not dropped: {levels}"
    assert src.health()["dropped"] >= 2 * len(gaps)


def test_mjpeg_source_caps_rate_when_fps_limit_is_set(tmp_path: Path) -> None:
    port = free_port()
    with mjpeg_server(port, fps=25) as url:
        src = _mjpeg(url, tmp_path, fps_limit=5)
        try:
            assert src.wait_ready(10)
            _take(src, 1)
            t0 = time.monotonic()
            frames = _take(src, 5)
            took = time.monotonic() - t0
        finally:
            src.close()
    gaps = [(b.ts - a.ts) for a, b in itertools.pairwise(frames)]
    assert min(gaps) >= 0.19, gaps
    assert took >= 0.75
    assert src.health()["capped"] > 0


def test_mjpeg_source_reconnects_when_server_stops_and_comes_back(tmp_path: Path) -> None:
    port = free_port()
    with mjpeg_server(port) as url:
        src = _mjpeg(url, tmp_path)
        assert src.wait_ready(10)
        _take(src, 3)
    try:
        _until(lambda: src.health()["state"] == "reconnecting")
        h = src.health()
        assert h["last_error"] in ("stream lost", "cannot open"), h
        assert src.next() is None or src.next() is None  # at most the one left in the slot
        with mjpeg_server(port):
            after = _take(src, 3, timeout=20)
            assert src.health()["state"] == "streaming"
    finally:
        src.close()
    assert src.health()["reconnects"] >= 1
    assert after[0].image is not None and int(after[-1].image[0, 0, 0]) < 60  # a new stream
    assert src.health()["state"] == "closed"


def test_mjpeg_source_keeps_trying_when_server_is_not_there_yet(tmp_path: Path) -> None:
    port = free_port()
    src = _mjpeg(f"http://127.0.0.1:{port}/stream", tmp_path)
    try:
        assert not src.wait_ready(10)
        assert src.health()["state"] == "connecting"
        assert src.health()["errors"] >= 1
        with mjpeg_server(port):
            _take(src, 2, timeout=20)
    finally:
        src.close()


def test_rtsp_source_gives_frames_and_reconnects_when_server_restarts(tmp_path: Path) -> None:
    port = free_port()
    s = RtspSourceSettings.model_validate(
        {
            "type": "rtsp",
            "url": f"rtsp://127.0.0.1:{port}/cam",
            "timeout_s": 2.0,
            "backoff_min_s": 0.2,
            "backoff_max_s": 0.5,
        }
    )
    with rtsp_server(port):
        src = open_source(s, tmp_path)
        try:
            assert src.wait_ready(15)
            frames = _take(src, 5)
        except BaseException:
            src.close()
            raise
    try:
        assert frames[0].image is not None and frames[0].image.shape == (120, 160, 3)
        assert [f.id for f in frames] == sorted(f.id for f in frames)
        _until(lambda: src.health()["state"] == "reconnecting", timeout=20)
        with rtsp_server(port):
            _take(src, 3, timeout=30)
    finally:
        src.close()
    assert src.health()["reconnects"] >= 1
