"""Opening a URL with OpenCV's FFmpeg backend, with timeouts (shared by the stream sources)."""

from __future__ import annotations

import os
import threading

import cv2

__all__ = ["open_ffmpeg"]

# FFmpeg's and OpenCV's own chatter (a refused connection on every reconnect attempt) stays off
# stderr; the source logs what matters once, through logging. Read at each open.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

# FFmpeg capture options are read from the environment at open time; one open at a time.
_ENV_LOCK = threading.Lock()
_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


def open_ffmpeg(url: str, timeout_s: float, options: str = "") -> cv2.VideoCapture:
    """Open ``url`` through FFmpeg; open and read calls give up after ``timeout_s``.

    ``options`` are FFmpeg demuxer options as ``key;value|key;value`` (e.g.
    ``rtsp_transport;tcp``). Never raises: check ``isOpened()``.
    """
    ms = int(timeout_s * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    with _ENV_LOCK:
        old = os.environ.get(_ENV)
        if options:
            os.environ[_ENV] = options
        else:
            os.environ.pop(_ENV, None)
        try:
            return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        finally:
            if old is None:
                os.environ.pop(_ENV, None)
            else:
                os.environ[_ENV] = old
