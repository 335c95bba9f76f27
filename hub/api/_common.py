"""What every route module of the hub shares: app keys, the caller's identity, capped body
readers and the base of request models."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiohttp import BodyPartReader, web
from pydantic import BaseModel, ConfigDict, ValidationError

from hub.config import HubConfig
from hub.errors import (
    BadRequest,
    RequestTimeout,
    TooLarge,
)
from hub.jobs import JobRunner
from hub.leader import Leader
from hub.replicas import SharedFiles
from hub.repository import TufRepository
from hub.storage import Blobs, HubDB, PartialUploads
from runtime.errors import first_line

log = logging.getLogger("leanloop.hub.api")

API = "/api/v1"

CONFIG = web.AppKey("config", HubConfig)
DB = web.AppKey("db", HubDB)
BLOBS = web.AppKey("blobs", Blobs)
REPO = web.AppKey("repo", TufRepository)
JOBS = web.AppKey("jobs", JobRunner)
LEADER = web.AppKey("leader", Leader)
SHARED = web.AppKey("shared", SharedFiles)  # only with hub replicas (PostgreSQL)
ADMIN_TOKEN = web.AppKey("admin_token", str)
ENROLL_TOKEN = web.AppKey("enroll_token", str)
PUBLISH_LOCK = web.AppKey("publish_lock", asyncio.Lock)
UPLOADS = web.AppKey("uploads", PartialUploads)
UPLOAD_WRITERS = web.AppKey("upload_writers", dict)  # (device, id) -> the request writing it
UNAUTH_SLOTS = web.AppKey("unauth_slots", asyncio.Semaphore)  # requests without a token

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_RE = re.compile(NAME_PATTERN)
CHUNK = 64 * 1024
MULTIPART_OVERHEAD = 16 * 1024

TokenKind = Literal["admin", "annotator", "viewer", "device"]


@dataclass(frozen=True)
class Identity:
    """Who is calling: a person or script with a role (the bootstrap admin token, or a named
    token), or one device."""

    kind: TokenKind
    device_id: str | None = None
    name: str | None = None  # the named token's name (None: the bootstrap admin token)


IDENTITY = web.RequestKey("identity", Identity)
# A body read in full before the handler ran (the auth middleware's, for small unauthenticated
# bodies): read_capped answers it.
PREREAD = web.RequestKey("preread", bytes)


def caller_name(request: web.Request, claimed: str | None = None) -> str:
    """Who to write in a record: the named token's name, else what the caller says, else the
    role (the bootstrap admin token has no name)."""
    who = request.get(IDENTITY)
    if who is not None and who.name:
        return who.name
    return claimed or (who.kind if who is not None else "unknown")


def hash_token(token: str) -> str:
    """How a device token is stored: sha256 hex (tokens are random, so no salt is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def one_line(text: str) -> str:
    """An error message as the hub answers it: its first line (see ``first_line``)."""
    return first_line(text, 500)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def parse_body(model: type[M], data: bytes | str, what: str) -> M:
    try:
        return model.model_validate_json(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"bad {what}: {where}: {first['msg']}") from e


async def timed(request: web.Request, what: str, step: Awaitable[T], deadline: float | None) -> T:
    """``await step``, cut with 408 when the body is idle too long or past ``deadline``
    (event-loop time): a client that trickles its body cannot hold a connection for ever."""
    cfg = request.app[CONFIG]
    wait = cfg.body_idle_timeout_s
    if deadline is not None:
        wait = min(wait, deadline - asyncio.get_running_loop().time())
    try:
        async with asyncio.timeout(max(wait, 0.0)):
            return await step
    except TimeoutError:
        raise RequestTimeout(f"{what}: the body stopped arriving; send it again") from None


def body_deadline(request: web.Request) -> float:
    return asyncio.get_running_loop().time() + request.app[CONFIG].body_timeout_s


async def body_chunks(
    request: web.Request, what: str, deadline: float | None
) -> AsyncIterator[bytes]:
    """The body in chunks as they arrive, each under :func:`timed`."""
    while chunk := await timed(request, what, request.content.read(CHUNK), deadline):
        yield chunk


async def read_capped(request: web.Request, limit: int, what: str) -> bytes:
    """The whole body, refusing (413) before reading if Content-Length is over ``limit``, and
    (408) when it trickles in (see :func:`timed`)."""
    length = request.content_length
    if length is not None and length > limit:
        raise TooLarge(f"{what} is {length} bytes; the limit is {limit}")
    pre = request.get(PREREAD)
    if pre is not None:
        if len(pre) > limit:
            raise TooLarge(f"{what} is over the limit of {limit} bytes")
        return pre
    buf = bytearray()
    async for chunk in body_chunks(request, what, body_deadline(request)):
        buf += chunk
        if len(buf) > limit:
            raise TooLarge(f"{what} is over the limit of {limit} bytes")
    return bytes(buf)


async def read_parts(
    request: web.Request, caps: dict[str, int], required: set[str]
) -> dict[str, bytes]:
    """The parts of a multipart body by name, each capped; unknown or repeated parts are 400."""
    total = sum(caps.values()) + MULTIPART_OVERHEAD
    if request.content_length is not None and request.content_length > total:
        raise TooLarge(f"body is {request.content_length} bytes; the limit is {total}")
    # (the raw header: aiohttp's parsed content_type goes through the email package, slow)
    if not request.headers.get("Content-Type", "").lower().lstrip().startswith("multipart/"):
        raise BadRequest(f"expected a multipart body with parts {', '.join(sorted(caps))}")
    parts: dict[str, bytes] = {}
    deadline = body_deadline(request)
    try:
        reader = await request.multipart()
        while (part := await timed(request, "body", reader.next(), deadline)) is not None:
            if not isinstance(part, BodyPartReader):
                raise BadRequest("nested multipart bodies are not accepted")
            name = part.name or ""
            if name not in caps:
                raise BadRequest(f"unexpected part {name!r}")
            if name in parts:
                raise BadRequest(f"part {name!r} given twice")
            buf = bytearray()
            while chunk := await timed(request, name, part.read_chunk(CHUNK), deadline):
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


def json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except ValueError as e:  # not JSON, not UTF-8, or an integer of over 4300 digits
        raise BadRequest(f"{what} is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return obj


def device_id_of(request: web.Request) -> str:
    device_id = request[IDENTITY].device_id
    assert device_id is not None  # the auth policy lets only device tokens reach device routes
    return device_id


async def store_blob(app: web.Application, data: bytes) -> str:
    loop = asyncio.get_running_loop()
    sha256, _ = await loop.run_in_executor(None, app[BLOBS].put, data)
    return sha256


async def group_sample(app: web.Application, sample_id: str, bundle: str, image: bytes) -> None:
    """Put a just-stored sample in its near-duplicate group (:mod:`hub.storage.groups`); the
    decode runs off the event loop. An image Pillow cannot decode is grouped by its bytes."""
    from hub.ranking import signature_of

    sig = await asyncio.get_running_loop().run_in_executor(None, signature_of, image)
    db = app[DB]
    if sig is not None:
        await db.call(db.add_signature, sample_id, bundle, sig)
    else:
        await db.call(db.mark_unsigned, sample_id)


async def person_of_token(request: web.Request, token: str) -> tuple[str, str] | None:
    """(name, role) of a person's token; None for unknown, revoked and device tokens."""
    if hmac.compare_digest(token.encode(), request.app[ADMIN_TOKEN].encode()):
        return "admin", "admin"
    db = request.app[DB]
    digest = hash_token(token)
    named = await db.call(db.api_token_by_hash, digest)
    if named is not None and hmac.compare_digest(digest, named[2]):
        return named[0], named[1]
    return None


def unread_bytes(request: web.Request) -> bytes:
    """Body bytes that arrived but were not read when the connection was lost.

    aiohttp raises the lost connection before it hands out what it had already received (its
    StreamReader checks the error first); those bytes arrived whole and in order, so a
    resumable upload counts them (issue 5's bytes-on-the-wire bound)."""
    held = list(getattr(request.content, "_buffer", None) or ())
    if held:  # the first chunk may be read in part already
        held[0] = held[0][getattr(request.content, "_buffer_offset", 0) :]
    return b"".join(bytes(b) for b in held)
