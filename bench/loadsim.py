"""An asyncio device simulator: N devices speaking the device protocol to one or more hubs.

Each simulated device enrolls (at a random moment of the start-up spread), then every
``poll_s`` (first poll at a random phase) does what ``runtime.service`` does per update check:
``POST /device/heartbeat`` (with a failure event now and then), then ``GET /device/desired``.
Uploads are one Poisson stream of ``uploads_per_s`` over the whole fleet, each a real multipart
``PUT /device/samples/<id>`` from a random enrolled device.

With several hub URLs (replicas behind no load balancer), each device has a home hub and, when a
request fails (connection error, timeout, or a 5xx), retries it once on the next hub and makes
that one its home: this is what the ``< 0.1% failed device requests`` figure counts — requests
that failed *after* that retry.

Everything measured is client-side wall time per request (retry included), by kind.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = ["LoadStats", "SimConfig", "percentile", "simulate"]

_JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 32 + b"\xff\xd9"  # ~8 KiB of "image"


@dataclass
class SimConfig:
    hubs: list[str]
    enroll_token: str
    devices: int = 100
    duration_s: float = 30.0
    poll_s: float = 60.0
    startup_spread_s: float = 10.0
    uploads_per_s: float = 5.0
    failure_events_per_device_hour: float = 0.5
    timeout_s: float = 10.0
    connections: int = 2000
    bare: bool = False  # the anchor: a bare endpoint, no enrolment, same request pattern
    seed: int = 7
    cohorts: int = 4


@dataclass
class LoadStats:
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    status: Counter[str] = field(default_factory=Counter)
    failed: int = 0  # requests that failed after the retry (or had no other hub)
    retried: int = 0
    requests: int = 0
    uploads_stored: int = 0
    window: tuple[float, float] = (0.0, 0.0)
    # How late the simulator's own event loop ran a 50 ms timer: when this is large, the
    # simulator (not the hub) stretched the measured latencies.
    loop_lag_ms: list[float] = field(default_factory=list)

    def add(self, kind: str, ms: float) -> None:
        self.latency_ms.setdefault(kind, []).append(ms)

    def all_latencies(self) -> list[float]:
        return [x for v in self.latency_ms.values() for x in v]

    def summary(self) -> dict[str, Any]:
        lat = self.all_latencies()
        return {
            "requests": self.requests,
            "failed": self.failed,
            "failed_fraction": self.failed / self.requests if self.requests else 0.0,
            "retried": self.retried,
            "status_5xx": sum(n for s, n in self.status.items() if s.startswith("5")),
            "status": dict(self.status),
            "p50_ms": percentile(lat, 0.5),
            "p99_ms": percentile(lat, 0.99),
            "by_kind": {
                k: {"n": len(v), "p50_ms": percentile(v, 0.5), "p99_ms": percentile(v, 0.99)}
                for k, v in sorted(self.latency_ms.items())
            },
            "uploads_stored": self.uploads_stored,
            "client_lag_p99_ms": percentile(self.loop_lag_ms, 0.99),
            "client_lag_max_ms": round(max(self.loop_lag_ms), 1) if self.loop_lag_ms else None,
            "rate_per_s": self.requests / max(1e-9, self.window[1] - self.window[0]),
        }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


class _Device:
    def __init__(self, n: int, cfg: SimConfig, rng: random.Random) -> None:
        self.id = f"sim-{n:05d}"
        self.cohort = f"c{n % cfg.cohorts}"
        self.token: str | None = None
        self.home = n % len(cfg.hubs)
        self.version: int | None = None


class _Sim:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.stats = LoadStats()
        self.devices = [_Device(i, cfg, self.rng) for i in range(cfg.devices)]
        self.enrolled: list[_Device] = []
        self.t_end = 0.0
        self.inflight: set[asyncio.Task[None]] = set()

    async def request(
        self, s: aiohttp.ClientSession, dev: _Device, kind: str, method: str, path: str, **kw: Any
    ) -> Any:
        """One device request, with one retry on the next hub; None if it failed."""
        t0 = time.perf_counter()
        headers = {"Authorization": f"Bearer {dev.token}"} if dev.token else {}
        attempts = 2 if len(self.cfg.hubs) > 1 else 1
        result: Any = None
        ok = False
        for attempt in range(attempts):
            url = self.cfg.hubs[dev.home] + path
            try:
                data = kw.get("data_factory", lambda: None)()
                async with s.request(
                    method, url, headers=headers, json=kw.get("json"), data=data
                ) as r:
                    body = await r.read()
                    self.stats.status[str(r.status)] += 1
                    if r.status < 500:
                        ok = r.status < 400
                        result = json.loads(body) if body and ok else None
                        break
            except (aiohttp.ClientError, TimeoutError, OSError):
                self.stats.status["conn_error"] += 1
            if attempt + 1 < attempts:
                self.stats.retried += 1
                dev.home = (dev.home + 1) % len(self.cfg.hubs)
        ms = (time.perf_counter() - t0) * 1000
        self.stats.requests += 1
        self.stats.add(kind, ms)
        if not ok:
            self.stats.failed += 1
        return result if ok else None

    async def enroll(self, s: aiohttp.ClientSession, dev: _Device) -> None:
        if self.cfg.bare:
            dev.token = "bare"
            self.enrolled.append(dev)
            return
        body = {"device_id": dev.id, "enroll_token": self.cfg.enroll_token, "cohort": dev.cohort}
        for _ in range(5):
            got = await self.request(s, dev, "enroll", "POST", "/api/v1/enroll", json=body)
            if got is not None:
                dev.token = got["device_token"]
                self.enrolled.append(dev)
                return
            await asyncio.sleep(1)

    async def device_loop(self, s: aiohttp.ClientSession, dev: _Device) -> None:
        await asyncio.sleep(self.rng.uniform(0, self.cfg.startup_spread_s))
        await self.enroll(s, dev)
        if dev.token is None:
            return
        await asyncio.sleep(self.rng.uniform(0, self.cfg.poll_s))
        p_fail = self.cfg.failure_events_per_device_hour * self.cfg.poll_s / 3600
        while time.monotonic() < self.t_end:
            status: dict[str, Any] = {
                "device_id": dev.id,
                "time": time.time(),
                "active": {"bundle": "digits", "version": dev.version or 1, "status": "committed"},
                "update_state": "idle",
            }
            if self.rng.random() < p_fail:
                status["events"] = [
                    {"id": uuid.uuid4().hex[:16], "time": time.time(), "kind": "update_failed",
                     "cause": "health_check_failed", "bundle": "digits", "version": 99,
                     "reason": "simulated"}
                ]  # fmt: skip
            await self.request(s, dev, "heartbeat", "POST", "/api/v1/device/heartbeat", json=status)
            await self.request(s, dev, "desired", "GET", "/api/v1/device/desired")
            await asyncio.sleep(self.cfg.poll_s)

    async def uploads(self, s: aiohttp.ClientSession) -> None:
        if self.cfg.uploads_per_s <= 0:
            return
        n = 0
        while time.monotonic() < self.t_end:
            await asyncio.sleep(self.rng.expovariate(self.cfg.uploads_per_s))
            if not self.enrolled:
                continue
            dev = self.rng.choice(self.enrolled)
            n += 1
            sample_id = f"{dev.id}-{n:07d}"
            meta = {
                "id": sample_id, "device_id": dev.id, "created": time.time(), "frame_id": f"f{n}",
                "bundle": "digits", "bundle_version": 1, "ontology_version": 1,
                "image_format": "jpeg", "prediction": {"stages": {}},
                "scores": {"margin": 0.5}, "priority": self.rng.random(),
            }  # fmt: skip

            def form(meta: dict[str, Any] = meta) -> aiohttp.FormData:
                f = aiohttp.FormData()
                f.add_field("meta", json.dumps(meta), content_type="application/json")
                f.add_field("image", _JPEG, filename="i.jpg", content_type="image/jpeg")
                return f

            path = f"/api/v1/device/samples/{sample_id}"
            task = asyncio.create_task(self._upload(s, dev, path, form))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)

    async def _upload(self, s: aiohttp.ClientSession, dev: _Device, path: str, form: Any) -> None:
        got = await self.request(s, dev, "upload", "PUT", path, data_factory=form)
        if got is not None and got.get("status") == "stored":
            self.stats.uploads_stored += 1

    async def lag_probe(self, period_s: float = 0.05) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(period_s)
            self.stats.loop_lag_ms.append((time.perf_counter() - t0 - period_s) * 1000)

    async def run(self) -> LoadStats:
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        conn = aiohttp.TCPConnector(limit=self.cfg.connections, limit_per_host=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=conn) as s:
            t0 = time.monotonic()
            self.t_end = t0 + self.cfg.duration_s
            tasks = [asyncio.create_task(self.device_loop(s, d)) for d in self.devices]
            tasks.append(asyncio.create_task(self.uploads(s)))
            tasks.append(asyncio.create_task(self.lag_probe()))
            await asyncio.sleep(self.cfg.duration_s)
            for t in [*tasks, *self.inflight]:
                t.cancel()
            await asyncio.gather(*tasks, *self.inflight, return_exceptions=True)
            self.stats.window = (t0, time.monotonic())
        return self.stats


async def simulate(cfg: SimConfig) -> LoadStats:
    """Run the simulated fleet for ``cfg.duration_s``; the stats of every request."""
    return await _Sim(cfg).run()
