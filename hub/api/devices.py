"""Device routes: desired bundle, shadow telemetry, heartbeat (enrolment: :mod:`.identity`)."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from hub.api._common import (
    API,
    CONFIG,
    DB,
    device_id_of,
    json_object,
    parse_body,
    read_capped,
)
from hub.errors import BadRequest
from hub.fastpath import FASTPATH
from hub.storage import HubDB
from runtime.protocol import (
    MAX_EVENTS,
    Desired,
    Heartbeat,
    ShadowTelemetry,
    validation_reason,
)

log = logging.getLogger("leanloop.hub.devices")

routes = web.RouteTableDef()


def _desired_of(db: HubDB, device_id: str) -> tuple[str | None, int | None, Any]:
    """The device's desired bundle (its own, else its cohort's or the fleet's) and its shadow
    candidate: one trip to the database's threads (this is the hottest device route)."""
    device = db.device(device_id)
    bundle, version = device.desired_bundle, device.desired_version
    if bundle is None:
        bundle, version = db.cohort_desired(device.cohort)
    # Shadow mode: the candidate (with its promotion rule) next to the production bundle.
    return bundle, version, db.shadow_candidate(device)


@routes.get(f"{API}/device/desired")
async def desired(request: web.Request) -> web.Response:
    """The bundle version a rollout asked this device to run (nulls: none yet).

    Served from :mod:`hub.fastpath`'s cache, which forgets it when a rollout changes it."""
    device_id = device_id_of(request)
    fast = request.app[FASTPATH]
    body = fast.desired(device_id)
    if body is None:
        generation = fast.generation("desired")  # before the read: see remember_desired
        db = request.app[DB]
        bundle, version, candidate = await db.call(_desired_of, db, device_id)
        answer = Desired.model_validate(
            {"bundle": bundle, "version": version, "candidate": candidate}
        )
        dumped = answer.model_dump(
            mode="json", exclude={"candidate"} if candidate is None else None
        )
        body = json.dumps(dumped).encode()
        fast.remember_desired(device_id, generation, body)
    return web.Response(body=body, content_type="application/json")


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
    await db.call(db.put_shadow_report, device_id, body.model_dump())
    c = body.candidate
    if (
        body.status == "promoted"
        and c is not None
        and not await db.call(_assigned, db, device_id, c.bundle, c.version)
    ):
        log.warning(
            "device %s claims it promoted %s v%s, which the hub did not assign to it: ignored",
            device_id,
            c.bundle,
            c.version,
        )
    elif (
        body.status == "promoted"
        and c is not None
        and await db.call(db.has_bundle, c.bundle, c.version)
    ):
        # The device committed it after its trial: make it what the hub wants there too, so the
        # next desired answer does not point back at the old production version.
        await db.call(db.set_desired, c.bundle, c.version, [device_id], None)
        log.info("device %s promoted shadow candidate %s v%s", device_id, c.bundle, c.version)
    return web.json_response({})


def _assigned(db: HubDB, device_id: str, bundle: str, version: int) -> bool:
    """Whether (bundle, version) is the shadow candidate the hub assigns to this device now."""
    assigned = db.shadow_candidate(db.device(device_id))
    return assigned is not None and (assigned["bundle"], assigned["version"]) == (bundle, version)


@routes.post(f"{API}/device/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    """Store the device's status report (a JSON object under the heartbeat cap): written
    behind, within ``heartbeat_flush_s`` (:mod:`hub.fastpath`).

    Its optional ``events`` list (update failures and rollbacks, each with an ``id``) is kept
    apart, in the device's event record, so a later heartbeat does not overwrite it.
    """
    cap = request.app[CONFIG].max_heartbeat_bytes
    raw = json_object(await read_capped(request, cap, "heartbeat"), "heartbeat")
    events = raw.get("events")
    if events is not None and (not isinstance(events, list) or len(events) > MAX_EVENTS):
        raise BadRequest(f"heartbeat: 'events' must be a list of at most {MAX_EVENTS}")
    try:
        beat = Heartbeat.model_validate(raw)
    except ValidationError as e:
        raise BadRequest(validation_reason(e, "heartbeat")) from e
    request.app[FASTPATH].seen(device_id_of(request), beat.status())  # written behind
    db = request.app[DB]
    if beat.events:
        await db.call(
            db.add_device_events,
            device_id_of(request),
            [e.model_dump(mode="json") for e in beat.events],
        )
    return web.json_response({})
