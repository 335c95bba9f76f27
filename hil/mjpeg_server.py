"""A real HTTP MJPEG server for tests: ``multipart/x-mixed-replace`` JPEG frames, as IP cameras
serve them, from an aiohttp app.

    python -m hil.mjpeg_server --port 8081 --fps 20 --size 160x120

Prints ``ready http://127.0.0.1:PORT/stream`` once it listens and serves until SIGTERM. Each
frame is a gray image whose level is the frame number modulo 256, with the number in the
``X-Frame`` part header. ``--frames N`` ends each response after N frames (a camera that drops
its clients).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import cv2
import numpy as np
from aiohttp import web

BOUNDARY = "leanloopframe"


def make_app(
    fps: float, width: int, height: int, frames: int, stop: asyncio.Event
) -> web.Application:
    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}"}
        )
        await resp.prepare(request)
        n = 0
        while (frames <= 0 or n < frames) and not stop.is_set():
            img = np.full((height, width, 3), n % 256, np.uint8)
            cv2.putText(img, str(n), (4, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
            _ok, buf = cv2.imencode(".jpg", img)
            jpg = buf.tobytes()
            part = (
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpg)}\r\n"
                f"X-Frame: {n}\r\n\r\n"
            ).encode()
            try:
                await resp.write(part + jpg + b"\r\n")
            except (ConnectionResetError, RuntimeError):
                break
            n += 1
            await asyncio.sleep(1.0 / fps)
        return resp

    app = web.Application()
    app.router.add_get("/stream", stream)
    return app


async def _serve(port: int, fps: float, w: int, h: int, frames: int) -> None:
    stop = asyncio.Event()
    app = make_app(fps, w, h, frames, stop)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    print(f"ready http://127.0.0.1:{port}/stream", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--size", default="160x120")
    ap.add_argument("--frames", type=int, default=0)
    a = ap.parse_args()
    w, h = (int(x) for x in a.size.split("x"))
    asyncio.run(_serve(a.port, a.fps, w, h, a.frames))


if __name__ == "__main__":
    main()
