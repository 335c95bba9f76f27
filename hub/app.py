"""The hub's HTTP API (``/api/v1``): one aiohttp app built by :func:`create_app`.

The hub is the meeting point of the loop. Devices enroll with the fleet secret and get their own
token; they ask which bundle they should run, fetch signed TUF metadata and targets, report a
heartbeat, and upload samples. The admin uploads bundle files as blobs, posts targets metadata
signed offline, rolls a bundle version out to devices or a cohort, annotates the ranked sample
queue, and starts training jobs whose artifact is the next bundle source.

Structure: ``create_app`` wires typed ``web.AppKey`` state opened in ``cleanup_ctx`` (storage,
TUF repository, tokens; the timestamp re-signing timer; the job runner) and a route table. Two
middlewares: the error middleware (outermost) turns every :class:`~hub.errors.HubHTTPError` into
``{"error": "<one line>"}`` with its status, and the auth middleware decides, by path prefix and
failing closed, which token kind may call what (401 no/unknown token, 403 wrong kind). Every body
is size-capped before it is read: by Content-Length first, then by counting while reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiohttp import BodyPartReader, web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.config import HubConfig
from hub.errors import (
    AuthError,
    BadRequest,
    Conflict,
    ForbiddenError,
    HubHTTPError,
    NotFound,
    TooLarge,
)
from hub.jobs import JobRunner, log_tail
from hub.repository import TufRepository
from hub.storage import BlobStore, HubDB, check_sha256
from runtime._atomic import atomic_write_bytes
from runtime.bundle.manifest import Manifest
from runtime.errors import LeanloopError
from runtime.store.record import SampleRecord, new_sample_id

__all__ = [
    "ADMIN_TOKEN",
    "BLOBS",
    "CONFIG",
    "DB",
    "ENROLL_TOKEN",
    "JOBS",
    "REPO",
    "HubConfig",
    "create_app",
    "run",
]

log = logging.getLogger(__name__)

API = "/api/v1"

CONFIG = web.AppKey("config", HubConfig)
DB = web.AppKey("db", HubDB)
BLOBS = web.AppKey("blobs", BlobStore)
REPO = web.AppKey("repo", TufRepository)
JOBS = web.AppKey("jobs", JobRunner)
ADMIN_TOKEN = web.AppKey("admin_token", str)
ENROLL_TOKEN = web.AppKey("enroll_token", str)
PUBLISH_LOCK = web.AppKey("publish_lock", asyncio.Lock)

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME_RE = re.compile(_NAME_PATTERN)
_MANIFEST_TARGET_RE = re.compile(r"^([a-z0-9][a-z0-9._-]{0,63})/([1-9][0-9]{0,9})/manifest\.json$")
_CHUNK = 64 * 1024
_MULTIPART_OVERHEAD = 16 * 1024

# -- identity and auth --------------------------------------------------------------------------

TokenKind = Literal["admin", "device"]


@dataclass(frozen=True)
class Identity:
    """Who is calling: the admin, or one device."""

    kind: TokenKind
    device_id: str | None = None


IDENTITY = web.RequestKey("identity", Identity)

# Path prefix → token kinds allowed; the first match wins, anything unlisted needs admin.
_POLICY: tuple[tuple[str, frozenset[str]], ...] = (
    (f"{API}/enroll", frozenset()),  # the enrollment secret travels in the body
    (f"{API}/device/", frozenset({"device"})),
    (f"{API}/tuf/", frozenset({"device", "admin"})),
    (f"{API}/admin/", frozenset({"admin"})),
)


def hash_token(token: str) -> str:
    """How a device token is stored: sha256 hex (tokens are random, so no salt is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _identify(request: web.Request) -> Identity:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("missing bearer token (Authorization: Bearer <token>)")
    if hmac.compare_digest(token.encode(), request.app[ADMIN_TOKEN].encode()):
        return Identity("admin")
    digest = hash_token(token)
    found = request.app[DB].device_by_token_hash(digest)
    if found is not None and hmac.compare_digest(digest, found[1]):
        return Identity("device", found[0])
    raise AuthError("unknown token")


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Check the bearer token against the path's policy before any handler runs."""
    allowed: frozenset[str] = frozenset({"admin"})
    for prefix, kinds in _POLICY:
        if request.path == prefix or request.path.startswith(prefix):
            allowed = kinds
            break
    if allowed:
        who = _identify(request)
        if who.kind not in allowed:
            raise ForbiddenError(f"a {who.kind} token cannot call {request.method} {request.path}")
        request[IDENTITY] = who
        if who.device_id is not None:
            request.app[DB].touch_device(who.device_id)
    return await handler(request)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500] or "error"


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Map domain errors (and aiohttp's own HTTP errors) to ``{"error": "<one line>"}``."""
    try:
        return await handler(request)
    except HubHTTPError as e:
        status, message = e.status, str(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        status, message = e.status, e.reason
    except LeanloopError as e:
        log.exception("%s %s failed", request.method, request.path)
        status, message = 500, str(e)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        status, message = 500, "internal error; see the hub log"
    return web.json_response({"error": _one_line(message)}, status=status)


# -- request bodies -----------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnrollRequest(_Body):
    """``POST /enroll``."""

    device_id: str = Field(pattern=_NAME_PATTERN)
    enroll_token: str = Field(min_length=1, max_length=512)
    cohort: str | None = Field(default=None, pattern=_NAME_PATTERN)


class RolloutRequest(_Body):
    """``POST /admin/rollouts``: listed devices, a cohort (both: intersection), or all."""

    bundle: str = Field(pattern=_NAME_PATTERN)
    version: int = Field(ge=1)
    devices: list[str] | None = Field(default=None, min_length=1, max_length=100_000)
    cohort: str | None = Field(default=None, pattern=_NAME_PATTERN)


Box = tuple[float, float, float, float, str]


class AnnotationRequest(_Body):
    """``POST /admin/samples/{id}/annotation``; also the ``annotation`` part of an import."""

    boxes: list[Box] = Field(max_length=10_000, description="[x1, y1, x2, y2, label] in pixels")
    annotator: str = Field(min_length=1, max_length=200)


class ImportMeta(BaseModel):
    """The ``meta`` part of ``POST /admin/samples``: a seed sample with a few required keys."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(default=None, pattern=_NAME_PATTERN)
    bundle: str = Field(pattern=_NAME_PATTERN)
    priority: float = 0.0
    device_id: str = Field(default="import", max_length=64)


class TrainRequest(_Body):
    """``POST /admin/jobs/train``."""

    bundle: str = Field(pattern=_NAME_PATTERN)
    version: int = Field(ge=1, description="the bundle version the job's output will become")
    init_from: int | None = Field(default=None, ge=1, description="an earlier (done) job id")
    params: dict[str, Any] = Field(default_factory=dict)


class DeviceEvent(_Body):
    """One update outcome a device reports in its heartbeat's ``events`` list."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="device-chosen, for dedup")
    time: float = Field(description="when it happened on the device (unix time)")
    kind: Literal["update_failed", "rolled_back"] = Field(description="what happened")
    cause: str = Field(max_length=64, description="e.g. load_failed, trial_failed, operator")
    bundle: str | None = Field(default=None, max_length=64)
    version: int | None = None
    reason: str = Field(default="", max_length=2000, description="one-line reason")


_MAX_EVENTS = 100

M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], data: bytes | str, what: str) -> M:
    try:
        return model.model_validate_json(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"bad {what}: {where}: {first['msg']}") from e


