"""Admin sample routes: seed import, the annotation queue, feedback metrics, images, annotations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from hub.api._common import (
    API,
    BLOBS,
    CONFIG,
    DB,
    JOBS,
    NAME_PATTERN,
    Body,
    group_sample,
    parse_body,
    read_capped,
    read_parts,
    store_blob,
)
from hub.errors import (
    BadRequest,
    NotFound,
)
from runtime.feedback_stats import tally
from runtime.store.record import new_sample_id

log = logging.getLogger("leanloop.hub.samples")

routes = web.RouteTableDef()

Box = tuple[float, float, float, float, str]


class AnnotationRequest(Body):
    """``POST /admin/samples/{id}/annotation``; also the ``annotation`` part of an import."""

    boxes: list[Box] = Field(max_length=10_000, description="[x1, y1, x2, y2, label] in pixels")
    annotator: str = Field(min_length=1, max_length=200)


class ImportMeta(BaseModel):
    """The ``meta`` part of ``POST /admin/samples``: a seed sample with a few required keys."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(default=None, pattern=NAME_PATTERN)
    bundle: str = Field(pattern=NAME_PATTERN)
    priority: float = 0.0
    device_id: str = Field(default="import", max_length=64)


# -- admin: samples -----------------------------------------------------------------------------


def _annotation(body: AnnotationRequest) -> dict[str, Any]:
    return {"boxes": [list(b) for b in body.boxes], "annotator": body.annotator}


@routes.post(f"{API}/admin/samples")
async def import_sample(request: web.Request) -> web.Response:
    """Import an already-labelled sample (a seed batch): ``meta`` + ``image`` + ``annotation``."""
    cfg = request.app[CONFIG]
    caps = {
        "meta": cfg.max_meta_bytes,
        "image": cfg.max_image_bytes,
        "annotation": cfg.max_meta_bytes,
    }
    parts = await read_parts(request, caps, set(caps))
    meta = parse_body(ImportMeta, parts["meta"], "meta")
    annotation = parse_body(AnnotationRequest, parts["annotation"], "annotation")
    sample_id = meta.id or new_sample_id()
    stored_meta = {**meta.model_dump(), "id": sample_id}
    db = request.app[DB]
    with contextlib.suppress(NotFound):
        await db.call(db.sample, sample_id)
        return web.json_response({"status": "duplicate", "id": sample_id})
    image_sha256 = await store_blob(request.app, parts["image"])
    stored = await db.call(
        db.add_sample,
        sample_id, meta.bundle, meta.device_id, meta.priority, stored_meta, image_sha256,
        annotation=_annotation(annotation),
    )  # fmt: skip
    if stored:
        await group_sample(request.app, sample_id, meta.bundle, parts["image"])
    return web.json_response({"status": "stored" if stored else "duplicate", "id": sample_id})


@routes.get(f"{API}/admin/samples")
async def list_samples(request: web.Request) -> web.Response:
    """The annotation queue (``state=pending``: ranked across devices, one entry per image,
    see :meth:`hub.storage.HubDB.annotation_queue`), or stored samples by priority."""
    q = request.query
    state = q.get("state")
    if state not in (None, "pending", "annotated"):
        raise BadRequest("state must be pending or annotated")
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 1 <= limit <= 10_000:
        raise BadRequest("limit must be between 1 and 10000")
    db = request.app[DB]
    if state == "pending":
        return web.json_response(
            [
                {
                    **e.sample.meta,
                    "id": e.sample.id,
                    "state": e.sample.state,
                    "annotation": None,
                    "feedback": e.feedback or e.sample.meta.get("feedback"),
                    "queue": {
                        "tier": e.tier,
                        "device_rank": e.device_rank,
                        "copies": e.copies,
                        "group": e.group,
                        "novelty": None if e.novelty is None else round(e.novelty, 3),
                        "similar_to": e.similar_to,
                        "round": e.round,
                    },
                }
                for e in await db.call(db.annotation_queue, q.get("bundle"), limit)
            ]
        )
    samples = await db.call(db.samples, q.get("bundle"), state, limit)  # type: ignore[arg-type]
    return web.json_response(
        [{**s.meta, "id": s.id, "state": s.state, "annotation": s.annotation} for s in samples]
    )


@routes.get(f"{API}/admin/feedback")
async def feedback_metrics(request: web.Request) -> web.Response:
    """Feedback metrics per device: from the feedback the hub received (``hub``) and as the
    device last reported in its heartbeat (``reported``, which also counts feedback on samples
    not uploaded yet)."""
    db = request.app[DB]
    by_device: dict[str, list[tuple[str, str, str | None, int]]] = {}
    for device_id, predicted, kind, label in await db.call(
        db.feedback_entries, request.query.get("bundle")
    ):
        by_device.setdefault(device_id, []).append((predicted, kind, label, 1))
    out: dict[str, Any] = {}
    for d in await db.call(db.devices):
        reported = (d.status or {}).get("feedback")
        if d.id in by_device or reported is not None:
            out[d.id] = {"hub": tally(by_device.get(d.id, [])), "reported": reported}
    everything = [e for entries in by_device.values() for e in entries]
    return web.json_response({"devices": out, "fleet": tally(everything)})


@routes.get(f"{API}/admin/samples/{{sample_id}}/image")
async def sample_image(request: web.Request) -> web.Response:
    """The sample's image bytes."""
    sample = await request.app[DB].call(request.app[DB].sample, request.match_info["sample_id"])
    fmt = str(sample.meta.get("image_format", "jpeg"))
    data = await asyncio.to_thread(request.app[BLOBS].read, sample.image_sha256)
    return web.Response(body=data, headers={"Content-Type": f"image/{fmt}"})


@routes.post(f"{API}/admin/samples/{{sample_id}}/annotation")
async def annotate(request: web.Request) -> web.Response:
    """Store a human's boxes for a sample; it leaves the pending queue."""
    raw = await read_capped(request, request.app[CONFIG].max_meta_bytes, "annotation")
    body = parse_body(AnnotationRequest, raw, "annotation")
    db, sample_id = request.app[DB], request.match_info["sample_id"]
    # Labels of the previous ontology version are converted, or refused saying why.
    labels = await db.call(db.current_labels, sample_id, [b[4] for b in body.boxes])
    body.boxes = [(*b[:4], lbl) for b, lbl in zip(body.boxes, labels, strict=True)]
    await db.call(db.annotate, sample_id, _annotation(body))
    sample = await db.call(db.sample, sample_id)
    job = await request.app[JOBS].auto.on_annotated(sample.bundle)  # the small inner loop, if on
    return web.json_response({} if job is None else {"auto_job": job})
