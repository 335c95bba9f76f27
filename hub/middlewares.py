"""The hub's two middlewares: errors to one-line JSON (outermost), then auth by path prefix."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hub.api._common import (
    ADMIN_TOKEN,
    API,
    DB,
    IDENTITY,
    PREREAD,
    UNAUTH_SLOTS,
    Identity,
    hash_token,
    one_line,
    read_capped,
)
from hub.errors import (
    AuthError,
    Busy,
    ForbiddenError,
    HubHTTPError,
    RequestTimeout,
)
from hub.fastpath import FASTPATH
from hub.storage import HubDB
from runtime.errors import LeanloopError

log = logging.getLogger("leanloop.hub.middlewares")

# -- identity and auth --------------------------------------------------------------------------

# Path prefix → token kinds allowed; the first match wins, anything unlisted needs admin.
_POLICY: tuple[tuple[str, frozenset[str]], ...] = (
    (f"{API}/enroll", frozenset()),  # the enrollment secret travels in the body
    (f"{API}/device/challenge", frozenset()),  # answered by the device's key, not a token
    (f"{API}/device/refresh", frozenset()),
    ("/healthz", frozenset()),  # load balancers probe it without a token
    ("/metrics", frozenset()),  # Prometheus scrapes it (keep it on a private network)
    ("/labelstudio/", frozenset()),  # signed image links; the ML backend checks its caller
    ("/ui/", frozenset()),  # the web page checks its own session cookie (hub/web/session.py)
    ("/ui", frozenset()),
    (f"{API}/device/", frozenset({"device"})),
    (f"{API}/tuf/", frozenset({"device", "admin"})),
    (f"{API}/admin/", frozenset({"admin", "annotator", "viewer"})),
)
_READ = frozenset({"GET", "HEAD"})
_SMALL_BODIES = frozenset({f"{API}/enroll", f"{API}/device/challenge", f"{API}/device/refresh"})
_SMALL_BODY_CAP = 16 * 1024  # above what each of them accepts (their own caps still apply)
# An annotator works on samples and annotations only (reading and writing them).
_ANNOTATOR_PREFIXES = (
    f"{API}/admin/samples",
    f"{API}/admin/annotations",
    f"{API}/admin/feedback",
    f"{API}/admin/labelstudio",
)
_ADMIN_ONLY_PREFIXES = (f"{API}/admin/tokens",)


def _role_allows(who: Identity, method: str, path: str) -> bool:
    """Roles under ``/admin/``: admin anything; viewer reads (not tokens); annotator samples and
    annotations."""
    if who.kind == "admin":
        return True
    if path.startswith(_ADMIN_ONLY_PREFIXES):
        return False
    if who.kind == "viewer":
        return method in _READ
    if who.kind == "annotator":
        return path.startswith(_ANNOTATOR_PREFIXES)
    return True  # devices: the prefix policy decided


async def _identify(request: web.Request) -> Identity:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("missing bearer token (Authorization: Bearer <token>)")
    if not token.isascii():  # our tokens are URL-safe base64; other bytes arrive as surrogates
        raise AuthError("unknown token")
    if hmac.compare_digest(token.encode(), request.app[ADMIN_TOKEN].encode()):
        return Identity("admin")
    digest = hash_token(token)
    fast = request.app[FASTPATH]
    cached = fast.token(digest)  # hub.fastpath: dropped when any token changes
    if cached is not None:
        return cached
    generation = fast.generation("tokens")  # before the lookup: see remember_token
    db = request.app[DB]
    found, named = await db.call(_lookup, db, digest)  # one trip to the database's threads
    who: Identity | None = None
    if found is not None and hmac.compare_digest(digest, found[1]):
        who = Identity("device", found[0])
    elif named is not None and hmac.compare_digest(digest, named[2]):
        who = Identity(named[1], name=named[0])
    if who is None:
        raise AuthError("unknown token")
    fast.remember_token(digest, generation, who)
    return who


def _lookup(db: HubDB, digest: str) -> tuple[Any, Any]:
    found = db.device_by_token_hash(digest)
    return found, (db.api_token_by_hash(digest) if found is None else None)


_HEARTBEAT = f"{API}/device/heartbeat"  # notes last_seen with the status itself


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
    if not allowed and request.method in _READ:
        return await handler(request)  # probes, metrics, pages: no body to trickle
    if not allowed:
        # No token to check and a body to read (enrolment, challenge, refresh, the page's
        # forms): a bounded number at once, so clients that trickle bodies cannot take every
        # connection (issue 12).
        slots = request.app[UNAUTH_SLOTS]
        if slots.locked():
            raise Busy("too many unauthenticated requests; try again later")
        if request.path in _SMALL_BODIES:
            # The slot guards the body's arrival, not the work: enrolment, challenge and
            # refresh bodies are small, read whole under the slot, then served without it (so a
            # fleet enrolling at once is not refused while the database works).
            async with slots:
                request[PREREAD] = await read_capped(request, _SMALL_BODY_CAP, "body")
            return await handler(request)
        async with slots:
            return await handler(request)
    who = await _identify(request)
    if who.kind not in allowed or not _role_allows(who, request.method, request.path):
        raise ForbiddenError(f"a {who.kind} token cannot call {request.method} {request.path}")
    request[IDENTITY] = who
    if who.device_id is not None and request.path != _HEARTBEAT:
        request.app[FASTPATH].seen(who.device_id)  # last_seen, written behind
    return await handler(request)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Map domain errors (and aiohttp's own HTTP errors) to ``{"error": "<one line>"}``."""
    try:
        return await handler(request)
    except (RequestTimeout, Busy) as e:
        # The body was not read (whole): no keep-alive; the server drains it briefly
        # (hub.app.SERVER_ARGS) and closes the connection.
        resp = web.json_response({"error": one_line(str(e))}, status=e.status)
        resp.force_close()
        return resp
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
    return web.json_response({"error": one_line(message)}, status=status)
