"""Annotation and review on the hub's page.

An annotator (or admin) asks for the next sample of a bundle: the hub offers the top of the
ranked annotation queue (:meth:`hub.storage.HubDB.annotation_queue`) that nobody else holds,
a sample sent back to this person first, and claims it (a lock that runs out after
``web_claim_ttl_s``). The page starts from the model's own boxes and labels (or the returned
draft), with the classes of the bundle's active ontology; the person draws, moves, resizes,
relabels and deletes boxes (mouse and keyboard) and submits. A second person reviews: accept
(the sample is annotated and joins the next training dataset) or send back with a note.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from hub.api._common import CONFIG, DB, JOBS, read_capped
from hub.errors import BadRequest, HubHTTPError, NotFound
from hub.sampleinfo import classes_of, predicted_items
from hub.storage import HubDB, Sample
from hub.web.render import render
from hub.web.session import FORM, Viewer, page

__all__ = ["routes"]

routes = web.RouteTableDef()

_WORKERS = ("admin", "annotator")
_MAX_BOXES = 1000


def _start_boxes(sample: Sample) -> list[list[Any]]:
    """The model's boxes as a starting point: [x1, y1, x2, y2, label]."""
    out = []
    for it in predicted_items(sample.meta):
        box = it.get("box")
        if isinstance(box, list) and len(box) == 4:
            out.append([*(float(v) for v in box), str(it.get("label", ""))])
    return out


def check_boxes(raw: Any, classes: list[str]) -> list[list[Any]]:
    """Boxes from the page, checked: [x1, y1, x2, y2, label] with x1 < x2, y1 < y2, finite,
    and a label of the ontology (when the ontology is known). Raises BadRequest."""
    if not isinstance(raw, list) or len(raw) > _MAX_BOXES:
        raise BadRequest(f"boxes must be a list of at most {_MAX_BOXES}")
    out = []
    for i, b in enumerate(raw):
        if not (isinstance(b, list) and len(b) == 5 and isinstance(b[4], str)):
            raise BadRequest(f"box {i}: expected [x1, y1, x2, y2, label]")
        try:
            x1, y1, x2, y2 = (float(v) for v in b[:4])
        except (TypeError, ValueError):
            raise BadRequest(f"box {i}: coordinates must be numbers") from None
        if not all(math.isfinite(v) and 0 <= v < 1e6 for v in (x1, y1, x2, y2)):
            raise BadRequest(f"box {i}: coordinates must be finite pixels")
        if x2 <= x1 or y2 <= y1:
            raise BadRequest(f"box {i}: x2 > x1 and y2 > y1 are needed")
        if classes and b[4] not in classes:
            raise BadRequest(f"box {i}: {b[4][:60]!r} is not a class of the ontology")
        out.append([round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2), b[4]])
    return out


NEXT_FIRST = 8
"""Queue entries the "next" page ranks first (x 8 while all of them are held by others)."""


def _next_sample(db: HubDB, bundle: str | None, who: str, ttl: float) -> str | None:
    """Claim and return the next sample for ``who``: one sent back to them first, then the
    queue's top that nobody else holds."""
    for work in db.works("returned"):
        if work.claimed_by == who and db.claim(work.sample_id, who, ttl):
            return work.sample_id
    busy = db.busy_samples(who)
    # Rank only the top of the queue (each pick costs a pass over the window), and more of it
    # only while everything ranked is held by others.
    limit = NEXT_FIRST
    while True:
        entries = db.annotation_queue(bundle, limit)
        for entry in entries:
            sid = entry.sample.id
            if sid not in busy and db.claim(sid, who, ttl):
                return sid
        if len(entries) < limit:
            return None
        limit *= 8


@routes.get("/ui/annotate")
@page(roles=_WORKERS)
async def annotate_next(request: web.Request, who: Viewer) -> web.StreamResponse:
    """Claim the next sample of the queue (``?bundle=``) and open it."""
    db = request.app[DB]
    bundle = request.query.get("bundle", "")[:64] or None
    ttl = request.app[CONFIG].web_claim_ttl_s
    sid = await db.call(_next_sample, db, bundle, who.name, ttl)
    if sid is None:
        return render(request, "queue_empty.html", who, bundle=bundle or "")
    suffix = f"?bundle={bundle}" if bundle else ""
    raise web.HTTPSeeOther(f"/ui/annotate/{sid}{suffix}")


