"""The hub's pages for everyone who may look: fleet, rollouts, samples, jobs, reports.

Viewers read every page; admins also pause, resume and abort rollouts here. Annotation and
review live in :mod:`hub.web.annotate`.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from hub.api._common import BLOBS, DB
from hub.api.rollouts import apply_action
from hub.api.shadow import aggregate_shadow
from hub.errors import HubHTTPError
from hub.rollouts.ticker import rollout_json
from hub.sampleinfo import predicted_items, strategy_of
from hub.storage import Sample
from hub.web.render import render
from hub.web.session import Viewer, login, logout, page, read_form, set_cookie, viewer

__all__ = ["routes"]

routes = web.RouteTableDef()

PAGE_SIZE = 60
_SCAN = 5000  # samples read per explorer query before filtering on their meta


# -- login --------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a path of this page after login (never another site)."""
    if target and target.startswith("/ui") and not target.startswith("//"):
        return target
    return "/ui/"


@routes.get("/ui/login")
async def login_page(request: web.Request) -> web.StreamResponse:
    """The login form (a person's named token)."""
    return render(request, "login.html", None, next=_safe_next(request.query.get("next")), error="")


@routes.post("/ui/login")
async def login_post(request: web.Request) -> web.StreamResponse:
    """Check the token; on success a session cookie and a redirect to where the person was."""
    form = await read_form(request)
    nxt = _safe_next(str(form.get("next", "")))
    token = str(form.get("token", ""))
    who = await login(request, token) if 0 < len(token) <= 512 else None
    if who is None:
        return render(
            request, "login.html", None, status=401, next=nxt,
            error="unknown token (people log in with a named token; device tokens cannot)",
        )  # fmt: skip
    resp = web.HTTPSeeOther(nxt)
    set_cookie(request, resp)
    raise resp


@routes.post("/ui/logout")
@page()
async def logout_post(request: web.Request, who: Viewer) -> web.StreamResponse:
    await logout(request, who)
    resp = web.HTTPSeeOther("/ui/login")
    resp.del_cookie("leanloop_session", path="/ui")
    raise resp


# -- fleet --------------------------------------------------------------------------------------


def _device_row(
    d: Any, shadow: dict[str, Any] | None, fallback: tuple[str | None, int | None]
) -> dict[str, Any]:
    st = d.status or {}
    active = st.get("active") or {}
    trial = st.get("trial") or {}
    return {
        "id": d.id,
        "cohort": d.cohort or "—",
        "active": f"{active.get('bundle')} v{active.get('version')}" if active else "—",
        "desired": (
            f"{d.desired_bundle} v{d.desired_version}"
            if d.desired_bundle
            else (f"{fallback[0]} v{fallback[1]} (cohort)" if fallback[0] else "—")
        ),
        "last_seen": d.last_seen,
        "state": st.get("update_state") or "—",
        "health": "error" if st.get("last_update_error") else ("ok" if st else "unknown"),
        "error": st.get("last_update_error") or "",
        "trial": (f"{trial.get('frames', 0)}/{trial.get('needed', '?')} frames" if trial else "—"),
        "shadow": (
            f"{shadow.get('status')}"
            + (f" ({shadow['agreement']:.0%} agree)" if shadow.get("agreement") is not None else "")
            if shadow
            else "—"
        ),
        "fps": st.get("fps"),
    }


@routes.get("/ui/")
@routes.get("/ui")
@page()
async def fleet(request: web.Request, who: Viewer) -> web.StreamResponse:
    """Devices, versions, last seen, health, trial and shadow state."""
    db = request.app[DB]
    devices = await db.call(db.devices)
    shadow = {dev: rep for dev, _c, rep, _u in await db.call(db.shadow_reports, None)}
    desired = {c: await db.call(db.cohort_desired, c) for c in {d.cohort for d in devices}}
    rows = [_device_row(d, shadow.get(d.id), desired[d.cohort]) for d in devices]
    return render(request, "fleet.html", who, devices=rows, now=time.time())


# -- rollouts -----------------------------------------------------------------------------------


@routes.get("/ui/rollouts")
@page()
async def rollouts(request: web.Request, who: Viewer) -> web.StreamResponse:
    """Rollouts with their waves, progress, halts and reasons."""
    db = request.app[DB]
    items = [await rollout_json(db, r) for r in await db.call(db.rollouts)]
    return render(request, "rollouts.html", who, rollouts=items, message="")


@routes.post("/ui/rollouts/{rollout_id:\\d+}/{action:pause|resume|abort}")
@page(roles=("admin",))
async def rollout_action(request: web.Request, who: Viewer) -> web.StreamResponse:
    """Pause, resume or abort (admins only); back to the rollouts page with the outcome."""
    db = request.app[DB]
    rollout_id = int(request.match_info["rollout_id"])
    action = request.match_info["action"]
    try:
        await apply_action(db, rollout_id, action)
        message = f"rollout {rollout_id}: {action} done"
    except HubHTTPError as e:
        message = f"rollout {rollout_id}: {e}"
    items = [await rollout_json(db, r) for r in await db.call(db.rollouts)]
    return render(request, "rollouts.html", who, rollouts=items, message=message)


# -- samples explorer ---------------------------------------------------------------------------


def _feedback_kind(s: Sample) -> str:
    fb = s.meta.get("feedback") or {}
    return str(fb.get("kind") or "") if isinstance(fb, dict) else ""


_SORTS = {
    "priority": lambda s: -s.priority,
    "newest": lambda s: -s.created,
    "oldest": lambda s: s.created,
}


