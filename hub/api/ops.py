"""Operations routes, no token needed: ``/healthz`` for load balancers, ``/metrics`` for
Prometheus."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.api._common import BLOBS, DB, LEADER
from hub.metrics import METRICS

log = logging.getLogger("leanloop.hub.ops")

routes = web.RouteTableDef()

_HEALTH_TIMEOUT_S = 5.0


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers (and the blob store, probed by a lookup), else 503."""
    db = request.app[DB]
    checks: dict[str, bool] = {}
    try:
        await asyncio.wait_for(db.call(db.ping), _HEALTH_TIMEOUT_S)
        checks["database"] = True
    except Exception as e:
        log.warning("healthz: database: %s", e)
        checks["database"] = False
    try:
        await asyncio.wait_for(
            asyncio.to_thread(request.app[BLOBS].has, "0" * 64), _HEALTH_TIMEOUT_S
        )
        checks["blobs"] = True
    except Exception as e:
        log.warning("healthz: blobs: %s", e)
        checks["blobs"] = False
    ok = all(checks.values())
    return web.json_response(
        {"status": "ok" if ok else "unhealthy", **checks, "leader": request.app[LEADER].is_leader},
        status=200 if ok else 503,
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    m = request.app[METRICS]
    db = request.app[DB]
    devices = await db.call(db.devices)
    m.devices.clear()
    for cohort, n in Counter(d.cohort or "" for d in devices).items():
        m.devices.labels(cohort).set(n)
    m.rollouts.clear()
    for status, n in Counter(r.state.status for r in await db.call(db.rollouts)).items():
        m.rollouts.labels(status).set(n)
    m.leader.set(1 if request.app[LEADER].is_leader else 0)
    body = generate_latest(m.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
