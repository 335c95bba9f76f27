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
import os
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
from hub.storage import BlobStore, HubDB, PartialUploads, check_sha256
from runtime._atomic import atomic_write_bytes
from runtime.bundle.manifest import Manifest
from runtime.errors import LeanloopError
from runtime.feedback_stats import predicted_label, tally
from runtime.shadow.compare import ShadowStats
from runtime.shadow.promotion import PromotionRule
from runtime.shadow.report import ShadowStatus
from runtime.store.record import SampleRecord, new_sample_id
from runtime.uploader import decode_payload

__all__ = [
    "ADMIN_TOKEN",
    "BLOBS",
    "CONFIG",
    "DB",
    "ENROLL_TOKEN",
    "JOBS",
    "REPO",
    "UPLOADS",
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
UPLOADS = web.AppKey("uploads", PartialUploads)
UPLOAD_WRITERS = web.AppKey("upload_writers", dict)  # (device, id) -> the request writing it

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


class ShadowRolloutRequest(_Body):
    """``POST /admin/shadow/rollouts``: a candidate in shadow mode for devices/a cohort/all."""

    bundle: str = Field(pattern=_NAME_PATTERN)
    version: int = Field(ge=1)
    devices: list[str] | None = Field(default=None, min_length=1, max_length=100_000)
    cohort: str | None = Field(default=None, pattern=_NAME_PATTERN)
    rule: PromotionRule = Field(default_factory=PromotionRule)


class ShadowCancelRequest(_Body):
    """``POST /admin/shadow/cancel``: withdraw the candidate of devices, a cohort, or all."""

    devices: list[str] | None = Field(default=None, min_length=1, max_length=100_000)
    cohort: str | None = Field(default=None, pattern=_NAME_PATTERN)


class _ShadowRef(_Body):
    bundle: str = Field(max_length=64)
    version: int
    slot: str | None = Field(default=None, max_length=1)


class ShadowTelemetry(_Body):
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
    body: dict[str, Any] = {"bundle": bundle, "version": version}
    # Shadow mode: the candidate (with its promotion rule) next to the production bundle.
    candidate = db.shadow_candidate(device)
    if candidate is not None:
        body["candidate"] = candidate
    return web.json_response(body)


@routes.post(f"{API}/device/shadow")
async def shadow_telemetry(request: web.Request) -> web.Response:
    """Store a device's shadow summary; a ``promoted`` candidate becomes its desired bundle."""
    cap = request.app[CONFIG].max_heartbeat_bytes
    body = _parse(ShadowTelemetry, await _read_capped(request, cap, "shadow report"), "report")
    device_id = _device_id(request)
    db = request.app[DB]
    db.put_shadow_report(device_id, body.model_dump())
    c = body.candidate
    if body.status == "promoted" and c is not None and db.has_bundle(c.bundle, c.version):
        # The device committed it after its trial: make it what the hub wants there too, so the
        # next desired answer does not point back at the old production version.
        db.set_desired(c.bundle, c.version, [device_id], None)
        log.info("device %s promoted shadow candidate %s v%s", device_id, c.bundle, c.version)
    return web.json_response({})


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


def _sample_id(request: web.Request) -> str:
    sample_id = request.match_info["sample_id"]
    if not _NAME_RE.match(sample_id):
        raise BadRequest(f"bad sample id {sample_id[:80]!r}")
    return sample_id


class FeedbackBody(_Body):
    """A device's feedback on a sample (``runtime.store.record.Feedback.to_dict``)."""

    kind: Literal["confirm", "correct"]
    label: str | None = Field(default=None, min_length=1, max_length=200)
    who: str = Field(default="", max_length=200)
    when: float = 0.0
    bundle_version: int = Field(default=0, ge=0)
    item: int | None = Field(default=None, ge=0)


class FeedbackRequest(_Body):
    """``PUT /device/samples/{id}/feedback``."""

    feedback: FeedbackBody


def _check_feedback(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        fb = FeedbackBody.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "feedback"
        raise BadRequest(f"bad feedback: {where}: {first['msg']}") from e
    if fb.kind == "correct" and fb.label is None:
        raise BadRequest("bad feedback: a correction needs a label")
    return fb.model_dump()


def _record_feedback(db: HubDB, sample_id: str, device_id: str, meta: dict[str, Any]) -> None:
    fb = _check_feedback(meta.get("feedback"))
    if fb is not None:
        predicted = predicted_label(meta.get("prediction") or {}, fb.get("item"))
        db.set_feedback(sample_id, device_id, fb, predicted)


async def _store_sample(
    app: web.Application, device_id: str, sample_id: str, meta: dict[str, Any], image: bytes
) -> str:
    """Check and store an uploaded sample; "stored" or "duplicate" (the id is known).

    A duplicate still brings its feedback: a device re-sends a sample whose feedback changed.
    """
    try:
        record = SampleRecord.from_meta(meta, image)
    except (KeyError, TypeError, ValueError) as e:
        raise BadRequest(f"meta is not a sample record: {type(e).__name__}: {e}") from e
    if record.id != sample_id:
        raise BadRequest(f"meta id {record.id!r} is not the URL's {sample_id!r}")
    if record.device_id != device_id:
        raise BadRequest(f"meta device_id {record.device_id!r} is not this device ({device_id})")
    feedback = _check_feedback(meta.get("feedback"))
    db = app[DB]
    try:
        known = db.sample(sample_id)
    except NotFound:
        known = None
    if known is not None:
        if known.device_id != device_id:
            raise ForbiddenError(f"sample {sample_id} belongs to another device")
        if feedback is not None:
            _record_feedback(db, sample_id, device_id, meta)
        return "duplicate"
    image_sha256 = await _store_blob(app, image)
    stored = db.add_sample(sample_id, record.bundle, device_id, record.priority, meta, image_sha256)
    if feedback is not None:
        _record_feedback(db, sample_id, device_id, meta)
    return "stored" if stored else "duplicate"


@routes.put(f"{API}/device/samples/{{sample_id}}")
async def upload_sample(request: web.Request) -> web.Response:
    """Store a sample (``meta`` + ``image``); the same id again is a no-op ("duplicate")."""
    cfg = request.app[CONFIG]
    sample_id = _sample_id(request)
    parts = await _read_parts(
        request, {"meta": cfg.max_meta_bytes, "image": cfg.max_image_bytes}, {"meta", "image"}
    )
    meta = _json_object(parts["meta"], "meta")
    status = await _store_sample(request.app, _device_id(request), sample_id, meta, parts["image"])
    return web.json_response({"status": status})


def _upload_answer(status: str, offset: int) -> web.Response:
    return web.json_response({"status": status, "offset": offset})


def _known_sample(db: HubDB, device_id: str, sample_id: str) -> bool:
    try:
        sample = db.sample(sample_id)
    except NotFound:
        return False
    if sample.device_id != device_id:
        raise ForbiddenError(f"sample {sample_id} belongs to another device")
    return True


@routes.get(f"{API}/device/samples/{{sample_id}}/upload")
async def upload_status(request: web.Request) -> web.Response:
    """How far a resumable upload got: ``stored``, or ``partial`` with the bytes held."""
    sample_id = _sample_id(request)
    sha256 = check_sha256(request.query.get("sha256", ""))
    device_id = _device_id(request)
    if _known_sample(request.app[DB], device_id, sample_id):
        return _upload_answer("stored", 0)
    return _upload_answer("partial", request.app[UPLOADS].offset(device_id, sample_id, sha256))


def _int_header(request: web.Request, name: str) -> int:
    try:
        value = int(request.headers[name])
    except KeyError:
        raise BadRequest(f"missing header {name}") from None
    except ValueError:
        raise BadRequest(f"header {name} is not an integer") from None
    if value < 0:
        raise BadRequest(f"header {name} is negative")
    return value


@routes.patch(f"{API}/device/samples/{{sample_id}}/upload")
async def upload_part(request: web.Request) -> web.Response:
    """Append bytes to a sample's payload at ``Upload-Offset``; store it once complete.

    The payload (:func:`runtime.uploader.encode_payload`) has ``Upload-Length`` bytes hashing
    to ``Upload-Sha256``. Bytes are kept as they arrive, so a part cut by the link still counts;
    an offset below what the hub holds rewinds to it (a device that lost track), one above is
    409. A later request for the same upload supersedes one still reading (a dead link). The
    complete payload is hash-checked, decoded and stored like ``PUT /device/samples/{id}``.
    """
    app = request.app
    cfg = app[CONFIG]
    sample_id = _sample_id(request)
    device_id = _device_id(request)
    offset = _int_header(request, "Upload-Offset")
    length = _int_header(request, "Upload-Length")
    sha256 = check_sha256(request.headers.get("Upload-Sha256", ""))
    cap = cfg.max_meta_bytes + cfg.max_image_bytes + 64
    if length > cap:
        raise TooLarge(f"sample payload is {length} bytes; the limit is {cap}")
    body_len = request.content_length
    if body_len is None or offset + body_len > length:
        raise BadRequest("Content-Length is required and must not run past Upload-Length")
    if _known_sample(app[DB], device_id, sample_id):
        return _upload_answer("duplicate", length)
    uploads = app[UPLOADS]
    path = uploads.path(device_id, sample_id, sha256, length)
    uploads.drop(device_id, sample_id, keep=path)  # a different payload of the same sample
    held = path.stat().st_size if path.exists() else 0
    if not held:
        uploads.make_room(device_id, keep=path)
    if offset > held:
        raise Conflict(f"offset {offset} is past the {held} bytes the hub holds; ask again")
    key = (device_id, sample_id)
    me = object()
    app[UPLOAD_WRITERS][key] = me  # supersedes a request still reading on a dead link
    size = offset
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: every chunk reaches the file at once, and a superseded request has
        # nothing left in a buffer to flush over the newer one's bytes when it closes.
        with open(path, "r+b" if held else "wb", buffering=0) as f:
            f.truncate(offset)
            f.seek(offset)
            try:
                async for chunk in request.content.iter_chunked(_CHUNK):
                    if app[UPLOAD_WRITERS].get(key) is not me:
                        raise Conflict("a newer request took over this upload")
                    if size + len(chunk) > length:
                        raise BadRequest("body runs past Upload-Length")
                    f.write(chunk)
                    size += len(chunk)
            except ConnectionError:
                # The link dropped mid-part: keep what arrived, the device resumes from here
                # (nobody reads this answer).
                log.info("upload of %s cut at %d of %d bytes", sample_id, size, length)
                return _upload_answer("partial", size)
    finally:
        if app[UPLOAD_WRITERS].get(key) is me:
            del app[UPLOAD_WRITERS][key]
    if size < length:
        return _upload_answer("partial", size)
    payload = path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != sha256:
        path.unlink(missing_ok=True)
        raise BadRequest(f"sample {sample_id}: payload does not hash to Upload-Sha256; send again")
    try:
        meta, image = decode_payload(payload)
    except ValueError as e:
        path.unlink(missing_ok=True)
        raise BadRequest(f"sample {sample_id}: {e}") from e
    try:
        status = await _store_sample(app, device_id, sample_id, meta, image)
    finally:
        path.unlink(missing_ok=True)
    return _upload_answer(status, length)


@routes.put(f"{API}/device/samples/{{sample_id}}/feedback")
async def sample_feedback(request: web.Request) -> web.Response:
    """Feedback on a sample this device uploaded earlier; a correction lifts it to the top."""
    sample_id = _sample_id(request)
    body = _parse(FeedbackRequest, await _read_capped(request, 16 * 1024, "feedback"), "feedback")
    fb = _check_feedback(body.feedback.model_dump())
    assert fb is not None
    db = request.app[DB]
    device_id = _device_id(request)
    sample = db.sample(sample_id)
    if sample.device_id != device_id:
        raise ForbiddenError(f"sample {sample_id} belongs to another device")
    predicted = predicted_label(sample.meta.get("prediction") or {}, fb.get("item"))
    db.set_feedback(sample_id, device_id, fb, predicted)
    return web.json_response({"status": "stored"})


# -- TUF ----------------------------------------------------------------------------------------


@routes.get(f"{API}/tuf/metadata/{{file}}")
async def tuf_metadata(request: web.Request) -> web.Response:
    """Signed metadata: ``timestamp.json`` or ``<version>.<role>.json``."""
    data = request.app[REPO].metadata_bytes(request.match_info["file"])
    return web.Response(body=data, content_type="application/json")


_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _blob_range(request: web.Request, size: int, etag: str) -> tuple[int, int] | None:
    """The one byte range ``[start, end)`` to send, or None for the whole blob.

    ``Range: bytes=a-[b]`` is honoured only if ``If-Range`` is absent or is the blob's own
    strong ETag (a device resuming a partial of some other content gets the whole blob, 200).
    Any other range form (suffix, several ranges) is ignored: the whole blob is sent.
    """
    m = _RANGE_RE.match(request.headers.get("Range", "").strip())
    if_range = request.headers.get("If-Range")
    if m is None or (if_range is not None and if_range.strip() != etag):
        return None
    start = int(m[1])
    end = min(size, int(m[2]) + 1) if m[2] else size
    if start >= size or end <= start:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return start, end


@routes.get(f"{API}/tuf/targets/{{path:.+}}")
async def tuf_target(request: web.Request) -> web.StreamResponse:
    """A target file by ``<dir>/<sha256>.<name>``, only if that hash is a current target.

    Resumable: the blob's sha256 is its strong, stable ETag, and ``Range`` + ``If-Range`` get a
    206 with the rest of it (aiohttp's FileResponse keys its ETag on mtime and reads If-Range
    only as a date, so blobs are streamed here instead).
    """
    sha256, _ = request.app[REPO].target_blob(request.match_info["path"])
    path = request.app[BLOBS].path(sha256)
    try:
        f = path.open("rb")
    except FileNotFoundError as e:
        raise NotFound(f"target blob {sha256} is missing from the blob store") from e
    with f:
        size = os.fstat(f.fileno()).st_size
        etag = f'"{sha256}"'
        rng = _blob_range(request, size, etag)
        start, end = rng or (0, size)
        resp = web.StreamResponse(
            status=206 if rng else 200,
            headers={"Content-Type": "application/octet-stream", "ETag": etag},
        )
        resp.headers["Accept-Ranges"] = "bytes"
        if rng:
            resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        resp.content_length = end - start
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        loop = asyncio.get_running_loop()
        f.seek(start)
        left = end - start
        try:
            while left > 0:
                chunk = await loop.run_in_executor(None, f.read, min(_CHUNK, left))
                if not chunk:
                    break
                await resp.write(chunk)
                left -= len(chunk)
            await resp.write_eof()
        except ConnectionError:
            pass  # the device hung up (a dropped link); it resumes with a Range request
    return resp


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


_ROOT_PARTS = ("root", "targets", "snapshot.key", "timestamp.key")


@routes.post(f"{API}/admin/tuf/root")
async def post_root(request: web.Request) -> web.Response:
    """Accept root version N+1 (root rotation / key revocation), multipart: ``root``, and
    optionally ``targets`` re-signed for it and new online keys ``snapshot.key``,
    ``timestamp.key`` (PEM). See :meth:`hub.repository.TufRepository.accept_root`."""
    app = request.app
    cap = app[CONFIG].max_targets_bytes
    caps = {
        "root": 512 * 1024,
        "targets": cap,
        "snapshot.key": 16 * 1024,
        "timestamp.key": 16 * 1024,
    }
    parts = await _read_parts(request, caps, {"root"})
    keys = {n.removesuffix(".key"): parts[n] for n in _ROOT_PARTS[2:] if n in parts}
    async with app[PUBLISH_LOCK]:
        version = app[REPO].accept_root(parts["root"], parts.get("targets"), keys or None)
    log.info("serving root version %s", version)
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


# -- admin: shadow mode -------------------------------------------------------------------------


@routes.post(f"{API}/admin/shadow/rollouts")
async def shadow_rollout(request: web.Request) -> web.Response:
    """Assign a published bundle version as a shadow candidate, with its promotion rule."""
    raw = await _read_capped(request, 4 * 1024 * 1024, "shadow rollout")
    body = _parse(ShadowRolloutRequest, raw, "shadow rollout")
    db = request.app[DB]
    if not db.has_bundle(body.bundle, body.version):
        raise NotFound(f"bundle {body.bundle} version {body.version} is not published")
    n = db.set_shadow(body.bundle, body.version, body.rule.model_dump(), body.devices, body.cohort)
    return web.json_response({"devices": n})


@routes.post(f"{API}/admin/shadow/cancel")
async def shadow_cancel(request: web.Request) -> web.Response:
    """Withdraw shadow candidates; devices stop their worker at their next poll."""
    raw = await _read_capped(request, 4 * 1024 * 1024, "shadow cancel")
    body = _parse(ShadowCancelRequest, raw, "shadow cancel")
    return web.json_response({"removed": request.app[DB].clear_shadow(body.devices, body.cohort)})


def _aggregate(rows: list[tuple[str, str | None, dict[str, Any], float]]) -> list[dict[str, Any]]:
    """Sum device reports per (cohort, candidate): counts, flip matrix, histograms."""
    groups: dict[tuple[str | None, str | None, int | None], dict[str, Any]] = {}
    for device_id, cohort, rep, _updated in rows:
        cand = rep.get("candidate") or {}
        key = (cohort, cand.get("bundle"), cand.get("version"))
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "cohort": cohort,
                "candidate": {"bundle": key[1], "version": key[2]} if key[1] else None,
                "devices": [],
                "status": {},
                "counters": {},
                "stats": ShadowStats(),
            }
        g["devices"].append(device_id)
        g["status"][rep.get("status")] = g["status"].get(rep.get("status"), 0) + 1
        for k, v in (rep.get("counters") or {}).items():
            g["counters"][k] = g["counters"].get(k, 0) + int(v)
        with contextlib.suppress(ValidationError, ValueError):
            g["stats"].merge(ShadowStats.model_validate(rep.get("stats") or {}))
    out = []
    for g in groups.values():
        stats: ShadowStats = g.pop("stats")
        offered = g["counters"].get("offered", 0)
        g["shed_fraction"] = g["counters"].get("shed", 0) / offered if offered else 0.0
        g["agreement"] = stats.agreement
        g["stats"] = stats.model_dump()
        out.append(g)
    return out


@routes.get(f"{API}/admin/shadow")
async def shadow_overview(request: web.Request) -> web.Response:
    """Shadow telemetry per device and aggregated per cohort (``?cohort=`` filters)."""
    cohort = request.query.get("cohort")
    rows = request.app[DB].shadow_reports(cohort)
    return web.json_response(
        {
            "devices": [
                {"device_id": d, "cohort": c, "updated": u, "report": r} for d, c, r, u in rows
            ],
            "cohorts": _aggregate(rows),
        }
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
                    "queue": {"tier": e.tier, "device_rank": e.device_rank, "copies": e.copies},
                }
                for e in db.annotation_queue(q.get("bundle"), limit)
            ]
        )
    samples = db.samples(q.get("bundle"), state, limit)  # type: ignore[arg-type]
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
    for device_id, predicted, kind, label in db.feedback_entries(request.query.get("bundle")):
        by_device.setdefault(device_id, []).append((predicted, kind, label, 1))
    out: dict[str, Any] = {}
    for d in db.devices():
        reported = (d.status or {}).get("feedback")
        if d.id in by_device or reported is not None:
            out[d.id] = {"hub": tally(by_device.get(d.id, [])), "reported": reported}
    everything = [e for entries in by_device.values() for e in entries]
    return web.json_response({"devices": out, "fleet": tally(everything)})


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
    app[UPLOADS] = PartialUploads(data / "uploads")
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
    app[UPLOAD_WRITERS] = {}
    app.cleanup_ctx.extend([_storage_ctx, _timestamp_ctx, _jobs_ctx])
    app.add_routes(routes)
    return app


def run(config: HubConfig) -> None:
    """Serve the hub until interrupted."""
    web.run_app(create_app(config), host=config.host, port=config.port)
