"""Identity routes: enrolment, a device's key, token refresh by challenge, admin approve/reset.

The model (docs/operations.md, "Device identity"): a device id belongs to the ed25519 key
registered when it was first enrolled. An enrolment secret — the fleet secret
(``<data>/enroll.token``, unless ``fleet_enroll_secret`` is off) or an admin-minted one that is
one-time or expiring — only ever creates a *new* id (or takes one an admin reset). A device
whose token stopped working gets a new one by signing a fresh hub challenge with its key
(``/device/challenge`` then ``/device/refresh``). A device that lost its key asks again with a
new one; the hub keeps it as *pending* until an admin approves it (or resets the device).

Challenges are stateless: ``<issued>.<nonce>.<mac>``, the MAC keyed by a secret derived from
the admin token, valid for :data:`CHALLENGE_TTL_S`; a refresh is accepted only for a challenge
issued after the last one the device used, so a captured answer cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time

from aiohttp import web
from pydantic import Field

from hub.api._common import (
    ADMIN_TOKEN,
    API,
    CONFIG,
    DB,
    ENROLL_TOKEN,
    NAME_PATTERN,
    Body,
    device_id_of,
    hash_token,
    parse_body,
    read_capped,
)
from hub.errors import AuthError, BadRequest, Conflict
from runtime.identity import (
    new_key_message,
    parse_public_key,
    refresh_message,
    verify_signature,
)

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

CHALLENGE_TTL_S = 120.0
_B64_KEY = r"^[A-Za-z0-9+/]{43}=$"  # 32 bytes, base64
_REFUSED = "refresh refused: answer a fresh challenge with the device's registered key"


class EnrollRequest(Body):
    """``POST /enroll``."""

    device_id: str = Field(pattern=NAME_PATTERN)
    enroll_token: str = Field(min_length=1, max_length=512)
    cohort: str | None = Field(default=None, pattern=NAME_PATTERN)
    public_key: str | None = Field(default=None, pattern=_B64_KEY, description="ed25519, base64")


class ChallengeRequest(Body):
    device_id: str = Field(pattern=NAME_PATTERN)


class RefreshRequest(Body):
    device_id: str = Field(pattern=NAME_PATTERN)
    challenge: str = Field(max_length=200)
    signature: str = Field(max_length=200)
    new_public_key: str | None = Field(default=None, pattern=_B64_KEY)
    new_key_signature: str | None = Field(
        default=None, max_length=200, description="the new key's signature (new_key_message)"
    )


class KeyRequest(Body):
    public_key: str = Field(pattern=_B64_KEY)


class MintRequest(Body):
    """``POST /admin/enroll-secrets``."""

    uses: int = Field(default=1, ge=1, le=100_000, description="enrolments it pays for")
    ttl_s: float = Field(default=86400.0, gt=0, le=366 * 86400, description="life in seconds")
    cohort: str | None = Field(default=None, pattern=NAME_PATTERN)


class ApproveRequest(Body):
    public_key: str | None = Field(default=None, pattern=_B64_KEY)


def _check_key(text: str | None) -> None:
    if text is not None:
        try:
            parse_public_key(text)
        except ValueError as e:
            raise BadRequest(f"bad public_key: {e}") from e


def _mac_key(request: web.Request) -> bytes:
    return hmac.new(
        request.app[ADMIN_TOKEN].encode(), b"leanloop-challenge/1", hashlib.sha256
    ).digest()


def _mac(request: web.Request, device_id: str, issued: str, nonce: str) -> str:
    msg = f"{device_id}\n{issued}\n{nonce}".encode()
    return hmac.new(_mac_key(request), msg, hashlib.sha256).hexdigest()


def _challenge_issued(request: web.Request, device_id: str, challenge: str) -> float | None:
    """The issue time of a challenge this hub made for ``device_id`` and that is still fresh."""
    parts = challenge.split(".")
    if len(parts) != 3:
        return None
    issued_text, nonce, mac = parts
    if not hmac.compare_digest(mac, _mac(request, device_id, issued_text, nonce)):
        return None
    issued = int(issued_text) / 1e6  # ours, so it parses
    now = time.time()
    return issued if now - CHALLENGE_TTL_S <= issued <= now + 1.0 else None


@routes.post(f"{API}/enroll")
async def enroll(request: web.Request) -> web.Response:
    """A new device id (or one an admin reset) gets a token for a valid enrolment secret.

    An enrolled id is never re-keyed here: 409 says to refresh with the device's own key, and
    a different ``public_key`` is kept as pending for an admin to approve.
    """
    body = parse_body(EnrollRequest, await read_capped(request, 4096, "enrollment"), "enrollment")
    _check_key(body.public_key)
    db = request.app[DB]
    now = time.time()
    minted: str | None = None
    cohort = body.cohort
    fleet = request.app[ENROLL_TOKEN]
    if request.app[CONFIG].fleet_enroll_secret and hmac.compare_digest(
        body.enroll_token.encode(), fleet.encode()
    ):
        pass
    else:
        minted = hash_token(body.enroll_token)
        secret = await db.call(db.enroll_secret, minted, now)
        if secret is None:
            raise AuthError("wrong or spent enrollment secret")
        cohort = secret.cohort or cohort
    if await db.call(db.device_exists, body.device_id):
        key = await db.call(db.device_key, body.device_id)
        if key is None or not key.reset:
            if body.public_key is not None and (key is None or key.public_key != body.public_key):
                await db.call(db.set_pending_key, body.device_id, body.public_key)
                log.warning("enrolment of enrolled id %s with a new key: pending", body.device_id)
            raise Conflict(
                f"device {body.device_id} is enrolled: it refreshes its token with its own key "
                "(POST /device/refresh), or an admin approves a new key (leanloop identity "
                "approve) or resets it"
            )
    if minted is not None and not await db.call(db.take_enroll_secret, minted, now):
        raise AuthError("wrong or spent enrollment secret")
    token = secrets.token_urlsafe(32)
    if not await db.call(
        db.enroll_new_device, body.device_id, cohort, hash_token(token), body.public_key
    ):
        if minted is not None:
            await db.call(db.give_back_enroll_secret, minted)
        raise Conflict(f"device {body.device_id} was enrolled meanwhile")
    log.info("device %s enrolled (cohort %s)", body.device_id, cohort)
    return web.json_response({"device_token": token})


@routes.post(f"{API}/device/challenge")
async def challenge(request: web.Request) -> web.Response:
    """A fresh challenge for a device id (the same answer whether the id exists or not)."""
    body = parse_body(ChallengeRequest, await read_capped(request, 1024, "challenge"), "challenge")
    issued = str(int(time.time() * 1e6))
    nonce = secrets.token_hex(16)
    mac = _mac(request, body.device_id, issued, nonce)
    return web.json_response({"challenge": f"{issued}.{nonce}.{mac}", "ttl_s": CHALLENGE_TTL_S})


@routes.post(f"{API}/device/refresh")
async def refresh(request: web.Request) -> web.Response:
    """A new token for a device that signed a fresh challenge with its registered key.

    With ``new_public_key`` the device moves to a new key: the current key signs the request
    naming it and the new key signs :func:`new_key_message` over the same challenge
    (``new_key_signature``); the swap and the new token are one transaction, and the move is
    logged and written to the audit log. Every refusal is the same 401, whatever the reason
    (wrong key, unknown id, stale or replayed challenge, missing proof of the new key).
    """
    body = parse_body(RefreshRequest, await read_capped(request, 2048, "refresh"), "refresh")
    _check_key(body.new_public_key)
    db = request.app[DB]
    issued = _challenge_issued(request, body.device_id, body.challenge)
    key = await db.call(db.device_key, body.device_id) if issued is not None else None
    if issued is None or key is None or key.public_key is None:
        raise AuthError(_REFUSED)
    message = refresh_message(body.device_id, body.challenge, body.new_public_key)
    if not verify_signature(key.public_key, message, body.signature):
        raise AuthError(_REFUSED)
    new = body.new_public_key
    if new is not None and not verify_signature(
        new,
        new_key_message(body.device_id, body.challenge, new),
        body.new_key_signature or "",
    ):
        raise AuthError(_REFUSED)  # a move needs the new key's proof too
    token = secrets.token_urlsafe(32)
    if not await db.call(
        db.refresh_device, body.device_id, issued, hash_token(token), new, key.public_key
    ):
        raise AuthError(_REFUSED)
    if new is None or new == key.public_key:
        log.info("device %s refreshed its token", body.device_id)
    else:
        log.warning("device %s moved to key %s (was %s)", body.device_id, new, key.public_key)
        detail = {"device_id": body.device_id, "old_key": key.public_key, "new_key": new}
        await db.call(db.audit, "device-key-rotated", None, None, body.device_id, None, detail)
    return web.json_response({"device_token": token})


@routes.put(f"{API}/device/key")
async def register_key(request: web.Request) -> web.Response:
    """A device enrolled without a key registers one, proving itself with its token (once)."""
    body = parse_body(KeyRequest, await read_capped(request, 1024, "key"), "key")
    _check_key(body.public_key)
    device_id = device_id_of(request)
    registered = await request.app[DB].call(
        request.app[DB].register_first_key, device_id, body.public_key
    )
    if registered != body.public_key:
        raise Conflict(f"device {device_id} already has another key; an admin can approve one")
    return web.json_response({"public_key": registered})


# -- admin ----------------------------------------------------------------------------------


@routes.post(f"{API}/admin/enroll-secrets")
async def mint_secret(request: web.Request) -> web.Response:
    """Mint an enrolment secret: ``uses`` enrolments within ``ttl_s`` (one-time by default)."""
    body = parse_body(MintRequest, await read_capped(request, 1024, "secret"), "secret")
    secret = secrets.token_urlsafe(32)
    expires = time.time() + body.ttl_s
    db = request.app[DB]
    await db.call(db.add_enroll_secret, hash_token(secret), body.uses, expires, body.cohort)
    return web.json_response(
        {"secret": secret, "uses": body.uses, "expires": expires, "cohort": body.cohort}
    )


def _device_param(request: web.Request) -> str:
    device_id = request.match_info["device_id"]
    if len(device_id) > 64:
        raise BadRequest("bad device id")
    return device_id


@routes.post(f"{API}/admin/devices/{{device_id}}/approve")
async def approve(request: web.Request) -> web.Response:
    """Make a key (default: the pending one) the device's own; its old token stops working."""
    body = parse_body(ApproveRequest, await read_capped(request, 1024, "approve") or b"{}", "body")
    _check_key(body.public_key)
    device_id = _device_param(request)
    key = await request.app[DB].call(request.app[DB].approve_device_key, device_id, body.public_key)
    log.info("admin approved key %s for device %s", key, device_id)
    return web.json_response({"device_id": device_id, "public_key": key})


@routes.post(f"{API}/admin/devices/{{device_id}}/reset")
async def reset(request: web.Request) -> web.Response:
    """Forget a device's key and token; its id may then be enrolled afresh."""
    device_id = _device_param(request)
    await request.app[DB].call(request.app[DB].reset_device, device_id)
    log.info("admin reset device %s", device_id)
    return web.json_response({"device_id": device_id})
