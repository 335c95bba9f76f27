"""Who is looking at the hub's page: login with a named token, a session cookie, CSRF.

A person logs in with their named token (admin, annotator or viewer, see ``hub/api/tokens.py``;
the hub's admin token logs in as ``admin``). Device tokens cannot log in. The hub answers with
a random session cookie — ``HttpOnly``, ``SameSite=Strict``, ``Path=/ui``, and ``Secure`` when
the hub serves TLS — whose sha256 is stored with the person's name, role, a CSRF token and an
expiry that each request slides forward (``web_session_ttl_s``). Every state-changing request
(POST) must carry that CSRF token (a hidden form field ``csrf`` or the ``X-CSRF-Token`` header)
and, when the browser sends ``Origin``, come from the hub's own origin.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from hub.api._common import ADMIN_TOKEN, CONFIG, DB, hash_token

__all__ = ["COOKIE", "Viewer", "check_csrf", "login", "logout", "page", "viewer"]

COOKIE = "leanloop_session"
NEW_COOKIE = web.RequestKey("new_cookie", str)
FORM = web.RequestKey("form", dict)
ROLES = ("admin", "annotator", "viewer")
_MAX_FORM = 64 * 1024


@dataclass(frozen=True)
class Viewer:
    """The person behind a page request."""

    name: str
    role: str
    csrf: str
    session_hash: str


async def _who_has(request: web.Request, token: str) -> tuple[str, str] | None:
    """(name, role) of a person's token; None for unknown, revoked and device tokens."""
    if hmac.compare_digest(token.encode(), request.app[ADMIN_TOKEN].encode()):
        return "admin", "admin"
    db = request.app[DB]
    digest = hash_token(token)
    named = await db.call(db.api_token_by_hash, digest)
    if named is not None and hmac.compare_digest(digest, named[2]):
        return named[0], named[1]
    return None


async def viewer(request: web.Request) -> Viewer | None:
    """The live session of this request's cookie, or None."""
    cookie = request.cookies.get(COOKIE, "")
    if not cookie or len(cookie) > 128:
        return None
    db = request.app[DB]
    digest = hash_token(cookie)
    found = await db.call(db.session, digest, request.app[CONFIG].web_session_ttl_s)
    if found is None:
        return None
    return Viewer(found.name, found.role, found.csrf, digest)


async def login(request: web.Request, token: str) -> Viewer | None:
    """Start a session for the owner of ``token`` and set its cookie on the next response."""
    who = await _who_has(request, token.strip())
    if who is None:
        return None
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    db = request.app[DB]
    ttl = request.app[CONFIG].web_session_ttl_s
    await db.call(db.add_session, hash_token(cookie), who[0], who[1], csrf, ttl)
    request[NEW_COOKIE] = cookie
    return Viewer(who[0], who[1], csrf, hash_token(cookie))


async def logout(request: web.Request, who: Viewer) -> None:
    db = request.app[DB]
    await db.call(db.drop_session, who.session_hash)


def set_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Attach a cookie that :func:`login` made during this request."""
    cookie = request.get(NEW_COOKIE)
    if cookie is None:
        return
    response.set_cookie(
        COOKIE,
        cookie,
        path="/ui",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        max_age=int(request.app[CONFIG].web_session_ttl_s),
    )


def check_csrf(request: web.Request, who: Viewer, form: dict[str, Any] | None) -> None:
    """Refuse (403) a state-changing request without the session's CSRF token or from
    another origin."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise web.HTTPForbidden(reason="cross-origin request refused")
    sent = request.headers.get("X-CSRF-Token") or str((form or {}).get("csrf", ""))
    if not sent or not hmac.compare_digest(sent.encode(), who.csrf.encode()):
        raise web.HTTPForbidden(reason="missing or wrong CSRF token; reload the page")


async def read_form(request: web.Request) -> dict[str, Any]:
    """A url-encoded form under a size cap (413 above it)."""
    if request.content_length is not None and request.content_length > _MAX_FORM:
        raise web.HTTPRequestEntityTooLarge(max_size=_MAX_FORM, actual_size=request.content_length)
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise web.HTTPBadRequest(reason="expected a form")
    return dict(await request.post())


Handler = Callable[[web.Request, Viewer], Awaitable[web.StreamResponse]]


def page(roles: Collection[str] = ROLES) -> Callable[[Handler], Callable[..., Any]]:
    """A page handler for people with one of ``roles``: no session → the login page; a POST is
    CSRF-checked (the form is parsed first, under its cap, and kept in ``request["form"]``)."""

    def wrap(fn: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            who = await viewer(request)
            if who is None:
                if request.method == "GET":
                    raise web.HTTPSeeOther(f"/ui/login?next={request.path_qs}")
                raise web.HTTPUnauthorized(reason="log in first")
            if who.role not in roles:
                raise web.HTTPForbidden(reason=f"a {who.role} cannot use {request.path}")
            if request.method == "POST":
                form = None
                if request.content_type != "application/json":
                    form = await read_form(request)
                    request[FORM] = form
                check_csrf(request, who, form)
            return await fn(request, who)

        handler.__name__ = fn.__name__
        handler.__doc__ = fn.__doc__
        return handler

    return wrap
