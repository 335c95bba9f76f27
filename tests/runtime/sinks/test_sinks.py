"""Result sinks against real receivers the tests start: an aiohttp webhook receiver that fails
on demand, and a real mosquitto broker (stopped and started again)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hil.faultproxy import FaultProxy
from runtime.config import DeviceConfig
from runtime.pipeline.prediction import Prediction
from runtime.sinks import FanoutSink, JsonlSink, MqttSinkSettings, WebhookSinkSettings, open_sink
from tests.runtime.sources.streamkit import free_port


def _pred(i: int) -> Prediction:
    return Prediction(frame_id=f"f{i:04d}", bundle="b", bundle_version=1, latency_ms=1.5)


def _until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


class Receiver:
    """A real HTTP server on loopback (aiohttp, own thread) recording what it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail_next = 0  # answer 503 to this many requests
        self.status_for_all: int | None = None
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.status_for_all is not None:
            return web.Response(status=self.status_for_all)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503)
        self.bodies.append(body)
        return web.Response(status=204)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> Receiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def _webhook(url: str, **kw: Any) -> Any:
    s = WebhookSinkSettings.model_validate(
        {"type": "webhook", "url": url, "backoff_min_s": 0.05, "backoff_max_s": 0.2, **kw}
    )
    return open_sink(s, "dev-1")


def test_webhook_sink_posts_each_result_when_receiver_is_up() -> None:
    with Receiver() as rx:
        sink = _webhook(rx.url)
        for i in range(5):
            sink.write(_pred(i), ts=1000.0 + i)
        _until(lambda: len(rx.bodies) == 5)
        sink.close()
    assert [b["frame_id"] for b in rx.bodies] == [f"f{i:04d}" for i in range(5)]
    assert rx.bodies[0]["device"] == "dev-1" and rx.bodies[0]["ts"] == 1000.0
    assert sink.stats()["sent"] == 5


def test_webhook_sink_retries_when_receiver_fails_then_recovers() -> None:
    with Receiver() as rx:
        rx.fail_next = 3
        sink = _webhook(rx.url)
        sink.write(_pred(1))
        _until(lambda: len(rx.bodies) == 1)
        sink.close()
    assert sink.stats()["retries"] == 3 and sink.stats()["failed"] == 0


def test_webhook_sink_drops_and_counts_when_receiver_is_down_and_queue_full() -> None:
    port = free_port()  # nothing listens
    sink = _webhook(f"http://127.0.0.1:{port}/hook", queue_size=3, max_attempts=2)
    t0 = time.monotonic()
    for i in range(50):
        sink.write(_pred(i))
    assert time.monotonic() - t0 < 0.5  # the frame loop never waits
    _until(lambda: sink.stats()["queued"] == 0)
    sink.close()
    st = sink.stats()
    assert st["dropped"] >= 40 and st["failed"] + st["dropped"] == 50, st


def test_webhook_sink_does_not_retry_when_receiver_refuses() -> None:
    with Receiver() as rx:
        rx.status_for_all = 400
        sink = _webhook(rx.url)
        sink.write(_pred(1))
        _until(lambda: sink.stats()["refused"] == 1)
        sink.close()
    assert sink.stats()["retries"] == 0


@contextmanager
def mosquitto(port: int, tmp: Path) -> Iterator[None]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        pytest.skip("mosquitto not installed (apt-get install mosquitto)")
    conf = tmp / f"mosq-{port}.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    p = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        import socket

        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not start"
                time.sleep(0.05)
        yield
    finally:
        p.terminate()
        p.wait(10)


class Subscriber:
    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.got: list[dict[str, Any]] = []
        self.subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub")
        c.reconnect_delay_set(1, 1)

        def on_connect(cl: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
            self.subscribed.clear()
            cl.subscribe(topic, qos=1)

        c.on_connect = on_connect
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_message = lambda cl, u, m: self.got.append(json.loads(m.payload))
        c.connect_async("127.0.0.1", port)
        c.loop_start()
        self.c = c

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_mqtt_sink_publishes_and_delivers_after_link_comes_back(tmp_path: Path) -> None:
    port = free_port()
    link = free_port()  # the sink reaches the broker through a proxy: the "link"
    s = MqttSinkSettings.model_validate(
        {"type": "mqtt", "host": "127.0.0.1", "port": link, "qos": 1, "reconnect_max_s": 1}
    )
    with mosquitto(port, tmp_path):
        sub = Subscriber(port, "leanloop/dev-1/results")
        assert sub.subscribed.wait(10)
        with FaultProxy("127.0.0.1", port, listen_port=link):
            sink = open_sink(s, "dev-1")
            assert sink.connected.wait(10)
            for i in range(3):
                sink.write(_pred(i), ts=5.0)
            _until(lambda: len(sub.got) == 3)
        # The link is down: QoS 1 messages wait in the client's bounded queue.
        _until(lambda: not sink.connected.is_set())
        for i in range(3, 6):
            sink.write(_pred(i))
        time.sleep(0.3)
        assert len(sub.got) == 3
        with FaultProxy("127.0.0.1", port, listen_port=link):
            _until(lambda: len({m["frame_id"] for m in sub.got}) == 6, 20)
            sink.close()
        sub.close()
    assert sub.got[0]["device"] == "dev-1" and sub.got[0]["ts"] == 5.0
    assert sink.stats()["dropped"] == 0 and sink.stats()["connects"] >= 2


def test_mqtt_sink_drops_and_counts_when_queue_is_full(tmp_path: Path) -> None:
    port = free_port()  # no broker: nothing is ever sent
    s = MqttSinkSettings.model_validate(
        {"type": "mqtt", "host": "127.0.0.1", "port": port, "qos": 1, "queue_size": 5}
    )
    sink = open_sink(s, "dev-1")
    for i in range(20):
        sink.write(_pred(i))
    sink.close()
    assert sink.stats()["dropped"] == 15


def test_fanout_sink_writes_results_file_and_every_sink(tmp_path: Path) -> None:
    with Receiver() as rx:
        cfg = DeviceConfig.model_validate({"sinks": [{"type": "webhook", "url": rx.url}]})
        fan = FanoutSink(
            [
                ("results", JsonlSink(tmp_path / "r.jsonl")),
                ("webhook0", open_sink(cfg.sinks[0], "d")),
            ]
        )
        fan.write(_pred(7), ts=12.5)
        _until(lambda: len(rx.bodies) == 1)
        assert fan.stats()["webhook0"]["sent"] == 1
        fan.close()
    line = json.loads((tmp_path / "r.jsonl").read_text())
    assert line["frame_id"] == "f0007" and line["ts"] == 12.5
