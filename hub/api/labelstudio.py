"""Label Studio on the hub: tasks out with pre-annotations, annotations back in, and an ML
backend that Label Studio projects can point at.

- ``GET /api/v1/admin/labelstudio/tasks?bundle=B[&state=pending&limit=N]`` — samples as Label
  Studio tasks (import them into a project); each ``data.image`` is a signed, expiring URL of
  the hub (``/labelstudio/image/{id}``) so the annotator's browser loads it without a token;
  the model's prediction rides along as a pre-annotation.
- ``POST /api/v1/admin/labelstudio/import`` — a Label Studio JSON export; every task carrying
  ``data.leanloop_id`` becomes that sample's annotation (labels mapped to the ontology's
  current version). Every problem is listed in one 400 and nothing is stored then.
- ``/labelstudio/ml/{bundle}/`` — Label Studio's ML backend protocol: ``GET health`` (and the
  root), ``POST setup``, ``POST predict`` (the bundle's newest published version, run with the
  device pipeline code), ``POST webhook`` (``ANNOTATION_CREATED``/``UPDATED`` store the
  annotation), ``POST train`` (queues a hub training job). Label Studio authenticates with the
  ML backend's basic-auth fields: any user name, a named annotator or admin token as password
  (a bearer token works too).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from hub.api._common import (
    ADMIN_TOKEN,
    API,
    BLOBS,
    CONFIG,
    DB,
    JOBS,
    REPO,
    person_of_token,
    read_capped,
)
from hub.errors import AuthError, BadRequest, ForbiddenError, NotFound
from hub.sampleinfo import classes_of, predicted_items
from hub.storage import HubDB, Sample, SampleState
from runtime.pipeline.imagesize import declared_size
from trainer.datasets.ls_json import annotation_of, latest_annotation, task_for

log = logging.getLogger("leanloop.hub.labelstudio")

routes = web.RouteTableDef()

IMAGE_URL_TTL_S = 7 * 86400
_MAX_EXPORT = 64 * 1024 * 1024
_MAX_ML_BODY = 16 * 1024 * 1024
_MAX_PIXELS = 8192 * 8192  # as a device: a header declaring more is refused before decoding
_PIPELINES = web.AppKey("labelstudio_pipelines", dict)


# -- signed image URLs --------------------------------------------------------------------------


def _sign_key(app: web.Application) -> bytes:
    return hashlib.sha256(b"leanloop-labelstudio-image:" + app[ADMIN_TOKEN].encode()).digest()


def image_url(request: web.Request, sample_id: str, now: float | None = None) -> str:
    exp = int((now or time.time()) + IMAGE_URL_TTL_S)
    sig = hmac.new(_sign_key(request.app), f"{sample_id}:{exp}".encode(), "sha256").hexdigest()
    return f"{request.scheme}://{request.host}/labelstudio/image/{sample_id}?exp={exp}&sig={sig}"


def _check_signature(request: web.Request, sample_id: str) -> None:
    try:
        exp = int(request.query.get("exp", "0")[:20])
    except ValueError:
        exp = 0
    sig = request.query.get("sig", "")[:64]
    want = hmac.new(_sign_key(request.app), f"{sample_id}:{exp}".encode(), "sha256").hexdigest()
    if not hmac.compare_digest(sig.encode(), want.encode()) or exp < time.time():
        raise ForbiddenError("the image link is wrong or has expired; export the tasks again")


@routes.get("/labelstudio/image/{sample_id}")
async def signed_image(request: web.Request) -> web.Response:
    """A sample's image for whoever holds a valid signed link."""
    sample_id = request.match_info["sample_id"][:80]
    _check_signature(request, sample_id)
    db = request.app[DB]
    sample = await db.call(db.sample, sample_id)
    data = await db.call(request.app[BLOBS].read, sample.image_sha256)
    fmt = "png" if sample.meta.get("image_format") == "png" else "jpeg"
    return web.Response(body=data, content_type=f"image/{fmt}")


# -- tasks out, annotations in ------------------------------------------------------------------


async def _task(request: web.Request, sample: Sample) -> dict[str, Any]:
    db = request.app[DB]
    data = await db.call(request.app[BLOBS].read, sample.image_sha256)
    version = sample.meta.get("bundle_version")
    return task_for(
        sample.id, image_url(request, sample.id), predicted_items(sample.meta),
        declared_size(data), f"{sample.bundle} v{version}" if version else sample.bundle,
        {"bundle": sample.bundle, "device": sample.device_id},
    )  # fmt: skip


@routes.get(f"{API}/admin/labelstudio/tasks")
async def export_tasks(request: web.Request) -> web.Response:
    """Samples as Label Studio tasks with pre-annotations (``state``: pending by default)."""
    q = request.query
    state = q.get("state", "pending")
    if state not in ("pending", "annotated", "all"):
        raise BadRequest("state must be pending, annotated or all")
    try:
        limit = int(q.get("limit", "1000"))
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 1 <= limit <= 10_000:
        raise BadRequest("limit must be between 1 and 10000")
    db = request.app[DB]
    wanted: SampleState | None = None if state == "all" else state  # type: ignore[assignment]
    samples = await db.call(db.samples, q.get("bundle") or None, wanted, limit)
    return web.json_response([await _task(request, s) for s in samples])