async def _read_capped(request: web.Request, limit: int, what: str) -> bytes:
    """The whole body, refusing (413) before reading if Content-Length is over ``limit``."""
    length = request.content_length
    if length is not None and length > limit:
        raise TooLarge(f"{what} is {length} bytes; the limit is {limit}")
    buf = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        buf += chunk
        if len(buf) > limit:
            raise TooLarge(f"{what} is over the limit of {limit} bytes")
    return bytes(buf)


async def _read_parts(
    request: web.Request, caps: dict[str, int], required: set[str]
) -> dict[str, bytes]:
    """The parts of a multipart body by name, each capped; unknown or repeated parts are 400."""
    total = sum(caps.values()) + _MULTIPART_OVERHEAD
    if request.content_length is not None and request.content_length > total:
        raise TooLarge(f"body is {request.content_length} bytes; the limit is {total}")
    if not request.content_type.startswith("multipart/"):
        raise BadRequest(f"expected a multipart body with parts {', '.join(sorted(caps))}")
    parts: dict[str, bytes] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise BadRequest("nested multipart bodies are not accepted")
            name = part.name or ""
            if name not in caps:
                raise BadRequest(f"unexpected part {name!r}")
            if name in parts:
                raise BadRequest(f"part {name!r} given twice")
            buf = bytearray()
            while chunk := await part.read_chunk(_CHUNK):
                buf += chunk
                if len(buf) > caps[name]:
                    raise TooLarge(f"part {name!r} is over the limit of {caps[name]} bytes")
            parts[name] = bytes(buf)
    except ValueError as e:
        raise BadRequest(f"malformed multipart body: {e}") from e
    missing = required - parts.keys()
    if missing:
        raise BadRequest(f"missing part(s): {', '.join(sorted(missing))}")
    return parts


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"{what} is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return obj


