"""The hub's two middlewares: errors to one-line JSON (outermost), then auth by path prefix."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hub.api._common import (
    ADMIN_TOKEN,
    API,
    DB,
    IDENTITY,
    TOUCHED,
    UNAUTH_SLOTS,
    Identity,
    hash_token,
    one_line,
)
from hub.errors import (
    AuthError,
    Busy,
    ForbiddenError,
    HubHTTPError,
    RequestTimeout,
)
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
    db = request.app[DB]
    digest = hash_token(token)
    found, named = await db.call(_lookup, db, digest)  # one trip to the database's threads
    if found is not None and hmac.compare_digest(digest, found[1]):
        return Identity("device", found[0])
    if named is not None and hmac.compare_digest(digest, named[2]):
        return Identity(named[1], name=named[0])
    raise AuthError("unknown token")


def _lookup(db: HubDB, digest: str) -> tuple[Any, Any]:
    found = db.device_by_token_hash(digest)
    return found, (db.api_token_by_hash(digest) if found is None else None)


_TOUCH_EVERY_S = 30.0  # last_seen is minutes-grained news; a write per request is not worth it
_HEARTBEAT = f"{API}/device/heartbeat"  # writes last_seen with the status itself


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
        async with slots:
            return await handler(request)
    who = await _identify(request)
    if who.kind not in allowed or not _role_allows(who, request.method, request.path):
        raise ForbiddenError(f"a {who.kind} token cannot call {request.method} {request.path}")
    request[IDENTITY] = who
    if who.device_id is not None and request.path != _HEARTBEAT:
        touched = request.app[TOUCHED]
        now = time.monotonic()
        if now - touched.get(who.device_id, -_TOUCH_EVERY_S) >= _TOUCH_EVERY_S:
            touched[who.device_id] = now
            await request.app[DB].call(request.app[DB].touch_device, who.device_id)
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
