"""The hub's Prometheus metrics (prometheus-client), one registry per app.

Counted by :func:`metrics_middleware` for every request: ``leanloop_hub_requests_total``
(method, route, status; 499 when the client hung up before the answer) and
``leanloop_hub_request_seconds`` (route). Read from the database
when scraped: devices by cohort, rollouts by status, whether this replica leads. Request lines are
logged at debug level (``leanloop.hub.requests``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["METRICS", "HubMetrics", "loop_lag_ctx", "metrics_middleware"]

request_log = logging.getLogger("leanloop.hub.requests")


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "leanloop_hub_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "leanloop_hub_request_seconds",
            "time to answer a request",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.devices = Gauge(
            "leanloop_hub_devices", "enrolled devices", ["cohort"], registry=self.registry
        )
        self.rollouts = Gauge(
            "leanloop_hub_rollouts", "rollouts by status", ["status"], registry=self.registry
        )
        self.slow_heads = Counter(
            "leanloop_hub_slow_heads_closed",
            "connections closed because a request head did not arrive within header_timeout_s",
            registry=self.registry,
        )
        self.leader = Gauge(
            "leanloop_hub_leader", "1 if this replica leads", registry=self.registry
        )
        self.loop_lag = Histogram(
            "leanloop_hub_event_loop_lag_seconds",
            "how late the event loop ran a 0.1 s timer (time no request could be served)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )


METRICS = web.AppKey("metrics", HubMetrics)
CLIENT_CLOSED = 499
LAG_PERIOD_S = 0.1


async def loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    """Measure the event loop's lag for as long as the app runs: a stall here (a blocking call,
    a long garbage collection, a starved process) delays every request, yet no handler's own
    time shows it."""

    async def probe() -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(LAG_PERIOD_S)
            app[METRICS].loop_lag.observe(max(0.0, time.perf_counter() - t0 - LAG_PERIOD_S))

    task = asyncio.create_task(probe())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count and time each request (outermost, so error answers are counted with their status)."""
    t0 = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as e:
        status = e.status
        raise
    except asyncio.CancelledError:
        # The client went away mid-request (aiohttp cancels its handler): its doing, not an
        # error of the hub. Counted as nginx's 499 "client closed request", never as a 5xx.
        status = CLIENT_CLOSED
        raise
    finally:
        dt = time.perf_counter() - t0
        route = _route(request)
        m = request.app[METRICS]
        m.requests.labels(request.method, route, str(status)).inc()
        m.latency.labels(route).observe(dt)
        if request_log.isEnabledFor(logging.DEBUG):
            request_log.debug(
                "%s %s %s %.1fms", request.method, request.path_qs[:200], status, dt * 1000
            )