@routes.get("/ui/annotate/{sample_id}")
@page(roles=_WORKERS)
async def annotate_page(request: web.Request, who: Viewer) -> web.StreamResponse:
    """The annotation page of one sample (claimed for this person if it is free)."""
    db = request.app[DB]
    sid = request.match_info["sample_id"][:80]
    sample = await db.call(db.sample, sid)
    ttl = request.app[CONFIG].web_claim_ttl_s
    mine = await db.call(db.claim, sid, who.name, ttl)
    work = await db.call(db.work, sid)
    classes = await db.call(classes_of, db, sample.bundle)
    boxes = work.boxes if work is not None and work.boxes else _start_boxes(sample)
    data = {
        "sample": sid,
        "image": f"/ui/samples/{sid}/image",
        "classes": classes or sorted({b[4] for b in boxes}),
        "boxes": boxes,
        "editable": mine,
        "next": f"/ui/annotate?bundle={sample.bundle}",
    }
    holder = "" if mine else (work.claimed_by if work else "")
    return render(
        request, "annotate.html", who, sample=sample, data=data, mine=mine,
        holder=holder, note=(work.note or "") if work else "",
        state=sample.state if work is None else work.state,
    )  # fmt: skip


@routes.post("/ui/annotate/{sample_id}")
@page(roles=_WORKERS)
async def annotate_submit(request: web.Request, who: Viewer) -> web.StreamResponse:
    """Submit boxes (JSON ``{"boxes": [...]}``) for review."""
    import json

    db = request.app[DB]
    sid = request.match_info["sample_id"][:80]
    raw = await read_capped(request, 1 << 20, "annotation")
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("annotation is not JSON") from None
    sample = await db.call(db.sample, sid)
    classes = await db.call(classes_of, db, sample.bundle)
    boxes = check_boxes(body.get("boxes") if isinstance(body, dict) else None, classes)
    await db.call(db.submit, sid, who.name, boxes)
    return web.json_response(
        {"status": "submitted", "next": f"/ui/annotate?bundle={sample.bundle}"}
    )


@routes.post("/ui/annotate/{sample_id}/release")
@page(roles=_WORKERS)
async def annotate_release(request: web.Request, who: Viewer) -> web.StreamResponse:
    """Give the sample back to the queue."""
    db = request.app[DB]
    await db.call(db.release, request.match_info["sample_id"][:80], who.name)
    raise web.HTTPSeeOther("/ui/samples")


@routes.get("/ui/review")
@page(roles=_WORKERS)
async def review_list(request: web.Request, who: Viewer) -> web.StreamResponse:
    """Annotations waiting for a second person (one's own are listed, not reviewable)."""
    db = request.app[DB]
    works = await db.call(db.works, "submitted")
    return render(request, "review_list.html", who, works=works)


@routes.get("/ui/review/{sample_id}")
@page(roles=_WORKERS)
async def review_page(request: web.Request, who: Viewer) -> web.StreamResponse:
    db = request.app[DB]
    sid = request.match_info["sample_id"][:80]
    work = await db.call(db.work, sid)
    if work is None or work.state != "submitted":
        raise NotFound(f"sample {sid} has no annotation waiting for review")
    sample = await db.call(db.sample, sid)
    data = {
        "sample": sid,
        "image": f"/ui/samples/{sid}/image",
        "classes": sorted({str(b[4]) for b in work.boxes or []}),
        "boxes": work.boxes or [],
        "editable": False,
        "next": "/ui/review",
    }
    return render(
        request, "review.html", who, sample=sample, work=work, data=data,
        own=work.submitted_by == who.name, error="",
    )  # fmt: skip


@routes.post("/ui/review/{sample_id}")
@page(roles=_WORKERS)
async def review_post(request: web.Request, who: Viewer) -> web.StreamResponse:
    """Accept, or send back with a note."""
    db = request.app[DB]
    sid = request.match_info["sample_id"][:80]
    form = request[FORM]
    decision = str(form.get("decision", ""))
    if decision not in ("accept", "return"):
        raise BadRequest("decision must be accept or return")
    try:
        await db.call(db.review, sid, who.name, decision == "accept", str(form.get("note", "")))
    except HubHTTPError as e:
        works = await db.call(db.works, "submitted")
        return render(request, "review_list.html", who, works=works, error=str(e), status=e.status)
    if decision == "accept":
        sample = await db.call(db.sample, sid)
        await request.app[JOBS].auto.on_annotated(sample.bundle)  # the small inner loop, if on
    raise web.HTTPSeeOther("/ui/review")
