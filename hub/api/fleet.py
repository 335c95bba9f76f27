"""Admin fleet routes: rollouts and the device list."""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import Field

from hub.api._common import (
    API,
    CONFIG,
    DB,
    NAME_PATTERN,
    Body,
    caller_name,
    parse_body,
    read_capped,
)
from hub.errors import (
    NotFound,
)
from hub.replay.blessing import check_release

log = logging.getLogger("leanloop.hub.fleet")

routes = web.RouteTableDef()


class RolloutRequest(Body):
    """``POST /admin/rollouts``: listed devices, a cohort (both: intersection), or all."""

    bundle: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)
    devices: list[str] | None = Field(default=None, min_length=1, max_length=100_000)
    cohort: str | None = Field(default=None, pattern=NAME_PATTERN)
    force_reason: str | None = Field(
        default=None, max_length=2000, description="roll out an unblessed bundle (audited)"
    )
    who: str | None = Field(default=None, max_length=200)


# -- admin: fleet -------------------------------------------------------------------------------


@routes.post(f"{API}/admin/rollouts")
async def rollout(request: web.Request) -> web.Response:
    """Set the desired bundle version of some devices; the bundle must be published."""
    body = parse_body(
        RolloutRequest, await read_capped(request, 4 * 1024 * 1024, "rollout"), "rollout"
    )
    if not await request.app[DB].call(request.app[DB].has_bundle, body.bundle, body.version):
        raise NotFound(f"bundle {body.bundle} version {body.version} is not published")
    db = request.app[DB]
    await db.call(
        check_release,
        db,
        request.app[CONFIG].require_blessing,
        [(body.bundle, body.version, None)],
        "roll out",
        body.force_reason,
        caller_name(request, body.who),
    )
    n = await db.call(db.set_desired, body.bundle, body.version, body.devices, body.cohort)
    return web.json_response({"devices": n})


@routes.get(f"{API}/admin/devices")
async def devices(request: web.Request) -> web.Response:
    """Every device with its cohort, desired bundle, last status and last contact."""
    return web.json_response(
        [
            {
                "device_id": d.id,
                "cohort": d.cohort,
                "desired": (
                    {"bundle": d.desired_bundle, "version": d.desired_version}
                    if d.desired_bundle is not None
                    else None
                ),
                "status": d.status,
                "last_seen": d.last_seen,
                "events": await request.app[DB].call(request.app[DB].device_events, d.id),
            }
            for d in await request.app[DB].call(request.app[DB].devices)
        ]
    )