def _device_id(request: web.Request) -> str:
    device_id = request[IDENTITY].device_id
    assert device_id is not None  # the auth policy lets only device tokens reach device routes
    return device_id


async def _store_blob(app: web.Application, data: bytes) -> str:
    loop = asyncio.get_running_loop()
    sha256, _ = await loop.run_in_executor(None, app[BLOBS].put, data)
    return sha256


routes = web.RouteTableDef()

# -- devices ------------------------------------------------------------------------------------


@routes.post(f"{API}/enroll")
async def enroll(request: web.Request) -> web.Response:
    """Trade the fleet enrollment secret for a device token (re-enrolling replaces the token)."""
    body = _parse(EnrollRequest, await _read_capped(request, 4096, "enrollment"), "enrollment")
    if not hmac.compare_digest(body.enroll_token.encode(), request.app[ENROLL_TOKEN].encode()):
        raise AuthError("wrong enrollment secret")
    token = secrets.token_urlsafe(32)
    request.app[DB].enroll_device(body.device_id, body.cohort, hash_token(token))
    log.info("device %s enrolled (cohort %s)", body.device_id, body.cohort)
    return web.json_response({"device_token": token})


@routes.get(f"{API}/device/desired")
async def desired(request: web.Request) -> web.Response:
    """The bundle version a rollout asked this device to run (nulls: none yet)."""
    db = request.app[DB]
    device = db.device(_device_id(request))
    bundle, version = device.desired_bundle, device.desired_version
    if bundle is None:
        bundle, version = db.cohort_desired(device.cohort)
    return web.json_response({"bundle": bundle, "version": version})