def explore(
    samples: list[Sample], cohorts: dict[str, str | None], q: dict[str, str]
) -> list[Sample]:
    """Filter and sort samples as the explorer's query asks (pure; tested without a hub)."""

    def keep(s: Sample) -> bool:
        if q.get("strategy") and strategy_of(s.meta) != q["strategy"]:
            return False
        if q.get("device") and s.device_id != q["device"]:
            return False
        if q.get("cohort") and (cohorts.get(s.device_id) or "") != q["cohort"]:
            return False
        if q.get("state") and s.state != q["state"]:
            return False
        if q.get("label") and q["label"] not in {
            str(it.get("label")) for it in predicted_items(s.meta)
        }:
            return False
        if q.get("corrected") == "yes" and _feedback_kind(s) != "correct":
            return False
        if q.get("corrected") == "no" and _feedback_kind(s) == "correct":
            return False
        with contextlib.suppress(ValueError):
            if q.get("min_score") and s.priority < float(q["min_score"]):
                return False
            if q.get("since_h") and s.created < time.time() - float(q["since_h"]) * 3600:
                return False
        return True

    out = [s for s in samples if keep(s)]
    out.sort(key=_SORTS.get(q.get("sort", "priority"), _SORTS["priority"]))
    return out


@routes.get("/ui/samples")
@page()
async def samples(request: web.Request, who: Viewer) -> web.StreamResponse:
    """Thumbnails of stored samples; sort and filter by strategy, score, class, device, cohort,
    time, correction and state."""
    q = {k: v[:200] for k, v in request.query.items()}
    db = request.app[DB]
    found = await db.call(db.samples, q.get("bundle") or None, None, _SCAN)
    cohorts = {d.id: d.cohort for d in await db.call(db.devices)}
    picked = explore(found, cohorts, q)
    try:
        page_no = max(0, int(q.get("page", "0")))
    except ValueError:
        page_no = 0
    shown = picked[page_no * PAGE_SIZE : (page_no + 1) * PAGE_SIZE]
    rows = [
        {
            "id": s.id,
            "bundle": s.bundle,
            "device": s.device_id,
            "cohort": cohorts.get(s.device_id) or "—",
            "priority": s.priority,
            "strategy": strategy_of(s.meta),
            "labels": ", ".join(sorted({str(it.get("label")) for it in predicted_items(s.meta)})),
            "state": s.state,
            "feedback": _feedback_kind(s),
            "created": s.created,
        }
        for s in shown
    ]
    return render(
        request, "samples.html", who, rows=rows, q=q, total=len(picked), page=page_no,
        pages=(len(picked) + PAGE_SIZE - 1) // PAGE_SIZE,
        strategies=sorted({strategy_of(s.meta) for s in found}),
        cohort_names=sorted({c for c in cohorts.values() if c}),
    )  # fmt: skip


@routes.get("/ui/samples/{sample_id}/image")
async def sample_image(request: web.Request) -> web.StreamResponse:
    """A sample's image for a logged-in person."""
    if await viewer(request) is None:
        raise web.HTTPUnauthorized(reason="log in first")
    db = request.app[DB]
    sample = await db.call(db.sample, request.match_info["sample_id"][:80])
    data = await db.call(request.app[BLOBS].read, sample.image_sha256)
    fmt = "png" if sample.meta.get("image_format") == "png" else "jpeg"
    return web.Response(
        body=data, content_type=f"image/{fmt}", headers={"Cache-Control": "private, max-age=3600"}
    )


# -- jobs and reports ---------------------------------------------------------------------------


def _model_card(artifact: str | None, log_path: str | None) -> dict[str, Any] | None:
    for base in (Path(artifact).parent / "source" if artifact else None,
                 Path(log_path).parent / "source" if log_path else None):  # fmt: skip
        if base is not None:
            card = base / "model_card.json"
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(card.read_text())
                return data if isinstance(data, dict) else None
    return None


@routes.get("/ui/jobs")
@page()
async def jobs(request: web.Request, who: Viewer) -> web.StreamResponse:
    """Training jobs, newest first, with the model card of each finished one."""
    db = request.app[DB]
    items = []
    for job in await db.call(db.recent_jobs, 50):
        items.append(
            {
                "id": job.id,
                "state": job.state,
                "bundle": job.params.get("bundle"),
                "version": job.params.get("version"),
                "error": job.error or "",
                "card": _model_card(job.artifact_path, job.log_path),
            }
        )
    return render(request, "jobs.html", who, jobs=items)


@routes.get("/ui/reports")
@page()
async def reports(request: web.Request, who: Viewer) -> web.StreamResponse:
    """Shadow reports per cohort and candidate (agreement, flip matrix)."""
    db = request.app[DB]
    groups = aggregate_shadow(await db.call(db.shadow_reports, None))
    for g in groups:
        flips = (g.get("stats") or {}).get("flip_matrix") or {}
        labels = sorted(set(flips) | {c for row in flips.values() for c in row})
        g["flip_labels"] = labels
        g["flip_rows"] = [(a, [flips.get(a, {}).get(b, 0) for b in labels]) for a in labels]
    replays = await db.call(db.reports, 50)
    return render(request, "reports.html", who, shadow=groups, replays=replays)


@routes.get("/ui/reports/replay/{digest:[0-9a-f]{16,64}}")
@page()
async def replay_report(request: web.Request, who: Viewer) -> web.StreamResponse:
    """A replay/gate report's own self-contained HTML page (plots inline), sandboxed."""
    db = request.app[DB]
    row = await db.call(db.report, request.match_info["digest"])
    if row is None or not row.get("html_sha256"):
        raise web.HTTPNotFound(reason="no such replay report page")
    data = await db.call(request.app[BLOBS].read, row["html_sha256"])
    resp = web.Response(body=data, content_type="text/html", charset="utf-8")
    resp.headers["Content-Security-Policy"] = (
        "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    )
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp
