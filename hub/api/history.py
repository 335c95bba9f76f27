"""History routes: the devices' prediction stream in, history frames and fleet metrics out.

- ``POST /device/predictions``: a gzip-compressed JSON batch of prediction metadata
  (:class:`runtime.prediction_stream.PredictionBatch`); bounded before and while it is
  decompressed, each event validated, a repeated event id ignored. Rows older than the hub's
  ``history_retention_s`` are pruned as batches arrive.
- ``GET /admin/history[?bundle=]``: every stored sample with ground truth as a history frame
  (:func:`hub.replay.history.history_frames`); ``GET /admin/history/images/{sha256}`` its image.
- ``GET /admin/metrics/compare?by=cohort,version&window_s=86400[&now=]``: comparative metrics
  (:func:`hub.replay.fleet_metrics.compare`), this window and the previous one.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from hub.api._common import API, BLOBS, CONFIG, DB, device_id_of, read_capped
from hub.errors import BadRequest, NotFound, TooLarge
from hub.replay.fleet_metrics import compare
from hub.replay.history import history_frames
from hub.storage import check_sha256
from runtime.prediction_stream import PredictionBatch

routes = web.RouteTableDef()

_MAX_COMPRESSED = 2 * 1024 * 1024
_MAX_DECOMPRESSED = 8 * 1024 * 1024


def _gunzip(data: bytes) -> bytes:
    """Decompress a gzip body, refusing (413) one that grows past the cap."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, _MAX_DECOMPRESSED)
    except zlib.error as e:
        raise BadRequest(f"predictions: not gzip data: {e}") from e
    if d.unconsumed_tail:
        raise TooLarge(f"predictions: over {_MAX_DECOMPRESSED} bytes once decompressed")
    return out


@routes.post(f"{API}/device/predictions")
async def post_predictions(request: web.Request) -> web.Response:
    """Store a batch of prediction metadata from this device."""
    raw = _gunzip(await read_capped(request, _MAX_COMPRESSED, "predictions"))
    try:
        batch = PredictionBatch.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"bad predictions: {where}: {first['msg']}") from e
    db = request.app[DB]
    events = [ev.model_dump() for ev in batch.events]
    new = await db.call(db.add_predictions, device_id_of(request), events)
    await db.call(db.prune_predictions, time.time() - request.app[CONFIG].history_retention_s)
    return web.json_response({"received": len(batch.events), "new": new})


@routes.get(f"{API}/admin/history")
async def history(request: web.Request) -> web.Response:
    """History frames: stored samples with ground truth, tagged for slicing, by id."""
    db = request.app[DB]
    frames = await db.call(history_frames, db, request.query.get("bundle"))
    return web.json_response([f.to_dict() for f in frames])


@routes.get(f"{API}/admin/history/images/{{sha256}}")
async def history_image(request: web.Request) -> web.Response:
    """A history frame's image bytes."""
    sha = check_sha256(request.match_info["sha256"])
    loop = asyncio.get_running_loop()
    try:
        data = await loop.run_in_executor(None, request.app[BLOBS].read, sha)
    except NotFound:
        raise NotFound(f"no image {sha}") from None
    return web.Response(body=data, content_type="application/octet-stream")


def _float(q: str | None, name: str, default: float | None) -> float | None:
    if q is None:
        return default
    try:
        return float(q)
    except ValueError:
        raise BadRequest(f"{name} must be a number") from None


async def fleet_rows(
    app: web.Application, by: list[str], window_s: float, now: float, events: list[str]
) -> list[dict[str, Any]]:
    """:func:`hub.replay.fleet_metrics.compare` on the hub's rows, read off the event loop
    (what ``/metrics`` can hand to :func:`~hub.replay.fleet_metrics.prometheus_collector`).

    Raises ValueError for an unknown group key."""
    db = app[DB]
    shadow = [
        {"cohort": cohort, "agreement": rep.get("agreement"),
         "frames": (rep.get("stats") or {}).get("compared")}
        for _, cohort, rep, _ in await db.call(db.shadow_reports)
    ]  # fmt: skip
    preds = await db.call(db.predictions, now - 2 * window_s, now)
    feedback = await db.call(db.feedback_rows)
    return compare(preds, feedback, by, window_s, now, events, shadow)


@routes.get(f"{API}/admin/metrics/compare")
async def metrics_compare(request: web.Request) -> web.Response:
    """Comparative metrics per group: this window beside the previous one."""
    q = request.query
    window = _float(q.get("window_s"), "window_s", 86400.0)
    now = _float(q.get("now"), "now", time.time())
    assert window is not None and now is not None
    if not 0 < window <= 366 * 86400:
        raise BadRequest("window_s must be in (0, 1 year]")
    by = [k.strip() for k in q.get("by", "cohort,version").split(",") if k.strip()]
    events = [c for c in q.get("events", "").split(",") if c]
    try:
        rows = await fleet_rows(request.app, by, window, now, events)
    except ValueError as e:
        raise BadRequest(str(e)) from e
    return web.json_response({"by": by, "window_s": window, "now": now, "groups": rows})
