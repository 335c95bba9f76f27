"""Admin routes of staged rollouts (:mod:`hub.rollouts`): create, list, status, pause, resume,
abort, and the bundle manifests a remote rollback re-points to.

``POST /admin/rollouts`` (set the desired version at once, :mod:`hub.api.fleet`) stays as it was;
a staged rollout is ``POST /admin/rollouts/staged``. A rollback is a staged rollout of ``kind:
rollback`` whose version carries exactly the files of ``rollback_of`` (the hub checks): devices
install it as an ordinary, newer release, so TUF's and the device's anti-rollback stay intact.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from hub.api._common import API, BLOBS, CONFIG, DB, caller_name, parse_body, read_capped
from hub.errors import BadRequest, Conflict, NotFound
from hub.replay.blessing import check_release
from hub.rollouts import RolloutSpec, control
from hub.rollouts.ticker import rollout_json, tick_one
from hub.storage import HubDB, check_sha256
from runtime.bundle.manifest import MANIFEST_NAME

log = logging.getLogger("leanloop.hub.rollouts")

routes = web.RouteTableDef()

_MAX_SPEC = 4 * 1024 * 1024


def _rollout_id(request: web.Request) -> int:
    raw = request.match_info["rollout_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"no rollout {raw[:40]!r}")
    return int(raw)


async def _check_rollback(request: web.Request, spec: RolloutSpec) -> None:
    db = request.app[DB]
    assert spec.rollback_of is not None
    if spec.rollback_of >= spec.version:
        raise BadRequest(
            f"a rollback to v{spec.rollback_of} needs a newer version, not v{spec.version}"
        )
    new = await db.call(db.bundle_manifest, spec.bundle, spec.version)
    old = await db.call(db.bundle_manifest, spec.bundle, spec.rollback_of)
    files = {k: v for k, v in new.get("files", {}).items() if k != MANIFEST_NAME}
    if files != {k: v for k, v in old.get("files", {}).items() if k != MANIFEST_NAME}:
        raise BadRequest(
            f"{spec.bundle} v{spec.version} does not carry the files of v{spec.rollback_of}"
        )


@routes.post(f"{API}/admin/rollouts/staged")
async def create(request: web.Request) -> web.Response:
    """Start a staged rollout; its canary is ordered at once (unless outside its windows)."""
    spec = parse_body(RolloutSpec, await read_capped(request, _MAX_SPEC, "rollout"), "rollout")
    db = request.app[DB]
    if not await db.call(db.has_bundle, spec.bundle, spec.version):
        raise NotFound(f"bundle {spec.bundle} version {spec.version} is not published")
    if spec.kind == "rollback":
        await _check_rollback(request, spec)
    else:  # a rollback returns to content that already served; a new version needs a blessing
        q = request.query
        who = caller_name(request, q.get("who"))
        await db.call(
            check_release, db, request.app[CONFIG].require_blessing,
            [(spec.bundle, spec.version, None)], "roll out", q.get("force_reason"), who,
        )  # fmt: skip
    rollout_id, aborted = await db.call(db.add_rollout, spec)
    if aborted:
        log.info("rollout %s supersedes %s", rollout_id, aborted)
    rollout = await tick_one(db, await db.call(db.rollout, rollout_id))
    return web.json_response(await rollout_json(db, rollout), status=201)


@routes.get(f"{API}/admin/rollouts")
async def list_rollouts(request: web.Request) -> web.Response:
    """Every rollout, newest first, with its per-wave counts."""
    db = request.app[DB]
    return web.json_response([await rollout_json(db, r) for r in await db.call(db.rollouts)])


@routes.get(f"{API}/admin/rollouts/{{rollout_id}}")
async def status(request: web.Request) -> web.Response:
    """One rollout: status, halt reason, per-wave counts."""
    db = request.app[DB]
    return web.json_response(
        await rollout_json(db, await db.call(db.rollout, _rollout_id(request)))
    )


async def apply_action(db: HubDB, rollout_id: int, action: str) -> dict[str, Any]:
    """Pause (no new orders), resume (also after a halt), or abort (devices ordered that do not
    run the version yet are told their previous version again); the rollout's new status.
    Raises NotFound, Conflict (the action does not apply in its state). The web page uses it
    too."""
    rollout = await db.call(db.rollout, rollout_id)
    try:
        state = control(rollout.state, action, "aborted by the admin")  # type: ignore[arg-type]
    except ValueError as e:
        raise Conflict(str(e)) from e
    revert: list[str] = []
    if action == "abort":
        views = {v.id: v for v in await db.call(db.rollout_views, rollout.spec)}
        revert = [d for d in state.ordered if d in views and not views[d].runs_target]
    await db.call(db.save_rollout, rollout.id, rollout.spec, state, [], revert)
    rollout = await db.call(db.rollout, rollout.id)
    if action == "resume":
        rollout = await tick_one(db, rollout)
    log.info("rollout %s: %s", rollout.id, action)
    return await rollout_json(db, rollout)


@routes.post(f"{API}/admin/rollouts/{{rollout_id}}/{{action:pause|resume|abort}}")
async def act(request: web.Request) -> web.Response:
    """Pause, resume or abort a rollout (see :func:`apply_action`)."""
    body = await apply_action(request.app[DB], _rollout_id(request), request.match_info["action"])
    return web.json_response(body)


@routes.get(f"{API}/admin/bundles")
async def bundles(request: web.Request) -> web.Response:
    """Every published bundle version: name and version."""
    db = request.app[DB]
    return web.json_response([{"name": n, "version": v} for n, v, _ in await db.call(db.bundles)])


@routes.get(f"{API}/admin/blobs/{{sha256}}")
async def blob(request: web.Request) -> web.Response:
    """A blob's bytes (a rollback fetches an earlier release's files back)."""
    sha256 = check_sha256(request.match_info["sha256"])
    data = await asyncio.to_thread(request.app[BLOBS].read, sha256)
    return web.Response(body=data, content_type="application/octet-stream")


@routes.get(f"{API}/admin/bundles/{{name}}/{{version:\\d+}}")
async def bundle_manifest(request: web.Request) -> web.Response:
    """The manifest of a published bundle version (a rollback re-points to its files)."""
    db = request.app[DB]
    name, version = request.match_info["name"], int(request.match_info["version"][:18])
    return web.json_response(await db.call(db.bundle_manifest, name, version))