async def _apply(
    request: web.Request, task: dict[str, Any], who: str
) -> tuple[str | None, dict[str, Any] | None, list[str]]:
    """(sample id, annotation, problems) of one exported task; (None, None, []) to skip."""
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    sample_id = data.get("leanloop_id") if isinstance(data, dict) else None
    if not isinstance(sample_id, str):
        return None, None, ["data.leanloop_id names no sample (export tasks from the hub)"]
    ann = latest_annotation(task)
    if ann is None:
        return None, None, []  # not annotated yet: nothing to import
    db = request.app[DB]
    try:
        sample = await db.call(db.sample, sample_id[:80])
    except NotFound:
        return sample_id, None, [f"no sample {sample_id[:80]!r} on this hub"]
    size = declared_size(await db.call(request.app[BLOBS].read, sample.image_sha256))
    conv = annotation_of(ann.get("result"), *(size or (None, None)))
    problems = list(conv.problems)
    labels = [b[4] for b in conv.boxes] + ([conv.label] if conv.label else [])
    classes = await db.call(classes_of, db, sample.bundle)
    try:
        labels = await db.call(db.current_labels, sample.id, labels)
    except BadRequest as e:
        problems.append(str(e))
    if classes and not problems:
        problems += [f"{lbl!r} is not a class of {sample.bundle}" for lbl in labels
                     if lbl not in classes]  # fmt: skip
    if problems:
        return sample.id, None, problems
    boxes = [[*b[:4], lbl] for b, lbl in zip(conv.boxes, labels, strict=False)]
    annotation: dict[str, Any] = {"boxes": boxes, "annotator": who}
    if conv.label is not None:
        annotation["label"] = labels[-1]
    return sample.id, annotation, []


@routes.post(f"{API}/admin/labelstudio/import")
async def import_export(request: web.Request) -> web.Response:
    """Store the annotations of a Label Studio JSON export (all or nothing)."""
    raw = await read_capped(request, _MAX_EXPORT, "Label Studio export")
    try:
        tasks = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the export is not JSON: {e}") from e
    if not isinstance(tasks, list):
        raise BadRequest("a Label Studio JSON export is a list of tasks")
    planned: list[tuple[str, dict[str, Any]]] = []
    problems: list[str] = []
    for n, task in enumerate(tasks):
        where = f"task {task.get('id', n) if isinstance(task, dict) else n}"
        if not isinstance(task, dict):
            problems.append(f"{where}: not an object")
            continue
        ann = latest_annotation(task) or {}
        who = f"labelstudio:{ann.get('completed_by', 'unknown')}"
        sid, annotation, found = await _apply(request, task, who)
        problems += [f"{where}: {p}" for p in found]
        if sid is not None and annotation is not None:
            planned.append((sid, annotation))
    if problems:
        raise BadRequest(
            f"{len(problems)} problem(s), nothing imported: " + "; ".join(problems[:50])
        )
    db = request.app[DB]

    def store_all() -> None:
        with db._transaction():
            for sid, annotation in planned:
                db.annotate(sid, annotation)

    await db.call(store_all)
    return web.json_response({"annotated": len(planned), "tasks": len(tasks)})


# -- the ML backend -----------------------------------------------------------------------------


