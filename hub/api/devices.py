"""Device routes: desired bundle, shadow telemetry, heartbeat (enrolment: :mod:`.identity`)."""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from aiohttp import web
from pydantic import Field

from hub.api._common import (
    API,
    CONFIG,
    DB,
    Body,
    device_id_of,
    json_object,
    parse_body,
    read_capped,
)
from hub.errors import (
    BadRequest,
)
from hub.storage import HubDB
from runtime.shadow.compare import ShadowStats
from runtime.shadow.promotion import PromotionRule
from runtime.shadow.report import ShadowStatus

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


class _ShadowRef(Body):
    bundle: str = Field(max_length=64)
    version: int
    slot: str | None = Field(default=None, max_length=1)


class ShadowTelemetry(Body):
    """``POST /device/shadow``: a device's shadow summary — counts, matrices, histograms.

    The model has no place for frames or frame ids: the hub never receives them this way.
    """

    status: ShadowStatus
    reason: str | None = Field(default=None, max_length=2000)
    candidate: _ShadowRef | None = None
    production: _ShadowRef | None = None
    rule: PromotionRule | None = None
    verdict: str | None = Field(default=None, max_length=2000)
    started: float | None = None
    updated: float | None = None
    counters: dict[str, int] = Field(default_factory=dict, max_length=32)
    shed_fraction: float = 0.0
    agreement: float | None = None
    stats: ShadowStats = Field(default_factory=ShadowStats)


class DeviceEvent(Body):
    """One update outcome a device reports in its heartbeat's ``events`` list."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="device-chosen, for dedup")
    time: float = Field(description="when it happened on the device (unix time)")
    kind: Literal["update_failed", "rolled_back"] = Field(description="what happened")
    cause: str = Field(max_length=64, description="e.g. load_failed, trial_failed, operator")
    bundle: str | None = Field(default=None, max_length=64)
    version: int | None = None
    reason: str = Field(default="", max_length=2000, description="one-line reason")


_MAX_EVENTS = 100


@routes.get(f"{API}/device/desired")
async def desired(request: web.Request) -> web.Response:
    """The bundle version a rollout asked this device to run (nulls: none yet)."""
    db = request.app[DB]
    device = db.device(device_id_of(request))
    bundle, version = device.desired_bundle, device.desired_version
    if bundle is None:
        bundle, version = db.cohort_desired(device.cohort)
    body: dict[str, Any] = {"bundle": bundle, "version": version}
    # Shadow mode: the candidate (with its promotion rule) next to the production bundle.
    candidate = db.shadow_candidate(device)
    if candidate is not None:
        body["candidate"] = candidate
    return web.json_response(body)


@routes.post(f"{API}/device/shadow")
async def shadow_telemetry(request: web.Request) -> web.Response:
    """Store a device's shadow summary; a ``promoted`` candidate becomes its desired bundle.

    Only the candidate the hub assigned to this device (itself, its cohort or the fleet) can be
    promoted this way: a device cannot pick its own rollout by claiming a promotion.
    """
    cap = request.app[CONFIG].max_heartbeat_bytes
    body = parse_body(ShadowTelemetry, await read_capped(request, cap, "shadow report"), "report")
    device_id = device_id_of(request)
    db = request.app[DB]
    db.put_shadow_report(device_id, body.model_dump())
    c = body.candidate
    if body.status == "promoted" and c is not None and not _assigned(db, device_id, c):
        log.warning(
            "device %s claims it promoted %s v%s, which the hub did not assign to it: ignored",
            device_id,
            c.bundle,
            c.version,
        )
    elif body.status == "promoted" and c is not None and db.has_bundle(c.bundle, c.version):
        # The device committed it after its trial: make it what the hub wants there too, so the
        # next desired answer does not point back at the old production version.
        db.set_desired(c.bundle, c.version, [device_id], None)
        log.info("device %s promoted shadow candidate %s v%s", device_id, c.bundle, c.version)
    return web.json_response({})


def _assigned(db: HubDB, device_id: str, c: _ShadowRef) -> bool:
    """Whether ``c`` is the shadow candidate the hub assigns to this device now."""
    assigned = db.shadow_candidate(db.device(device_id))
    return assigned is not None and (assigned["bundle"], assigned["version"]) == (
        c.bundle,
        c.version,
    )


@routes.post(f"{API}/device/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    """Store the device's status report (a JSON object under the heartbeat cap).

    Its optional ``events`` list (update failures and rollbacks, each with an ``id``) is kept
    apart, in the device's event record, so a later heartbeat does not overwrite it.
    """
    cap = request.app[CONFIG].max_heartbeat_bytes
    status = json_object(await read_capped(request, cap, "heartbeat"), "heartbeat")
    raw = status.pop("events", None) or []
    if not isinstance(raw, list) or len(raw) > _MAX_EVENTS:
        raise BadRequest(f"heartbeat: 'events' must be a list of at most {_MAX_EVENTS}")
    events = [parse_body(DeviceEvent, json.dumps(e), "heartbeat event").model_dump() for e in raw]
    request.app[DB].touch_device(device_id_of(request), status)
    if events:
        request.app[DB].add_device_events(device_id_of(request), events)
    return web.json_response({})
