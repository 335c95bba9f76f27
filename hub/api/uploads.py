"""Device sample routes: whole and resumable uploads, feedback on an uploaded sample."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from hub.api._common import (
    API,
    CONFIG,
    DB,
    NAME_RE,
    UPLOAD_WRITERS,
    UPLOADS,
    body_chunks,
    device_id_of,
    group_sample,
    json_object,
    parse_body,
    read_capped,
    read_parts,
    store_blob,
    unread_bytes,
)
from hub.errors import (
    BadRequest,
    Conflict,
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
from runtime.upload_payload import decode_payload

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
    try:
        record = SampleRecord.from_meta(checked.model_dump(mode="json"), image)
    except (KeyError, TypeError, ValueError) as e:  # e.g. a number out of range
        raise BadRequest(f"meta is not a sample record: {e}") from e
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
    if known is not None and known.device_id != device_id:
        # Another device's id: answer as for a new id (nothing reveals that it exists) and
        # keep nothing (ids are random; only a device probing others' ids gets here).
        log.warning("device %s uploaded sample %s of another device: dropped", device_id, sample_id)
        return "stored"
    if known is not None:
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
        await group_sample(app, sample_id, record.bundle, image)
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
    return sample.device_id == device_id  # another device's sample: as if there were none


@routes.get(f"{API}/device/samples/{{sample_id}}/upload")
async def upload_status(request: web.Request) -> web.Response:
    """How far a resumable upload got: ``stored``, or ``partial`` with the bytes held."""
    sample_id = _sample_id(request)
    sha256 = check_sha256(request.query.get("sha256", ""))
    device_id = device_id_of(request)
    db = request.app[DB]
    if await _known_sample(db, device_id, sample_id):
        return _upload_answer("stored", 0)
    if _parts_in_database(request.app):
        held = await db.call(db.upload_held, device_id, sample_id, sha256)
        return _upload_answer("partial", held)
    return _upload_answer("partial", request.app[UPLOADS].offset(device_id, sample_id, sha256))


def _parts_in_database(app: web.Application) -> bool:
    """Whether partial uploads live in the database (PostgreSQL: replicas share them) rather
    than in files of this hub's data dir (the embedded hub)."""
    return app[CONFIG].database_url is not None


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

    The payload (:func:`runtime.upload_payload.encode_payload`) has ``Upload-Length`` bytes hashing
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
    if _parts_in_database(app):
        return await _part_to_database(request, device_id, sample_id, sha256, offset, length)
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
    writers = app[UPLOAD_WRITERS]
    writers[key] = me  # supersedes a request still reading on a dead link
    size = offset
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_CREAT: another request may have unlinked the part file since we looked; this
        # request's bytes then go to a file of its own. Unbuffered: every chunk reaches the
        # file at once, and a superseded request has nothing left in a buffer to flush over
        # the newer one's bytes when it closes.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        with open(fd, "r+b", buffering=0) as f:
            f.truncate(offset)
            f.seek(offset)
            try:
                async for chunk in body_chunks(request, "sample part", None):
                    if writers.get(key) is not me:
                        raise Conflict("a newer request took over this upload")
                    if size + len(chunk) > length:
                        raise BadRequest("body runs past Upload-Length")
                    f.write(chunk)
                    size += len(chunk)
            except (ConnectionError, aiohttp.ClientPayloadError):
                # The link dropped mid-part: keep what arrived (also what aiohttp received but
                # had not handed out yet), the device resumes from here (nobody reads this).
                if writers.get(key) is me:
                    rest = unread_bytes(request)[: length - size]
                    f.write(rest)
                    size += len(rest)
                log.info("upload of %s cut at %d of %d bytes", sample_id, size, length)
                return _upload_answer("partial", size)
            if size < length:
                return _upload_answer("partial", size)
            return await _complete(app, f, path, device_id, sample_id, sha256, length, me)
    finally:
        if writers.get(key) is me:
            del writers[key]