@routes.post(f"{API}/device/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    """Store the device's status report (a JSON object under the heartbeat cap).

    Its optional ``events`` list (update failures and rollbacks, each with an ``id``) is kept
    apart, in the device's event record, so a later heartbeat does not overwrite it.
    """
    cap = request.app[CONFIG].max_heartbeat_bytes
    status = _json_object(await _read_capped(request, cap, "heartbeat"), "heartbeat")
    raw = status.pop("events", None) or []
    if not isinstance(raw, list) or len(raw) > _MAX_EVENTS:
        raise BadRequest(f"heartbeat: 'events' must be a list of at most {_MAX_EVENTS}")
    events = [_parse(DeviceEvent, json.dumps(e), "heartbeat event").model_dump() for e in raw]
    request.app[DB].touch_device(_device_id(request), status)
    if events:
        request.app[DB].add_device_events(_device_id(request), events)
    return web.json_response({})


@routes.put(f"{API}/device/samples/{{sample_id}}")
async def upload_sample(request: web.Request) -> web.Response:
    """Store a sample (``meta`` + ``image``); the same id again is a no-op ("duplicate")."""
    cfg = request.app[CONFIG]
    sample_id = request.match_info["sample_id"]
    if not _NAME_RE.match(sample_id):
        raise BadRequest(f"bad sample id {sample_id[:80]!r}")
    parts = await _read_parts(
        request, {"meta": cfg.max_meta_bytes, "image": cfg.max_image_bytes}, {"meta", "image"}
    )
    meta = _json_object(parts["meta"], "meta")
    try:
        record = SampleRecord.from_meta(meta, parts["image"])
    except (KeyError, TypeError, ValueError) as e:
        raise BadRequest(f"meta is not a sample record: {type(e).__name__}: {e}") from e
    device_id = _device_id(request)
    if record.id != sample_id:
        raise BadRequest(f"meta id {record.id!r} is not the URL's {sample_id!r}")
    if record.device_id != device_id:
        raise BadRequest(f"meta device_id {record.device_id!r} is not this device ({device_id})")
    db = request.app[DB]
    with contextlib.suppress(NotFound):
        db.sample(sample_id)
        return web.json_response({"status": "duplicate"})
    image_sha256 = await _store_blob(request.app, parts["image"])
    stored = db.add_sample(sample_id, record.bundle, device_id, record.priority, meta, image_sha256)
    return web.json_response({"status": "stored" if stored else "duplicate"})


# -- TUF ----------------------------------------------------------------------------------------


@routes.get(f"{API}/tuf/metadata/{{file}}")
async def tuf_metadata(request: web.Request) -> web.Response:
    """Signed metadata: ``timestamp.json`` or ``<version>.<role>.json``."""
    data = request.app[REPO].metadata_bytes(request.match_info["file"])
    return web.Response(body=data, content_type="application/json")


@routes.get(f"{API}/tuf/targets/{{path:.+}}")
async def tuf_target(request: web.Request) -> web.FileResponse:
    """A target file by ``<dir>/<sha256>.<name>``, only if that hash is a current target."""
    sha256, _ = request.app[REPO].target_blob(request.match_info["path"])
    path = request.app[BLOBS].path(sha256)
    if not path.exists():
        raise NotFound(f"target blob {sha256} is missing from the blob store")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


@routes.get(f"{API}/admin/tuf/targets")
async def current_targets(request: web.Request) -> web.Response:
    """The current signed targets metadata, for the admin to extend and re-sign."""
    data = request.app[REPO].current_targets_bytes()
    if data is None:
        raise NotFound("no targets metadata yet; the first publish signs version 1")
    return web.Response(body=data, content_type="application/json")


@routes.put(f"{API}/admin/blobs/{{sha256}}")
async def put_blob(request: web.Request) -> web.Response:
    """Store raw bytes under their sha256; the hash in the URL must match the content."""
    sha256 = check_sha256(request.match_info["sha256"])
    cap = request.app[CONFIG].max_blob_bytes
    if request.content_length is not None and request.content_length > cap:
        raise TooLarge(f"blob is {request.content_length} bytes; the limit is {cap}")
    writer = request.app[BLOBS].writer()
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            writer.write(chunk)
            if writer.size > cap:
                raise TooLarge(f"blob is over the limit of {cap} bytes")
    except BaseException:
        writer.abort()
        raise
    loop = asyncio.get_running_loop()
    _, stored = await loop.run_in_executor(None, writer.commit, sha256)
    return web.json_response({"stored": stored})


def _new_bundles(
    app: web.Application, targets: dict[str, tuple[str, int]]
) -> list[tuple[Manifest, dict[str, Any]]]:
    """The manifests of bundle versions that the new targets add, each checked.

    A manifest is parsed only after its blob hashed to the signed target hash, and every file
    it lists must be a target of the same bundle version with the same hash.
    """
    known = app[REPO].target_paths()
    found = []
    for path, (sha256, _length) in targets.items():
        m = _MANIFEST_TARGET_RE.match(path)
        if m is None or known.get(path) == (sha256, _length):
            continue
        data = app[BLOBS].read(sha256)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise BadRequest(f"blob of {path} does not hash to its signed sha256")
        try:
            manifest = Manifest.model_validate_json(data)
        except ValidationError as e:
            raise BadRequest(f"{path} is not a valid manifest: {e.errors()[0]['msg']}") from e
        if (manifest.name, str(manifest.version)) != (m.group(1), m.group(2)):
            raise BadRequest(f"{path} describes {manifest.name} version {manifest.version}")
        for rel, entry in manifest.files.items():
            signed = targets.get(manifest.target_name(rel))
            if signed is None or signed[0] != entry.sha256:
                raise BadRequest(f"{path} lists {rel}, which is not a target with the same hash")
        found.append((manifest, json.loads(data)))
    return found


@routes.post(f"{API}/admin/targets")
async def post_targets(request: web.Request) -> web.Response:
    """Accept new targets metadata signed offline; record any new bundle versions."""
    app = request.app
    data = await _read_capped(request, app[CONFIG].max_targets_bytes, "targets metadata")
    async with app[PUBLISH_LOCK]:
        md = app[REPO].verify_targets(data)
        targets = {p: (t.hashes["sha256"], t.length) for p, t in md.signed.targets.items()}
        bundles = _new_bundles(app, targets)
        version = app[REPO].accept_targets(data)
        for manifest, raw in bundles:
            app[DB].add_bundle(manifest.name, manifest.version, raw)
            log.info("bundle %s version %s published", manifest.name, manifest.version)
    return web.json_response({"version": version})


# -- admin: fleet -------------------------------------------------------------------------------


@routes.post(f"{API}/admin/rollouts")
async def rollout(request: web.Request) -> web.Response:
    """Set the desired bundle version of some devices; the bundle must be published."""
    body = _parse(
        RolloutRequest, await _read_capped(request, 4 * 1024 * 1024, "rollout"), "rollout"
    )
    if not request.app[DB].has_bundle(body.bundle, body.version):
        raise NotFound(f"bundle {body.bundle} version {body.version} is not published")
    n = request.app[DB].set_desired(body.bundle, body.version, body.devices, body.cohort)
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
                "events": request.app[DB].device_events(d.id),
            }
            for d in request.app[DB].devices()
        ]
    )


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
    parts = await _read_parts(request, caps, set(caps))
    meta = _parse(ImportMeta, parts["meta"], "meta")
    annotation = _parse(AnnotationRequest, parts["annotation"], "annotation")
    sample_id = meta.id or new_sample_id()
    stored_meta = {**meta.model_dump(), "id": sample_id}
    db = request.app[DB]
    with contextlib.suppress(NotFound):
        db.sample(sample_id)
        return web.json_response({"status": "duplicate", "id": sample_id})
    image_sha256 = await _store_blob(request.app, parts["image"])
    stored = db.add_sample(
        sample_id, meta.bundle, meta.device_id, meta.priority, stored_meta, image_sha256,
        annotation=_annotation(annotation),
    )  # fmt: skip
    return web.json_response({"status": "stored" if stored else "duplicate", "id": sample_id})


@routes.get(f"{API}/admin/samples")
async def list_samples(request: web.Request) -> web.Response:
    """The annotation queue: samples ranked by priority, highest first."""
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
    samples = request.app[DB].samples(q.get("bundle"), state, limit)  # type: ignore[arg-type]
    return web.json_response(
        [{**s.meta, "id": s.id, "state": s.state, "annotation": s.annotation} for s in samples]
    )


@routes.get(f"{API}/admin/samples/{{sample_id}}/image")
async def sample_image(request: web.Request) -> web.FileResponse:
    """The sample's image bytes."""
    sample = request.app[DB].sample(request.match_info["sample_id"])
    fmt = str(sample.meta.get("image_format", "jpeg"))
    path = request.app[BLOBS].path(sample.image_sha256)
    return web.FileResponse(path, headers={"Content-Type": f"image/{fmt}"})


@routes.post(f"{API}/admin/samples/{{sample_id}}/annotation")
async def annotate(request: web.Request) -> web.Response:
    """Store a human's boxes for a sample; it leaves the pending queue."""
    raw = await _read_capped(request, request.app[CONFIG].max_meta_bytes, "annotation")
    body = _parse(AnnotationRequest, raw, "annotation")
    request.app[DB].annotate(request.match_info["sample_id"], _annotation(body))
    return web.json_response({})


# -- admin: jobs --------------------------------------------------------------------------------


def _job_id(request: web.Request) -> int:
    try:
        return int(request.match_info["job"])
    except ValueError:
        raise NotFound(f"no job {request.match_info['job'][:40]!r}") from None


@routes.post(f"{API}/admin/jobs/train")
async def start_train(request: web.Request) -> web.Response:
    """Queue a training job over the bundle's annotated samples."""
    body = _parse(TrainRequest, await _read_capped(request, 64 * 1024, "job"), "job")
    if body.init_from is not None:
        prev = request.app[DB].job(body.init_from)
        if prev.state != "done":
            raise Conflict(f"job {prev.id} is {prev.state}; init_from needs a done job")
    job_id = request.app[JOBS].submit(body.model_dump())
    return web.json_response({"job": job_id})


@routes.get(f"{API}/admin/jobs/{{job}}")
async def job_status(request: web.Request) -> web.Response:
    """A job's state, error and the tail of its log."""
    job = request.app[DB].job(_job_id(request))
    body: dict[str, Any] = {
        "job": job.id,
        "state": job.state,
        "params": job.params,
        "log_tail": log_tail(job.log_path),
    }
    if job.error:
        body["error"] = job.error
    return web.json_response(body)


@routes.get(f"{API}/admin/jobs/{{job}}/artifact")
async def job_artifact(request: web.Request) -> web.FileResponse:
    """The tar.gz of the bundle source a done job wrote."""
    job = request.app[DB].job(_job_id(request))
    if job.state != "done" or not job.artifact_path:
        raise Conflict(f"job {job.id} is {job.state}; the artifact exists once it is done")
    return web.FileResponse(job.artifact_path, headers={"Content-Type": "application/gzip"})


# -- wiring -------------------------------------------------------------------------------------


def _token_file(path: Path) -> str:
    """Read a secret file, creating it (mode 0600) with a fresh random token the first time."""
    if not path.exists():
        atomic_write_bytes(path, secrets.token_urlsafe(32).encode() + b"\n", mode=0o600)
        log.info("created %s", path)
    return path.read_text().strip()


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    data = cfg.data_dir
    data.mkdir(parents=True, exist_ok=True)
    app[ADMIN_TOKEN] = _token_file(data / "admin.token")
    app[ENROLL_TOKEN] = _token_file(data / "enroll.token")
    app[BLOBS] = BlobStore(data / "blobs")
    app[REPO] = TufRepository.open(
        data,
        app[BLOBS].size,
        cfg.keys_dir,
        timestamp_expiry=timedelta(seconds=cfg.timestamp_expiry_s),
        snapshot_expiry=timedelta(seconds=cfg.snapshot_expiry_s),
    )
    app[DB] = HubDB(data / "hub.sqlite3")
    yield
    app[DB].close()


async def _timestamp_ctx(app: web.Application) -> AsyncIterator[None]:
    async def refresh_forever() -> None:
        while True:
            try:
                if app[REPO].refresh_timestamp():
                    log.info("re-signed timestamp, now expiring %s", app[REPO].timestamp_expires)
            except Exception:  # keep trying: a stale timestamp is worse than a noisy log
                log.exception("could not re-sign timestamp")
            await asyncio.sleep(app[CONFIG].timestamp_check_interval_s)

    task = asyncio.create_task(refresh_forever(), name="leanloop-timestamp")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    runner = JobRunner(
        app[DB], app[BLOBS], cfg.data_dir / "jobs", cfg.trainer_command, cfg.job_timeout_s
    )
    app[JOBS] = runner
    runner.start()
    yield
    await runner.stop()


def create_app(config: HubConfig) -> web.Application:
    """Build the hub app; storage and the TUF repository open when it starts."""
    cap = max(
        config.max_targets_bytes,
        config.max_meta_bytes * 2 + config.max_image_bytes + _MULTIPART_OVERHEAD,
    )
    app = web.Application(client_max_size=cap, middlewares=[error_middleware, auth_middleware])
    app[CONFIG] = config
    app[PUBLISH_LOCK] = asyncio.Lock()
    app.cleanup_ctx.extend([_storage_ctx, _timestamp_ctx, _jobs_ctx])
    app.add_routes(routes)
    return app


def run(config: HubConfig) -> None:
    """Serve the hub until interrupted."""
    web.run_app(create_app(config), host=config.host, port=config.port)