async def _ml_caller(request: web.Request) -> str:
    """The person behind Label Studio's request: basic auth (password = a named token) or a
    bearer token, with the admin or annotator role."""
    header = request.headers.get("Authorization", "")
    scheme, _, cred = header.partition(" ")
    token = ""
    if scheme.lower() == "basic":
        try:
            token = base64.b64decode(cred.strip(), validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            raise AuthError("malformed basic credentials") from None
    elif scheme.lower() == "bearer":
        token = cred.strip()
    if not token or len(token) > 512:
        raise AuthError("Label Studio must send a named token (ML backend basic auth password)")
    who = await person_of_token(request, token)
    if who is None:
        raise AuthError("unknown token")
    if who[1] not in ("admin", "annotator"):
        raise ForbiddenError(f"a {who[1]} cannot use the ML backend")
    return who[0]


def _bundle(request: web.Request) -> str:
    name = request.match_info["bundle"]
    if not name or len(name) > 64:
        raise BadRequest("bad bundle name")
    return name


def _latest(db: HubDB, name: str) -> int | None:
    versions = [v for n, v, _ in db.bundles() if n == name]
    return max(versions) if versions else None


def _load_pipeline(app: web.Application, name: str, version: int) -> Any:
    """The published bundle, materialised from the hub's signed targets and loaded as a device
    loads it (cached per version)."""
    from hub.replay.fetch import bundle_from_hub_store
    from hub.replay.runner import load_for_replay

    key = (name, version)
    cache = app[_PIPELINES]
    if key not in cache:
        dest = Path(app[CONFIG].data_dir) / "cache" / "labelstudio" / f"{name}-{version}"
        folder = bundle_from_hub_store(app[REPO], app[BLOBS], name, version, dest)
        cache.clear()  # one model at a time is enough for pre-annotation
        cache[key] = load_for_replay(folder)
    return cache[key].pipeline


async def _ml_json(request: web.Request) -> dict[str, Any]:
    raw = await read_capped(request, _MAX_ML_BODY, "request")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


@routes.get("/labelstudio/ml/{bundle}/")
@routes.get("/labelstudio/ml/{bundle}/health")
async def ml_health(request: web.Request) -> web.Response:
    """Label Studio's connection check (no token needed, nothing secret)."""
    return web.json_response({"status": "UP", "model_class": "leanloop", "v2": True})


@routes.post("/labelstudio/ml/{bundle}/setup")
async def ml_setup(request: web.Request) -> web.Response:
    await _ml_caller(request)
    await _ml_json(request)
    db = request.app[DB]
    version = await db.call(_latest, db, _bundle(request))
    return web.json_response({"model_version": f"{_bundle(request)} v{version or 0}"})


def _task_image_sample(task: dict[str, Any]) -> str | None:
    data = task.get("data")
    if not isinstance(data, dict):
        return None
    sid = data.get("leanloop_id")
    if isinstance(sid, str):
        return sid[:80]
    url = data.get("image")
    if isinstance(url, str) and "/labelstudio/image/" in url:
        return url.split("/labelstudio/image/", 1)[1].split("?", 1)[0][:80]
    return None


@routes.post("/labelstudio/ml/{bundle}/predict")
async def ml_predict(request: web.Request) -> web.Response:
    """Pre-annotations for Label Studio tasks from the bundle's newest published version."""
    await _ml_caller(request)
    body = await _ml_json(request)
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or len(tasks) > 1000:
        raise BadRequest("tasks must be a list of at most 1000")
    name = _bundle(request)
    db = request.app[DB]
    version = await db.call(_latest, db, name)
    if version is None:
        raise NotFound(f"no published version of {name}")
    loop = asyncio.get_running_loop()
    pipeline = await loop.run_in_executor(None, _load_pipeline, request.app, name, version)
    results = []
    for task in tasks:
        sid = _task_image_sample(task) if isinstance(task, dict) else None
        if sid is None:
            results.append({"result": [], "score": 0.0, "model_version": f"{name} v{version}"})
            continue
        sample = await db.call(db.sample, sid)
        data = await db.call(request.app[BLOBS].read, sample.image_sha256)
        _img, pred = await loop.run_in_executor(None, pipeline.run_encoded, data, sid, _MAX_PIXELS)
        size = declared_size(data)
        items = predicted_items({"prediction": pred.to_dict()})
        one = task_for(sid, "", items, size, f"{name} v{version}")
        pre = (one.get("predictions") or [{"result": [], "score": 0.0}])[0]
        results.append({**pre, "model_version": f"{name} v{version}"})
    return web.json_response({"results": results, "model_version": f"{name} v{version}"})


@routes.post("/labelstudio/ml/{bundle}/webhook")
async def ml_webhook(request: web.Request) -> web.Response:
    """Annotation events from Label Studio: created/updated annotations are stored."""
    await _ml_caller(request)
    body = await _ml_json(request)
    action = body.get("action")
    if action not in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"):
        return web.json_response({"status": "ignored", "action": str(action)[:64]})
    task = body.get("task")
    annotation = body.get("annotation")
    if not isinstance(task, dict) or not isinstance(annotation, dict):
        raise BadRequest("an annotation event carries task and annotation objects")
    who = f"labelstudio:{annotation.get('completed_by', 'unknown')}"
    sid, stored, problems = await _apply(request, {**task, "annotations": [annotation]}, who)
    if problems:
        raise BadRequest("; ".join(problems[:20]))
    if sid is None or stored is None:
        return web.json_response({"status": "ignored"})
    db = request.app[DB]
    await db.call(db.annotate, sid, stored)
    sample = await db.call(db.sample, sid)
    await request.app[JOBS].auto.on_annotated(sample.bundle)  # the small inner loop, if on
    return web.json_response({"status": "stored", "sample": sid}, status=201)


@routes.post("/labelstudio/ml/{bundle}/train")
async def ml_train(request: web.Request) -> web.Response:
    """Queue a hub training job for the bundle's next version (warm-started)."""
    await _ml_caller(request)
    await _ml_json(request)
    name = _bundle(request)
    db = request.app[DB]
    version = await db.call(_latest, db, name)
    job = await request.app[JOBS].submit(
        {"bundle": name, "version": (version or 0) + 1, "init_from": None, "params": {}}
    )
    return web.json_response({"job": job}, status=201)


def setup(app: web.Application) -> None:
    """The app state the Label Studio routes keep (the loaded pipeline)."""
    app[_PIPELINES] = {}