async def _part_to_database(
    request: web.Request, device_id: str, sample_id: str, sha256: str, offset: int, length: int
) -> web.Response:
    """:func:`upload_part` with the bytes kept in the shared database, piece by piece as they
    arrive (:mod:`hub.storage.uploads`), so any replica can take the upload over. Pieces at an
    offset agree whoever sent them, so a request superseded on another replica does no harm;
    on this replica the newer request still stops the older one."""
    app = request.app
    db = app[DB]
    await db.call(db.drop_upload_parts, device_id, sample_id, (sha256, length))
    held = await db.call(db.upload_held, device_id, sample_id, sha256, length)
    if not held:
        await db.call(db.make_upload_room, device_id, sample_id, _PARTS_PER_DEVICE)
    if offset > held:
        raise Conflict(f"offset {offset} is past the {held} bytes the hub holds; ask again")
    key = (device_id, sample_id)
    me = object()
    writers = app[UPLOAD_WRITERS]
    writers[key] = me
    size = offset
    try:
        try:
            async for chunk in body_chunks(request, "sample part", None):
                if writers.get(key) is not me:
                    raise Conflict("a newer request took over this upload")
                if size + len(chunk) > length:
                    raise BadRequest("body runs past Upload-Length")
                await db.call(db.add_upload_part, device_id, sample_id, sha256, length, size, chunk)
                size += len(chunk)
        except (ConnectionError, aiohttp.ClientPayloadError):
            if writers.get(key) is me:
                rest = unread_bytes(request)[: length - size]
                await db.call(db.add_upload_part, device_id, sample_id, sha256, length, size, rest)
                size += len(rest)
            log.info("upload of %s cut at %d of %d bytes", sample_id, size, length)
            return _upload_answer("partial", size)
        held = await db.call(db.upload_held, device_id, sample_id, sha256, length)
        if held < length:
            return _upload_answer("partial", held)
        if writers.get(key) is not me:
            raise Conflict("a newer request took over this upload")
        payload = await db.call(db.upload_payload, device_id, sample_id, sha256, length)
        if await _known_sample(db, device_id, sample_id):
            return _upload_answer("duplicate", length)
        try:
            if hashlib.sha256(payload).hexdigest() != sha256:
                raise BadRequest(
                    f"sample {sample_id}: payload does not hash to Upload-Sha256; send again"
                )
            try:
                meta, image = decode_payload(payload)
            except ValueError as e:
                raise BadRequest(f"sample {sample_id}: {e}") from e
            status = await _store_sample(app, device_id, sample_id, meta, image)
        finally:
            await db.call(db.drop_upload_parts, device_id, sample_id)
        return _upload_answer(status, length)
    finally:
        if writers.get(key) is me:
            del writers[key]


_PARTS_PER_DEVICE = 16  # partial uploads a device may hold at once (as PartialUploads)


async def _complete(
    app: web.Application,
    f: BinaryIO,
    path: Path,
    device_id: str,
    sample_id: str,
    sha256: str,
    length: int,
    me: object,
) -> web.Response:
    """Check and store a payload this request finished writing (through its own file ``f``).

    Only the newest request of an upload completes it: one that was superseded after its last
    byte answers 409 (the newer one is rewriting the file). The payload is read from this
    request's own open file, so a part file unlinked or replaced meanwhile cannot fail it, and
    a sample stored meanwhile by a twin request makes this one a duplicate.
    """
    if app[UPLOAD_WRITERS].get((device_id, sample_id)) is not me:
        raise Conflict("a newer request took over this upload")
    f.seek(0)
    payload = f.read(length + 1)  # at once: no other request runs between the check and this
    if await _known_sample(app[DB], device_id, sample_id):
        return _upload_answer("duplicate", length)
    if len(payload) != length or hashlib.sha256(payload).hexdigest() != sha256:
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
    sample = await db.call(db.sample, sample_id)  # NotFound: "no sample '<id>'"
    if sample.device_id != device_id:
        raise NotFound(f"no sample {sample_id!r}")  # word for word what a missing id gets
    if fb.get("label") is not None:  # a device on an older bundle: old labels are converted
        with contextlib.suppress(BadRequest):  # (a device cannot fix it: keep what it said)
            fb["label"] = (await db.call(db.current_labels, sample_id, [fb["label"]]))[0]
    predicted = predicted_label(sample.meta.get("prediction") or {}, fb.get("item"))
    await db.call(db.set_feedback, sample_id, device_id, fb, predicted)
    return web.json_response({"status": "stored"})
