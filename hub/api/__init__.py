"""The hub's routes, one module per area; :func:`hub.app.create_app` mounts every table."""

from __future__ import annotations

from aiohttp import web

from hub.api import (
    datasets,
    devices,
    fleet,
    history,
    identity,
    jobs,
    labelstudio,
    ontologies,
    ops,
    replay,
    rollouts,
    samples,
    shadow,
    tokens,
    tuf,
    uploads,
)

__all__ = ["ROUTE_TABLES"]

ROUTE_TABLES: tuple[web.RouteTableDef, ...] = (
    identity.routes,
    devices.routes,
    uploads.routes,
    tuf.routes,
    fleet.routes,
    shadow.routes,
    samples.routes,
    jobs.routes,
    rollouts.routes,
    tokens.routes,
    ops.routes,
    datasets.routes,
    ontologies.routes,
    replay.routes,
    history.routes,
    labelstudio.routes,
)
