"""Device routes: enrolment, desired bundle, shadow telemetry, heartbeat."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from typing import Any, Literal

from aiohttp import web
from pydantic import Field

from hub.api._common import (
    API,
    CONFIG,
    DB,
    ENROLL_TOKEN,
    NAME_PATTERN,
    Body,
    device_id_of,
    hash_token,
    json_object,
    parse_body,
    read_capped,
)
from hub.errors import (
    AuthError,
    BadRequest,
)
from runtime.shadow.compare import ShadowStats
from runtime.shadow.promotion import PromotionRule
from runtime.shadow.report import ShadowStatus

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


class EnrollRequest(Body):
    """``POST /enroll``."""

    device_id: str = Field(pattern=NAME_PATTERN)
    enroll_token: str = Field(min_length=1, max_length=512)
    cohort: str | None = Field(default=None, pattern=NAME_PATTERN)


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


@routes.post(f"{API}/enroll")
async def enroll(request: web.Request) -> web.Response:
    """Trade the fleet enrollment secret for a device token (re-enrolling replaces the token)."""
    body = parse_body(EnrollRequest, await read_capped(request, 4096, "enrollment"), "enrollment")
    if not hmac.compare_digest(body.enroll_token.encode(), request.app[ENROLL_TOKEN].encode()):
        raise AuthError("wrong enrollment secret")
    token = secrets.token_urlsafe(32)
    await request.app[DB].call(
        request.app[DB].enroll_device, body.device_id, body.cohort, hash_token(token)
    )
    log.info("device %s enrolled (cohort %s)", body.device_id, body.cohort)
    return web.json_response({"device_token": token})


@routes.get(f"{API}/device/desired")
async def desired(request: web.Request) -> web.Response:
    """The bundle version a rollout asked this device to run (nulls: none yet)."""
    db = request.app[DB]
    device = await db.call(db.device, device_id_of(request))
    bundle, version = device.desired_bundle, device.desired_version
    if bundle is None:
        bundle, version = await db.call(db.cohort_desired, device.cohort)
    body: dict[str, Any] = {"bundle": bundle, "version": version}
    # Shadow mode: the candidate (with its promotion rule) next to the production bundle.
    candidate = await db.call(db.shadow_candidate, device)
    if candidate is not None:
        body["candidate"] = candidate
    return web.json_response(body)


@routes.post(f"{API}/device/shadow")
async def shadow_telemetry(request: web.Request) -> web.Response:
    """Store a device's shadow summary; a ``promoted`` candidate becomes its desired bundle."""
    cap = request.app[CONFIG].max_heartbeat_bytes
    body = parse_body(ShadowTelemetry, await read_capped(request, cap, "shadow report"), "report")
    device_id = device_id_of(request)
    db = request.app[DB]
    await db.call(db.put_shadow_report, device_id, body.model_dump())
    c = body.candidate
    if (
        body.status == "promoted"
        and c is not None
        and await db.call(db.has_bundle, c.bundle, c.version)
    ):
        # The device committed it after its trial: make it what the hub wants there too, so the
        # next desired answer does not point back at the old production version.
        await db.call(db.set_desired, c.bundle, c.version, [device_id], None)
        log.info("device %s promoted shadow candidate %s v%s", device_id, c.bundle, c.version)
    return web.json_response({})


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
    await request.app[DB].call(request.app[DB].touch_device, device_id_of(request), status)
    if events:
        await request.app[DB].call(request.app[DB].add_device_events, device_id_of(request), events)
    return web.json_response({})
