"""Admin shadow-mode routes: assign and cancel candidates, the fleet's shadow telemetry."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from aiohttp import web
from pydantic import Field, ValidationError

from hub.api._common import (
    API,
    DB,
    NAME_PATTERN,
    Body,
    parse_body,
    read_capped,
)
from hub.errors import (
    NotFound,
)
from runtime.shadow.compare import ShadowStats
from runtime.shadow.promotion import PromotionRule

log = logging.getLogger("leanloop.hub.shadow")

routes = web.RouteTableDef()


class ShadowRolloutRequest(Body):
    """``POST /admin/shadow/rollouts``: a candidate in shadow mode for devices/a cohort/all."""

    bundle: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)
    devices: list[str] | None = Field(default=None, min_length=1, max_length=100_000)
    cohort: str | None = Field(default=None, pattern=NAME_PATTERN)
    rule: PromotionRule = Field(default_factory=PromotionRule)


class ShadowCancelRequest(Body):
    """``POST /admin/shadow/cancel``: withdraw the candidate of devices, a cohort, or all."""

    devices: list[str] | None = Field(default=None, min_length=1, max_length=100_000)
    cohort: str | None = Field(default=None, pattern=NAME_PATTERN)


# -- admin: shadow mode -------------------------------------------------------------------------


@routes.post(f"{API}/admin/shadow/rollouts")
async def shadow_rollout(request: web.Request) -> web.Response:
    """Assign a published bundle version as a shadow candidate, with its promotion rule."""
    raw = await read_capped(request, 4 * 1024 * 1024, "shadow rollout")
    body = parse_body(ShadowRolloutRequest, raw, "shadow rollout")
    db = request.app[DB]
    if not await db.call(db.has_bundle, body.bundle, body.version):
        raise NotFound(f"bundle {body.bundle} version {body.version} is not published")
    n = await db.call(
        db.set_shadow, body.bundle, body.version, body.rule.model_dump(), body.devices, body.cohort
    )
    return web.json_response({"devices": n})


@routes.post(f"{API}/admin/shadow/cancel")
async def shadow_cancel(request: web.Request) -> web.Response:
    """Withdraw shadow candidates; devices stop their worker at their next poll."""
    raw = await read_capped(request, 4 * 1024 * 1024, "shadow cancel")
    body = parse_body(ShadowCancelRequest, raw, "shadow cancel")
    return web.json_response(
        {
            "removed": await request.app[DB].call(
                request.app[DB].clear_shadow, body.devices, body.cohort
            )
        }
    )


def aggregate_shadow(
    rows: list[tuple[str, str | None, dict[str, Any], float]],
) -> list[dict[str, Any]]:
    """Sum device reports per (cohort, candidate): counts, flip matrix, histograms."""
    groups: dict[tuple[str | None, str | None, int | None], dict[str, Any]] = {}
    for device_id, cohort, rep, _updated in rows:
        cand = rep.get("candidate") or {}
        key = (cohort, cand.get("bundle"), cand.get("version"))
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "cohort": cohort,
                "candidate": {"bundle": key[1], "version": key[2]} if key[1] else None,
                "devices": [],
                "status": {},
                "counters": {},
                "stats": ShadowStats(),
            }
        g["devices"].append(device_id)
        g["status"][rep.get("status")] = g["status"].get(rep.get("status"), 0) + 1
        for k, v in (rep.get("counters") or {}).items():
            g["counters"][k] = g["counters"].get(k, 0) + int(v)
        with contextlib.suppress(ValidationError, ValueError):
            g["stats"].merge(ShadowStats.model_validate(rep.get("stats") or {}))
    out = []
    for g in groups.values():
        stats: ShadowStats = g.pop("stats")
        offered = g["counters"].get("offered", 0)
        g["shed_fraction"] = g["counters"].get("shed", 0) / offered if offered else 0.0
        g["agreement"] = stats.agreement
        g["stats"] = stats.model_dump()
        out.append(g)
    return out


@routes.get(f"{API}/admin/shadow")
async def shadow_overview(request: web.Request) -> web.Response:
    """Shadow telemetry per device and aggregated per cohort (``?cohort=`` filters)."""
    cohort = request.query.get("cohort")
    rows = await request.app[DB].call(request.app[DB].shadow_reports, cohort)
    return web.json_response(
        {
            "devices": [
                {"device_id": d, "cohort": c, "updated": u, "report": r} for d, c, r, u in rows
            ],
            "cohorts": aggregate_shadow(rows),
        }
    )
