"""A real RTSP server for tests: GStreamer's RTSP server serving a generated MJPEG stream.

Run with the system Python that has GStreamer's introspection bindings (Debian:
``python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good``), not the project's venv:

    /usr/bin/python3 hil/rtsp_server.py --port 8554 --path /cam --fps 15 --size 160x120

It prints ``ready rtsp://127.0.0.1:PORT/PATH`` on stdout once it listens and serves until
SIGTERM. Standalone on purpose: it imports nothing of the project.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--size", default="160x120")
    a = ap.parse_args()
    w, h = (int(x) for x in a.size.split("x"))
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width={w},height={h},"
        f"framerate={a.fps}/1 ! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory(a.path, factory)
    if server.attach(None) == 0:
        print(f"error: cannot listen on 127.0.0.1:{a.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"ready rtsp://127.0.0.1:{a.port}{a.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
