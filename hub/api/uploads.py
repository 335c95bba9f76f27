"""Device sample routes: whole and resumable uploads, feedback on an uploaded sample."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from hub.api._common import (
    API,
    CHUNK,
    CONFIG,
    DB,
    NAME_RE,
    UPLOAD_WRITERS,
    UPLOADS,
    device_id_of,
    json_object,
    parse_body,
    read_capped,
    read_parts,
    store_blob,
)
from hub.errors import (
    BadRequest,
    Conflict,
    ForbiddenError,
    NotFound,
    TooLarge,
)
from hub.storage import HubDB, check_sha256
from runtime.feedback_stats import predicted_label
from runtime.protocol import (
    FeedbackMessage,
    FeedbackRequest,
    SampleMeta,
    UploadAnswer,
    validation_reason,
)
from runtime.store.record import SampleRecord
from runtime.uploader import decode_payload

log = logging.getLogger("leanloop.hub.uploads")

routes = web.RouteTableDef()


def _sample_id(request: web.Request) -> str:
    sample_id = request.match_info["sample_id"]
    if not NAME_RE.match(sample_id):
        raise BadRequest(f"bad sample id {sample_id[:80]!r}")
    return sample_id


def _check_feedback(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        fb = FeedbackMessage.model_validate(raw)
    except ValidationError as e:
        raise BadRequest(validation_reason(e, "feedback")) from e
    return fb.model_dump()


def _check_meta(meta: dict[str, Any]) -> SampleMeta:
    try:
        return SampleMeta.model_validate(meta)
    except ValidationError as e:
        raise BadRequest(validation_reason(e, "sample meta")) from e


async def _record_feedback(db: HubDB, sample_id: str, device_id: str, meta: dict[str, Any]) -> None:
    fb = _check_feedback(meta.get("feedback"))
    if fb is not None:
        predicted = predicted_label(meta.get("prediction") or {}, fb.get("item"))
        await db.call(db.set_feedback, sample_id, device_id, fb, predicted)


async def _store_sample(
    app: web.Application, device_id: str, sample_id: str, meta: dict[str, Any], image: bytes
) -> str:
    """Check and store an uploaded sample; "stored" or "duplicate" (the id is known).

    A duplicate still brings its feedback: a device re-sends a sample whose feedback changed.
    """
    checked = _check_meta(meta)
    record = SampleRecord.from_meta(checked.model_dump(mode="json"), image)
    if record.id != sample_id:
        raise BadRequest(f"meta id {record.id!r} is not the URL's {sample_id!r}")
    if record.device_id != device_id:
        raise BadRequest(f"meta device_id {record.device_id!r} is not this device ({device_id})")
    feedback = _check_feedback(meta.get("feedback"))
    db = app[DB]
    try:
        known = await db.call(db.sample, sample_id)
    except NotFound:
        known = None
    if known is not None:
        if known.device_id != device_id:
            raise ForbiddenError(f"sample {sample_id} belongs to another device")
        if feedback is not None:
            await _record_feedback(db, sample_id, device_id, meta)
        return "duplicate"
    image_sha256 = await store_blob(app, image)
    stored = await db.call(
        db.add_sample, sample_id, record.bundle, device_id, record.priority, meta, image_sha256
    )
    if feedback is not None:
        await _record_feedback(db, sample_id, device_id, meta)
    if stored:  # from a device on an older ontology version: converted now (docs/datasets.md)
        await db.call(db.to_current_ontology, sample_id)
    return "stored" if stored else "duplicate"


@routes.put(f"{API}/device/samples/{{sample_id}}")
async def upload_sample(request: web.Request) -> web.Response:
    """Store a sample (``meta`` + ``image``); the same id again is a no-op ("duplicate")."""
    cfg = request.app[CONFIG]
    sample_id = _sample_id(request)
    parts = await read_parts(
        request, {"meta": cfg.max_meta_bytes, "image": cfg.max_image_bytes}, {"meta", "image"}
    )
    meta = json_object(parts["meta"], "meta")
    status = await _store_sample(
        request.app, device_id_of(request), sample_id, meta, parts["image"]
    )
    return web.json_response({"status": status})


def _upload_answer(status: str, offset: int) -> web.Response:
    answer = UploadAnswer.model_validate({"status": status, "offset": offset})
    return web.json_response(answer.model_dump())


async def _known_sample(db: HubDB, device_id: str, sample_id: str) -> bool:
    try:
        sample = await db.call(db.sample, sample_id)
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
    device_id = device_id_of(request)
    if await _known_sample(request.app[DB], device_id, sample_id):
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
    device_id = device_id_of(request)
    offset = _int_header(request, "Upload-Offset")
    length = _int_header(request, "Upload-Length")
    sha256 = check_sha256(request.headers.get("Upload-Sha256", ""))
    cap = cfg.max_meta_bytes + cfg.max_image_bytes + 64
    if length > cap:
        raise TooLarge(f"sample payload is {length} bytes; the limit is {cap}")
    body_len = request.content_length
    if body_len is None or offset + body_len > length:
        raise BadRequest("Content-Length is required and must not run past Upload-Length")
    if await _known_sample(app[DB], device_id, sample_id):
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
                async for chunk in request.content.iter_chunked(CHUNK):
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
    body = parse_body(
        FeedbackRequest, await read_capped(request, 16 * 1024, "feedback"), "feedback"
    )
    fb = _check_feedback(body.feedback.model_dump())
    assert fb is not None
    db = request.app[DB]
    device_id = device_id_of(request)
    sample = await db.call(db.sample, sample_id)
    if sample.device_id != device_id:
        raise ForbiddenError(f"sample {sample_id} belongs to another device")
    if fb.get("label") is not None:  # a device on an older bundle: old labels are converted
        with contextlib.suppress(BadRequest):  # (a device cannot fix it: keep what it said)
            fb["label"] = (await db.call(db.current_labels, sample_id, [fb["label"]]))[0]
    predicted = predicted_label(sample.meta.get("prediction") or {}, fb.get("item"))
    await db.call(db.set_feedback, sample_id, device_id, fb, predicted)
    return web.json_response({"status": "stored"})
